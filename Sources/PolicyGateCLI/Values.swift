import Foundation
import PolicyGateTOML

/// Parsing and printing of the values the command reads and shows: instants, durations, counts.
///
/// Written by hand rather than with date and number format styles so that the output is the
/// same on every platform and locale, and the tests can compare it line by line.
package enum Values {
    // MARK: Instants

    /// Reads an ISO 8601 instant with an explicit offset: `2026-12-24T09:00:00Z`,
    /// `2026-12-24T10:00+01:00`, `2026-12-24 09:00:00.5-0500`; or `now`.
    /// - Returns: `nil` when the text is not such an instant (or names a day that does not exist).
    package static func parseInstant(_ text: String, now: Date = Date()) -> Date? {
        if text == "now" { return now }
        var scanner = Scanner(Array(text.utf8))
        guard let year = scanner.digits(4), scanner.take("-"),
            let month = scanner.digits(2), scanner.take("-"),
            let day = scanner.digits(2),
            scanner.take("T") || scanner.take("t") || scanner.take(" "),
            let hour = scanner.digits(2), scanner.take(":"),
            let minute = scanner.digits(2)
        else { return nil }
        var second = 0
        var fraction = 0.0
        if scanner.take(":") {
            guard let value = scanner.digits(2) else { return nil }
            second = value
            if scanner.take(".") || scanner.take(",") {
                let start = scanner.index
                var scale = 0.1
                while let digit = scanner.peekDigit() {
                    fraction += Double(digit) * scale
                    scale /= 10
                    scanner.index += 1
                }
                if scanner.index == start { return nil }
            }
        }
        let offset: Int
        if scanner.take("Z") || scanner.take("z") {
            offset = 0
        } else if let sign = scanner.takeSign() {
            guard let hours = scanner.digits(2) else { return nil }
            _ = scanner.take(":")
            guard let minutes = scanner.digits(2), hours <= 23, minutes <= 59 else { return nil }
            offset = sign * (hours * 3_600 + minutes * 60)
        } else {
            return nil
        }
        guard scanner.atEnd, (1...12).contains(month), (1...CivilCalendar.daysInMonth(month, year: year)).contains(day),
            hour <= 23, minute <= 59, second <= 59
        else { return nil }
        let days = CivilCalendar.dayNumber(year: year, month: month, day: day)
        let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset
        return Date(timeIntervalSince1970: Double(seconds) + fraction)
    }

    /// `2026-12-24T18:00:00+01:00`: the instant on the wall clock of `zone`, with its offset
    /// (`Z` for UTC), to the second.
    package static func iso8601(_ date: Date, in zone: TimeZone = .gmt) -> String {
        let local = LocalTime(date, zone)
        return "\(local.date)T\(local.time(seconds: true))\(offsetText(local.offset, utcAsZ: true))"
    }

    /// `Thu 2026-12-24 18:00 +01:00`: the instant on the wall clock of `zone`, with its weekday
    /// and offset (`UTC` for the UTC zone); seconds only when they are not zero.
    package static func readable(_ date: Date, in zone: TimeZone = .gmt) -> String {
        let local = LocalTime(date, zone)
        let isUTC = zone.identifier == "GMT" || zone.identifier == "UTC"
        let offset = isUTC ? "UTC" : offsetText(local.offset, utcAsZ: false)
        return "\(local.weekday) \(local.date) \(local.time(seconds: local.second != 0)) \(offset)"
    }

    private static func offsetText(_ seconds: Int, utcAsZ: Bool) -> String {
        if seconds == 0 && utcAsZ { return "Z" }
        let sign = seconds < 0 ? "-" : "+"
        let magnitude = abs(seconds) / 60
        return sign + twoDigits(magnitude / 60) + ":" + twoDigits(magnitude % 60)
    }

    /// A date split into its local fields in one zone.
    private struct LocalTime {
        var date: String
        var weekday: String
        var hour: Int, minute: Int, second: Int
        var offset: Int

        init(_ instant: Date, _ zone: TimeZone) {
            offset = zone.secondsFromGMT(for: instant)
            let seconds = Int(instant.timeIntervalSince1970.rounded(.down)) + offset
            let day = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
            let civil = CivilCalendar.date(dayNumber: day)
            let year = String(civil.year)
            let paddedYear = String(repeating: "0", count: max(0, 4 - year.count)) + year
            date = "\(paddedYear)-\(twoDigits(civil.month))-\(twoDigits(civil.day))"
            // 1970-01-01 was a Thursday.
            weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][((day % 7) + 7) % 7]
            let inDay = seconds - day * 86_400
            hour = inDay / 3_600
            minute = inDay / 60 % 60
            second = inDay % 60
        }

        func time(seconds: Bool) -> String {
            twoDigits(hour) + ":" + twoDigits(minute) + (seconds ? ":" + twoDigits(second) : "")
        }
    }

    // MARK: Durations

    /// Reads a duration such as `90s`, `15m`, `1h`, `1h30m`, `2d` or `500ms` (a bare number is
    /// seconds).
    /// - Returns: `nil` for anything else, or for a duration that is not positive.
    package static func parseDuration(_ text: String) -> Duration? {
        if let seconds = Int(text) { return seconds > 0 ? .seconds(seconds) : nil }
        // "ms" before "m" and "s", so the first suffix that matches is the right one.
        let units: [(suffix: String, milliseconds: Int)] = [
            ("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000),
        ]
        var rest = Substring(text)
        var total = 0
        while !rest.isEmpty {
            let number = rest.prefix { $0.isASCII && $0.isNumber }
            guard !number.isEmpty, number.count <= 9, let value = Int(number) else { return nil }
            rest = rest.dropFirst(number.count)
            guard let unit = units.first(where: { rest.hasPrefix($0.suffix) }) else { return nil }
            rest = rest.dropFirst(unit.suffix.count)
            total += value * unit.milliseconds
        }
        return total > 0 ? .milliseconds(total) : nil
    }

    /// A duration for people: `0s`, `250ms`, `59.9s`, `4m 05s`, `2h 03m`.
    package static func readable(_ duration: Duration) -> String {
        let milliseconds = Int((seconds(duration) * 1_000).rounded())
        if milliseconds == 0 { return "0s" }
        if milliseconds < 1_000 { return "\(milliseconds)ms" }
        let tenths = (milliseconds + 50) / 100
        if tenths < 600 { return "\(tenths / 10).\(tenths % 10)s" }
        let totalSeconds = (milliseconds + 500) / 1_000
        if totalSeconds < 3_600 { return "\(totalSeconds / 60)m \(twoDigits(totalSeconds % 60))s" }
        let totalMinutes = (totalSeconds + 30) / 60
        if totalMinutes < 1_440 { return "\(totalMinutes / 60)h \(twoDigits(totalMinutes % 60))m" }
        return "\(totalMinutes / 1_440)d \(twoDigits(totalMinutes / 60 % 24))h"
    }

    /// A duration in seconds, as a floating-point number.
    package static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    /// Offset on the virtual clock, `+1m 05s` style, for "when" columns (`+0s` at the start).
    package static func offset(_ duration: Duration) -> String { "+" + readable(duration) }

    // MARK: Counts

    /// `5,000,000`: an integer with thousands separated by commas.
    package static func count(_ value: Int) -> String {
        let digits = String(value.magnitude)
        var grouped = ""
        for (index, character) in digits.enumerated() {
            if index > 0 && (digits.count - index) % 3 == 0 { grouped.append(",") }
            grouped.append(character)
        }
        return (value < 0 ? "-" : "") + grouped
    }

    // MARK: Calendar arithmetic

    static func twoDigits(_ value: Int) -> String { value < 10 ? "0\(value)" : "\(value)" }

}

/// The version of every JSON report the tool writes (`schema_version`); bumped when a key is
/// renamed or removed, not when one is added.
let jsonSchemaVersion = 1

/// Pretty JSON with sorted keys and a final newline; the types encoded here cannot fail.
///
/// Every key is snake_case, as in the configuration: a property's name is converted
/// (`admittedAtOnce` → `admitted_at_once`). Only the keys of a type's `CodingKeys` are: a
/// dictionary's keys are data (limit names, and maybe names a user chose) and stay as they are.
func encodeJSON(_ value: some Encodable) -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    encoder.keyEncodingStrategy = .custom { path in
        let key = path[path.count - 1]
        guard String(describing: type(of: key)).hasSuffix("CodingKeys") else { return key }
        return SnakeCaseKey(snakeCase(key.stringValue))
    }
    do {
        return String(decoding: try encoder.encode(value), as: UTF8.self) + "\n"
    } catch {
        return "{\"error\": \"cannot encode the result: \(error)\"}\n"
    }
}

/// A key written as given.
private struct SnakeCaseKey: CodingKey {
    let stringValue: String
    var intValue: Int? { nil }
    init(_ string: String) { stringValue = string }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

/// `admittedAtOnce` → `admitted_at_once`; a name without capitals is returned as it is.
func snakeCase(_ name: String) -> String {
    var result = ""
    result.reserveCapacity(name.count + 4)
    for character in name {
        if character.isUppercase {
            if !result.isEmpty { result.append("_") }
            result += character.lowercased()
        } else {
            result.append(character)
        }
    }
    return result
}

/// `1 provider`, `3 providers`, `14,492 calls`.
func plural(_ count: Int, _ noun: String) -> String {
    "\(Values.count(count)) \(noun)\(count == 1 ? "" : "s")"
}

/// A cursor over ASCII bytes for the instant parser.
private struct Scanner {
    let bytes: [UInt8]
    var index = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var atEnd: Bool { index == bytes.count }

    mutating func take(_ character: Character) -> Bool {
        guard index < bytes.count, bytes[index] == character.asciiValue else { return false }
        index += 1
        return true
    }

    mutating func takeSign() -> Int? {
        if take("+") { return 1 }
        if take("-") { return -1 }
        return nil
    }

    func peekDigit() -> Int? {
        guard index < bytes.count, (48...57).contains(bytes[index]) else { return nil }
        return Int(bytes[index] - 48)
    }

    /// Exactly `count` decimal digits.
    mutating func digits(_ count: Int) -> Int? {
        var value = 0
        for _ in 0..<count {
            guard let digit = peekDigit() else { return nil }
            value = value * 10 + digit
            index += 1
        }
        return value
    }
}
