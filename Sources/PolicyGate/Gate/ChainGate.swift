/// What a waiter of a nested provider is resumed with: its innermost bucket and its admission.
struct ChainGrant: Sendable {
    let leaf: Int32
    let admission: Admission
}

/// The shell around one provider's ``ChainStateMachine``: one lock for the provider's whole tree
/// (a chain's levels are checked and recorded under it at once), the waiters' continuations and
/// one timer. It decides nothing itself.
final class ChainGate: @unchecked Sendable {  // mutable state only touched under `lock`
    typealias Machine = ChainStateMachine<Payload>
    typealias Payload = Parked

    /// A parked waiter: its continuation and its key.
    struct Parked {
        let continuation: UnsafeContinuation<ChainGrant, any Error>
        let key: PolicyKey
        let leaf: Int32
    }

    let provider: String
    let environment: GateEnvironment
    // A byte, not `()`: TSan once reported an access to the zero-sized guarded value as a race
    // between two callers that both go through `withLock` (a nested tiers model run); most
    // likely the access to a value of no size was not kept inside the mutex.
    let lock = Locked<UInt8>(0)
    @exclusivity(unchecked) var machine: Machine
    @exclusivity(unchecked) private var feedback: ProviderFeedbackState?
    @exclusivity(unchecked) private var timerAt: Int64 = .max
    @exclusivity(unchecked) private var timer: Task<Void, Never>?

    init(
        provider: String, account: CompiledLimits, kinds: [String: CompiledLimits], groups: [ModelGroupCaps] = [], now: Int64,
        environment: GateEnvironment, feedback: ProviderFeedbackState?, costs: CostPolicy? = nil,
        kindTiers: [String: CompiledTiers] = [:]
    ) {
        self.provider = provider
        self.environment = environment
        self.feedback = feedback
        // Without per-scope tables, the provider's caps count per key (its model groups too).
        machine = Machine(
            provider: provider, account: account, kinds: kinds, groups: groups, flat: kinds.isEmpty, now: now, feedback: feedback,
            costs: costs, kindTiers: kindTiers)
    }

    /// Whether the tree counts the provider's caps per key (no per-scope tables).
    var isFlat: Bool { lock.withLock { _ in machine.isFlat } }

    /// Consults `feedback` from now on.
    func adopt(feedback: ProviderFeedbackState) {
        lock.withLock { _ in
            self.feedback = feedback
            machine.adopt(feedback: feedback)
        }
    }

    /// Runs `body` on the machine under the lock, then carries out its effects.
    func withMachine<R>(_ body: (inout Machine) -> (R, Machine.Effects)) -> R {
        let (result, work) = lock.withLock { _ -> (R, Work) in
            let (result, effects) = body(&machine)
            return (result, settle(effects))
        }
        work.run(self)
        return result
    }

    /// What must happen once the lock is released.
    struct Work {
        var effects: Machine.Effects?
        var cancelled: Task<Void, Never>?

        func run(_ gate: ChainGate) {
            cancelled?.cancel()
            guard let effects else { return }
            for resume in effects.resumes.items ?? [] {
                switch resume.result {
                case .success(let admission):
                    resume.payload.continuation.resume(returning: ChainGrant(leaf: resume.payload.leaf, admission: admission))
                case .failure(let error):
                    resume.payload.continuation.resume(throwing: error.with(key: resume.payload.key))
                }
            }
        }
    }

    /// Arms or disarms the timer after the machine changed. Call under the lock.
    private func settle(_ effects: Machine.Effects) -> Work {
        var work = Work(effects: effects.resumes.items == nil ? nil : effects)
        if !machine.hasWaiters {
            work.cancelled = timer
            timer = nil
            timerAt = .max
            return work
        }
        guard let wake = effects.wake, wake < timerAt else { return work }
        work.cancelled = timer
        timerAt = wake
        let time = environment.time
        timer = Task { [self] in
            do { try await time.sleep(until: wake) } catch { return }
            fire(at: wake)
        }
        return work
    }

    private func fire(at wake: Int64) {
        let now = environment.time.now()
        let work = lock.withLock { _ -> Work in
            if timerAt == wake {
                timerAt = .max
                timer = nil
            }
            return settle(machine.tick(now: now))
        }
        work.run(self)
    }

    // MARK: Fast path

    /// One locked attempt to admit `key` now; effects are carried out only if there are any.
    @inline(__always)
    func tryAdmit(
        _ key: PolicyKey, model: String?, tokens: TokenCounts, account: CompiledLimits, now: Int64,
        tiers: Machine.LevelTiers? = nil
    ) -> (Int32, Result<Admission, ChainRefusal>) {
        let (leaf, result, work) = lock.withLock { _ -> (Int32, Result<Admission, ChainRefusal>, Work?) in
            let leaf = machine.leaf(for: key, model: model, tiers: tiers, now: now)
            var (result, effects) = machine.tryAdmit(leaf: leaf, tokens: tokens, account: account, now: now)
            if tiers != nil { effects.merge(machine.takeRetierEffects(now: now)) }
            let work = effects.resumes.items == nil && effects.wake == nil ? nil : settle(effects)
            return (leaf, result, work)
        }
        work?.run(self)
        return (leaf, result)
    }

    /// The level naming `model`'s group for calls of `key` (refusals name it), if any.
    func groupLevel(of key: PolicyKey, model: String) -> PolicyKey? {
        lock.withLock { _ in machine.groupLevel(of: key, model: model) }
    }

    // MARK: Permit paths

    /// The key whose innermost level is `leaf` (held by a permit, so it stays).
    func key(of leaf: Int32) -> PolicyKey {
        lock.withLock { _ in machine.buckets[Int(leaf)].key }
    }

    func commit(leaf: Int32, _ admission: Admission, from old: TokenCounts, to new: TokenCounts) throws(PolicyError) {
        let waiters: Bool
        do {
            waiters = try lock.withLock { (_) throws(PolicyError) -> Bool in
                try machine.commit(leaf: leaf, admission, from: old, to: new)
            }
        } catch {
            throw error.with(key: key(of: leaf))
        }
        if waiters { tickNow() }
    }

    /// Commits a usage reported in parts; returns the counts recorded.
    func commit(
        leaf: Int32, _ admission: Admission, from old: TokenCounts, input: Int, output: Int, cacheReads: Int, cost: Int64 = 0
    ) throws(PolicyError) -> TokenCounts {
        let (waiters, new): (Bool, TokenCounts)
        do {
            (waiters, new) = try lock.withLock { (_) throws(PolicyError) -> (Bool, TokenCounts) in
                var new = TokenCounts.usage(
                    input: input, output: output, cacheReads: cacheReads, countsCacheReads: machine.countsCacheReads)
                new.cost = cost
                return (try machine.commit(leaf: leaf, admission, from: old, to: new), new)
            }
        } catch {
            throw error.with(key: key(of: leaf))
        }
        if waiters { tickNow() }
        return new
    }

    func release(leaf: Int32) {
        if lock.withLock({ _ in machine.release(leaf: leaf) }) { tickNow() }
        if environment.lifecycle.isStopping { environment.lifecycle.permitReleased() }
    }

    /// Lets waiters through after something was freed or changed.
    func tickNow() {
        let now = environment.time.now()
        withMachine { machine in ((), machine.tick(now: now)) }
    }

    /// Cancels every timer: the service is going away.
    func shutdown() {
        let timer = lock.withLock { _ -> Task<Void, Never>? in
            defer {
                self.timer = nil
                timerAt = .max
            }
            return self.timer
        }
        timer?.cancel()
    }
}
