/// The fast path of a provider with nested limits.
extension PolicyService {
    /// Admits a call of `key`'s chain now, or sets `pending` with the level that refused it.
    /// (Kept inlinable: out of line, passing `pending` by address cost every flat call ≈ 60
    /// instructions.)
    nonisolated func admitNested(
        _ key: PolicyKey, estimate: Estimate, model: String?, tokens: TokenCounts, limits: CompiledLimits, now: Int64,
        pending: inout Pending?, priority: PolicyPriority, price: CostPrice = .zero
    ) throws(PolicyError) -> PolicyPermit? {
        let gate = core.chainGate(for: key, now: now)
        let tiers = limits.hasLevelTiers ? try core.levelTiers(for: key, estimate: estimate.total) : nil
        let (leaf, result) = gate.tryAdmit(key, model: model, tokens: tokens, account: limits, now: now, tiers: tiers)
        switch result {
        case .success(let admission):
            if core.environment.hasTelemetry {
                reportChainAdmission(
                    key, estimate: estimate, gate: gate, admission: admission, tokens: tokens, waited: 0, priority: priority,
                    costed: limits.hasCostCaps)
            }
            return PolicyPermit(chain: gate, leaf: leaf, admission: admission, estimated: tokens, price: price)
        case .failure(let refusal):
            let depth =
                refusal.level.scope.kind == PolicyModelGroup.scopeKind
                ? Pending.groupLevel : refusal.level.scope == .global ? 0 : refusal.level.parents.count + 1
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
    nonisolated func nestedState(for key: PolicyKey, model: String?, entry: ProviderEntry, now: Int64) -> PolicyState {
        struct Level {
            let key: PolicyKey
            /// 0: the account, 1: a scope's level, 2: a model group.
            let role: Int
            let usage: [GateStateMachine<Void>.WindowUsage]
            let inFlight: Int
            let queued: Int
            let blockedBy: PolicyLimitKind?
            var spend: [(cap: PolicyCostCap, spent: Int64, limit: Int64, resetsAt: Int64?)] = []
        }
        let gate = core.chainGate(for: key, now: now)
        // Each level's tier (a tier the provider lacks shows its kind's caps).
        let tiers = entry.compiled.hasLevelTiers ? try? core.levelTiers(for: key, reporting: false, strict: false) : nil
        let (levels, nextExpiry) = gate.withMachine { machine -> (([Level], Int64?), ChainGate.Machine.Effects) in
            let leaf = machine.leaf(for: key, model: model, now: now)
            let flat = machine.isFlat
            // A route is internal, and a flat tree's account holds no caps: neither is a level.
            let shown = machine.chain(of: leaf).reversed().filter { b in
                if case .route = machine.buckets[Int(b)].role { return false }
                return !(flat && b == 0)
            }
            let levels = shown.map { b in
                let role: Int
                switch machine.buckets[Int(b)].role {
                case .group: role = 2
                case .level, .route: role = b == 0 ? 0 : 1
                }
                return Level(
                    key: machine.buckets[Int(b)].key, role: role,
                    usage: machine.usage(of: b, now: now).map {
                        .init(
                            window: $0.window, requests: $0.requests, tokens: $0.tokens, inputTokens: $0.inputTokens,
                            outputTokens: $0.outputTokens)
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
        let flat = entry.levels.kinds.isEmpty
        for level in levels {
            // Where the provider's own caps are: the account, or (flat) each key's bucket.
            let isAccount = flat ? level.role == 1 : level.role == 0
            let limits: PolicyLimits
            switch level.role {
            case 2:
                if case .custom(_, let name) = level.key.scope {
                    limits = entry.levels.groups[name]?.limits ?? .unlimited
                } else {
                    limits = .unlimited
                }
            default:
                if isAccount {
                    limits = entry.effectiveLimits
                } else {
                    let kindCaps = entry.levels.kinds[level.key.scope.kind] ?? .unlimited
                    let depth = level.key.levels.count - 1
                    let tier = tiers.flatMap { depth >= 0 && depth < $0.count ? $0[depth].tier : nil }
                    limits = entry.tiers.limits(over: kindCaps, scope: level.key.scope, tier: tier) ?? kindCaps
                }
            }
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
                state.providerFeedback = core.existingFeedback(for: PolicyKey(provider: key.provider))?.readout(at: now)
                if let adaptive = entry.adaptive {
                    let next = adaptive.nextStep(after: now)
                    state.adaptive = PolicyState.Adaptive(
                        factor: Double(factor) / 1_000, limits: enforced, nextIncreaseIn: next == .max ? nil : .nanoseconds(next - now))
                }
            }
            states.append(state)
        }
        // The key's own level (the innermost that is not a model group).
        var state = Array(zip(levels, states)).last { $0.0.role != 2 }?.1 ?? states[states.count - 1]
        state.levels = states
        if entry.compiled.hasLevelTiers, key.scope != .global {
            state.tier = tiers?.last?.tier
            state.hasScopeOverride = entry.tiers.overrides[key.scope] != nil
        }
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
