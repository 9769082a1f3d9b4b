import Foundation

/// A standard five-field cron expression, read as the set of local minutes it covers:
/// `minute hour day-of-month month day-of-week`.
///
/// A schedule entry applies during every minute the expression matches, so `* 9-17 * * mon-fri`
/// covers 09:00 through 17:59 on weekdays, and `* 22-23,0-5 * * *` covers the night.
///
/// ## Supported syntax
/// Each field is a comma-separated list of items; an item is
/// - `*` (every value), a value `5`, or a range `1-5` (inclusive);
/// - any of those with a step: `*/15`, `10-50/10`;
/// - in the month field, the names `jan`…`dec`; in the day-of-week field, `sun`…`sat`
///   (three letters, any case), usable in ranges: `mon-fri`.
///
/// | Field        | Values                  |
/// |--------------|-------------------------|
/// | minute       | 0-59                    |
/// | hour         | 0-23                    |
/// | day of month | 1-31                    |
/// | month        | 1-12 or `jan`-`dec`     |
/// | day of week  | 0-7 or `sun`-`sat`; 0 and 7 are both Sunday |
///
/// Day of month and day of week combine as in Vixie cron: when both fields are restricted (neither
/// starts with `*`), a day matches if *either* matches, so `* * 1 * mon` covers the first of each
/// month and every Monday. When either field starts with `*` (including a stepped `*/2`), a day must
/// match both.
///
/// ## Not supported
/// These are rejected with an error rather than read differently from what was meant:
/// - a seconds or a year field (six or seven fields);
/// - the macros `@yearly`, `@daily`, `@hourly`, `@reboot` … (each names a single minute, which as a
///   schedule window would last one minute);
/// - Quartz and other extensions: `?`, `L`, `W`, `#`, `H`;
/// - a step after a single value (`5/15`): write the range, `5-59/15`;
/// - reversed ranges that wrap around (`22-5`): write `22-23,0-5`;
/// - full names (`monday`, `january`);
/// - steps as large as the field or larger (`*/60` or `*/90` in the minute field: steps restart
///   every hour, so "every 90 minutes" cannot be written in cron).
///
/// Days that do not exist never match: `* * 30 2 *` parses and covers no minute (and
/// ``PolicySchedule/validate()`` rejects an entry using it).
public struct CronExpression: Hashable, Sendable, CustomStringConvertible {
    /// The expression's fields joined by single spaces.
    public let description: String

    /// Bit `m` set for each minute `m` covered.
    let minutes: UInt64
    /// Bit `h` set for each hour `h` covered.
    let hours: UInt32
    /// Bit `d` set for each day of the month `d` (1-31) covered.
    let daysOfMonth: UInt32
    /// Bit `m` set for each month `m` (1-12) covered.
    let months: UInt16
    /// Bit `w` set for each weekday `w` (0 = Sunday … 6) covered; 7 is folded into 0.
    let weekdays: UInt8
    /// Whether the day-of-month field starts with `*` (Vixie cron's rule for combining day fields).
    let dayOfMonthIsStar: Bool
    /// Whether the day-of-week field starts with `*`.
    let weekdayIsStar: Bool

    static let allMinutes: UInt64 = (1 << 60) - 1
    static let allHours: UInt32 = (1 << 24) - 1

    /// Parses a five-field cron expression.
    ///
    /// Fields are separated by spaces or tabs; leading and trailing blanks are ignored.
    /// - Parameter text: Such as `* 9-17 * * mon-fri`.
    /// - Throws: ``ScheduleError`` with the 1-based ``ScheduleError/column`` of the offending part,
    ///   such as `column 3: hour 25 is out of range 0-23`.
    public init(_ text: String) throws(ScheduleError) {
        let characters = Array(text)
        var fields: [(text: ArraySlice<Character>, column: Int)] = []
        var index = 0
        while index < characters.count {
            if characters[index] == " " || characters[index] == "\t" { index += 1; continue }
            let start = index
            while index < characters.count, characters[index] != " ", characters[index] != "\t" { index += 1 }
            fields.append((characters[start..<index], start + 1))
        }
        if let first = fields.first, first.text.first == "@" {
            throw ScheduleError(
                "macros such as @daily are not supported: a schedule entry covers minutes; "
                    + "write the five fields, such as '* 9-17 * * mon-fri'",
                column: first.column)
        }
        guard fields.count == 5 else {
            let expected = "expected 5 fields (minute hour day-of-month month day-of-week), found \(fields.count)"
            if fields.count > 5 {
                throw ScheduleError(expected + "; seconds and year fields are not supported", column: fields[5].column)
            }
            throw ScheduleError(expected, column: fields.isEmpty ? 1 : characters.count + 1)
        }
        let minutes = try CronField.minute.parse(fields[0].text, column: fields[0].column)
        let hours = try CronField.hour.parse(fields[1].text, column: fields[1].column)
        let daysOfMonth = try CronField.dayOfMonth.parse(fields[2].text, column: fields[2].column)
        let months = try CronField.month.parse(fields[3].text, column: fields[3].column)
        var weekdays = try CronField.dayOfWeek.parse(fields[4].text, column: fields[4].column)
        if weekdays & (1 << 7) != 0 { weekdays = (weekdays | 1) & 0x7F }  // 7 is Sunday too
        self.minutes = minutes
        self.hours = UInt32(hours)
        self.daysOfMonth = UInt32(daysOfMonth)
        self.months = UInt16(months)
        self.weekdays = UInt8(weekdays)
        self.dayOfMonthIsStar = fields[2].text.first == "*"
        self.weekdayIsStar = fields[4].text.first == "*"
        self.description = fields.map { String($0.text) }.joined(separator: " ")
    }

    /// Whether the expression covers a local minute.
    /// - Parameters:
    ///   - date: The local day.
    ///   - hour: 0-23.
    ///   - minute: 0-59.
    public func matches(_ date: LocalDate, hour: Int, minute: Int) -> Bool {
        guard (0...23).contains(hour), (0...59).contains(minute) else { return false }
        return matchesDay(CivilDay(date.dayNumber)) && matchesTime(hour * 60 + minute)
    }

    /// Whether the expression covers the minute that `date` falls in, on the wall clock of `timeZone`.
    public func matches(_ date: Date, in timeZone: TimeZone) -> Bool {
        let local = clampedSeconds(date) + timeZone.secondsFromGMT(for: date)
        let minute = floorDivide(local, 60)
        let day = floorDivide(minute, 1_440)
        return matchesDay(CivilDay(day)) && matchesTime(minute - day * 1_440)
    }

    /// Two expressions are equal when they are written the same way (up to blanks between fields).
    public static func == (lhs: CronExpression, rhs: CronExpression) -> Bool {
        lhs.description == rhs.description
    }

    /// Hashes the expression's text.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(description)
    }

    // MARK: - Matching on precomputed fields

    /// Whether the month and day fields cover a day.
    func matchesDay(_ day: CivilDay) -> Bool {
        guard months & (1 << UInt16(day.month)) != 0 else { return false }
        let dayOfMonth = daysOfMonth & (1 << UInt32(day.day)) != 0
        let weekday = weekdays & (1 << UInt8(day.weekday)) != 0
        // Vixie cron: a `*` in either day field makes the two fields a conjunction.
        return dayOfMonthIsStar || weekdayIsStar ? dayOfMonth && weekday : dayOfMonth || weekday
    }

    /// Whether the hour and minute fields cover a minute of the day (0-1439).
    func matchesTime(_ minuteOfDay: Int) -> Bool {
        hours & (1 << UInt32(minuteOfDay / 60)) != 0 && minutes & (1 << UInt64(minuteOfDay % 60)) != 0
    }

    /// Whether the hour and minute fields cover every minute of the day.
    var coversWholeDays: Bool { minutes == Self.allMinutes && hours == Self.allHours }

    /// Whether the month and day fields are unrestricted, so that every day matches.
    var coversEveryDay: Bool {
        months == 0b1_1111_1111_1110 && daysOfMonth == 0xFFFF_FFFE && weekdays == 0x7F
    }

    /// Whether some day can ever match (`* * 31 4 *` cannot).
    var canMatchSomeDay: Bool {
        // With a restricted weekday under the either-rule, or any weekday under the both-rule with a
        // `*` day of month, some day of every month in the field matches.
        if dayOfMonthIsStar || !weekdayIsStar { return true }
        for month in 1...12 where months & (1 << UInt16(month)) != 0 {
            let longest = daysInMonth(year: 2000, month: month)  // 29 for February: leap years exist
            if daysOfMonth & (UInt32.max >> UInt32(31 - longest)) & ~1 != 0 { return true }  // bits 1...longest
        }
        return false
    }

    // MARK: - Next covered / uncovered minute within a day

    /// The first minute of the day at or after `minuteOfDay` that the time fields cover, if any.
    func firstCoveredMinute(from minuteOfDay: Int) -> Int? {
        let hour = minuteOfDay / 60, minute = minuteOfDay % 60
        if hours & (1 << UInt32(hour)) != 0 {
            let rest = minutes & ~((UInt64(1) << UInt64(minute)) - 1)
            if rest != 0 { return hour * 60 + rest.trailingZeroBitCount }
        }
        guard hour < 23 else { return nil }
        let laterHours = hours & ~((UInt32(1) << UInt32(hour + 1)) - 1)
        guard laterHours != 0 else { return nil }
        return laterHours.trailingZeroBitCount * 60 + minutes.trailingZeroBitCount
    }

    /// The first minute of the day at or after `minuteOfDay` that the time fields do not cover, if any.
    func firstUncoveredMinute(from minuteOfDay: Int) -> Int? {
        let hour = minuteOfDay / 60, minute = minuteOfDay % 60
        guard hours & (1 << UInt32(hour)) != 0 else { return minuteOfDay }
        let gaps = ~minutes & Self.allMinutes
        let restOfHour = gaps & ~((UInt64(1) << UInt64(minute)) - 1)
        if restOfHour != 0 { return hour * 60 + restOfHour.trailingZeroBitCount }
        guard hour < 23 else { return nil }
        if gaps != 0 {
            // Every covered hour has a gap, so the next hour has one (or is not covered at all).
            let next = hour + 1
            return hours & (1 << UInt32(next)) == 0 ? next * 60 : next * 60 + gaps.trailingZeroBitCount
        }
        let laterGaps = ~hours & Self.allHours & ~((UInt32(1) << UInt32(hour + 1)) - 1)
        return laterGaps == 0 ? nil : laterGaps.trailingZeroBitCount * 60
    }
}

/// One of the five fields: its range, its names and how it is called in messages.
private struct CronField {
    let name: String
    let range: ClosedRange<Int>
    let names: [String]  // names[i] is the value range.lowerBound + i

    static let minute = CronField(name: "minute", range: 0...59, names: [])
    static let hour = CronField(name: "hour", range: 0...23, names: [])
    static let dayOfMonth = CronField(name: "day of month", range: 1...31, names: [])
    static let month = CronField(
        name: "month", range: 1...12,
        names: ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"])
    static let dayOfWeek = CronField(
        name: "day of week", range: 0...7, names: ["sun", "mon", "tue", "wed", "thu", "fri", "sat"])

    /// The set of values a field's text covers, as bits.
    func parse(_ text: ArraySlice<Character>, column: Int) throws(ScheduleError) -> UInt64 {
        var bits: UInt64 = 0
        var itemStart = text.startIndex
        // Each comma-separated item, with its column: the slice keeps the indices of the whole text.
        while true {
            let itemEnd = text[itemStart...].firstIndex(of: ",") ?? text.endIndex
            let itemColumn = column + (itemStart - text.startIndex)
            guard itemStart < itemEnd else {
                throw ScheduleError("empty item in the \(name) list", column: itemColumn)
            }
            bits |= try parseItem(text[itemStart..<itemEnd], column: itemColumn)
            if itemEnd == text.endIndex { break }
            itemStart = itemEnd + 1
            if itemStart == text.endIndex {
                throw ScheduleError("empty item in the \(name) list", column: column + (itemStart - text.startIndex))
            }
        }
        return bits
    }

    /// `*`, `v`, `v-w`, each with an optional `/step` (a single value may not have one).
    private func parseItem(_ item: ArraySlice<Character>, column: Int) throws(ScheduleError) -> UInt64 {
        var position = item.startIndex
        func columnOf(_ index: Int) -> Int { column + (index - item.startIndex) }

        var low = range.lowerBound, high = range.upperBound
        var isRange = true
        if item[position] == "*" {
            position += 1
        } else {
            let first = try value(in: item, at: &position, column: columnOf(position))
            low = first.value
            high = first.value
            isRange = false
            if position < item.endIndex, item[position] == "-" {
                position += 1
                guard position < item.endIndex else {
                    throw ScheduleError("the range in the \(name) field has no end", column: columnOf(position))
                }
                let second = try value(in: item, at: &position, column: columnOf(position))
                high = second.value
                isRange = true
                if low > high {
                    throw ScheduleError(
                        "\(name) range \(first.text)-\(second.text) is reversed; ranges do not wrap around, "
                            + "write \(first.text)-\(range.upperBound == 7 ? 6 : range.upperBound),"
                            + "\(range.lowerBound)-\(second.text) instead",
                        column: column)
                }
            }
        }
        var step = 1
        if position < item.endIndex, item[position] == "/" {
            guard isRange else {
                throw ScheduleError(
                    "a step needs a range or '*' before it: write \(String(item[item.startIndex..<position]))-"
                        + "\(range.upperBound)\(String(item[position...])) or */…",
                    column: columnOf(position))
            }
            position += 1
            let stepColumn = columnOf(position)
            let digits = item[position...].prefix { $0.isASCII && $0.isNumber }
            guard !digits.isEmpty else {
                throw ScheduleError("expected a number after '/' in the \(name) field", column: stepColumn)
            }
            position += digits.count
            let span = range.upperBound - range.lowerBound
            guard digits.count <= 3, let parsed = Int(String(digits)), (1...span).contains(parsed) else {
                throw ScheduleError("\(name) step \(String(digits)) is out of range 1-\(span)", column: stepColumn)
            }
            step = parsed
        }
        guard position == item.endIndex else {
            throw unexpected(item[position], column: columnOf(position))
        }
        var bits: UInt64 = 0
        for value in stride(from: low, through: high, by: step) { bits |= 1 << UInt64(value) }
        return bits
    }

    /// A number or (in the month and day-of-week fields) a three-letter name.
    private func value(
        in item: ArraySlice<Character>, at position: inout Int, column: Int
    ) throws(ScheduleError) -> (value: Int, text: String) {
        let digits = item[position...].prefix { $0.isASCII && $0.isNumber }
        if !digits.isEmpty {
            position += digits.count
            let text = String(digits)
            guard digits.count <= 3, let value = Int(text), range.contains(value) else {
                throw ScheduleError(
                    "\(name) \(text) is out of range \(range.lowerBound)-\(range.upperBound)", column: column)
            }
            return (value, text)
        }
        let letters = item[position...].prefix { $0.isASCII && $0.isLetter }
        guard !letters.isEmpty else { throw unexpected(item[position], column: column) }
        let word = String(letters)
        if ["L", "W", "LW", "H"].contains(word.uppercased()) {
            throw ScheduleError("'\(word)' in the \(name) field is not supported (not standard cron)", column: column)
        }
        guard !names.isEmpty else {
            throw ScheduleError(
                "'\(word)' is not a valid \(name): names are allowed only in the month and day-of-week fields",
                column: column)
        }
        guard let index = names.firstIndex(of: word.lowercased()) else {
            throw ScheduleError(
                "unknown \(name) name '\(word)'; use \(names.first!)-\(names.last!) "
                    + "or \(range.lowerBound)-\(range.upperBound)",
                column: column)
        }
        position += letters.count
        return (range.lowerBound + index, word)
    }

    private func unexpected(_ character: Character, column: Int) -> ScheduleError {
        if "?LW#H".contains(character) {
            return ScheduleError(
                "'\(character)' in the \(name) field is not supported (not standard cron)", column: column)
        }
        return ScheduleError("unexpected character '\(character)' in the \(name) field", column: column)
    }
}
