internal import PolicyGateTOML

/// Strict readers for the value formats providers use in rate-limit headers. Each returns `nil`
/// for anything it does not fully understand: a value the gate cannot read is never trusted.
enum HeaderValues {
    /// The longest reset or retry delay believed (a day): providers' windows are a minute to a
    /// day long, so anything further is a clock or parsing problem, not a limit.
    static let longestDelay: Int64 = 86_400_000_000_000
    /// The largest count believed.
    static let largestCount = Int64(PolicyLimits.maximumTokenCount)

    /// A whole, non-negative count (`"59"`; a provider's `"1e3"` or `"-1"` is refused).
    static func count(_ text: String) -> Int64? {
        let trimmed = text.trimmingSpaces
        guard !trimmed.isEmpty, trimmed.utf8.count <= 16, trimmed.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
            let value = Int64(trimmed), value <= largestCount
        else { return nil }
        return value
    }

    /// Non-negative seconds or milliseconds, whole or decimal (`"20"`, `"1.5"`), in nanoseconds.
    static func decimal(_ text: String, unit: Int64) -> Int64? {
        let trimmed = text.trimmingSpaces
        let parts = trimmed.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        guard let whole = parts.first, !whole.isEmpty, whole.count <= 12, whole.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
            let wholeValue = Int64(whole)
        else { return nil }
        var nanos = wholeValue.multipliedReportingOverflow(by: unit)
        guard !nanos.overflow else { return nil }
        if parts.count == 2 {
            let fraction = parts[1]
            guard !fraction.isEmpty, fraction.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
            var scale = unit
            for digit in fraction.utf8.prefix(18) {
                scale /= 10
                nanos.partialValue += Int64(digit - 0x30) * scale
            }
        }
        return nanos.partialValue
    }

    /// A Go duration as OpenAI sends it (`"1s"`, `"6m0s"`, `"12ms"`, `"1h2m3.5s"`, `"0"`), in
    /// nanoseconds. Signs and unknown units are refused.
    static func goDuration(_ text: String) -> Int64? {
        let bytes = Array(text.trimmingSpaces.utf8)
        if bytes == [0x30] { return 0 }
        guard !bytes.isEmpty, bytes.count <= 64 else { return nil }
        var total: Int64 = 0
        var i = 0
        while i < bytes.count {
            let start = i
            while i < bytes.count, (bytes[i] >= 0x30 && bytes[i] <= 0x39) || bytes[i] == 0x2E { i += 1 }
            guard i > start, i < bytes.count else { return nil }
            let number = String(decoding: bytes[start..<i], as: UTF8.self)
            let unitStart = i
            while i < bytes.count, !(bytes[i] >= 0x30 && bytes[i] <= 0x39), bytes[i] != 0x2E { i += 1 }
            let unit: Int64
            switch String(decoding: bytes[unitStart..<i], as: UTF8.self) {
            case "ns": unit = 1
            case "us", "µs", "μs": unit = 1_000
            case "ms": unit = 1_000_000
            case "s": unit = 1_000_000_000
            case "m": unit = 60_000_000_000
            case "h": unit = 3_600_000_000_000
            default: return nil
            }
            guard let nanos = decimal(number, unit: unit) else { return nil }
            let (sum, overflow) = total.addingReportingOverflow(nanos)
            guard !overflow else { return nil }
            total = sum
        }
        return total
    }

    /// An RFC 3339 date-time (`2026-12-03T10:15:30Z`, `…30.25+01:00`), in nanoseconds since
    /// 1970-01-01 UTC.
    static func rfc3339(_ text: String) -> Int64? {
        let b = Array(text.trimmingSpaces.utf8)
        guard b.count >= 20, b.count <= 40 else { return nil }
        func digits(_ from: Int, _ count: Int) -> Int? {
            guard from + count <= b.count else { return nil }
            var value = 0
            for byte in b[from..<(from + count)] {
                guard byte >= 0x30 && byte <= 0x39 else { return nil }
                value = value * 10 + Int(byte - 0x30)
            }
            return value
        }
        guard let year = digits(0, 4), b[4] == 0x2D, let month = digits(5, 2), b[7] == 0x2D, let day = digits(8, 2),
            b[10] == 0x54 || b[10] == 0x74 || b[10] == 0x20,
            let hour = digits(11, 2), b[13] == 0x3A, let minute = digits(14, 2), b[16] == 0x3A, let second = digits(17, 2),
            (1...12).contains(month), day >= 1, day <= CivilCalendar.daysInMonth(month, year: year),
            hour < 24, minute < 60, second < 61
        else { return nil }
        var i = 19
        var fraction: Int64 = 0
        if i < b.count, b[i] == 0x2E {
            i += 1
            var scale: Int64 = 1_000_000_000
            let start = i
            while i < b.count, b[i] >= 0x30 && b[i] <= 0x39 {
                scale /= 10
                fraction += Int64(b[i] - 0x30) * scale
                i += 1
            }
            guard i > start else { return nil }
        }
        guard i < b.count else { return nil }
        var offsetSeconds = 0
        if b[i] == 0x5A || b[i] == 0x7A {
            i += 1
        } else if b[i] == 0x2B || b[i] == 0x2D {
            guard let h = digits(i + 1, 2), i + 3 < b.count, b[i + 3] == 0x3A, let m = digits(i + 4, 2), h < 24, m < 60
            else { return nil }
            offsetSeconds = (h * 3_600 + m * 60) * (b[i] == 0x2B ? 1 : -1)
            i += 6
        } else {
            return nil
        }
        guard i == b.count else { return nil }
        let days = CivilCalendar.dayNumber(year: year, month: month, day: day)
        let seconds = Int64(days) * 86_400 + Int64(hour * 3_600 + minute * 60 + min(second, 59)) - Int64(offsetSeconds)
        return seconds * 1_000_000_000 + fraction
    }

    /// An HTTP date in the IMF-fixdate form (`Sun, 06 Nov 1994 08:49:37 GMT`), in nanoseconds
    /// since 1970-01-01 UTC. The obsolete RFC 850 and asctime forms are refused.
    static func httpDate(_ text: String) -> Int64? {
        let parts = text.trimmingSpaces.split(separator: " ")
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        let weekdays = ["Mon,", "Tue,", "Wed,", "Thu,", "Fri,", "Sat,", "Sun,"]
        guard parts.count == 6, weekdays.contains(String(parts[0])), parts[5] == "GMT", parts[1].count == 2,
            let day = Int(parts[1]), let month = months.firstIndex(of: String(parts[2])).map({ $0 + 1 }),
            parts[3].count == 4, let year = Int(parts[3]), day >= 1, day <= CivilCalendar.daysInMonth(month, year: year)
        else { return nil }
        let clock = parts[4].split(separator: ":")
        guard clock.count == 3, clock.allSatisfy({ $0.count == 2 }), let hour = Int(clock[0]), let minute = Int(clock[1]),
            let second = Int(clock[2]), hour < 24, minute < 60, second < 61
        else { return nil }
        let days = CivilCalendar.dayNumber(year: year, month: month, day: day)
        return (Int64(days) * 86_400 + Int64(hour * 3_600 + minute * 60 + min(second, 59))) * 1_000_000_000
    }
}

extension String {
    /// Without leading and trailing spaces and tabs (header values may carry them).
    var trimmingSpaces: Substring {
        var s = self[...]
        while let c = s.first, c == " " || c == "\t" { s.removeFirst() }
        while let c = s.last, c == " " || c == "\t" { s.removeLast() }
        return s
    }
}
