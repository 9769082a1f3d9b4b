import PolicyGate

/// A `PolicyQuotaStore` in memory whose every answer a test controls: it answers at once,
/// after a delay on a ``ManualClock``, late (held until the test lets it go), or with an
/// error. For testing the shared path's deadlines, cancellation, retries and late admissions
/// without a database, and without sleeping.
///
/// ```swift
/// let clock = ManualClock()
/// let store = FakeQuotaStore(clock: clock)
/// store.script([.held])               // the next admission answers only when let go
/// // … a caller times out at its maximum wait …
/// store.answerHeldAdmissions()        // the admission commits after its caller left
/// #expect(store.liveLeases.isEmpty)   // once the gate has given it back
/// ```
///
/// It counts concurrency only: a key's live leases against the request's `maxConcurrent`.
/// Windows always fit. A release announces the key, as a real store's notification would.
/// Chains (``admitChain(_:)``) are counted the same way at every level, all or nothing; their
/// release announces every level.
public final class FakeQuotaStore: PolicyQuotaStore {
    /// What one call to the store does.
    public enum Behavior: Sendable, Hashable {
        /// Answers at once.
        case immediate
        /// Answers once the clock has moved on by the duration.
        case delayed(Duration)
        /// Waits until the test lets it go (``answerHeldAdmissions()``, ``answerHeldWrites(_:)``),
        /// then answers: an answer that may come after its caller left.
        case held
        /// Throws ``FakeQuotaStoreError`` with the message.
        case fail(String)
        /// Throws `PolicyStoreRequestError` with the message: a request the store cannot record.
        case refuse(String)
    }

    fileprivate struct State {
        var nextID: Int64 = 0
        var admitScript: [Behavior] = []
        var keyScripts: [String: [Behavior]] = [:]
        var writeScript: [Behavior] = []
        var requests: [PolicyStoreRequest] = []
        var chainRequests: [PolicyStoreChainRequest] = []
        /// The chains of live chain leases, by id (their entry in `live` holds the key's level).
        var chains: [Int64: PolicyStoreChainRequest] = [:]
        var calls = 0
        /// Admitted and not released, by id, with the key's store name.
        var live: [Int64: (lease: PolicyStoreLease, request: PolicyStoreRequest)] = [:]
        /// Live leases the store would still keep alive (no ``endRenewal(of:)`` yet).
        var renewed: Set<Int64> = []
        var heldAdmissions: [CheckedContinuation<Void, Never>] = []
        var heldWrites: [CheckedContinuation<Void, Never>] = []
        var releases = 0
        var commits: [(lease: PolicyStoreLease, tokens: Int)] = []
        var onChange: (@Sendable (String?) -> Void)?
        var onLoss: (@Sendable (PolicyLeaseLossEvent) -> Void)?
    }

    private let clock: ManualClock
    private let state = Locked(State())
    /// The store's call timeout, as the gate reads it.
    public let callTimeout: Duration
    /// The store's write retry period, as the gate reads it.
    public let writeRetryPeriod: Duration

    /// A store whose delays run on `clock`.
    public init(clock: ManualClock, callTimeout: Duration = .seconds(2), writeRetryPeriod: Duration = .seconds(10)) {
        self.clock = clock
        self.callTimeout = callTimeout
        self.writeRetryPeriod = writeRetryPeriod
    }

    /// Queues what the next admissions do, in order; once the script runs out they answer
    /// at once.
    public func script(_ behaviors: [Behavior]) { state.withLock { $0.admitScript += behaviors } }

    /// Queues what the next admissions of `key` do, in order, before the general script.
    public func script(_ behaviors: [Behavior], for key: PolicyKey) {
        state.withLock { $0.keyScripts[key.storeName, default: []] += behaviors }
    }

    /// Queues what the next commits and releases do, in order; then they succeed at once.
    public func scriptWrites(_ behaviors: [Behavior]) { state.withLock { $0.writeScript += behaviors } }

    /// Every chain admission request so far, oldest first.
    public var chainRequests: [PolicyStoreChainRequest] { state.withLock { $0.chainRequests } }
    /// How many leases the store handed out (single keys' and chains').
    public var admissionCount: Int { state.withLock { Int($0.nextID) } }
    /// How many calls reached the store: admissions (single and chain), commits and releases.
    public var callCount: Int { state.withLock { $0.calls } }
    /// How many live leases hold a slot at the key named `keyName` (a chain's at each level).
    public func liveCount(at keyName: String) -> Int { state.withLock { $0.liveCount(at: keyName) } }
    /// Every admission request so far, oldest first.
    public var requests: [PolicyStoreRequest] { state.withLock { $0.requests } }
    /// The leases admitted and not released, by id.
    public var liveLeases: [PolicyStoreLease] { state.withLock { $0.live.values.map { $0.lease }.sorted { $0.id < $1.id } } }
    /// The live leases a real store would keep renewing: those nobody ended.
    public var renewedLeases: [PolicyStoreLease] {
        state.withLock { state in state.renewed.compactMap { state.live[$0]?.lease }.sorted { $0.id < $1.id } }
    }
    /// How many admissions wait to be let go.
    public var heldAdmissionCount: Int { state.withLock { $0.heldAdmissions.count } }
    /// How many commits and releases wait to be let go.
    public var heldWriteCount: Int { state.withLock { $0.heldWrites.count } }
    /// How many releases succeeded (repeats included).
    public var releaseCount: Int { state.withLock { $0.releases } }

    /// Lets every held admission answer; each decides against the counters as they are now.
    public func answerHeldAdmissions() {
        for continuation in state.withLock({ state in
            defer { state.heldAdmissions = [] }; return state.heldAdmissions
        }) {
            continuation.resume()
        }
    }

    /// Lets the oldest `count` held commits and releases go on.
    public func answerHeldWrites(_ count: Int = .max) {
        let due = state.withLock { state in
            let due = Array(state.heldWrites.prefix(count))
            state.heldWrites.removeFirst(due.count)
            return due
        }
        for continuation in due { continuation.resume() }
    }

    /// Reports `lease` lost, as a store does when it cannot vouch for it any more.
    public func loseLease(_ lease: PolicyStoreLease, reason: PolicyLeaseLossEvent.Reason) {
        let (entry, onLoss) = state.withLock { state in
            state.renewed.remove(lease.id)
            return (state.live[lease.id], state.onLoss)
        }
        if let entry { onLoss?(PolicyLeaseLossEvent(key: entry.request.key, reason: reason)) }
    }

    // MARK: PolicyQuotaStore

    /// Decides against the live leases, after the scripted behaviour.
    public func admit(_ request: PolicyStoreRequest) async throws -> PolicyStoreDecision {
        let behavior = state.withLock { state in
            state.calls += 1
            state.requests.append(request)
            if let next = state.keyScripts[request.keyName]?.first {
                state.keyScripts[request.keyName]?.removeFirst()
                return next
            }
            return state.admitScript.isEmpty ? Behavior.immediate : state.admitScript.removeFirst()
        }
        try await perform(behavior, hold: { state, continuation in state.heldAdmissions.append(continuation) })
        return state.withLock { state in
            if let cap = request.maxConcurrent, state.liveCount(at: request.keyName) >= cap { return .concurrencyFull(retryAfter: nil) }
            state.nextID += 1
            let lease = PolicyStoreLease(id: state.nextID, admittedAt: 0, nonce: state.nextID &* 7_919)
            state.live[lease.id] = (lease, request)
            state.renewed.insert(lease.id)
            return .admitted(lease)
        }
    }

    /// `true`: chains are counted at every level.
    public var supportsChains: Bool { true }

    /// Decides every level against its live leases, after the scripted behaviour (the script
    /// of the chain's innermost key first): admitted at all levels, or refused naming each
    /// full level.
    public func admitChain(_ request: PolicyStoreChainRequest) async throws -> PolicyStoreChainDecision {
        guard let leaf = request.levels.last else { throw PolicyStoreRequestError("a chain without levels") }
        let behavior = state.withLock { state in
            state.calls += 1
            state.chainRequests.append(request)
            if let next = state.keyScripts[leaf.keyName]?.first {
                state.keyScripts[leaf.keyName]?.removeFirst()
                return next
            }
            return state.admitScript.isEmpty ? Behavior.immediate : state.admitScript.removeFirst()
        }
        try await perform(behavior, hold: { state, continuation in state.heldAdmissions.append(continuation) })
        return state.withLock { state in
            var refused: [PolicyStoreLevelRefusal] = []
            for (index, level) in request.levels.enumerated() {
                if let cap = level.maxConcurrent, state.liveCount(at: level.keyName) >= cap {
                    refused.append(PolicyStoreLevelRefusal(level: index, decision: .concurrencyFull(retryAfter: nil)))
                }
            }
            if !refused.isEmpty { return .refused(refused) }
            state.nextID += 1
            let lease = PolicyStoreLease(id: state.nextID, admittedAt: 0, nonce: state.nextID &* 7_919)
            state.live[lease.id] = (lease, leaf)
            state.chains[lease.id] = request
            state.renewed.insert(lease.id)
            return .admitted(lease)
        }
    }

    /// Records the commit, after the scripted behaviour.
    public func commit(_ lease: PolicyStoreLease, tokens: Int) async throws {
        state.withLock { $0.calls += 1 }
        try await perform(nextWrite(), hold: { state, continuation in state.heldWrites.append(continuation) })
        state.withLock { $0.commits.append((lease, tokens)) }
    }

    /// Frees the slot and announces the key, after the scripted behaviour.
    public func release(_ lease: PolicyStoreLease) async throws {
        state.withLock { $0.calls += 1 }
        try await perform(nextWrite(), hold: { state, continuation in state.heldWrites.append(continuation) })
        let (names, onChange) = state.withLock { state in
            state.releases += 1
            state.renewed.remove(lease.id)
            let entry = state.live[lease.id]
            guard let entry, entry.lease == lease else { return ([String](), state.onChange) }
            state.live[lease.id] = nil
            if let chain = state.chains.removeValue(forKey: lease.id) { return (chain.levels.map(\.keyName), state.onChange) }
            return ([entry.request.keyName], state.onChange)
        }
        for name in names { onChange?(name) }
    }

    /// Keeps `onChange` for releases.
    public func observeChanges(_ onChange: @escaping @Sendable (String?) -> Void) { state.withLock { $0.onChange = onChange } }

    /// Stops counting `lease` among the renewed ones.
    public func endRenewal(of lease: PolicyStoreLease) { state.withLock { _ = $0.renewed.remove(lease.id) } }

    /// Keeps `onLoss` for ``loseLease(_:reason:)``.
    public func observeLeaseLoss(_ onLoss: @escaping @Sendable (PolicyLeaseLossEvent) -> Void) {
        state.withLock { $0.onLoss = onLoss }
    }

    // MARK: Helpers

    private func nextWrite() -> Behavior {
        state.withLock { $0.writeScript.isEmpty ? .immediate : $0.writeScript.removeFirst() }
    }

    private func perform(
        _ behavior: Behavior, hold: @escaping @Sendable (inout State, CheckedContinuation<Void, Never>) -> Void
    ) async throws {
        switch behavior {
        case .immediate:
            break
        case .delayed(let delay):
            try await clock.sleep(until: clock.now.advanced(by: delay))
        case .held:
            await withCheckedContinuation { continuation in state.withLock { hold(&$0, continuation) } }
        case .fail(let message):
            throw FakeQuotaStoreError(message: message)
        case .refuse(let message):
            throw PolicyStoreRequestError(message)
        }
    }
}

extension FakeQuotaStore.State {
    /// Live leases holding a slot at `keyName`: single keys' and chains' at any level.
    func liveCount(at keyName: String) -> Int {
        live.reduce(0) { count, entry in
            if let chain = chains[entry.key] { return count + (chain.levels.contains { $0.keyName == keyName } ? 1 : 0) }
            return count + (entry.value.request.keyName == keyName ? 1 : 0)
        }
    }
}

/// The error a ``FakeQuotaStore`` throws when told to fail.
public struct FakeQuotaStoreError: Error, Hashable, CustomStringConvertible {
    /// What the test said.
    public let message: String
    /// The message.
    public var description: String { message }
}
