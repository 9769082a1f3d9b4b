extension PolicyService {
    // MARK: Tiers and per-scope overrides

    /// Why a provider's tiers or overrides cannot be applied, if they cannot: model groups'
    /// trees count every key under one set of caps so far, and a shared store counts total
    /// tokens only.
    static func tierProblem(nested: Bool, grouped: Bool, shared: Bool, splitCaps: Bool) -> String? {
        if grouped { return "tiers and per-scope overrides are not supported with model groups yet" }
        if shared && splitCaps { return splitCapsNotShared }
        return nil
    }

    /// Checks tiers and overrides: caps valid, caps only (no settings), at most
    /// ``CompiledTiers/maximumTiers`` tiers per provider, a provider they can apply to, and no
    /// input or output caps for a shared provider.
    static func validate(
        tiers: [String: ProviderTiers], storage: [String: PolicyStorage], scopeLimits: [String: [String: PolicyLimits]],
        modelGroups: [String: [String: PolicyModelGroup]], schedules: [String: PolicySchedule]
    ) throws(PolicyError) {
        for (provider, schedule) in schedules.sorted(by: { $0.key < $1.key }) {
            for entry in schedule.entries {
                if !entry.tierLimits.isEmpty, !(scopeLimits[provider] ?? [:]).isEmpty {
                    throw PolicyError(
                        .invalidLimits,
                        message:
                            "schedule entry '\(entry.name)' of provider '\(provider)' sets tiers' caps, but a nested provider's schedule sets its account's caps only"
                    )
                }
                for (tier, caps) in entry.tierLimits.sorted(by: { $0.key < $1.key }) {
                    guard tiers[provider]?.tiers[tier] != nil else {
                        throw PolicyError(
                            .invalidLimits,
                            message:
                                "schedule entry '\(entry.name)' of provider '\(provider)' names tier '\(tier)', which the provider does not define"
                        )
                    }
                    try validate(capsOnly: caps, owner: "\(provider)' schedule entry '\(entry.name)' tier '\(tier)")
                }
            }
        }
        for (provider, configured) in tiers.sorted(by: { $0.key < $1.key }) where !configured.isEmpty {
            if let problem = tierProblem(
                nested: !(scopeLimits[provider] ?? [:]).isEmpty, grouped: !(modelGroups[provider] ?? [:]).isEmpty,
                shared: (storage[provider] ?? .memory).store != .memory, splitCaps: configured.hasSplitCaps)
            {
                throw PolicyError(.invalidLimits, message: "provider '\(provider)': \(problem)")
            }
            if configured.tiers.count > CompiledTiers.maximumTiers {
                throw PolicyError(
                    .invalidLimits,
                    message:
                        "provider '\(provider)' has \(configured.tiers.count) tiers; at most \(CompiledTiers.maximumTiers) are supported")
            }
            for (name, caps) in configured.tiers.sorted(by: { $0.key < $1.key }) {
                guard !name.isEmpty else { throw PolicyError(.invalidLimits, message: "provider '\(provider)': a tier needs a name") }
                try validate(capsOnly: caps, owner: "\(provider)' tier '\(name)")
            }
            for (scope, caps) in configured.overrides.sorted(by: { $0.key.description < $1.key.description }) {
                try validate(capsOnly: caps, owner: "\(provider)' override of scope '\(scope)")
            }
        }
    }

    /// A tier's or an override's caps: valid, and nothing but caps.
    private static func validate(capsOnly caps: PolicyLimits, owner: String) throws(PolicyError) {
        try caps.validate(provider: owner)
        guard PolicyLimits().overlaid(with: caps) == caps else {
            throw PolicyError(
                .invalidLimits,
                message: "provider '\(owner)' sets more than caps; settings (max_wait_ms, reserves, prices, spend caps…) are the provider's"
            )
        }
    }

    /// Sets, replaces or removes the caps of one scope of `provider` at runtime (a contract):
    /// the scope gets the provider's caps with these over them, cap by cap, whatever tier it is
    /// in. Validated like the configuration file; visible in ``configuration`` and in
    /// ``currentState(for:)`` (``PolicyState/hasScopeOverride``); reported to telemetry as a
    /// ``PolicyLimitsChangeEvent`` naming the scope. The scope's keys switch as on any change
    /// of limits: usage kept, waiters that now fit admitted, none admitted beyond the new caps.
    ///
    /// A later ``apply(_:keepingScopeOverrides:)`` of a file that does not list the scope
    /// removes the override unless it is called with `keepingScopeOverrides: true`.
    /// - Parameters:
    ///   - limits: The scope's caps; `nil` removes its override (it goes back to its tier's).
    ///   - scope: The scope, such as `.org("acme")`.
    ///   - provider: The provider, which must be gated.
    /// - Throws: ``PolicyError/Code/invalidLimits`` for an invalid cap, a setting that is not a
    ///   cap, a provider with model groups, or an input or output cap for a provider kept in a
    ///   shared store; ``PolicyError/Code/invalidArgument`` for a provider that is not gated.
    ///   Nothing changes then.
    public func setScopeOverride(_ limits: PolicyLimits?, for scope: PolicyScope, provider: String) throws(PolicyError) {
        guard let entry = core.entry(for: provider) else {
            throw PolicyError(.invalidArgument, message: "provider '\(provider)' is not gated: give it caps before overriding a scope's")
        }
        var tiers = entry.tiers
        let before = tiers.overrides[scope]
        tiers.overrides[scope] = limits
        guard before != limits else { return }
        try Self.validate(
            tiers: [provider: tiers], storage: [provider: entry.storage], scopeLimits: [provider: entry.levels.kinds],
            modelGroups: [provider: entry.levels.groups], schedules: [:])
        var change = ProviderChange(keeping: entry)
        change.tiers = tiers
        swap([provider: change], replacingAll: false, reporting: false)
        guard core.environment.hasTelemetry, let telemetry = core.environment.telemetry else { return }
        let provided = entry.effectiveLimits
        let resolution = entry.schedule?.resolution
        var event = PolicyLimitsChangeEvent(
            provider: provider, previous: before.map { provided.overlaid(with: $0) } ?? provided,
            current: limits.map { provided.overlaid(with: $0) } ?? provided, cause: .configuration,
            scheduleEntry: resolution?.entry, isClosed: resolution?.isClosed ?? false, nextTransition: resolution?.validUntil)
        event.scope = scope
        telemetry.didChangeLimits(event)
    }

    /// The per-scope overrides of `provider` in force (from the configuration and set at
    /// runtime); empty when it has none.
    public nonisolated func scopeOverrides(for provider: String) -> [PolicyScope: PolicyLimits] {
        core.entry(for: provider)?.tiers.overrides ?? [:]
    }

    /// The tiers of `provider` in force; empty when it has none.
    public nonisolated func tiers(for provider: String) -> [String: PolicyLimits] {
        core.entry(for: provider)?.tiers.tiers ?? [:]
    }

    /// Installs the function that says which tier a scope is in, for calls whose key names
    /// none (``PolicyKey/tier``); `nil` removes it (such scopes get their provider's caps).
    ///
    /// Its answer is cached per key: it runs on a key's first call, outside the gate's locks,
    /// and not again until a new resolver is installed (up to 100 000 answers are kept; past
    /// that the cache starts over). An answer that is not one of the provider's tiers makes
    /// the call fail with ``PolicyError/Code/invalidArgument``. Installing a resolver asks it
    /// again for every key the gate holds under a provider with tiers, and moves each to its
    /// tier's caps as any change of limits would (waiters that now fit are admitted, none
    /// beyond the new caps).
    /// - Parameter resolver: Maps a scope to a tier name, or `nil` for "no tier"; it must be
    ///   fast and must not call the gate.
    public func setTierResolver(_ resolver: (@Sendable (PolicyScope) -> String?)?) {
        core.tierResolver.replace(resolver)
        // The keys held now, asked afresh (outside every lock), then re-limited.
        var held: [PolicyKey] = []
        core.forEachStorage(of: nil) { storage, _ in
            if self.core.compiledTiers(for: storage.key) != nil { held.append(storage.key) }
        }
        // Every key, also one whose first call named a tier: its later calls may not.
        for key in held { _ = core.tierResolver.tier(for: key) }
        // Nested providers' trees: each level the resolver decides, asked afresh (outside the
        // tree's lock), moves to its tier's caps.
        let trees = core.chains.withLock { Array($0.values) }
        for gate in trees {
            let keys = gate.withMachine { machine in (machine.resolvedLevelKeys, ChainGate.Machine.Effects()) }
            guard !keys.isEmpty else { continue }
            var answers: [HashedKey: String?] = [:]
            let version = core.tierResolver.version
            for key in keys { answers[HashedKey(key)] = .some(core.tierResolver.tier(for: key)) }
            let now = core.environment.time.now()
            gate.withMachine { machine in ((), machine.retier(answers, version: version, now: now)) }
        }
        // Every provider with tiers, keys held or not: the new generation dates the sets, so a
        // call that asked the old resolver cannot move a key back (see `tieredLimits`); the
        // hand-over moves every key to its tier's caps.
        let providers = core.providers.readLocked { table in table.names.filter { table.compiledTiers($0) != nil }.map(\.name) }
        var changes: [String: ProviderChange] = [:]
        for provider in providers {
            if let entry = core.entry(for: provider) { changes[provider] = ProviderChange(keeping: entry) }
        }
        swap(changes, replacingAll: false, reporting: false, recompiling: true)
    }
}
