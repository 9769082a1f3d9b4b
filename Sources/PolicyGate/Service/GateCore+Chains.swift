/// Providers with nested limits: their calls go through one ``ChainGate`` per provider.
extension GateCore {
    /// The tree of `key`'s provider, made on first use. Made under the registry's lock with the
    /// provider's limits read inside it, so a gate made during a reload either is handed the
    /// new limits by ``handOver(_:cause:now:)`` or starts on them.
    func chainGate(for key: PolicyKey, now: Int64) -> ChainGate {
        let name = ProviderName(of: key)
        return chains.withLock { gates in
            if let gate = gates[name] { return gate }
            let entry = providers.readLocked { $0[name] }
            let account = entry?.compiled ?? CompiledLimits(.unlimited, generation: 0)
            let gate = ChainGate(
                provider: key.provider, account: account, kinds: entry?.compiledScopes ?? [:],
                groups: entry?.compiledGroups ?? [], now: now,
                environment: environment, feedback: feedback(for: PolicyKey(provider: key.provider)), costs: entry?.costs,
                kindTiers: entry?.compiledKindTiers ?? [:])
            gates[name] = gate
            return gate
        }
    }

    /// Hands changed limits to the trees of nested providers. A provider that is no longer
    /// nested (or no longer gated) leaves the registry, so new calls take the flat path; its
    /// tree keeps only the account's caps (or none) until its permits and waiters are gone.
    func handOverToChains(_ changes: [LimitsChange], ungated: CompiledLimits?, now: Int64) {
        for change in changes {
            let name = ProviderName(change.provider)
            guard let gate = chains.withLock({ $0[name] }) else { continue }
            // A tree counts the provider's caps per key or per account for good: a provider
            // that gains or loses its per-scope tables gets a new tree, like one that leaves.
            if let current = change.current, current.compiled.isNested, current.levels.kinds.isEmpty == gate.isFlat {
                gate.setLimits(
                    account: current.compiled, kinds: current.compiledScopes, groups: current.compiledGroups, costs: current.costs,
                    kindTiers: current.compiledKindTiers, now: now)
            } else {
                chains.withLock { gates in if gates[name] === gate { gates[name] = nil } }
                let account = change.current?.compiled ?? ungated ?? CompiledLimits(.unlimited, generation: nextGeneration())
                gate.setLimits(account: account, kinds: [:], now: now)
            }
        }
    }

    /// Waits in `key`'s chain until admitted, rejected, timed out or cancelled.
    func wait(
        in gate: ChainGate, _ key: PolicyKey, model: String?, tokens: TokenCounts, limits: CompiledLimits, deadline: Int64,
        priority: PolicyPriority = .interactive, tiers: ChainGate.Machine.LevelTiers? = nil
    ) async throws -> ChainGrant {
        let id = nextWaiterID()
        let provider = ProviderName(of: key)
        let aging = priority == .batch ? providers.read { $0.batchAging(provider) } : 0
        let environment = environment
        return try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<ChainGrant, any Error>) in
                let now = environment.time.now()
                enum Outcome { case cancelled, admitted(Int32, Admission), rejected(PolicyError), enqueued }
                let outcome = gate.withMachine { machine -> (Outcome, ChainGate.Machine.Effects) in
                    // Checked under the lock: a cancellation handler that ran before this found
                    // nothing to remove, and one that runs after will find this waiter.
                    if Task.isCancelled { return (.cancelled, .init()) }
                    // Checked under the lock, as the shutdown fails the waiters under it.
                    if environment.lifecycle.isStopping { return (.rejected(GateLifecycle.refusal(key)), .init()) }
                    let leaf = machine.leaf(for: key, model: model, tiers: tiers, now: now)
                    let parked = ChainGate.Parked(continuation: continuation, key: key, leaf: leaf)
                    let retiered = machine.takeRetierEffects(now: now)
                    switch machine.enqueue(
                        id: id, leaf: leaf, tokens: tokens, account: limits, deadline: deadline, payload: parked, now: now,
                        priority: priority, aging: aging)
                    {
                    case .admitted(let admission, var effects):
                        effects.merge(retiered)
                        return (.admitted(leaf, admission), effects)
                    case .rejected(let error, var effects):
                        effects.merge(retiered)
                        return (.rejected(error.with(key: key)), effects)
                    case .enqueued(var effects):
                        effects.merge(retiered)
                        return (.enqueued, effects)
                    }
                }
                switch outcome {
                case .cancelled: continuation.resume(throwing: CancellationError())
                case .admitted(let leaf, let admission):
                    continuation.resume(returning: ChainGrant(leaf: leaf, admission: admission))
                case .rejected(let error): continuation.resume(throwing: error)
                case .enqueued: break
                }
            }
        } onCancel: {
            let now = environment.time.now()
            let parked = gate.withMachine { machine in machine.cancel(id: id, now: now) }
            parked?.continuation.resume(throwing: CancellationError())
        }
    }
}

extension ChainGate {
    /// Adopts new limits for the account and every level.
    func setLimits(
        account: CompiledLimits, kinds: [String: CompiledLimits], groups: [ModelGroupCaps] = [], costs: CostPolicy? = nil,
        kindTiers: [String: CompiledTiers] = [:], now: Int64
    ) {
        withMachine { machine in
            ((), machine.setLimits(account: account, kinds: kinds, groups: groups, costs: costs, kindTiers: kindTiers, now: now))
        }
    }
}
