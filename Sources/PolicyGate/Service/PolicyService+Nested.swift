/// The fast path of a provider with nested limits.
extension PolicyService {
    /// Admits a call of `key`'s chain now, or sets `pending` with the level that refused it.
    /// (Kept inlinable: out of line, passing `pending` by address cost every flat call ≈ 60
    /// instructions.)
    nonisolated func admitNested(
        _ key: PolicyKey, estimate: Estimate, tokens: TokenCounts, limits: CompiledLimits, now: Int64, pending: inout Pending?,
        priority: PolicyPriority, price: CostPrice = .zero
    ) -> PolicyPermit? {
        let gate = core.chainGate(for: key, now: now)
        let (leaf, result) = gate.tryAdmit(key, tokens: tokens, account: limits, now: now)
        switch result {
        case .success(let admission):
            if core.environment.hasTelemetry {
                reportChainAdmission(
                    key, estimate: estimate, gate: gate, admission: admission, tokens: tokens, waited: 0, priority: priority,
                    costed: limits.hasCostCaps)
            }
            return PolicyPermit(chain: gate, leaf: leaf, admission: admission, estimated: tokens, price: price)
        case .failure(let refusal):
            let depth = refusal.level.scope == .global ? 0 : refusal.level.parents.count + 1
            pending = Pending(
                limits: limits, tokens: tokens, now: now, rejection: refusal.rejection, nestedLevel: Int8(clamping: depth), price: price)
            return nil
        }
    }
}

extension PolicyService {
    /// Reports a nested provider's admission to telemetry and to the hold warning.
    @inline(never)
    nonisolated func reportChainAdmission(
        _ key: PolicyKey, estimate: Estimate, gate: ChainGate, admission: Admission, tokens: TokenCounts, waited: Int64,
        priority: PolicyPriority = .interactive, costed: Bool = false
    ) {
        let environment = core.environment
        var event = PolicyAcquireEvent(key: key, estimate: estimate, waited: .nanoseconds(waited), priority: priority)
        if costed { event.estimatedCost = PolicyMoney(microUnits: tokens.cost) }
        environment.telemetry?.didAcquire(event)
        environment.holdWatch.admitted(.init(gate, admission), key: key, at: admission.time, estimated: Int(tokens.total))
    }
}

extension PolicyKey {
    /// The key of the level `depth` of this key's chain: 0 the account, 1 the outermost parent…
    func level(_ depth: Int) -> PolicyKey {
        let levels = self.levels
        guard depth > 0, depth <= levels.count else { return PolicyKey(provider: provider) }
        return PolicyKey(provider: provider, scope: levels[depth - 1], within: Array(levels[..<(depth - 1)]))
    }
}

extension PolicyService {
    /// ``currentState(for:)`` of a key of a provider with nested limits: its own level's state,
    /// with every level of its chain in ``PolicyState/levels``.
    nonisolated func nestedState(for key: PolicyKey, entry: ProviderEntry, now: Int64) -> PolicyState {
        struct Level {
            let key: PolicyKey
            let usage: [GateStateMachine<Void>.WindowUsage]
            let inFlight: Int
            let queued: Int
            let blockedBy: PolicyLimitKind?
            var spend: [(cap: PolicyCostCap, spent: Int64, limit: Int64, resetsAt: Int64?)] = []
        }
        let gate = core.chainGate(for: key, now: now)
        let (levels, nextExpiry) = gate.withMachine { machine -> (([Level], Int64?), ChainGate.Machine.Effects) in
            let leaf = machine.leaf(for: key, now: now)
            let levels = machine.chain(of: leaf).reversed().map { b in
                Level(
                    key: machine.buckets[Int(b)].key,
                    usage: machine.usage(of: b, now: now).map {
                        .init(window: $0.window, requests: $0.requests, tokens: $0.tokens, inputTokens: $0.inputTokens, outputTokens: $0.outputTokens)
                    },
                    inFlight: machine.buckets[Int(b)].inFlight, queued: machine.queued(at: b),
                    blockedBy: machine.blocker(at: b, tokens: TokenCounts(total: 0), now: now)?.kind,
                    spend: machine.spendUsage(of: b, now: now))
            }
            return ((levels, machine.nextExpiry()), .init())
        }
        let factor = entry.adaptive?.factor(at: now) ?? AdaptiveState.full
        let resolution = entry.schedule?.resolution
        var states: [PolicyState] = []
        for (position, level) in levels.enumerated() {
            let isAccount = position == 0
            let limits = isAccount ? entry.effectiveLimits : entry.scopeLimits[level.key.scope.kind] ?? .unlimited
            let enforced = isAccount ? limits.adapted(by: factor) : limits
            var state = PolicyState(
                key: level.key, limits: limits, windows: Self.readouts(enforced, level.usage), inFlight: level.inFlight,
                queued: level.queued, waitingForCapacity: 0, blockedBy: level.blockedBy,
                scheduleEntry: resolution?.entry, isClosed: resolution?.isClosed ?? false, nextTransition: resolution?.validUntil,
                nextCapacityIn: nextExpiry.map { .nanoseconds(max(0, $0 - now)) })
            state.spend = level.spend.map {
                PolicyState.Spend(
                    cap: $0.cap, spent: PolicyMoney(microUnits: $0.spent), limit: PolicyMoney(microUnits: $0.limit),
                    resetsAt: $0.resetsAt.map { core.wallClock.date(at: $0) })
            }
            if isAccount {
                state.providerFeedback = core.existingFeedback(for: level.key)?.readout(at: now)
                if let adaptive = entry.adaptive {
                    let next = adaptive.nextStep(after: now)
                    state.adaptive = PolicyState.Adaptive(
                        factor: Double(factor) / 1_000, limits: enforced, nextIncreaseIn: next == .max ? nil : .nanoseconds(next - now))
                }
            }
            states.append(state)
        }
        var state = states[states.count - 1]
        state.levels = states
        return state
    }

    /// The readout of every capped window of `limits`, from a machine's usage: for the flat
    /// and the nested `currentState` alike.
    static func readouts(_ limits: PolicyLimits, _ usage: [GateStateMachine<Void>.WindowUsage]) -> [PolicyState.Window] {
        var windows: [PolicyState.Window] = []
        for window in PolicyWindow.allCases {
            let requestCap = limits[.requests(window)]
            let tokenCap = limits[.tokens(window)]
            let inputCap = limits[.inputTokens(window)]
            let outputCap = limits[.outputTokens(window)]
            guard requestCap != nil || tokenCap != nil || inputCap != nil || outputCap != nil else { continue }
            let used = usage.first { $0.window == window }
            var readout = PolicyState.Window(
                window: window, requests: .init(used: Int(used?.requests ?? 0), cap: requestCap),
                tokens: .init(used: Int(used?.tokens ?? 0), cap: tokenCap))
            if let inputCap { readout.inputTokens = .init(used: Int(used?.inputTokens ?? 0), cap: inputCap) }
            if let outputCap { readout.outputTokens = .init(used: Int(used?.outputTokens ?? 0), cap: outputCap) }
            windows.append(readout)
        }
        return windows
    }
}
