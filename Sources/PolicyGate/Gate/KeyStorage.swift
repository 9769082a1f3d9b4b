import Synchronization

/// What a waiter is resumed with: the storage that admitted it and its admission.
struct Grant: Sendable {
    let storage: KeyStorage
    let admission: Admission
}

/// Time and telemetry, shared by everything a service creates. Holds no reference back to the
/// service, so permits may outlive it.
final class GateEnvironment: Sendable {
    let time: any TimeSource
    let telemetry: (any PolicyTelemetry)?
    /// Checked before touching `telemetry`: loading the existential costs a retain and a
    /// release on every call, which is most of what "no telemetry" should cost.
    let hasTelemetry: Bool
    /// Reports permits held too long (``PolicyService/permitHoldWarning``). Called only where
    /// telemetry is reported, so that a service without telemetry pays nothing for it.
    let holdWatch: PermitHoldWatch
    /// Whether the gate is shutting down, and who waits for its permits to be released.
    let lifecycle = GateLifecycle()

    /// The core that made this environment, for what permits report back (provider feedback).
    /// Weak, so that permits may outlive their service.
    private let owner = Locked(WeakCore())

    init(time: any TimeSource, telemetry: (any PolicyTelemetry)?) {
        self.time = time
        self.telemetry = telemetry
        self.hasTelemetry = telemetry != nil
        self.holdWatch = PermitHoldWatch(time: time, telemetry: telemetry)
    }

    var core: GateCore? { owner.withLock { $0.core } }

    func attach(_ core: GateCore) { owner.withLock { $0.core = core } }
}

/// A weak reference to the core, kept under a lock.
struct WeakCore: Sendable {
    weak var core: GateCore?
}

/// The shell around one key's ``GateStateMachine``: it owns the continuations of the key's
/// waiters and its timer, and carries out what the machine decides. It decides nothing itself.
///
/// Its mutable state is guarded by its shard's lock (one lock per shard rather than per key, so
/// that an admission takes a single lock for the lookup and the decision).
final class KeyStorage: @unchecked Sendable {  // mutable state only touched under `shard.table`'s lock
    typealias Machine = GateStateMachine<UnsafeContinuation<Grant, any Error>>

    let key: PolicyKey
    let shard: Shard
    let environment: GateEnvironment

    // Guarded by `shard.table`'s lock, so the runtime's exclusivity checks add nothing but cost.
    @exclusivity(unchecked) var machine: Machine
    /// Keeps alive the provider feedback the machine refers to without counting.
    @exclusivity(unchecked) private var feedback: ProviderFeedbackState?
    @exclusivity(unchecked) var position: Int
    @exclusivity(unchecked) private var timerAt: Int64 = .max
    @exclusivity(unchecked) private var timer: Task<Void, Never>?

    init(
        key: PolicyKey, limits: CompiledLimits, now: Int64, shard: Shard, environment: GateEnvironment, position: Int,
        feedback: ProviderFeedbackState? = nil, costs: CostPolicy? = nil
    ) {
        self.key = key
        self.shard = shard
        self.environment = environment
        self.feedback = feedback
        self.machine = Machine(limits: limits, now: now, feedback: feedback, costs: costs)
        self.position = position
    }

    /// Consults `feedback` from now on. Call under the lock.
    func adopt(feedback: ProviderFeedbackState) {
        self.feedback = feedback
        machine.adopt(feedback: feedback)
    }

    /// Carries out resumptions outside the lock.
    func perform(_ effects: Machine.Effects) {
        for resume in effects.resumes.items ?? [] {
            switch resume.result {
            case .success(let admission):
                resume.payload.resume(returning: Grant(storage: self, admission: admission))
            case .failure(let error):
                resume.payload.resume(throwing: error.with(key: key))
            }
        }
    }

    /// Arms or disarms the timer after the machine changed, and queues the resumptions for
    /// after the lock. Call under the lock.
    func settle(_ effects: Machine.Effects, into aftermath: inout Aftermath) {
        if effects.resumes.items != nil { aftermath.work.append((self, effects)) }
        if !machine.hasWaiters {
            if let timer { aftermath.cancelled.append(timer) }
            timer = nil
            timerAt = .max
            return
        }
        guard let wake = effects.wake, wake < timerAt else { return }
        if let timer { aftermath.cancelled.append(timer) }
        timerAt = wake
        let time = environment.time
        timer = Task { [self] in
            do { try await time.sleep(until: wake) } catch { return }
            fire(at: wake)
        }
    }

    private func fire(at wake: Int64) {
        let now = environment.time.now()
        let aftermath = shard.table.withLock { _ in
            if timerAt == wake {
                timerAt = .max
                timer = nil
            }
            var aftermath = Aftermath()
            settle(machine.tick(now: now), into: &aftermath)
            return aftermath
        }
        aftermath.run()
    }

    // MARK: Permit paths

    // Commit and release return a plain flag from the lock on their fast path (nobody waiting);
    // building and destroying an aftermath there would cost more than the rule itself.

    @inline(__always)
    func commit(_ admission: Admission, from old: TokenCounts, to new: TokenCounts) throws(PolicyError) {
        let waiters: Bool
        do {
            waiters = try shard.table.withLock { (_) throws(PolicyError) -> Bool in
                try machine.commit(admission, from: old, to: new)
            }
        } catch {
            throw error.with(key: key)
        }
        if waiters { tickNow() }
    }

    /// Commits a usage reported as input, output and cache reads, cache reads counted as input
    /// if the limits in force say so. Returns the counts recorded.
    func commit(
        _ admission: Admission, from old: TokenCounts, input: Int, output: Int, cacheReads: Int, cost: Int64 = 0
    ) throws(PolicyError) -> TokenCounts {
        let (waiters, new): (Bool, TokenCounts)
        do {
            (waiters, new) = try shard.table.withLock { (_) throws(PolicyError) -> (Bool, TokenCounts) in
                var new = TokenCounts.usage(
                    input: input, output: output, cacheReads: cacheReads, countsCacheReads: machine.limits.countsCacheReads)
                new.cost = cost
                return (try machine.commit(admission, from: old, to: new), new)
            }
        } catch {
            throw error.with(key: key)
        }
        if waiters { tickNow() }
        return new
    }

    @inline(__always)
    func release() {
        if shard.table.withLock({ _ in machine.release() }) { tickNow() }
        if environment.lifecycle.isStopping { environment.lifecycle.permitReleased() }
    }

    /// Lets waiters through after a commit or release freed something.
    private func tickNow() {
        let now = environment.time.now()
        let aftermath = shard.table.withLock { _ in
            var aftermath = Aftermath()
            settle(machine.tick(now: now), into: &aftermath)
            return aftermath
        }
        aftermath.run()
    }
}

/// What must happen once a lock is released: timers to cancel (their clocks' cancellation
/// handlers are not ours to run under our lock) and waiters to resume.
struct Aftermath: Sendable {
    var work = Few<(KeyStorage, KeyStorage.Machine.Effects)>()
    var cancelled = Few<Task<Void, Never>>()

    var isEmpty: Bool { work.items == nil && cancelled.items == nil }

    func run() {
        for task in cancelled.items ?? [] { task.cancel() }
        for (storage, effects) in work.items ?? [] { storage.perform(effects) }
    }
}

/// One slice of the key registry with its lock. Keys are spread over shards by hash, so that
/// callers on different keys rarely contend.
final class Shard: Sendable {
    let table = Locked(ShardTable())
}

/// The keys of one shard, guarded by the shard's lock.
struct ShardTable: ~Copyable {
    /// Each key's position in `storages`.
    private var index = KeyIndex()
    /// The shard's keys, in no order (a removal moves the last one into the hole).
    private(set) var storages: [KeyStorage] = []
    /// Where the incremental sweep resumes.
    private var cursor = 0

    /// The storage of `key`, if it is registered.
    func lookup(_ key: PolicyKey) -> KeyStorage? {
        index.position(of: key, in: storages).map { storages[$0] }
    }

    /// The key's storage, created if absent (with a sweep step, to bound memory), on limits at
    /// least as new as `limits`; a new key starts on `core`'s latest limits.
    @inline(__always)
    mutating func storage(
        for key: PolicyKey, limits: CompiledLimits, now: Int64, core: GateCore, shard: Shard, aftermath: inout Aftermath
    ) -> KeyStorage {
        if let position = index.position(of: key, in: storages) {
            let storage = storages[position]
            sweep(count: 1, now: now, sparing: storage, aftermath: &aftermath)
            if limits.supersedes(storage.machine.limits) {
                // A reload is under way and this caller saw it first.
                let costs = limits.hasCostCaps ? core.costs(for: key) : nil
                storage.settle(storage.machine.setLimits(limits, costs: costs, now: now), into: &aftermath)
            }
            return storage
        }
        sweep(count: 2, now: now, sparing: nil, aftermath: &aftermath)
        let startLimits = core.limitsForNewKey(key, given: limits)
        let storage = KeyStorage(
            key: key, limits: startLimits, now: now, shard: shard,
            environment: core.environment, position: storages.count, feedback: core.feedback(for: key),
            costs: startLimits.hasCostCaps ? core.costs(for: key) : nil)
        index.insert(key, at: storages.count, in: storages)
        storages.append(storage)
        return storage
    }

    /// Drops up to `count` idle keys at the cursor: keys with nothing in flight, nobody waiting
    /// and no usage left in any window. A busy key is passed over until the cursor comes back,
    /// and so is `spared` (the key being acquired, which must stay registered).
    mutating func sweep(count: Int, now: Int64, sparing spared: KeyStorage?, aftermath: inout Aftermath) {
        for _ in 0..<count {
            guard !storages.isEmpty else { return }
            if cursor >= storages.count { cursor = 0 }
            if storages[cursor] === spared || !dropIfIdle(at: cursor, now: now, aftermath: &aftermath) {
                cursor += 1
            }
        }
    }

    /// Sweeps every key.
    mutating func sweepAll(now: Int64, aftermath: inout Aftermath) {
        var position = 0
        while position < storages.count {
            if !dropIfIdle(at: position, now: now, aftermath: &aftermath) { position += 1 }
        }
        cursor = 0
    }

    /// Forgets the key at `position` if it is idle (disarming a stale timer); says whether it did.
    private mutating func dropIfIdle(at position: Int, now: Int64, aftermath: inout Aftermath) -> Bool {
        guard storages[position].machine.isIdle(now: now) else { return false }
        storages[position].settle(.init(), into: &aftermath)
        remove(at: position)
        return true
    }

    /// Forgets the key at `position`, moving the last key into its place.
    private mutating func remove(at position: Int) {
        // The index is updated first, while every position it holds is still valid for `hashAt`.
        index.remove(at: position, in: storages)
        let last = storages.removeLast()
        if position < storages.count {
            index.move(hash: last.key.keyHash, from: storages.count, to: position)
            storages[position] = last
            last.position = position
        }
    }

    /// The keys registered.
    var count: Int { storages.count }

    /// Forgets every key, returning their storages.
    mutating func removeAll() -> [KeyStorage] {
        let all = storages
        storages = []
        index.removeAll()
        cursor = 0
        return all
    }
}
