import Foundation

/// Spend caps in micro-units (hour, day, month); `.max` when not set.
struct CostCaps: Hashable, Sendable {
    var caps: InlineArray<3, Int64> = [.max, .max, .max]

    init(_ limits: PolicyLimits) {
        caps = [limits.costPerHour?.microUnits ?? .max, limits.costPerDay?.microUnits ?? .max, limits.costPerMonth?.microUnits ?? .max]
    }

    subscript(index: Int) -> Int64 { caps[index] }

    var isEmpty: Bool { caps[0] == .max && caps[1] == .max && caps[2] == .max }

    static func == (lhs: CostCaps, rhs: CostCaps) -> Bool {
        lhs.caps[0] == rhs.caps[0] && lhs.caps[1] == rhs.caps[1] && lhs.caps[2] == rhs.caps[2]
    }

    func hash(into hasher: inout Hasher) {
        for i in 0..<3 { hasher.combine(caps[i]) }
    }
}

/// Where a provider's calendar months begin and end on the service's clock: its time zone and
/// the service's wall clock. A month is found from scratch once per month per key, so this
/// uses Foundation's calendar rather than a faster rule of its own.
struct MonthCalendar: Sendable {
    let timeZone: TimeZone
    let wallClock: WallClock

    /// The month holding `now`, as service instants `[start, end)`.
    func month(containing now: Int64) -> (start: Int64, end: Int64) {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        let date = wallClock.date(at: now)
        guard let interval = calendar.dateInterval(of: .month, for: date) else { return (now, .max) }
        // The end is the next month's first instant; `nanos(at:)` rounds up, so a call at the
        // very first nanosecond of a month is never counted in the one before.
        return (wallClock.nanos(at: interval.start), max(now + 1, wallClock.nanos(at: interval.end)))
    }
}

/// A provider's spend budgets as the gate enforces them: the caps of its own level, its prices
/// and its calendar. Immutable; a change of limits makes a new one. Kept beside the compiled
/// limits (``ProviderTable``), not in them, so that providers without budgets pay one flag test
/// (``CompiledLimits/hasCostCaps``).
final class CostPolicy: Sendable {
    /// The caps of the provider's own level (for nested limits, the account's).
    let caps: CostCaps
    /// For nested limits: the caps of each scope kind that has some.
    let kindCaps: [String: CostCaps]
    let prices: PriceTable
    let calendar: MonthCalendar

    init(caps: CostCaps, kindCaps: [String: CostCaps] = [:], prices: PriceTable, calendar: MonthCalendar) {
        self.caps = caps
        self.kindCaps = kindCaps
        self.prices = prices
        self.calendar = calendar
    }

    /// The windows of a level with `caps`, or `nil` when it has none.
    func windows(_ caps: CostCaps?, now: Int64, firstSequence: UInt64) -> SpendWindows? {
        guard let caps, !caps.isEmpty else { return nil }
        return SpendWindows(caps: caps, calendar: calendar, now: now, firstSequence: firstSequence)
    }

    /// `spend` moved to `caps`: kept (with what stays capped), made, or dropped.
    func adopt(_ spend: SpendWindows?, _ caps: CostCaps?, now: Int64, firstSequence: UInt64) -> SpendWindows? {
        guard let caps, !caps.isEmpty else { return nil }
        guard let spend else { return SpendWindows(caps: caps, calendar: calendar, now: now, firstSequence: firstSequence) }
        spend.advance(to: now)
        spend.adopt(caps: caps, calendar: calendar, now: now, firstSequence: firstSequence)
        return spend
    }
}

/// One key's spend: an hour and a day sliding window (the token windows' arithmetic, counting
/// micro-units as "tokens") and the calendar month's total, each kept only while its cap is set.
///
/// A class for the same reason as ``SlidingWindow``: the machine that holds it is used in place
/// under the key's lock.
final class SpendWindows {
    private(set) var caps: CostCaps
    private(set) var calendar: MonthCalendar
    @exclusivity(unchecked) private var hour: SlidingWindow?
    @exclusivity(unchecked) private var day: SlidingWindow?
    @exclusivity(unchecked) private var monthStart: Int64 = .min
    @exclusivity(unchecked) private var monthEnd: Int64 = .min
    @exclusivity(unchecked) private(set) var monthTotal: Int64 = 0
    /// Admissions before it are not in the month's total (its cap was set later).
    @exclusivity(unchecked) private var monthFirstSequence: UInt64

    init(caps: CostCaps, calendar: MonthCalendar, now: Int64, firstSequence: UInt64) {
        self.caps = caps
        self.calendar = calendar
        monthFirstSequence = firstSequence
        adopt(caps: caps, calendar: calendar, now: now, firstSequence: firstSequence)
    }

    /// Keeps the windows whose caps stay set (with their spend), adds the missing ones empty.
    func adopt(caps new: CostCaps, calendar newCalendar: MonthCalendar, now: Int64, firstSequence: UInt64) {
        if new[0] == .max {
            hour = nil
        } else if hour == nil {
            hour = SlidingWindow(length: PolicyWindow.hour.nanoseconds, now: now, firstSequence: firstSequence)
        }
        if new[1] == .max {
            day = nil
        } else if day == nil {
            day = SlidingWindow(length: PolicyWindow.day.nanoseconds, now: now, firstSequence: firstSequence)
        }
        let zoneChanged = newCalendar.timeZone != calendar.timeZone
        if new[2] == .max || caps[2] == .max || zoneChanged {
            // Started (or stopped) now: nothing before is in it. A new zone starts afresh too:
            // its months are other intervals.
            monthTotal = 0
            monthStart = .min
            monthEnd = .min
            monthFirstSequence = firstSequence
        }
        caps = new
        calendar = newCalendar
    }

    /// Drops spend that left the windows, and starts a new month when one began.
    func advance(to now: Int64) {
        hour?.advance(to: now)
        day?.advance(to: now)
        if caps[2] != .max, now >= monthEnd {
            (monthStart, monthEnd) = calendar.month(containing: now)
            monthTotal = 0
        }
    }

    /// Why a call costing `cost` does not fit (windows advanced): the cap and when it would fit;
    /// `exceeded` when the cost is above the cap itself, so that no wait helps.
    func refusal(cost: Int64, now: Int64) -> Rejection? {
        for index in 0..<3 where caps[index] != .max {
            let cap = caps[index]
            let kind = PolicyCostCap.at(index)
            if cost > cap { return Rejection(cost: kind, retryAt: nil, exceededCap: cap) }
            let fits: Bool
            switch index {
            case 0: fits = hour?.fits(tokens: cost, requestCap: .max, tokenCap: cap) != false
            case 1: fits = day?.fits(tokens: cost, requestCap: .max, tokenCap: cap) != false
            default: fits = monthTotal <= cap - cost
            }
            guard !fits else { continue }
            let window = index == 0 ? hour : day
            let at =
                index == 2
                ? monthEnd : window?.earliestFit(requests: 0, tokens: cost, requestCap: .max, tokenCap: cap, now: now) ?? now
            return Rejection(cost: kind, retryAt: max(at, now + 1))
        }
        return nil
    }

    /// Records an admitted call's cost at `now` (advancing first: a month that began since the
    /// last look must not receive it in the month before's total).
    func record(cost: Int64, now: Int64) {
        advance(to: now)
        hour?.record(tokens: cost)
        day?.record(tokens: cost)
        if caps[2] != .max { monthTotal = monthTotal.clampedAdding(cost) }
    }

    /// Whether the month's total holds a call admitted at `time`.
    private func monthHolds(_ admission: Admission) -> Bool {
        caps[2] != .max && admission.sequence >= monthFirstSequence && admission.time >= monthStart && admission.time < monthEnd
    }

    /// Whether replacing a call's cost by `delta` more overflows no window.
    func canAdjust(_ admission: Admission, by delta: Int64) -> Bool {
        let (time, sequence) = (admission.time, admission.sequence)
        return hour?.canAdjust(admittedAt: time, sequence: sequence, by: delta) != false
            && day?.canAdjust(admittedAt: time, sequence: sequence, by: delta) != false
            && (!monthHolds(admission) || !monthTotal.addingReportingOverflow(delta).overflow)
    }

    /// Replaces a call's cost by `delta` more in every window still holding it.
    func adjust(_ admission: Admission, by delta: Int64) {
        let (time, sequence) = (admission.time, admission.sequence)
        hour?.adjust(admittedAt: time, sequence: sequence, by: delta)
        day?.adjust(admittedAt: time, sequence: sequence, by: delta)
        if monthHolds(admission) { monthTotal = max(0, monthTotal + delta) }
    }

    /// Forgets all spend (``GateStateMachine/reset(now:)``).
    func clear(firstSequence: UInt64) {
        hour?.clear(firstSequence: firstSequence)
        day?.clear(firstSequence: firstSequence)
        monthTotal = 0
        monthFirstSequence = firstSequence
    }

    /// Whether no window holds spend (advanced): the key may be forgotten only then, or a
    /// month's spend would be lost with it.
    var isEmpty: Bool { hour?.isEmpty != false && day?.isEmpty != false && monthTotal == 0 }

    /// When some spend next leaves a window.
    func nextExpiry() -> Int64? {
        let month: Int64? = monthTotal > 0 ? monthEnd : nil
        return [hour?.nextExpiry(), day?.nextExpiry(), month].compactMap { $0 }.min()
    }

    /// The spend per capped window (advanced), in micro-units.
    var usage: [(cap: PolicyCostCap, spent: Int64, limit: Int64, resetsAt: Int64?)] {
        var result: [(PolicyCostCap, Int64, Int64, Int64?)] = []
        if let hour { result.append((.costPerHour, hour.tokenTotal, caps[0], nil)) }
        if let day { result.append((.costPerDay, day.tokenTotal, caps[1], nil)) }
        if caps[2] != .max { result.append((.costPerMonth, monthTotal, caps[2], monthEnd)) }
        return result
    }
}
