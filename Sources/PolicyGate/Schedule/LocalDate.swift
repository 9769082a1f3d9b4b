import Foundation
internal import PolicyGateTOML

/// A calendar day on the wall calendar of a schedule's time zone, such as `2026-12-25`.
///
/// A schedule entry with ``PolicyScheduleEntry/dates`` applies for whole local days: from local
/// midnight to the next local midnight in ``PolicySchedule/timeZone``, however long that day is.
/// Days follow the proleptic Gregorian calendar.
public struct LocalDate: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The year, 1 to 9999 for dates that were parsed or built from fields.
    public let year: Int
    /// The month, 1 (January) to 12.
    public let month: Int
    /// The day of the month, 1 to 28, 29, 30 or 31.
    public let day: Int

    /// Creates a date from its fields, checking that the day exists.
    /// - Throws: ``ScheduleError`` naming the first field out of range (without a column).
    public init(year: Int, month: Int, day: Int) throws(ScheduleError) {
        try Self.check(year: year, month: month, day: day, columns: nil)
        self.year = year
        self.month = month
        self.day = day
    }

    /// Parses an ISO 8601 calendar date, `yyyy-mm-dd` (four-digit year, two-digit month and day).
    ///
    /// `2026-02-30` and `2026-13-01` are rejected: the date must exist.
    /// - Throws: ``ScheduleError`` with the 1-based ``ScheduleError/column`` of the bad part.
    public init(_ text: String) throws(ScheduleError) {
        let characters = Array(text)
        let shapeIsValid =
            characters.count == 10
            && characters[4] == "-" && characters[7] == "-"
            && [0, 1, 2, 3, 5, 6, 8, 9].allSatisfy { characters[$0].isASCII && characters[$0].isNumber }
        guard shapeIsValid else {
            // Point at the first character that breaks the shape, so "2026-1-05" says column 7.
            let pattern = Array("dddd-dd-dd")
            var column = min(characters.count, pattern.count) + 1
            for index in 0..<min(characters.count, pattern.count) {
                let ok =
                    pattern[index] == "-"
                    ? characters[index] == "-"
                    : characters[index].isASCII && characters[index].isNumber
                if !ok { column = index + 1; break }
            }
            throw ScheduleError("expected a date as yyyy-mm-dd, got '\(text)'", column: column)
        }
        func number(_ range: Range<Int>) -> Int {
            range.reduce(0) { $0 * 10 + Int(characters[$1].asciiValue! - 48) }
        }
        let year = number(0..<4), month = number(5..<7), day = number(8..<10)
        try Self.check(year: year, month: month, day: day, columns: (1, 6, 9))
        self.year = year
        self.month = month
        self.day = day
    }

    /// The local day that `date` falls on in `timeZone`.
    public init(_ date: Date, in timeZone: TimeZone) {
        let seconds = clampedSeconds(date)
        let local = seconds + timeZone.secondsFromGMT(for: date)
        self.init(dayNumber: floorDivide(local, 86_400))
    }

    /// The date as `yyyy-mm-dd`.
    public var description: String {
        func pad(_ value: Int, _ width: Int) -> String {
            let digits = String(value)
            return String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        return "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))"
    }

    /// Whether `lhs` is an earlier day than `rhs`.
    public static func < (lhs: LocalDate, rhs: LocalDate) -> Bool {
        (lhs.year, lhs.month, lhs.day) < (rhs.year, rhs.month, rhs.day)
    }

    // MARK: - Civil-day arithmetic

    /// Days since 1970-01-01 (negative before it).
    var dayNumber: Int { daysFromCivil(year: year, month: month, day: day) }

    /// The date of a day number; exact for every representable day.
    init(dayNumber: Int) {
        let civil = CivilDay(dayNumber)
        year = civil.year
        month = civil.month
        day = civil.day
    }

    private static func check(year: Int, month: Int, day: Int, columns: (Int, Int, Int)?) throws(ScheduleError) {
        guard (1...9999).contains(year) else {
            throw ScheduleError("year \(year) is out of range 1-9999", column: columns?.0)
        }
        guard (1...12).contains(month) else {
            throw ScheduleError("month \(month) is out of range 1-12", column: columns?.1)
        }
        let length = daysInMonth(year: year, month: month)
        guard (1...length).contains(day) else {
            throw ScheduleError(
                "day \(day) is out of range 1-\(length) for \(year)-\(month < 10 ? "0" : "")\(month)",
                column: columns?.2)
        }
    }
}

/// A day's calendar fields, computed once so that matching a day costs no further division.
struct CivilDay: Sendable {
    let year: Int
    let month: Int
    let day: Int
    /// 0 = Sunday … 6 = Saturday, as in cron.
    let weekday: Int

    /// The fields of a day number (days since 1970-01-01).
    ///
    /// A handful of integer divisions, no `Calendar`.
    init(_ dayNumber: Int) {
        (year, month, day) = CivilCalendar.date(dayNumber: dayNumber)
        // 1970-01-01 was a Thursday (4).
        weekday = positiveModulo(dayNumber + 4, 7)
    }

    /// The day number of the first day of the following month.
    func firstOfNextMonth(dayNumber: Int) -> Int {
        dayNumber + daysInMonth(year: year, month: month) - day + 1
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
func daysFromCivil(year: Int, month: Int, day: Int) -> Int {
    CivilCalendar.dayNumber(year: year, month: month, day: day)
}

/// The number of days in a month of the proleptic Gregorian calendar.
func daysInMonth(year: Int, month: Int) -> Int {
    CivilCalendar.daysInMonth(month, year: year)
}

/// `a / b` rounded towards minus infinity (`b > 0`).
func floorDivide(_ a: Int, _ b: Int) -> Int {
    a >= 0 ? a / b : -((-a + b - 1) / b)
}

/// `a / b` rounded towards plus infinity (`b > 0`).
func ceilingDivide(_ a: Int, _ b: Int) -> Int {
    -floorDivide(-a, b)
}

/// `a mod b` in `0..<b` (`b > 0`).
func positiveModulo(_ a: Int, _ b: Int) -> Int {
    let r = a % b
    return r < 0 ? r + b : r
}

/// Whole seconds since 1970 at or before `date`, kept within ±30,000 years so that arithmetic on
/// it cannot overflow even for `Date.distantFuture` or an infinite interval.
func clampedSeconds(_ date: Date) -> Int {
    let interval = date.timeIntervalSince1970
    guard !interval.isNaN else { return 0 }
    let bound = 1e12
    return Int(min(max(interval, -bound), bound).rounded(.down))
}
