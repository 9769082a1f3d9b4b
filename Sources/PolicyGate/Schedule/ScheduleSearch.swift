/// A schedule entry prepared for matching: dates as sorted day numbers, and what can be known
/// about it without a clock.
///
/// Local time is counted in *local minutes*, minutes since 1970-01-01 00:00 on the zone's wall
/// clock; a day number is `localMinute / 1440` rounded down.
struct CompiledEntry: Sendable {
    /// When a next-change search ends.
    enum Flip: Equatable {
        /// The entry's match state first changes at this local minute.
        case at(Int)
        /// It does not change before the search limit.
        case notBefore
        /// It can never change again, whatever the local minute (even one repeated after clocks
        /// go back).
        case never
    }

    private let cron: CronExpression?
    /// The entry's dates as sorted, distinct day numbers.
    private let days: [Int]?
    /// Whether the entry applies at every minute.
    private let alwaysMatches: Bool
    /// Whether the entry can apply at no minute at all.
    private let neverMatches: Bool

    init(_ entry: PolicyScheduleEntry) {
        cron = entry.cron
        days = entry.dates.map { Array(Set($0.map(\.dayNumber))).sorted() }
        alwaysMatches = days == nil && (cron.map { $0.coversWholeDays && $0.coversEveryDay } ?? true)
        neverMatches = days?.isEmpty == true || cron.map { !$0.canMatchSomeDay } == true
    }

    /// Whether the entry applies during a local minute, given the fields of its day.
    func matches(day: Int, civil: CivilDay, minuteOfDay: Int) -> Bool {
        (cron?.matchesTime(minuteOfDay) ?? true) && matchesDay(day, civil)
    }

    private func matchesDay(_ day: Int, _ civil: CivilDay) -> Bool {
        if let days, !days.containsSorted(day) { return false }
        return cron?.matchesDay(civil) ?? true
    }

    /// The first local minute after `minute` and before `limit` at which the entry's match state
    /// differs from `matching` (its state at `minute`).
    func nextFlip(after minute: Int, matching: Bool, limit: Int) -> Flip {
        matching ? nextEnd(after: minute, limit: limit) : nextStart(after: minute, limit: limit)
    }

    /// The first matching minute after `minute`, skipping days and months the entry does not cover.
    private func nextStart(after minute: Int, limit: Int) -> Flip {
        if neverMatches { return .never }
        var day = floorDivide(minute + 1, 1_440)
        var minuteOfDay = minute + 1 - day * 1_440
        // Past the last date by more than a day: even a local hour repeated when clocks go back
        // (always less than a day) cannot reach a listed day again.
        if let last = days?.last, last + 1 < day { return .never }
        let limitDay = ceilingDivide(limit, 1_440)
        while day < limitDay {
            if matchesDay(day, CivilDay(day)) {
                let covered = if let cron { cron.firstCoveredMinute(from: minuteOfDay) } else { minuteOfDay }
                if let covered {
                    let start = day * 1_440 + covered
                    return start < limit ? .at(start) : .notBefore
                }
            }
            guard let next = nextMatchingDay(after: day, before: limitDay) else { return .notBefore }
            day = next
            minuteOfDay = 0
        }
        return .notBefore
    }

    /// The first minute after `minute` (a matching one) at which the entry no longer matches.
    private func nextEnd(after minute: Int, limit: Int) -> Flip {
        if alwaysMatches { return .never }
        var day = floorDivide(minute + 1, 1_440)
        var minuteOfDay = minute + 1 - day * 1_440
        let limitDay = ceilingDivide(limit, 1_440)
        while day * 1_440 + minuteOfDay < limit {
            guard matchesDay(day, CivilDay(day)) else { return .at(day * 1_440 + minuteOfDay) }
            if let gap = cron?.firstUncoveredMinute(from: minuteOfDay) {
                let end = day * 1_440 + gap
                return end < limit ? .at(end) : .notBefore
            }
            // The rest of the day is covered. With whole days covered, skip to the first day that
            // does not match; otherwise the next day has a gap, found by one more turn.
            if cron?.coversWholeDays ?? true {
                guard let next = nextUnmatchedDay(from: day + 1, before: limitDay) else { return .notBefore }
                return .at(next * 1_440)
            }
            day += 1
            minuteOfDay = 0
        }
        return .notBefore
    }

    /// The first day after `day` and before `limitDay` whose day fields and dates match.
    private func nextMatchingDay(after day: Int, before limitDay: Int) -> Int? {
        if let days {
            var index = days.firstIndexAbove(day)
            while index < days.count, days[index] < limitDay {
                if cron?.matchesDay(CivilDay(days[index])) ?? true { return days[index] }
                index += 1
            }
            return nil
        }
        guard let cron else { return day + 1 < limitDay ? day + 1 : nil }
        var candidate = day + 1
        while candidate < limitDay {
            let civil = CivilDay(candidate)
            if cron.months & (1 << UInt16(civil.month)) == 0 {
                candidate = civil.firstOfNextMonth(dayNumber: candidate)
            } else if cron.matchesDay(civil) {
                return candidate
            } else if cron.dayOfMonthIsStar || cron.weekdayIsStar {
                // Both day fields must match, so skip to the next day of the month the field covers
                // (February 29 is one jump, not 28 steps).
                let later = cron.daysOfMonth & (UInt32.max << UInt32(civil.day + 1))
                let next = later.trailingZeroBitCount  // 32 when none
                candidate =
                    next <= daysInMonth(year: civil.year, month: civil.month)
                    ? candidate + next - civil.day
                    : civil.firstOfNextMonth(dayNumber: candidate)
            } else {
                candidate += 1
            }
        }
        return nil
    }

    /// The first day at or after `day` and before `limitDay` on which the entry does not match.
    private func nextUnmatchedDay(from day: Int, before limitDay: Int) -> Int? {
        var candidate = day
        if let days {
            // Listed days are finite: walk the run of consecutive listed days that match.
            var index = days.firstIndexAbove(candidate - 1)
            while candidate < limitDay {
                guard index < days.count, days[index] == candidate,
                    cron?.matchesDay(CivilDay(candidate)) ?? true
                else { return candidate }
                candidate += 1
                index += 1
            }
            return nil
        }
        guard let cron else { return nil }
        // With both day fields unrestricted, a day matches exactly when its month does.
        let monthDecides = cron.daysOfMonth == 0xFFFF_FFFE && cron.weekdays == 0x7F
        while candidate < limitDay {
            let civil = CivilDay(candidate)
            if !cron.matchesDay(civil) { return candidate }
            candidate = monthDecides ? civil.firstOfNextMonth(dayNumber: candidate) : candidate + 1
        }
        return nil
    }
}

extension Array where Element == Int {
    /// The index of the first element greater than `value` in a sorted array (binary search).
    fileprivate func firstIndexAbove(_ value: Int) -> Int {
        var low = 0, high = count
        while low < high {
            let middle = (low + high) / 2
            if self[middle] <= value { low = middle + 1 } else { high = middle }
        }
        return low
    }

    /// Whether a sorted array contains `value` (binary search).
    fileprivate func containsSorted(_ value: Int) -> Bool {
        let index = firstIndexAbove(value) - 1
        return index >= 0 && self[index] == value
    }
}
