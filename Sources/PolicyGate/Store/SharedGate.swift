/// The shell that drives shared providers' calls through a ``PolicyQuotaStore``.
///
/// The rules are the in-process gate's: the limits come from ``GateCore`` (schedules
/// included), token estimates are checked by the same code, and a store's refusal is turned
/// into a cap and a `retryAfter` by the state machine's own window arithmetic over the buckets
/// the store returned. What differs is only where the counters are, so this shell adds what
/// a remote store needs: one caller per key talks to the store at a time (``SharedTurns``),
/// calls have timeouts, a failing store meets the provider's failure policy, and commits and
/// releases are written in the background, retried, in order per permit.
final class SharedGate: Sendable {
    typealias Parked = UnsafeContinuation<Void, any Error>

    /// The least time one store call gets, whatever the caller's maximum wait (250 ms, or the
    /// store's own timeout if shorter).
    static let minimumAttempt: Int64 = 250_000_000

    let store: any PolicyQuotaStore
    let environment: GateEnvironment
    private let keys = Locked<[String: SharedTurns<Parked>]>([:])
    private let ids = Locked<UInt64>(0)
    /// Commits and releases not yet written, and who waits for them.
    private let writes = Locked(Writes<UnsafeContinuation<Void, Never>>())
    /// The leases of shared permits not yet released, for a shutdown to give back (weak: the
    /// permit owns its lease).
    private let live = Locked<[ObjectIdentifier: WeakLease]>([:])
    /// For nested providers: the keys (store names) whose turns watch each level's news, with
    /// how many callers watch it for them (a level's change wakes the keys waiting under it).
    let watchers = Locked<[String: [String: Int]]>([:])

    init(store: any PolicyQuotaStore, environment: GateEnvironment) {
        self.store = store
        self.environment = environment
        store.observeChanges { [weak self] name in self?.announce(name) }
        store.observeLeaseLoss { [weak environment] event in
            guard let environment, environment.hasTelemetry else { return }
            environment.telemetry?.didLoseLease(event)
        }
        store.observeFailures { [weak environment] event in
            guard let environment, environment.hasTelemetry else { return }
            environment.telemetry?.didFailStore(event)
        }
    }

    // MARK: Acquiring

    enum Outcome {
        case admitted(PolicyStoreLease, waitedSince: Int64)
        /// Admitted without the store (it failed and the provider fails open).
        case uncounted
        /// The provider is no longer shared (a reload): take the in-process path.
        case notShared
    }

    /// Waits for `key`'s turn in this process, then asks the store until it admits the call,
    /// the deadline passes, or the store fails.
    /// - Parameter batchAging: For a batch call, how long interactive callers of this process
    ///   may pass it in the key's turn; `nil` for an interactive call.
    func acquire(_ key: PolicyKey, tokens: Int64, deadline: Int64, core: GateCore, batchAging: Int64? = nil) async throws -> Outcome {
        let id = ids.withLock {
            $0 &+= 1; return $0
        }
        let name = key.storeName
        let start = environment.time.now()
        let promoteAt = batchAging.map { start.clampedAdding(max(1, $0)) } ?? .min
        defer { leave(name, id) }
        // The keys the store was told this call waits for news of (after a refusal by the
        // store: the key, or the levels of its chain that refused), so that it announces them.
        var waiting: Set<String> = []
        defer { for level in waiting { store.endWaiting(for: level) } }
        func wait(for level: String) { if waiting.insert(level).inserted { store.beginWaiting(for: level) } }
        // For a nested provider: the levels this key's turns watch (see `watchers`).
        var watched: [String] = []
        defer { if !watched.isEmpty { unwatch(watched, by: name) } }
        var refusedLevel: PolicyKey?
        var waited = false
        if !keys.withLock({ table in table[name, default: SharedTurns()].enter(id, promoteAt: promoteAt, now: start) }) {
            try await waitForTurn(name, id, deadline: deadline, key: key)
            waited = true
        }
        var attempts = 0
        while true {
            try Task.checkCancellation()
            let now = environment.time.now()
            guard let stored = core.compiledLimits(for: key), var limits = core.limits(stored, for: key, at: now) else {
                return .uncounted  // no longer gated: nothing to count
            }
            guard limits.isShared else { return .notShared }
            // The key's scope's own caps (tiers, overrides), afresh on every attempt like the
            // rest: the store is handed them with the call.
            if limits.isTiered { limits = try core.tieredLimits(limits, for: key, estimate: Int(tokens), reporting: false) }
            let chain = limits.isNested ? try chainLevels(of: key, account: limits, core: core) : nil
            for (depth, level) in (chain ?? [(key, limits)]).enumerated() {
                if let oversized = AdmissionRules.oversized(TokenCounts(total: tokens), limits: level.limits) {
                    let error = AdmissionRules.oversizedError(oversized, tokens: TokenCounts(total: tokens)).with(key: key)
                    throw chain == nil ? error : error.at(level: chain![depth].key)
                }
            }
            // Before `seen` is read: news of a level from now on reaches this key's turns.
            if let chain, watched.isEmpty {
                watched = chain.map(\.key.chainStoreName).filter { $0 != name }
                watch(watched, by: name)
            }
            var rejection: Rejection
            let seen = keys.withLock { $0[name]?.generation ?? 0 }
            // After reading `seen`: a shutdown announces every key after setting its flag, so a
            // caller that missed the flag here is woken by that news.
            if environment.lifecycle.isStopping { throw GateLifecycle.refusal(key) }
            let feedback = core.existingFeedback(for: key)
            if let closed = AdmissionRules.closed(limits, now: now) {
                rejection = closed
            } else if let providerBlock = feedback?.refusal(tokens: tokens, now: now) {
                rejection = providerBlock  // what the provider said: this process does not ask the store
            } else if let chain {
                attempts += 1
                switch try await admitChain(key, chain, tokens: tokens, limits: limits, now: now, deadline: deadline) {
                case .admitted(let lease):
                    feedback?.consume(tokens: tokens, now: environment.time.now())
                    return .admitted(lease, waitedSince: start)
                case .refused(let refusal, let levels):
                    for level in levels { wait(for: chain[level].key.chainStoreName) }
                    rejection = refusal.rejection
                    refusedLevel = refusal.level
                case .uncounted:
                    return .uncounted
                }
            } else {
                attempts += 1
                switch try await admit(key, tokens: tokens, limits: limits, now: now, deadline: deadline) {
                case .decided(.admitted(let lease)):
                    feedback?.consume(tokens: tokens, now: environment.time.now())
                    return .admitted(lease, waitedSince: start)
                case .decided(.concurrencyFull(let retryAfter)):
                    wait(for: name)
                    let at = environment.time.now()
                    rejection = Rejection(kind: .concurrency, retryAt: retryAfter.map { at.clampedAdding($0.nanosecondsSaturating) })
                case .decided(.windowsFull(let usage)):
                    wait(for: name)
                    rejection = Self.rejection(usage, limits: limits, tokens: tokens, localNow: environment.time.now())
                case .uncounted:
                    return .uncounted
                }
            }
            // Wait for news or for the time the refusal named; fail now if that is too late
            // (the machine's rule: ``AdmissionRules/isHopeless(_:now:deadline:)``).
            let now2 = environment.time.now()
            if AdmissionRules.isHopeless(rejection, now: now2, deadline: deadline) {
                let error = AdmissionRules.refusal(rejection, now: now2, waited: attempts > 1 || waited).with(key: key)
                throw refusedLevel.map { error.at(level: $0) } ?? error
            }
            refusedLevel = nil
            waited = true
            try await waitForNews(name, since: seen, until: min(rejection.retryAt ?? .max, deadline))
        }
    }

    private enum Attempt {
        case decided(PolicyStoreDecision)
        case uncounted
    }

    /// One store call, bounded by the store's timeout and the caller's deadline; a failure
    /// meets the provider's policy.
    private func admit(_ key: PolicyKey, tokens: Int64, limits: CompiledLimits, now: Int64, deadline: Int64) async throws -> Attempt {
        let store = store
        let decision = try await attempt(
            key, limits: limits, now: now, deadline: deadline,
            { maximumWait in
                func cap(_ value: Int64) -> Int? { value == .max ? nil : Int(value) }
                let request = PolicyStoreRequest(
                    key: key, tokens: Int(tokens),
                    requestCaps: [cap(limits.requestCap(0)), cap(limits.requestCap(1)), cap(limits.requestCap(2))],
                    tokenCaps: [cap(limits.tokenCaps[0]), cap(limits.tokenCaps[1]), cap(limits.tokenCaps[2])],
                    maxConcurrent: limits.maxConcurrent == .max ? nil : limits.maxConcurrent,
                    maximumWait: maximumWait)
                return try await store.admit(request)
            },
            lease: { decision in
                if case .admitted(let lease) = decision { return lease }
                return nil
            })
        return decision.map { .decided($0) } ?? .uncounted
    }

    /// One store call of an admission (`call`, given the caller's remaining wait), bounded by
    /// the store's timeout and the caller's deadline; `nil` when the store failed and the
    /// provider fails open. `lease` finds the lease in a decision that came too late.
    func attempt<D: Sendable>(
        _ key: PolicyKey, limits: CompiledLimits, now: Int64, deadline: Int64,
        _ call: @escaping @Sendable (Duration) async throws -> D, lease: @escaping @Sendable (D) -> PolicyStoreLease?
    ) async throws -> D? {
        let storeLimit = now.clampedAdding(store.callTimeout.nanosecondsSaturating)
        // A maximum wait shorter than a round trip (even zero: "do not queue") still gets one
        // attempt of up to `minimumAttempt`, else no shared call could ever be admitted at once.
        let callDeadline = min(storeLimit, max(deadline, now.clampedAdding(Self.minimumAttempt)))
        let maximumWait = Duration.nanoseconds(callDeadline - now)
        do {
            // The call is not cancelled when its caller leaves (the statement may commit all the
            // same): it runs to its end, and an admission that comes too late is given back.
            return try await withTimeout(
                until: callDeadline, time: environment.time,
                late: { [self] decision in
                    if let lease = lease(decision) { giveBack(lease, key: key) }
                }
            ) { try await call(maximumWait) }
        } catch is CancellationError where Task.isCancelled {
            throw CancellationError()
        } catch let error as PolicyStoreRequestError {
            // Not a failure to answer: the failure policy does not apply.
            throw PolicyError(.invalidArgument, key: key, message: "the shared store cannot record this call: \(error.message)")
        } catch {
            if callDeadline < storeLimit, error is TimeoutError || environment.time.now() >= callDeadline {
                // The caller's own maximum wait ran out, not the store's patience (the store
                // may have given up waiting at that time too: it was told to).
                throw PolicyError(.timedOut, key: key, message: "not admitted within its maximum wait: the store did not answer in time")
            }
            let description =
                error is TimeoutError
                ? "the store did not answer within \(store.callTimeout)" : String(describing: error)
            if limits.failsOpen {
                report(key, .admit, .admittedUncounted, description)
                return nil
            }
            report(key, .admit, .refused, description)
            throw PolicyError(.storeUnavailable, key: key, message: "the shared store failed: \(description)")
        }
    }

    /// Gives back an admission that no permit took: its caller had left (deadline or
    /// cancellation) when the store's answer came. Its slot is released in the background; its
    /// request and estimated tokens stay counted (conservative: the store cannot tell a call
    /// that never ran from one that did, and un-counting would need another operation).
    private func giveBack(_ lease: PolicyStoreLease, key: PolicyKey) {
        store.endRenewal(of: lease)
        _ = write(after: nil, key: key, .release) { try await $0.release(lease) }
    }

    /// The binding cap and when the call fits, from a store's buckets, by the state machine's
    /// own arithmetic; in the service's nanoseconds.
    static func rejection(_ usage: PolicyStoreUsage, limits: CompiledLimits, tokens: Int64, localNow: Int64) -> Rejection {
        var windows = WindowSlots()
        for window in PolicyWindow.allCases where limits.tracks(window.rawValue) {
            // In the store's microseconds.
            let slot = SlidingWindow(length: window.nanoseconds / 1_000, now: usage.now, firstSequence: 1)
            for bucket in usage.buckets where bucket.window == window {
                slot.load(index: bucket.index, requests: bucket.requests, tokens: bucket.tokens)
            }
            windows[window.rawValue] = slot
        }
        guard let found = AdmissionRules.capsRejection(in: windows, limits: limits, tokens: TokenCounts(total: tokens), now: usage.now),
            let at = found.retryAt
        else {
            // The store refused what its buckets say fits (the caps changed in between):
            // look again shortly rather than at once.
            return Rejection(kind: .requests(.minute), retryAt: localNow + 10_000_000)
        }
        return Rejection(
            kind: found.kind, retryAt: localNow.clampedAdding(max(0, at - usage.now).multipliedReportingOverflow(by: 1_000).partialValue))
    }

    // MARK: Turns and news

    private func waitForTurn(_ name: String, _ id: UInt64, deadline: Int64, key: PolicyKey) async throws {
        let reachedTurn = try await park(
            until: deadline, { table, continuation in table[name]?.park(id, continuation) ?? false },
            unregister: { table in table[name]?.unpark(id) })
        if !reachedTurn {
            throw PolicyError(
                .timedOut, key: key, message: "not admitted within its maximum wait: queued behind earlier callers of this key")
        }
    }

    private func waitForNews(_ name: String, since seen: UInt64, until wake: Int64) async throws {
        if wake <= environment.time.now() { return }
        let id = ids.withLock {
            $0 &+= 1; return $0
        }
        _ = try await park(
            until: wake, { table, continuation in table[name]?.listen(id, since: seen, continuation) ?? false },
            unregister: { table in table[name]?.unlisten(id) })
    }

    /// Suspends until `register`'s continuation is resumed (`true`), or until `wake` on the
    /// service's clock (`false`); throws `CancellationError` if the task is cancelled.
    /// `register` parks the continuation in the table, or returns `false` when there is
    /// nothing to wait for; `unregister` takes it back when the wait is abandoned.
    private func park(
        until wake: Int64,
        _ register: @escaping @Sendable (inout [String: SharedTurns<Parked>], Parked) -> Bool,
        unregister: @escaping @Sendable (inout [String: SharedTurns<Parked>]) -> Parked?
    ) async throws -> Bool {
        let time = environment.time
        return try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                try await withTaskCancellationHandler {
                    try await withUnsafeThrowingContinuation { (continuation: Parked) in
                        let parked = self.keys.withLock { table in Task.isCancelled ? false : register(&table, continuation) }
                        if !parked {
                            if Task.isCancelled { continuation.resume(throwing: CancellationError()) } else { continuation.resume() }
                        }
                    }
                } onCancel: {
                    self.keys.withLock { table in unregister(&table) }?.resume(throwing: CancellationError())
                }
                return true
            }
            if wake != .max {
                group.addTask {
                    try await time.sleep(until: wake); return false
                }
            }
            let first = try await group.next() ?? false
            group.cancelAll()
            return first
        }
    }

    private func leave(_ name: String, _ id: UInt64) {
        let next = keys.withLock { table -> Parked? in
            let next = table[name]?.leave(id)
            if table[name]?.isIdle == true { table[name] = nil }
            return next
        }
        next?.resume()
    }

    /// News of `name` (or of every key, for `nil`): a slot or tokens may be free again.
    func announce(_ name: String?) {
        // The keys waiting under this level of a nested chain (read first: a watcher is added
        // before its key's `seen` is read, so news after that bumps its generation).
        let under = name.map { name in watchers.withLock { $0[name].map { Array($0.keys) } ?? [] } } ?? []
        let woken = keys.withLock { table -> [Parked] in
            guard let name else {
                var all: [Parked] = []
                for key in table.keys { all += table[key]?.announce() ?? [] }
                return all
            }
            var woken = table[name]?.announce() ?? []
            for leaf in under { woken += table[leaf]?.announce() ?? [] }
            return woken
        }
        for continuation in woken { continuation.resume() }
    }

    // MARK: Leases held

    /// Notes a lease admitted for a permit.
    func track(_ lease: SharedLease) {
        live.withLock { $0[ObjectIdentifier(lease)] = WeakLease(lease: lease) }
    }

    /// Forgets a lease whose permit was released.
    func forget(_ lease: SharedLease) {
        _ = live.withLock { $0.removeValue(forKey: ObjectIdentifier(lease)) }
    }

    /// How many shared permits are held.
    var heldCount: Int { live.withLock { $0.count } }

    /// Gives every lease still held back to the store (the gate is shutting down): its slot
    /// frees for other processes now rather than when the lease expires. The permits stay
    /// valid; their later commits and releases write nothing more.
    func giveBackAll() {
        let leases = live.withLock { live in
            defer { live = [:] }
            return live.values.compactMap(\.lease)
        }
        for lease in leases { lease.giveBack() }
    }

    // MARK: Writes

    /// Runs `write` after `previous` (the permit's earlier write), retrying it on failure for
    /// the store's retry period. Returns the task, for the next write to follow.
    /// `prepare`, if given, runs first (after `previous`); `false` skips the write.
    func write(
        after previous: Task<Void, Never>?, key: PolicyKey, _ operation: PolicyStoreFailureEvent.Operation,
        prepare: (@Sendable () async -> Bool)? = nil,
        _ body: @escaping @Sendable (any PolicyQuotaStore) async throws -> Void
    ) -> Task<Void, Never> {
        let ticket = writes.withLock { $0.issue() }
        return Task { [self] in
            await previous?.value
            if await prepare?() ?? true { await retrying(key: key, operation, body) }
            for waiter in writes.withLock({ $0.finish(ticket) }) { waiter.resume() }
        }
    }

    private func retrying(
        key: PolicyKey, _ operation: PolicyStoreFailureEvent.Operation,
        _ body: @escaping @Sendable (any PolicyQuotaStore) async throws -> Void
    ) async {
        let time = environment.time
        let giveUpAt = time.now().clampedAdding(store.writeRetryPeriod.nanosecondsSaturating)
        var backoff: Int64 = 50_000_000
        let store = store
        while true {
            let now = time.now()
            do {
                try await withTimeout(until: now.clampedAdding(store.callTimeout.nanosecondsSaturating), time: time) {
                    try await body(store)
                }
                announceWrite(of: key)  // a slot or tokens may be free again
                return
            } catch {
                let description =
                    error is TimeoutError
                    ? "the store did not answer within \(store.callTimeout)" : String(describing: error)
                guard time.now() < giveUpAt else {
                    report(key, operation, .gaveUp, description)
                    return
                }
                report(key, operation, .willRetry, description)
                // Not cancellable: a write is the permit's last word and must not be lost.
                try? await time.sleep(until: min(giveUpAt, time.now().clampedAdding(backoff)))
                backoff = min(backoff * 2, 2_000_000_000)
            }
        }
    }

    /// Waits until every commit and release issued before this call has been written (or
    /// given up); writes issued later, under steady traffic, are not waited for.
    func flush() async {
        await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
            if writes.withLock({ $0.wait(continuation) }) { continuation.resume() }
        }
    }

    private func report(
        _ key: PolicyKey, _ operation: PolicyStoreFailureEvent.Operation, _ outcome: PolicyStoreFailureEvent.Outcome,
        _ error: String
    ) {
        guard environment.hasTelemetry else { return }
        environment.telemetry?.didFailStore(PolicyStoreFailureEvent(key: key, operation: operation, outcome: outcome, error: error))
    }
}

/// The writes in flight, numbered in the order they were issued, and the flushes waiting for
/// every write up to a number. A pure value, driven under ``SharedGate``'s lock.
struct Writes<Waiter> {
    private var issued: UInt64 = 0
    private var pending: Set<UInt64> = []
    private var waiters: [(upTo: UInt64, waiter: Waiter)] = []

    /// Numbers a new write.
    mutating func issue() -> UInt64 {
        issued += 1
        pending.insert(issued)
        return issued
    }

    /// Marks `ticket` written; returns the flushes with nothing left to wait for.
    mutating func finish(_ ticket: UInt64) -> [Waiter] {
        pending.remove(ticket)
        guard !waiters.isEmpty else { return [] }
        let oldest = pending.min() ?? .max
        let done = waiters.filter { $0.upTo < oldest }.map(\.waiter)
        waiters.removeAll { $0.upTo < oldest }
        return done
    }

    /// Parks `waiter` until every write issued so far is done; `true` if they are already.
    mutating func wait(_ waiter: Waiter) -> Bool {
        if (pending.min() ?? .max) > issued { return true }
        waiters.append((issued, waiter))
        return false
    }
}

/// A shared permit's link to the store: its writes, in order.
final class SharedLease: Sendable {
    let key: PolicyKey
    let lease: PolicyStoreLease
    let gate: SharedGate
    private let last = Locked<Task<Void, Never>?>(nil)
    /// The commit held back for the release to carry (see ``PolicyQuotaStore/commitHold``).
    private let held = Locked(HeldCommit())

    /// Whether the slot was given back to the store (by the permit, or by a shutdown).
    private let givenBack = Locked(false)

    init(key: PolicyKey, lease: PolicyStoreLease, gate: SharedGate) {
        self.key = key
        self.lease = lease
        self.gate = gate
        gate.track(self)
    }

    /// Takes the right to give the slot back: `true` once.
    private func claimGiveBack() -> Bool {
        givenBack.withLock { done in
            defer { done = true }
            return !done
        }
    }

    /// Gives the slot back now, for a shutdown whose grace period ended with this permit held.
    func giveBack() {
        if claimGiveBack() { writeRelease() }
    }

    // Not inlined into the permit: its commit and `deinit` stay small for in-process permits.

    /// Writes `tokens` in the background (retried, in order with the release) and reports it.
    /// The write waits up to the store's ``PolicyQuotaStore/commitHold`` for the release, which
    /// then carries it (one store call instead of two); a later commit replaces one not yet
    /// sent.
    @inline(never)
    func commit(tokens: Int, estimated: Int, previous: Int) {
        let lease = lease
        let queue = held.withLock { held in
            defer { held.tokens = tokens; held.queued = true }
            return !held.queued
        }
        if queue {
            let hold = gate.store.commitHold
            enqueue(.commit, prepare: { [self] in await self.holdCommit(hold) }) { [self] store in
                guard let tokens = held.withLock({ $0.sending }) else { return }
                try await store.commit(lease, tokens: tokens)
            }
        }
        let environment = gate.environment
        if environment.hasTelemetry {
            environment.telemetry?.didCommit(
                PolicyCommitEvent(
                    key: key, estimatedTokens: estimated, previousTokens: previous, actualTokens: tokens))
            environment.holdWatch.committed(.init(self), tokens: tokens)
        }
    }

    /// Writes a usage reported in parts (cache reads counted as input where the provider's
    /// limits say so) and reports it. Returns the counts written.
    @inline(never)
    func commit(input: Int, output: Int, cacheReads: Int, estimated: Int, previous: Int) -> TokenCounts {
        let environment = gate.environment
        let countsCacheReads = environment.core?.compiledLimits(for: key)?.countsCacheReads ?? true
        let counts = TokenCounts.usage(input: input, output: output, cacheReads: cacheReads, countsCacheReads: countsCacheReads)
        let lease = lease
        let tokens = Int(counts.total)
        enqueue(.commit) { try await $0.commit(lease, tokens: tokens) }
        if environment.hasTelemetry {
            environment.telemetry?.didCommit(
                PolicyCommitEvent(
                    key: key, estimatedTokens: estimated, previousTokens: previous, actualTokens: tokens, inputTokens: input,
                    outputTokens: output, cacheReadTokens: cacheReads))
            environment.holdWatch.committed(.init(self), tokens: tokens)
        }
        return counts
    }

    /// Gives the slot back in the background and reports how long it was held.
    @inline(never)
    func release(admittedAt: Int64, tokens: Int) {
        gate.forget(self)
        if claimGiveBack() { writeRelease() }
        let environment = gate.environment
        if environment.hasTelemetry, let telemetry = environment.telemetry {
            let held = environment.time.now() - admittedAt
            telemetry.didRelease(PolicyReleaseEvent(key: key, held: .nanoseconds(held), tokens: tokens))
            environment.holdWatch.released(.init(self))
        }
        if environment.lifecycle.isStopping { environment.lifecycle.permitReleased() }
    }

    /// Ends the lease's renewal and writes its release, carrying a commit held back.
    private func writeRelease() {
        let lease = lease
        // No longer renewed from now on, even if the release cannot be written: its slot
        // then comes back when the lease expires.
        gate.store.endRenewal(of: lease)
        // A commit still held back is resumed now and hands its tokens over (see `holdCommit`).
        let (hold, timer) = held.withLock { held in
            held.released = true
            defer { (held.hold, held.timer) = (nil, nil) }
            return (held.hold, held.timer)
        }
        timer?.cancel()
        hold?.resume()
        enqueue(.release) { [self] store in
            try await store.release(lease, committing: held.withLock { $0.handedOver })
        }
    }

    private func enqueue(
        _ operation: PolicyStoreFailureEvent.Operation, prepare: (@Sendable () async -> Bool)? = nil,
        _ body: @escaping @Sendable (any PolicyQuotaStore) async throws -> Void
    ) {
        // A commit after a shutdown gave the slot back: the lease is gone from the store.
        if operation == .commit, givenBack.withLock({ $0 }) { return }
        last.withLock { last in
            last = gate.write(after: last, key: key, operation, prepare: prepare, body)
        }
    }

    /// Runs before a commit's write: waits until the release comes or `hold` passes, then
    /// either hands the tokens over to the release (`false`: nothing to write now) or moves
    /// them to `sending` for the commit's own write.
    private func holdCommit(_ hold: Duration) async -> Bool {
        if hold > .zero, !held.withLock({ $0.released }) {
            let time = gate.environment.time
            let until = time.now().clampedAdding(hold.nanosecondsSaturating)
            await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
                let parked = held.withLock { held -> Bool in
                    guard !held.released else { return false }
                    held.hold = continuation
                    return true
                }
                guard parked else { return continuation.resume() }
                let timer = Task { [held] in
                    try? await time.sleep(until: until)
                    held.withLock { held in
                        defer { held.hold = nil }
                        return held.hold
                    }?.resume()
                }
                // Cancelled by the release, so that it does not outlive the hold's purpose.
                let released = held.withLock { held -> Bool in
                    if !held.released { held.timer = timer }
                    return held.released
                }
                if released { timer.cancel() }
            }
        }
        return held.withLock { held in
            defer { held.tokens = nil; held.queued = false }
            if held.released {
                held.handedOver = held.tokens
                return false
            }
            held.sending = held.tokens
            return true
        }
    }
}

/// A lease that a shutdown may give back, without keeping it alive.
struct WeakLease: Sendable {
    weak var lease: SharedLease?
}

/// A shared permit's commit on its way: held back for the release, or being sent alone.
struct HeldCommit {
    /// The latest count not yet handed to a write.
    var tokens: Int?
    /// A commit write is queued and has not taken `tokens` yet.
    var queued = false
    /// The count the commit's own write sends (kept for its retries).
    var sending: Int?
    /// The count the release carries.
    var handedOver: Int?
    /// The permit was released.
    var released = false
    /// The held commit's write, parked until the release or the end of the hold.
    var hold: UnsafeContinuation<Void, Never>?
    /// Ends the hold when no release comes.
    var timer: Task<Void, Never>?
}

/// A store call that did not answer in time.
struct TimeoutError: Error {}

/// Who resumes the caller of ``withTimeout(until:time:_:)``: the call, the timer or a cancellation.
private struct TimeoutState<T: Sendable> {
    var continuation: UnsafeContinuation<T, any Error>?
    var work: Task<Void, Never>?
    var timer: Task<Void, Never>?
}

/// Runs `body`, giving up at `deadline` (service nanoseconds) or when the caller is cancelled.
/// A store that never answers can therefore never hold a caller beyond its deadline.
///
/// Without `late`, the abandoned call is cancelled and left to finish on its own. With `late`,
/// it is not cancelled (a statement sent may commit all the same): it runs to its end, and a
/// value it returns after the caller left is passed to `late`, which must dispose of it.
/// - Throws: `body`'s error, `TimeoutError`, or `CancellationError`.
func withTimeout<T: Sendable>(
    until deadline: Int64, time: any TimeSource, late: (@Sendable (T) -> Void)? = nil,
    _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    let state = Locked(TimeoutState<T>())
    /// Resumes the caller once, with whichever outcome came first, and stops the other tasks;
    /// hands a value that came after that to `late`.
    @Sendable func finish(_ result: Result<T, any Error>, fromBody: Bool) {
        let (continuation, work, timer) = state.withLock { state in
            defer { state.continuation = nil }
            return (state.continuation, state.work, state.timer)
        }
        guard let continuation else {
            if fromBody, let late, case .success(let value) = result { late(value) }
            return
        }
        if late == nil { work?.cancel() }
        timer?.cancel()
        continuation.resume(with: result)
    }
    return try await withTaskCancellationHandler {
        try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<T, any Error>) in
            state.withLock { $0.continuation = continuation }
            let work = Task {
                do { finish(.success(try await body()), fromBody: true) } catch { finish(.failure(error), fromBody: true) }
            }
            let timer: Task<Void, Never>? =
                deadline == .max
                ? nil
                : Task {
                    try? await time.sleep(until: deadline)
                    if !Task.isCancelled { finish(.failure(TimeoutError()), fromBody: false) }
                }
            state.withLock { state in
                state.work = work
                state.timer = timer
            }
            // Cancelled before the handler could see the continuation: finish now.
            if Task.isCancelled { finish(.failure(CancellationError()), fromBody: false) }
        }
    } onCancel: {
        finish(.failure(CancellationError()), fromBody: false)
    }
}
