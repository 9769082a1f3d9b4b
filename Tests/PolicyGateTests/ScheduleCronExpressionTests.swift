import Foundation
import PolicyGate
import Testing

@Suite("Schedule: cron expressions and local dates")
struct ScheduleCronExpressionTests {
    /// The minutes of an hour the expression covers (on a Wednesday, at 00:xx).
    func minutes(_ text: String) throws -> [Int] {
        let cron = try CronExpression(text)
        let day = try LocalDate("2026-03-04")
        return (0..<60).filter { cron.matches(day, hour: 0, minute: $0) }
    }

    /// The hours of a day the expression covers (on a Wednesday, at hh:00).
    func hours(_ text: String) throws -> [Int] {
        let cron = try CronExpression(text)
        let day = try LocalDate("2026-03-04")
        return (0..<24).filter { cron.matches(day, hour: $0, minute: 0) }
    }

    /// The days of a month of 2026 the expression covers at 12:00.
    func days(_ text: String, month: Int) throws -> [Int] {
        let cron = try CronExpression(text)
        return (1...31).filter { dayOfMonth in
            guard let date = try? LocalDate(year: 2026, month: month, day: dayOfMonth) else { return false }
            return cron.matches(date, hour: 12, minute: 0)
        }
    }

    @Test("lists, ranges and steps")
    func listsRangesSteps() throws {
        #expect(try minutes("* 0 * * *") == Array(0..<60))
        #expect(try minutes("*/15 0 * * *") == [0, 15, 30, 45])
        #expect(try minutes("10-50/10 0 * * *") == [10, 20, 30, 40, 50])
        #expect(try minutes("5,7-9,50-59/5 0 * * *") == [5, 7, 8, 9, 50, 55])
        #expect(try minutes("59 0 * * *") == [59])
        #expect(try hours("0 9-17 * * *") == Array(9...17))
        #expect(try hours("0 22-23,0-5 * * *") == [0, 1, 2, 3, 4, 5, 22, 23])
        #expect(try hours("0 */6 * * *") == [0, 6, 12, 18])
        #expect(try days("0 12 1-31/10 * *", month: 1) == [1, 11, 21, 31])
        #expect(try days("0 12 31 * *", month: 4).isEmpty)  // April has no 31st
    }

    @Test("month and weekday names in any case, 0 and 7 both Sunday")
    func names() throws {
        let months = try CronExpression("* * * JAN,mar-May,Dec *")
        let covered = try (1...12).filter { months.matches(try LocalDate(year: 2026, month: $0, day: 1), hour: 0, minute: 0) }
        #expect(covered == [1, 3, 4, 5, 12])
        // March 2026: the 1st is a Sunday.
        #expect(
            try days("0 12 * * Mon-FRI", month: 3) == [2, 3, 4, 5, 6, 9, 10, 11, 12, 13, 16, 17, 18, 19, 20, 23, 24, 25, 26, 27, 30, 31])
        #expect(try days("0 12 * * sat,sun", month: 3) == [1, 7, 8, 14, 15, 21, 22, 28, 29])
        #expect(try days("0 12 * * 7", month: 3) == [1, 8, 15, 22, 29])
        #expect(try days("0 12 * * 0", month: 3) == [1, 8, 15, 22, 29])
        #expect(try days("0 12 * * 5-7", month: 3) == [1, 6, 7, 8, 13, 14, 15, 20, 21, 22, 27, 28, 29])
        #expect(try days("0 12 * * */3", month: 3) == [1, 4, 7, 8, 11, 14, 15, 18, 21, 22, 25, 28, 29])
    }

    @Test("day of month and day of week: either when both are restricted, both when one starts with *")
    func dayFieldsCombineLikeVixieCron() throws {
        // March 2026: Mondays are 2, 9, 16, 23, 30.
        #expect(try days("0 12 1 * mon", month: 3) == [1, 2, 9, 16, 23, 30])
        #expect(try days("0 12 1-7 * *", month: 3) == Array(1...7))
        #expect(try days("0 12 * * mon", month: 3) == [2, 9, 16, 23, 30])
        // `*/2` starts with `*`, so the fields combine with "and": odd days that are Mondays.
        #expect(try days("0 12 */2 * mon", month: 3) == [9, 23])
        #expect(try days("0 12 13 * fri", month: 2) == [6, 13, 20, 27])
    }

    @Test("text is normalised; equality follows it")
    func description() throws {
        let cron = try CronExpression("  *  9-17 * *\tmon-fri ")
        #expect(cron.description == "* 9-17 * * mon-fri")
        #expect(cron == (try CronExpression("* 9-17 * * mon-fri")))
        #expect(cron != (try CronExpression("* 9-17 * * 1-5")))
    }

    @Test("matching an instant reads the zone's wall clock")
    func matchesInstant() throws {
        let cron = try CronExpression("* 9-17 * * mon-fri")
        let monday0830Z = try Date("2026-03-02T08:30:00Z", strategy: .iso8601)
        #expect(cron.matches(monday0830Z, in: try PolicySchedule.timeZone(named: "Europe/Berlin")))
        #expect(!cron.matches(monday0830Z, in: .gmt))
        #expect(!cron.matches(monday0830Z, in: try PolicySchedule.timeZone(named: "America/New_York")))
    }

    @Test(
        "invalid expressions are rejected with the column of the offending part",
        arguments: [
            ("* 25 * * *", 3, "hour 25 is out of range 0-23"),
            ("* * * *", 8, "expected 5 fields (minute hour day-of-month month day-of-week), found 4"),
            ("", 1, "found 0"),
            ("* * * * * 2026", 11, "seconds and year fields are not supported"),
            ("mon * * * *", 1, "'mon' is not a valid minute"),
            ("*/0 * * * *", 3, "minute step 0 is out of range 1-59"),
            ("*/90 * * * *", 3, "minute step 90 is out of range 1-59"),
            ("* 0-23/0 * * *", 8, "hour step 0 is out of range 1-23"),
            ("* 22-5 * * *", 3, "hour range 22-5 is reversed"),
            ("5/15 * * * *", 2, "a step needs a range or '*'"),
            ("* 9- * * *", 5, "has no end"),
            ("* * 0 * *", 5, "day of month 0 is out of range 1-31"),
            ("* * * 13 *", 7, "month 13 is out of range 1-12"),
            ("* * * foo *", 7, "unknown month name 'foo'"),
            ("* * * * 8", 9, "day of week 8 is out of range 0-7"),
            ("* * * * monday", 9, "unknown day of week name 'monday'"),
            ("1,,2 * * * *", 3, "empty item in the minute list"),
            ("1, * * * *", 3, "empty item in the minute list"),
            ("* * ? * *", 5, "'?' in the day of month field is not supported"),
            ("* * L * *", 5, "'L' in the day of month field is not supported"),
            ("* * * * mon#2", 12, "'#' in the day of week field is not supported"),
            ("* * 1W * *", 6, "'W' in the day of month field is not supported"),
            ("@daily", 1, "macros such as @daily are not supported"),
            ("* 9-17x * * *", 7, "unexpected character 'x' in the hour field"),
        ])
    func rejected(text: String, column: Int, message: String) throws {
        let error = try #require(throws: ScheduleError.self) { try CronExpression(text) }
        #expect(error.column == column, "\(error)")
        #expect(error.message.contains(message), "\(error)")
        #expect(error.description.hasPrefix("column \(column): "))
    }

    @Test("dates are yyyy-mm-dd and must exist")
    func dates() throws {
        let christmas = try LocalDate("2026-12-25")
        #expect((christmas.year, christmas.month, christmas.day) == (2026, 12, 25))
        #expect(christmas.description == "2026-12-25")
        #expect(try LocalDate("2024-02-29") < christmas)
        #expect(try LocalDate(year: 2026, month: 1, day: 1) == LocalDate("2026-01-01"))
        let cases: [(String, Int, String)] = [
            ("2026-02-29", 9, "day 29 is out of range 1-28 for 2026-02"),
            ("2026-04-31", 9, "day 31 is out of range 1-30 for 2026-04"),
            ("2026-13-01", 6, "month 13 is out of range 1-12"),
            ("0000-01-01", 1, "year 0 is out of range 1-9999"),
            ("2026-1-05", 7, "expected a date as yyyy-mm-dd"),
            ("2026/01/05", 5, "expected a date as yyyy-mm-dd"),
            ("2026-01-05T00:00", 11, "expected a date as yyyy-mm-dd"),
        ]
        for (text, column, message) in cases {
            let error = try #require(throws: ScheduleError.self) { try LocalDate(text) }
            #expect(error.column == column, "\(text): \(error)")
            #expect(error.message.contains(message), "\(text): \(error)")
        }
        #expect(throws: ScheduleError.self) { try LocalDate(year: 2100, month: 2, day: 29) }
        #expect(try LocalDate(year: 2000, month: 2, day: 29).day == 29)
    }

    @Test("the local day of an instant agrees with Calendar over four centuries")
    func localDayAgreesWithCalendar() throws {
        var calendar = Calendar(identifier: .gregorian)
        let zone = try PolicySchedule.timeZone(named: "Asia/Kolkata")
        calendar.timeZone = zone
        // Every 97th day from 1801 to 2200 (covers leap and century years), at 20:00 UTC (next day in
        // Kolkata) and 12:00 UTC.
        var seconds = -5_364_662_400.0  // 1800-01-01T00:00Z
        while seconds < 7_258_118_400 {  // 2200-01-01
            for time in [43_200.0, 72_000.0] {
                let date = Date(timeIntervalSince1970: seconds + time)
                let fields = calendar.dateComponents([.year, .month, .day], from: date)
                let local = LocalDate(date, in: zone)
                #expect([local.year, local.month, local.day] == [fields.year, fields.month, fields.day], "\(date)")
            }
            seconds += 97 * 86_400
        }
    }
}
