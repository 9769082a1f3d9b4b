import Synchronization

/// A provider's configured limits, in both forms: as given (for readouts) and compiled.
struct ProviderEntry: Sendable {
    let limits: PolicyLimits
    let compiled: CompiledLimits
}

/// Provider names keyed by the hash a ``PolicyKey`` computed once, so the per-call provider
/// lookup hashes one integer instead of a string.
struct ProviderName: Hashable, Sendable {
    let name: String
    let hash: Int

    static func == (lhs: ProviderName, rhs: ProviderName) -> Bool { lhs.hash == rhs.hash && lhs.name == rhs.name }
    func hash(into hasher: inout Hasher) { hasher.combine(hash) }
    // The hash is already a seeded SipHash: hand it to the table as it is (see `HashedKey`).
    func _rawHashValue(seed: Int) -> Int { hash ^ seed }

    init(_ name: String) {
        self.name = name
        var hasher = Hasher()
        hasher.combine(name)
        hash = hasher.finalize()
    }

    init(of key: PolicyKey) {
        name = key.provider
        hash = key.providerHash
    }
}

/// The synchronous heart of ``PolicyService``: the provider table and the sharded key
/// registry, reachable without an actor hop from every call.
final class GateCore: Sendable {
    static let shardCount = 32

    let environment: GateEnvironment
    let shards: [Shard]
    /// Providers whose limits have at least one cap. Absent providers are not gated.
    let providers: Locked<[ProviderName: ProviderEntry]>
    private let waiterIDs = Atomic<UInt64>(0)

    init(limits: [String: PolicyLimits], time: any TimeSource, telemetry: (any PolicyTelemetry)?) {
        environment = GateEnvironment(time: time, telemetry: telemetry)
        shards = (0..<Self.shardCount).map { _ in Shard() }
        var table: [ProviderName: ProviderEntry] = [:]
        for (name, value) in limits where !value.isUnlimited {
            table[ProviderName(name)] = ProviderEntry(limits: value, compiled: CompiledLimits(value, generation: 1))
        }
        providers = Locked(table)
    }

    @inline(__always)
    func shard(for key: PolicyKey) -> Shard {
        shards[key.keyHash & (Self.shardCount - 1)]
    }

    @inline(__always)
    func compiledLimits(for key: PolicyKey) -> CompiledLimits? {
        let name = ProviderName(of: key)
        return providers.withLock { $0[name]?.compiled }
    }

    func entry(for provider: String) -> ProviderEntry? {
        let name = ProviderName(provider)
        return providers.withLock { $0[name] }
    }

    // MARK: Acquire

    /// Checks a token estimate against the provider's caps.
    @inline(__always)
    func validate(estimate: Int, limits: CompiledLimits, key: PolicyKey) throws(PolicyError) -> Int64 {
        guard estimate > 0, estimate <= PolicyLimits.maximumTokenCount else {
            if estimate == 0 && !limits.hasTokenCaps { return 0 }
            throw reject(key, estimate, PolicyError(
                .invalidTokenCount, key: key,
                message: estimate == 0
                    ? "an estimate of 0 tokens would bypass the token caps; pass the expected count"
                    : "estimated tokens must be in 0...\(PolicyLimits.maximumTokenCount), got \(estimate)"))
        }
        let tokens = Int64(estimate)
        if let kind = limits.oversizedKind(tokens) {
            throw reject(key, estimate, PolicyError(
                .oversized, limit: kind, key: key,
                message: "estimate of \(estimate) tokens exceeds \(kind) (\(limits.tokenCaps[kind.window!.rawValue])) and can never be admitted"))
        }
        return tokens
    }

    /// Reports a refusal to telemetry and returns it, for `throw reject(…)`.
    func reject(_ key: PolicyKey, _ estimate: Int, _ error: PolicyError) -> PolicyError {
        if environment.hasTelemetry {
            environment.telemetry?.didReject(PolicyRejectEvent(key: key, estimatedTokens: estimate, error: error))
        }
        return error
    }

    /// One locked attempt to admit now. Returns the permit's parts or why not.
    @inline(__always)
    func admitNow(_ key: PolicyKey, tokens: Int64, limits: CompiledLimits, now: Int64)
        -> (KeyStorage, Result<Admission, Rejection>)
    {
        let shard = shard(for: key)
        let environment = environment
        let (storage, result, aftermath) = shard.table.withLock { table in
            var aftermath = Aftermath()
            let storage = table.storage(
                for: key, limits: limits, now: now, shard: shard, environment: environment, aftermath: &aftermath)
            let (result, effects) = storage.machine.tryAdmit(tokens: tokens, now: now)
            if effects.resumes.items != nil || effects.wake != nil { storage.settle(effects, into: &aftermath) }
            return (storage, result, aftermath)
        }
        if !aftermath.isEmpty { aftermath.run() }
        return (storage, result)
    }

    /// Waits in the key's queue until admitted, rejected, timed out or cancelled.
    func wait(_ key: PolicyKey, tokens: Int64, limits: CompiledLimits, deadline: Int64) async throws -> Grant {
        let id = waiterIDs.wrappingAdd(1, ordering: .relaxed).newValue
        let shard = shard(for: key)
        let environment = environment
        return try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<Grant, any Error>) in
                let now = environment.time.now()
                enum Outcome { case cancelled, admitted(KeyStorage, Admission), rejected(PolicyError), enqueued }
                let (outcome, aftermath): (Outcome, Aftermath) = shard.table.withLock { table in
                    var aftermath = Aftermath()
                    // Checked under the lock: a cancellation handler that ran before this found
                    // nothing to remove, and one that runs after will find this waiter.
                    if Task.isCancelled { return (.cancelled, aftermath) }
                    let storage = table.storage(
                        for: key, limits: limits, now: now, shard: shard, environment: environment,
                        aftermath: &aftermath)
                    let outcome: Outcome
                    switch storage.machine.enqueue(id: id, tokens: tokens, deadline: deadline, payload: continuation, now: now) {
                    case .admitted(let admission, let effects):
                        storage.settle(effects, into: &aftermath)
                        outcome = .admitted(storage, admission)
                    case .rejected(let error, let effects):
                        storage.settle(effects, into: &aftermath)
                        outcome = .rejected(error.with(key: key))
                    case .enqueued(let effects):
                        storage.settle(effects, into: &aftermath)
                        outcome = .enqueued
                    }
                    return (outcome, aftermath)
                }
                aftermath.run()
                switch outcome {
                case .cancelled: continuation.resume(throwing: CancellationError())
                case .admitted(let storage, let admission): continuation.resume(returning: Grant(storage: storage, admission: admission))
                case .rejected(let error): continuation.resume(throwing: error)
                case .enqueued: break
                }
            }
        } onCancel: {
            let now = environment.time.now()
            let (continuation, aftermath) = shard.table.withLock { table in
                var aftermath = Aftermath()
                guard let storage = table.lookup(key) else { return (nil as UnsafeContinuation<Grant, any Error>?, aftermath) }
                let (continuation, effects) = storage.machine.cancel(id: id, now: now)
                storage.settle(effects, into: &aftermath)
                return (continuation, aftermath)
            }
            aftermath.run()
            continuation?.resume(throwing: CancellationError())
        }
    }

    // MARK: Administration

    /// Runs `body` on every key of `provider` (or every key), under each shard's lock in turn.
    func forEachStorage(of provider: String?, _ body: (KeyStorage, inout Aftermath) -> Void) {
        for shard in shards {
            let aftermath = shard.table.withLock { table in
                var aftermath = Aftermath()
                for storage in table.storages where provider == nil || storage.key.provider == provider {
                    body(storage, &aftermath)
                }
                return aftermath
            }
            aftermath.run()
        }
    }

    /// Drops every key and cancels every timer: the service is going away. Permits still held
    /// keep their key's storage alive and release into it harmlessly.
    func shutdown() {
        for shard in shards {
            let aftermath = shard.table.withLock { table in
                var aftermath = Aftermath()
                for storage in table.removeAll() { storage.settle(.init(), into: &aftermath) }
                return aftermath
            }
            aftermath.run()
        }
    }
}
