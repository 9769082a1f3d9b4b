extension TOMLParser {
    /// Reads an integer, a float or one of the four date/time kinds (all start with a digit,
    /// a sign, `inf` or `nan`).
    mutating func parseNumberOrDateTime() throws(TOMLError) -> TOMLValue {
        let start = index
        if start + 4 < bytes.count, bytes[start + 4] == TOMLByte.minus,
            TOMLByte.isDigit(bytes[start]), TOMLByte.isDigit(bytes[start + 1]),
            TOMLByte.isDigit(bytes[start + 2]), TOMLByte.isDigit(bytes[start + 3])
        {
            return try parseDateOrDateTime()
        }
        if start + 2 < bytes.count, bytes[start + 2] == TOMLByte.colon,
            TOMLByte.isDigit(bytes[start]), TOMLByte.isDigit(bytes[start + 1])
        {
            return .localTime(try parseTime())
        }
        // The token: everything a number may contain; the grammar is checked below.
        var end = start
        while end < bytes.count {
            let byte = bytes[end]
            guard TOMLByte.isBareKey(byte) || byte == TOMLByte.plus || byte == TOMLByte.dot else { break }
            end += 1
        }
        let value = try parseNumber(start..<end)
        index = end
        return value
    }

    /// Parses `token` as a TOML integer or float.
    private mutating func parseNumber(_ token: Range<Int>) throws(TOMLError) -> TOMLValue {
        var i = token.lowerBound
        let end = token.upperBound
        let sign = bytes[i]
        let hasSign = sign == TOMLByte.plus || sign == TOMLByte.minus
        let negative = sign == TOMLByte.minus
        if hasSign { i += 1 }
        if end - i == 3 {
            if bytes[i] == UInt8(ascii: "i"), bytes[i + 1] == UInt8(ascii: "n"), bytes[i + 2] == UInt8(ascii: "f") {
                return .float(negative ? -.infinity : .infinity)
            }
            if bytes[i] == UInt8(ascii: "n"), bytes[i + 1] == UInt8(ascii: "a"), bytes[i + 2] == UInt8(ascii: "n") {
                return .float(negative ? -.nan : .nan)
            }
        }
        guard i < end, TOMLByte.isDigit(bytes[i]) else {
            throw error("invalid number \(quoted(token))", at: token.lowerBound)
        }
        if bytes[i] == TOMLByte.zero, i + 1 < end {
            let next = bytes[i + 1]
            let radix: UInt64? =
                switch next {
                case UInt8(ascii: "x"): 16
                case UInt8(ascii: "o"): 8
                case UInt8(ascii: "b"): 2
                default: nil
                }
            if let radix {
                guard !hasSign else {
                    throw error("a hexadecimal, octal or binary integer cannot have a sign: \(quoted(token))", at: token.lowerBound)
                }
                return .integer(try parseRadixInteger(token, digitsFrom: i + 2, radix: radix))
            }
            if TOMLByte.isDigit(next) || next == TOMLByte.underscore {
                throw error("leading zeros are not allowed: \(quoted(token))", at: token.lowerBound)
            }
        }
        // The integer part, accumulated as a magnitude in case the token is an integer.
        var magnitude: UInt64 = 0
        var overflow = false
        var j = try scanDigits(token, from: i) { digit in
            let (times10, o1) = magnitude.multipliedReportingOverflow(by: 10)
            let (sum, o2) = times10.addingReportingOverflow(UInt64(digit))
            magnitude = sum
            overflow = overflow || o1 || o2
        }
        if j == end {
            let limit: UInt64 = negative ? UInt64(Int64.max) + 1 : UInt64(Int64.max)
            guard !overflow, magnitude <= limit else {
                throw error("integer \(text(token)) does not fit in 64 bits", at: token.lowerBound)
            }
            return .integer(negative ? Int64(truncatingIfNeeded: 0 &- magnitude) : Int64(magnitude))
        }
        var hasUnderscore = false
        for k in token where bytes[k] == TOMLByte.underscore { hasUnderscore = true }
        if bytes[j] == TOMLByte.dot {
            j += 1
            guard j < end, TOMLByte.isDigit(bytes[j]) else {
                throw error("a decimal point must be followed by a digit: \(quoted(token))", at: token.lowerBound)
            }
            j = try scanDigits(token, from: j) { _ in }
        }
        if j < end, bytes[j] | 0x20 == UInt8(ascii: "e") {
            j += 1
            if j < end, bytes[j] == TOMLByte.plus || bytes[j] == TOMLByte.minus { j += 1 }
            guard j < end, TOMLByte.isDigit(bytes[j]) else {
                throw error("an exponent must have digits: \(quoted(token))", at: token.lowerBound)
            }
            j = try scanDigits(token, from: j) { _ in }
        }
        guard j == end else {
            throw error("invalid number \(quoted(token))", at: token.lowerBound)
        }
        let literal: String
        if hasUnderscore {
            var digits: [UInt8] = []
            digits.reserveCapacity(token.count)
            for k in token where bytes[k] != TOMLByte.underscore { digits.append(bytes[k]) }
            literal = String(decoding: digits, as: UTF8.self)
        } else {
            literal = text(token)
        }
        guard let value = Double(literal), value.isFinite else {
            throw error("float \(text(token)) is out of the range of a 64-bit float", at: token.lowerBound)
        }
        return .float(value)
    }

    /// Scans decimal digits from `start` (a digit) with single underscores between digits,
    /// reporting each digit's value; returns the offset after the last digit.
    private mutating func scanDigits(
        _ token: Range<Int>,
        from start: Int,
        digit report: (UInt8) -> Void
    ) throws(TOMLError) -> Int {
        var j = start
        while j < token.upperBound {
            let byte = bytes[j]
            if TOMLByte.isDigit(byte) {
                report(byte - TOMLByte.zero)
            } else if byte == TOMLByte.underscore {
                guard j + 1 < token.upperBound, TOMLByte.isDigit(bytes[j + 1]) else {
                    throw error("an underscore must be between two digits: \(quoted(token))", at: token.lowerBound)
                }
            } else {
                break
            }
            j += 1
        }
        return j
    }

    /// Parses the digits of `0x…`, `0o…` or `0b…` from `start`.
    private mutating func parseRadixInteger(_ token: Range<Int>, digitsFrom start: Int, radix: UInt64) throws(TOMLError) -> Int64 {
        var value: UInt64 = 0
        var overflow = false
        var j = start
        var previousWasDigit = false
        while j < token.upperBound {
            let byte = bytes[j]
            if byte == TOMLByte.underscore {
                guard previousWasDigit, j + 1 < token.upperBound, bytes[j + 1] != TOMLByte.underscore else {
                    throw error("an underscore must be between two digits: \(quoted(token))", at: token.lowerBound)
                }
                previousWasDigit = false
                j += 1
                continue
            }
            guard let digit = hexValue(byte), UInt64(digit) < radix else {
                let kind = radix == 16 ? "hexadecimal" : radix == 8 ? "octal" : "binary"
                throw error("invalid \(kind) integer \(quoted(token))", at: token.lowerBound)
            }
            let (shifted, o1) = value.multipliedReportingOverflow(by: radix)
            let (sum, o2) = shifted.addingReportingOverflow(UInt64(digit))
            value = sum
            overflow = overflow || o1 || o2
            previousWasDigit = true
            j += 1
        }
        guard previousWasDigit else {
            throw error("expected digits after the prefix: \(quoted(token))", at: token.lowerBound)
        }
        guard !overflow, value <= UInt64(Int64.max) else {
            throw error("integer \(text(token)) does not fit in 64 bits", at: token.lowerBound)
        }
        return Int64(value)
    }

    /// `'token'` for messages.
    private func quoted(_ token: Range<Int>) -> String { "'" + text(token) + "'" }

    // MARK: - Dates and times

    /// The two-digit number at `offset`, or nil.
    @inline(__always) private func twoDigits(at offset: Int) -> Int? {
        guard offset + 1 < bytes.count, TOMLByte.isDigit(bytes[offset]), TOMLByte.isDigit(bytes[offset + 1]) else {
            return nil
        }
        return Int(bytes[offset] - TOMLByte.zero) * 10 + Int(bytes[offset + 1] - TOMLByte.zero)
    }

    /// Reads a local date, a local date-time or an offset date-time (at four digits and `-`).
    private mutating func parseDateOrDateTime() throws(TOMLError) -> TOMLValue {
        let start = index
        let year =
            Int(bytes[start] - TOMLByte.zero) * 1000 + Int(bytes[start + 1] - TOMLByte.zero) * 100
            + Int(bytes[start + 2] - TOMLByte.zero) * 10 + Int(bytes[start + 3] - TOMLByte.zero)
        guard let month = twoDigits(at: start + 5), start + 7 < bytes.count, bytes[start + 7] == TOMLByte.minus,
            let day = twoDigits(at: start + 8)
        else {
            throw error("invalid date: expected YYYY-MM-DD", at: start)
        }
        guard (1...12).contains(month) else {
            throw error("invalid date \(text(start..<start + 10)): there is no month \(month)", at: start)
        }
        let days = CivilCalendar.daysInMonth(month, year: year)
        guard (1...days).contains(day) else {
            throw error("invalid date \(text(start..<start + 10)): that month has \(days) days", at: start)
        }
        // A date of more than four digits' year is no date: `10000-01-01` is caught here.
        if start + 10 < bytes.count, TOMLByte.isDigit(bytes[start + 10]) {
            throw error("invalid date: expected YYYY-MM-DD", at: start)
        }
        index = start + 10
        let date = TOMLLocalDate(year: year, month: month, day: day)
        guard index < bytes.count else { return .localDate(date) }
        let separator = bytes[index]
        let hasTime =
            separator | 0x20 == UInt8(ascii: "t")
            || (separator == TOMLByte.space && index + 1 < bytes.count && TOMLByte.isDigit(bytes[index + 1]))
        guard hasTime else { return .localDate(date) }
        index += 1
        let time = try parseTime()
        let local = TOMLLocalDateTime(date: date, time: time)
        guard index < bytes.count else { return .localDateTime(local) }
        let next = bytes[index]
        if next | 0x20 == UInt8(ascii: "z") {
            index += 1
            return .offsetDateTime(TOMLOffsetDateTime(local: local, offsetMinutes: 0))
        }
        guard next == TOMLByte.plus || next == TOMLByte.minus else { return .localDateTime(local) }
        let offsetStart = index
        guard let hours = twoDigits(at: index + 1), index + 3 < bytes.count, bytes[index + 3] == TOMLByte.colon,
            let minutes = twoDigits(at: index + 4)
        else {
            throw error("invalid time offset: expected +HH:MM or -HH:MM", at: offsetStart)
        }
        guard hours <= 23, minutes <= 59 else {
            throw error("invalid time offset \(text(offsetStart..<offsetStart + 6))", at: offsetStart)
        }
        index += 6
        let offset = (hours * 60 + minutes) * (next == TOMLByte.minus ? -1 : 1)
        return .offsetDateTime(TOMLOffsetDateTime(local: local, offsetMinutes: offset))
    }

    /// Reads `HH:MM:SS` with optional fractional seconds (truncated to nanoseconds).
    private mutating func parseTime() throws(TOMLError) -> TOMLLocalTime {
        let start = index
        guard let hour = twoDigits(at: start), start + 2 < bytes.count, bytes[start + 2] == TOMLByte.colon,
            let minute = twoDigits(at: start + 3), start + 5 < bytes.count, bytes[start + 5] == TOMLByte.colon,
            let second = twoDigits(at: start + 6)
        else {
            throw error("invalid time: expected HH:MM:SS", at: start)
        }
        guard hour <= 23, minute <= 59, second <= 60 else {
            throw error("invalid time \(text(start..<start + 8))", at: start)
        }
        index = start + 8
        var nanosecond = 0
        if index < bytes.count, bytes[index] == TOMLByte.dot {
            index += 1
            guard index < bytes.count, TOMLByte.isDigit(bytes[index]) else {
                throw error("a decimal point in a time must be followed by digits", at: index)
            }
            var digits = 0
            while index < bytes.count, TOMLByte.isDigit(bytes[index]) {
                if digits < 9 {
                    nanosecond = nanosecond * 10 + Int(bytes[index] - TOMLByte.zero)
                    digits += 1
                }
                index += 1
            }
            while digits < 9 {
                nanosecond *= 10
                digits += 1
            }
        }
        if index < bytes.count, TOMLByte.isDigit(bytes[index]) || bytes[index] == TOMLByte.colon {
            throw error("invalid time: expected HH:MM:SS", at: start)
        }
        return TOMLLocalTime(hour: hour, minute: minute, second: second, nanosecond: nanosecond)
    }

}
