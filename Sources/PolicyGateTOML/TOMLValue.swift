/// A place in a TOML document: 1-based line and column. Columns count Unicode scalars, so a
/// position points at the same character in any editor that shows scalars.
public struct TOMLPosition: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// The line, from 1.
    public var line: Int
    /// The column, from 1, in Unicode scalars.
    public var column: Int

    /// Creates a position.
    public init(line: Int, column: Int) {
        self.line = line
        self.column = column
    }

    /// Orders positions as they appear in the document.
    public static func < (lhs: TOMLPosition, rhs: TOMLPosition) -> Bool {
        (lhs.line, lhs.column) < (rhs.line, rhs.column)
    }

    /// `line L, column C`.
    public var description: String { "line \(line), column \(column)" }
}

/// One value of a TOML document.
///
/// Equality compares values only, never where they were written; two `nan` floats are not
/// equal, as in Swift. Date and time cases are stored out of line: they are rare, and keeping
/// them inline would double the size of every value in a table.
public enum TOMLValue: Sendable, Hashable {
    /// A string.
    case string(String)
    /// A 64-bit signed integer (the range TOML 1.0 requires).
    case integer(Int64)
    /// A 64-bit float, `inf` and `nan` included.
    case float(Double)
    /// `true` or `false`.
    case boolean(Bool)
    /// A date-time with an offset: an instant.
    indirect case offsetDateTime(TOMLOffsetDateTime)
    /// A date-time without an offset.
    indirect case localDateTime(TOMLLocalDateTime)
    /// A date without a time or an offset.
    indirect case localDate(TOMLLocalDate)
    /// A time of day without a date or an offset.
    indirect case localTime(TOMLLocalTime)
    /// An array; its elements may be of different types.
    case array([TOMLValue])
    /// A table (standard, inline, or an element of an array of tables).
    case table(TOMLTable)

    /// The TOML name of the value's type, as error messages use it: `string`, `integer`,
    /// `float`, `boolean`, `offset date-time`, `local date-time`, `local date`, `local time`,
    /// `array`, `table`.
    public var typeName: String {
        switch self {
        case .string: "string"
        case .integer: "integer"
        case .float: "float"
        case .boolean: "boolean"
        case .offsetDateTime: "offset date-time"
        case .localDateTime: "local date-time"
        case .localDate: "local date"
        case .localTime: "local time"
        case .array: "array"
        case .table: "table"
        }
    }
}

/// A calendar date as written in TOML (`1979-05-27`).
public struct TOMLLocalDate: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The year, 0...9999.
    public var year: Int
    /// The month, 1...12.
    public var month: Int
    /// The day of the month, 1...31 (checked against the month and leap years).
    public var day: Int

    /// Creates a date; the parser checks its fields, this initialiser does not.
    public init(year: Int, month: Int, day: Int) {
        self.year = year
        self.month = month
        self.day = day
    }

    /// RFC 3339 form, `YYYY-MM-DD`.
    public var description: String {
        "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))"
    }
}

/// A time of day as written in TOML (`07:32:00.999`).
public struct TOMLLocalTime: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The hour, 0...23.
    public var hour: Int
    /// The minute, 0...59.
    public var minute: Int
    /// The second, 0...60 (60 for a leap second).
    public var second: Int
    /// Fractional seconds in nanoseconds, 0...999_999_999; digits beyond nanoseconds are
    /// truncated, as TOML allows.
    public var nanosecond: Int

    /// Creates a time; the parser checks its fields, this initialiser does not.
    public init(hour: Int, minute: Int, second: Int, nanosecond: Int = 0) {
        self.hour = hour
        self.minute = minute
        self.second = second
        self.nanosecond = nanosecond
    }

    /// RFC 3339 form, `HH:MM:SS` with a fraction only when it is not zero.
    public var description: String {
        var text = "\(pad(hour, 2)):\(pad(minute, 2)):\(pad(second, 2))"
        if nanosecond != 0 {
            var fraction = pad(nanosecond, 9)
            while fraction.hasSuffix("0") { fraction.removeLast() }
            text += "." + fraction
        }
        return text
    }
}

/// A date and a time without an offset (`1979-05-27T07:32:00`).
public struct TOMLLocalDateTime: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The date.
    public var date: TOMLLocalDate
    /// The time of day.
    public var time: TOMLLocalTime

    /// Creates a local date-time.
    public init(date: TOMLLocalDate, time: TOMLLocalTime) {
        self.date = date
        self.time = time
    }

    /// RFC 3339 form, `YYYY-MM-DDTHH:MM:SS[.fraction]`.
    public var description: String { "\(date)T\(time)" }
}

/// A date-time with an offset from UTC (`1979-05-27T00:32:00-07:00`): one instant.
public struct TOMLOffsetDateTime: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The local date and time at the offset.
    public var local: TOMLLocalDateTime
    /// The offset from UTC in minutes, -1439...1439 (`Z` is 0).
    public var offsetMinutes: Int

    /// Creates an offset date-time.
    public init(local: TOMLLocalDateTime, offsetMinutes: Int) {
        self.local = local
        self.offsetMinutes = offsetMinutes
    }

    /// Seconds since 1970-01-01T00:00:00Z (whole seconds; see ``TOMLLocalTime/nanosecond``
    /// for the fraction). Leap seconds count as the next second's start.
    public var secondsSince1970: Int64 {
        let date = local.date, time = local.time
        let days = CivilCalendar.dayNumber(year: date.year, month: date.month, day: date.day)
        let seconds = Int64(days) * 86_400 + Int64(time.hour * 3600 + time.minute * 60 + time.second)
        return seconds - Int64(offsetMinutes) * 60
    }

    /// RFC 3339 form, with `Z` for a zero offset.
    public var description: String {
        guard offsetMinutes != 0 else { return "\(local)Z" }
        let sign = offsetMinutes < 0 ? "-" : "+"
        let minutes = abs(offsetMinutes)
        return "\(local)\(sign)\(pad(minutes / 60, 2)):\(pad(minutes % 60, 2))"
    }
}

/// `value` in decimal, left-padded with zeros to `width` digits.
func pad(_ value: Int, _ width: Int) -> String {
    let digits = String(value)
    return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
}
