import Foundation

/// One rule of a ``PolicySchedule``: when it applies, and which caps it sets while it does.
///
/// An entry applies during the local minutes its ``cron`` expression covers, on the local days
/// listed in ``dates``. With both, both must hold (`dates` plus `* 9-17 * * *` is "these days,
/// from 09:00 to 17:59"); to apply on some dates *or* at some times, write two entries.
public struct PolicyScheduleEntry: Hashable, Sendable {
    /// The entry's name, shown in resolutions and in "closed by schedule <name>" messages.
    public var name: String
    /// The local minutes the entry covers; `nil` for every minute of the ``dates``.
    public var cron: CronExpression?
    /// The whole local days the entry is limited to; `nil` for every day the ``cron`` covers.
    public var dates: [LocalDate]?
    /// The caps the entry sets while it applies; caps it leaves `nil` come from the base limits.
    public var limits: PolicyLimits
    /// Whether nothing is admitted while the entry applies.
    public var isClosed: Bool
    /// Caps the entry sets for the scopes of a tier (``PolicyConfiguration/tiers``), by tier
    /// name: over the tier's own caps while the entry applies (`[limits.<provider>.schedule.tiers.<name>]`
    /// under the entry in TOML). Scopes with an override of their own are not affected.
    public var tierLimits: [String: PolicyLimits] = [:]

    /// Creates an entry.
    /// - Parameters:
    ///   - name: Shown in resolutions and messages.
    ///   - cron: The minutes covered, or `nil` for whole days.
    ///   - dates: The days covered, or `nil` for every day.
    ///   - limits: The caps overridden while the entry applies.
    ///   - isClosed: Whether the entry blocks admission altogether.
    public init(
        name: String, cron: CronExpression? = nil, dates: [LocalDate]? = nil,
        limits: PolicyLimits = .unlimited, isClosed: Bool = false
    ) {
        self.name = name
        self.cron = cron
        self.dates = dates
        self.limits = limits
        self.isClosed = isClosed
    }
}

/// Calendar-dependent caps for one provider: a time zone and an ordered list of entries, of which
/// the first that applies overrides the provider's base limits.
///
/// ```swift
/// let schedule = PolicySchedule(
///     timeZone: try PolicySchedule.timeZone(named: "Europe/Berlin"),
///     entries: [
///         PolicyScheduleEntry(name: "peak", cron: try CronExpression("* 9-17 * * mon-fri"),
///                             limits: PolicyLimits(requestsPerMinute: 200)),
///         PolicyScheduleEntry(name: "holidays", dates: [try LocalDate("2026-12-25")], isClosed: true),
///     ])
/// let now = schedule.resolve(base: PolicyLimits(requestsPerMinute: 500), at: date)
/// // now.limits, now.isClosed, and now.validUntil: keep `now` until the clock reaches it.
/// ```
///
/// Entries are evaluated on the local wall clock of ``timeZone``, so `* 9-17 * * *` covers 09:00 to
/// 17:59 local time on both sides of a daylight-saving change. When clocks go forward, the skipped
/// local minutes never occur and nothing covering only them applies; when clocks go back, the
/// repeated local minutes occur twice and an entry covering them applies both times
/// (`* 2 * * *` then lasts two real hours).
///
/// The type holds no clock: every query takes the instant it is about.
public struct PolicySchedule: Hashable, Sendable {
    /// The zone whose wall clock and calendar the entries are read in; UTC by default.
    public var timeZone: TimeZone
    /// The entries, in precedence order: the first that applies wins.
    public var entries: [PolicyScheduleEntry] {
        didSet { compiled = entries.map(CompiledEntry.init) }
    }
    /// ``entries`` with their dates turned into sorted day numbers, kept in step by `didSet`.
    private var compiled: [CompiledEntry]

    /// How far ahead the search for the next change looks (366 days). Beyond it, a resolution's
    /// ``Resolution/validUntil`` is the horizon itself: early, which is allowed, never late.
    public static let searchHorizon: TimeInterval = 366 * 86_400
    private static let horizonSeconds = 366 * 86_400

    /// Creates a schedule.
    /// - Parameters:
    ///   - timeZone: The zone the entries are read in.
    ///   - entries: The entries, first match wins.
    public init(timeZone: TimeZone = .gmt, entries: [PolicyScheduleEntry] = []) {
        self.timeZone = timeZone
        self.entries = entries
        self.compiled = entries.map(CompiledEntry.init)
    }

    /// The effective state of a provider at one instant.
    public struct Resolution: Hashable, Sendable, CustomStringConvertible {
        /// The base caps, overridden by the caps the applying entry sets.
        public var limits: PolicyLimits
        /// The name of the applying entry; `nil` when no entry applies and the base caps hold.
        public var entry: String?
        /// Whether the applying entry blocks admission.
        public var isClosed: Bool
        /// The first instant at which the resolution may differ (conservatively early, never late);
        /// `nil` when it never changes. A caller can keep the resolution until its clock reaches this.
        public var validUntil: Date?

        /// Creates a resolution.
        public init(limits: PolicyLimits, entry: String?, isClosed: Bool, validUntil: Date?) {
            self.limits = limits
            self.entry = entry
            self.isClosed = isClosed
            self.validUntil = validUntil
        }

        /// `closed by schedule <name>`, `<name>: <caps>` or `base: <caps>`.
        public var description: String {
            if isClosed { return "closed by schedule \(entry ?? "")" }
            return "\(entry ?? "base"): \(limits)"
        }

        /// Whether two resolutions set the same caps, entry and closed state, whatever their
        /// ``validUntil``: a caller re-resolving at `validUntil` can keep its derived state when so.
        public func hasSameEffect(as other: Resolution) -> Bool {
            limits == other.limits && entry == other.entry && isClosed == other.isClosed
        }
    }

    /// A change of effective state.
    public struct Transition: Hashable, Sendable, CustomStringConvertible {
        /// The instant the new state begins.
        public var date: Date
        /// The state from ``date`` on, as ``PolicySchedule/resolve(base:at:)`` returns it for ``date``.
        public var resolution: Resolution

        /// Creates a transition.
        public init(date: Date, resolution: Resolution) {
            self.date = date
            self.resolution = resolution
        }

        /// The instant in ISO 8601 (UTC) and the new state.
        public var description: String {
            "\(date.formatted(.iso8601)) \(resolution)"
        }
    }

    /// Looks up a time zone by its IANA name, such as `Europe/Berlin` (or `UTC`).
    ///
    /// Whatever the system's `TimeZone(identifier:)` accepts is accepted, which also includes
    /// fixed offsets such as `GMT+2`; names are case-sensitive.
    /// - Throws: ``ScheduleError`` for a name the system's time-zone database does not know,
    ///   suggesting the right spelling when only the case differs.
    public static func timeZone(named identifier: String) throws(ScheduleError) -> TimeZone {
        if let zone = TimeZone(identifier: identifier) { return zone }
        var message = "unknown time zone '\(identifier)'"
        let lowercased = identifier.lowercased()
        if let known = TimeZone.knownTimeZoneIdentifiers.first(where: { $0.lowercased() == lowercased }) {
            message += "; did you mean '\(known)'?"
        } else {
            message += "; use an IANA name such as 'Europe/Berlin' or 'UTC'"
        }
        throw ScheduleError(message)
    }

    /// Checks the entries for mistakes that parsing each field cannot see.
    ///
    /// Rejects an entry without a name, with neither `cron` nor `dates` (it would apply at every
    /// minute, which is what the base limits are for), with an empty `dates` list, with a cron
    /// expression that can never match (`* * 30 2 *`), and two entries with the same name. The caps
    /// themselves are checked by ``PolicyLimits/validate(provider:)``.
    /// - Throws: ``ScheduleError`` naming the entry through ``ScheduleError/entryIndex``.
    public func validate() throws(ScheduleError) {
        var seen: [String: Int] = [:]
        for (index, entry) in entries.enumerated() {
            guard !entry.name.isEmpty else {
                throw ScheduleError("a schedule entry needs a name", entryIndex: index)
            }
            if let first = seen[entry.name] {
                throw ScheduleError(
                    "schedule entry name '\(entry.name)' is used by entries \(first + 1) and \(index + 1)",
                    entryIndex: index)
            }
            seen[entry.name] = index
            if entry.cron == nil && entry.dates == nil {
                throw ScheduleError(
                    "schedule entry '\(entry.name)' needs cron or dates (or both)", entryIndex: index)
            }
            if let dates = entry.dates, dates.isEmpty {
                throw ScheduleError("schedule entry '\(entry.name)' has an empty dates list", entryIndex: index)
            }
            if let cron = entry.cron, !cron.canMatchSomeDay {
                throw ScheduleError(
                    "cron '\(cron)' of schedule entry '\(entry.name)' never matches: "
                        + "none of its days of the month exists in its months",
                    entryIndex: index)
            }
        }
    }

    /// The effective state at `date`: the base caps overridden by the first applying entry.
    ///
    /// The result's ``Resolution/validUntil`` is the first instant at which the applying entry (and
    /// so the caps or the closed state) can change, found by jumping over whole hours, days and
    /// months rather than stepping through minutes, and never searching more than
    /// ``searchHorizon`` ahead. Callers re-resolve only once their clock reaches it.
    /// - Parameters:
    ///   - base: The provider's own caps.
    ///   - date: The instant to resolve.
    /// - Complexity: O(*n*) in the number of entries for finding the applying entry; finding
    ///   `validUntil` costs, per entry up to the applying one, at most a few steps per hour of the
    ///   current day and per day or month skipped, bounded by the horizon.
    public func resolve(base: PolicyLimits, at date: Date) -> Resolution {
        let state = state(at: date)
        return resolution(state.entry, base: base, validUntil: state.validUntil)
    }

    /// Every change of effective state in `[start, end)`, in order.
    ///
    /// Changes include an entry starting or ending, one entry giving way to another, and the return
    /// to the base caps. A change exactly at `start` is listed; the state in force before `start` is
    /// not (use ``resolve(base:at:)`` for it). Consecutive states with equal caps, entry name and
    /// closed flag count as one.
    /// - Complexity: One ``resolve(base:at:)`` per change in the interval (plus one per
    ///   ``searchHorizon`` without change).
    public func transitions(base: PolicyLimits, from start: Date, to end: Date) -> [Transition] {
        guard start < end else { return [] }
        // Changes happen on whole seconds, so the state just before `start` is the state at the
        // whole second before it; a change at `start` itself then shows up as its validUntil.
        let probe = Date(timeIntervalSince1970: (start.timeIntervalSince1970.rounded(.up) - 1))
        var state = state(at: probe)
        var current = resolution(state.entry, base: base, validUntil: state.validUntil)
        var result: [Transition] = []
        while let next = state.validUntil, next < end {
            state = self.state(at: next)
            let resolved = resolution(state.entry, base: base, validUntil: state.validUntil)
            if !resolved.hasSameEffect(as: current) {
                result.append(Transition(date: next, resolution: resolved))
            }
            current = resolved
        }
        return result
    }

    /// The first instant at or after `date` at which no closed entry applies.
    ///
    /// - Returns: `date` itself when it is open; `nil` when the schedule stays closed for at least
    ///   ``searchHorizon`` after `date` (or forever).
    public func nextOpening(from date: Date) -> Date? {
        var instant = date
        var state = state(at: date)
        while let index = state.entry, entries[index].isClosed {
            guard let next = state.validUntil,
                next.timeIntervalSince(date) < Self.searchHorizon
            else { return nil }
            instant = next
            state = self.state(at: next)
        }
        return instant
    }

    /// Two schedules are equal when their zones and entries are.
    public static func == (lhs: PolicySchedule, rhs: PolicySchedule) -> Bool {
        lhs.timeZone == rhs.timeZone && lhs.entries == rhs.entries
    }

    /// Hashes the zone and the entries.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(timeZone)
        hasher.combine(entries)
    }

    // MARK: - Evaluation

    private func resolution(_ index: Int?, base: PolicyLimits, validUntil: Date?) -> Resolution {
        guard let index else {
            return Resolution(limits: base, entry: nil, isClosed: false, validUntil: validUntil)
        }
        let entry = entries[index]
        var limits = base
        for kind in PolicyLimitKind.allCases {
            if let cap = entry.limits[kind] { limits[kind] = cap }
        }
        return Resolution(limits: limits, entry: entry.name, isClosed: entry.isClosed, validUntil: validUntil)
    }

    /// The entry applying during a local minute (minutes since 1970-01-01 00:00 local).
    private func firstMatch(localMinute: Int) -> Int? {
        let day = floorDivide(localMinute, 1_440)
        let minuteOfDay = localMinute - day * 1_440
        let civil = CivilDay(day)
        return compiled.firstIndex { $0.matches(day: day, civil: civil, minuteOfDay: minuteOfDay) }
    }

    /// The applying entry at `date` and the first instant it can change.
    ///
    /// Local time is `t + offset(t)`; between two offset changes of the zone it is a shifted copy
    /// of UTC, so the search runs on local minutes one offset segment at a time. A candidate local
    /// minute `m` of a segment with offset `o` starts at the instant `60m - o`. At a segment's end
    /// local time jumps (forward or back) and the applying entry is checked afresh.
    private func state(at date: Date) -> (entry: Int?, validUntil: Date?) {
        let seconds = clampedSeconds(date)
        var offset = timeZone.secondsFromGMT(for: date)
        var minute = floorDivide(seconds + offset, 60)
        let entry = firstMatch(localMinute: minute)
        guard !compiled.isEmpty else { return (entry, nil) }
        // Only entries up to the applying one matter: later ones are shadowed while it applies, and
        // the state changes exactly when one of these starts (earlier ones) or stops (itself).
        let relevant = compiled[0...(entry ?? compiled.count - 1)]
        let horizon = seconds + Self.horizonSeconds
        var segmentStart = seconds
        while true {
            var segmentEnd = horizon
            if let change = timeZone.nextDaylightSavingTimeTransition(
                after: Date(timeIntervalSince1970: Double(segmentStart)))
            {
                segmentEnd = min(horizon, Int(change.timeIntervalSince1970.rounded(.up)))
            }
            // Local minutes whose start falls before the segment's end.
            var limit = ceilingDivide(segmentEnd + offset, 60)
            var found: Int?
            var changesNever = true
            for (index, candidate) in zip(relevant.indices, relevant) {
                switch candidate.nextFlip(after: minute, matching: index == entry, limit: limit) {
                case .at(let flip):
                    found = flip
                    limit = flip  // later entries need only look before it
                    changesNever = false
                case .notBefore:
                    changesNever = false
                case .never:
                    break
                }
            }
            if changesNever { return (entry, nil) }
            if let found { return (entry, Date(timeIntervalSince1970: Double(found * 60 - offset))) }
            if segmentEnd >= horizon { return (entry, Date(timeIntervalSince1970: Double(horizon))) }
            offset = timeZone.secondsFromGMT(for: Date(timeIntervalSince1970: Double(segmentEnd)))
            minute = floorDivide(segmentEnd + offset, 60)
            if firstMatch(localMinute: minute) != entry {
                return (entry, Date(timeIntervalSince1970: Double(segmentEnd)))
            }
            segmentStart = segmentEnd
        }
    }
}
