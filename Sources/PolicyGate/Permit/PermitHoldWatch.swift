import Synchronization

/// Reports permits held longer than the service's ``PolicyService/permitHoldWarning``, once
/// each (``PolicyTelemetry/didHoldPermitTooLong(_:)``): a permit that is never released (kept
/// in a stored property by mistake, say) holds its key's concurrency slot for good.
///
/// Kept beside the gate, not in it: while the warning is on, each admission is noted here with
/// its instant, and one timer per service wakes at the earliest instant a noted permit would
/// be held too long, reports every permit past the threshold, and sleeps until the next. A
/// release removes its note. The gate calls it only from its telemetry branches (there is
/// nothing to report to without telemetry), so a service without telemetry pays nothing, and
/// one with telemetry but the warning off pays an atomic load per admission, commit and release.
final class PermitHoldWatch: Sendable {
    /// A held permit: its key's storage (or shared lease) and its admission's sequence there.
    struct ID: Hashable {
        let owner: ObjectIdentifier
        let sequence: UInt64
    }

    struct Entry {
        let key: PolicyKey
        let admittedAt: Int64
        let estimated: Int
        var committed: Int?
    }

    struct State {
        var entries: [ID: Entry] = [:]
        var timer: Task<Void, Never>?
        /// When the timer wakes, `.max` when none is armed.
        var timerAt: Int64 = .max
    }

    let time: any TimeSource
    let telemetry: (any PolicyTelemetry)?
    /// The threshold in nanoseconds; 0 while the warning is off.
    private let threshold = Atomic<Int64>(0)
    /// How many permits are noted: a release looks no further while it is 0.
    private let tracked = Atomic<Int>(0)
    private let state = Locked(State())

    init(time: any TimeSource, telemetry: (any PolicyTelemetry)?) {
        self.time = time
        self.telemetry = telemetry
    }

    /// The threshold, or `nil` while the warning is off.
    var current: Duration? {
        let nanos = threshold.load(ordering: .relaxed)
        return nanos > 0 ? .nanoseconds(nanos) : nil
    }

    /// Sets the threshold (`nil`: off). Permits admitted from now on are watched; turning the
    /// warning off forgets the ones noted, and a new threshold applies to them at once.
    func set(_ newValue: Duration?) {
        let nanos = newValue.map { max(1, $0.nanosecondsSaturating) } ?? 0
        threshold.store(nanos, ordering: .relaxed)
        let cancelled = state.withLock { state -> Task<Void, Never>? in
            let old = state.timer
            state.timer = nil
            state.timerAt = .max
            if nanos == 0 {
                tracked.subtract(state.entries.count, ordering: .relaxed)
                state.entries = [:]
            } else if let first = state.entries.values.map(\.admittedAt).min() {
                arm(&state, at: first.clampedAdding(nanos))
            }
            return old
        }
        cancelled?.cancel()
    }

    /// Notes a permit admitted at `admittedAt`, if the warning is on.
    @inline(never)
    func admitted(_ id: ID, key: PolicyKey, at admittedAt: Int64, estimated: Int) {
        let nanos = threshold.load(ordering: .relaxed)
        guard nanos > 0 else { return }
        let due = admittedAt.clampedAdding(nanos)
        state.withLock { state in
            if state.entries.updateValue(Entry(key: key, admittedAt: admittedAt, estimated: estimated), forKey: id) == nil {
                tracked.add(1, ordering: .relaxed)
            }
            // Admissions come in (nearly) the order of their instants, so a timer is armed
            // already, for an earlier permit, unless none is noted.
            if due < state.timerAt { arm(&state, at: due) }
        }
    }

    /// Notes a commit of a watched permit, for its report.
    @inline(never)
    func committed(_ id: ID, tokens: Int) {
        guard tracked.load(ordering: .relaxed) > 0 else { return }
        state.withLock { state in state.entries[id]?.committed = tokens }
    }

    /// Forgets a released permit.
    @inline(never)
    func released(_ id: ID) {
        guard tracked.load(ordering: .relaxed) > 0 else { return }
        state.withLock { state in
            if state.entries.removeValue(forKey: id) != nil { tracked.subtract(1, ordering: .relaxed) }
        }
    }

    /// Cancels the timer and forgets every permit: the service is going away.
    func stop() {
        set(nil)
    }

    /// Arms the timer at `due`, replacing an earlier one (which finds itself replaced when it
    /// wakes and does nothing). Call under the lock.
    private func arm(_ state: inout State, at due: Int64) {
        state.timerAt = due
        let time = time
        state.timer = Task { [self] in
            do { try await time.sleep(until: due) } catch { return }
            fire(at: due)
        }
    }

    /// Reports every permit held past the threshold and arms the timer for the next one.
    private func fire(at due: Int64) {
        let now = time.now()
        let nanos = threshold.load(ordering: .relaxed)
        let reports = state.withLock { state -> [PolicyLongHoldEvent] in
            guard state.timerAt == due else { return [] }  // replaced meanwhile
            state.timer = nil
            state.timerAt = .max
            guard nanos > 0 else { return [] }
            var reports: [PolicyLongHoldEvent] = []
            var next = Int64.max
            for (id, entry) in state.entries {
                let held = now - entry.admittedAt
                if held >= nanos {
                    reports.append(
                        PolicyLongHoldEvent(
                            key: entry.key, held: .nanoseconds(held), threshold: .nanoseconds(nanos),
                            estimatedTokens: entry.estimated, committedTokens: entry.committed))
                    state.entries[id] = nil
                } else {
                    next = min(next, entry.admittedAt.clampedAdding(nanos))
                }
            }
            tracked.subtract(reports.count, ordering: .relaxed)
            if next != .max { arm(&state, at: next) }
            return reports
        }
        guard let telemetry else { return }
        // Longest held first; the table's order is arbitrary.
        for event in reports.sorted(by: { ($0.held, $1.key.description) > ($1.held, $0.key.description) }) {
            telemetry.didHoldPermitTooLong(event)
        }
    }
}

extension PermitHoldWatch.ID {
    /// A permit of a key kept in this process: its key's storage and its admission there.
    init(_ storage: KeyStorage, _ admission: Admission) {
        self.init(owner: ObjectIdentifier(storage), sequence: admission.sequence)
    }

    /// A permit of a provider with nested limits: its tree and its admission there (one
    /// sequence for the whole tree).
    init(_ gate: ChainGate, _ admission: Admission) {
        self.init(owner: ObjectIdentifier(gate), sequence: admission.sequence)
    }

    /// A permit of a shared provider: its lease, one per permit.
    init(_ lease: SharedLease) {
        self.init(owner: ObjectIdentifier(lease), sequence: 0)
    }
}
