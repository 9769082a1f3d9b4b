import Foundation

extension PolicyService {
    /// Creates a gate on the continuous clock from a configuration.
    /// - Parameters:
    ///   - configuration: Limits and schedules per provider, typically read with
    ///     ``PolicyConfiguration/init(contentsOfFile:)``.
    ///   - telemetry: Receives every acquire, commit, reject, release and limits change.
    /// - Throws: ``PolicyError`` (``PolicyError/Code/invalidLimits``) for a configuration built
    ///   in code with a bad cap or schedule (one that was decoded is already valid).
    public init(configuration: PolicyConfiguration, telemetry: (any PolicyTelemetry)? = nil) throws(PolicyError) {
        try self.init(configuration: configuration, store: nil, clock: ContinuousClock(), startDate: Date(), telemetry: telemetry)
    }

    /// Creates a gate from a configuration, with windows and waits on `clock`.
    /// - Parameters:
    ///   - configuration: Limits and schedules per provider.
    ///   - clock: The clock every window, wait and schedule transition is measured on.
    ///   - startDate: The wall-clock date at `clock`'s current instant: schedules read dates
    ///     and times of day from it, advancing with `clock`. Pass a fixed date with a manual
    ///     clock to drive schedules in tests and simulations; the default is the system's now.
    ///   - telemetry: Receives every acquire, commit, reject, release and limits change.
    public init<C: Clock>(
        configuration: PolicyConfiguration, clock: C, startDate: Date = Date(), telemetry: (any PolicyTelemetry)? = nil
    ) throws(PolicyError) where C.Duration == Duration {
        try self.init(configuration: configuration, store: nil, clock: clock, startDate: startDate, telemetry: telemetry)
    }

    /// Creates a gate whose shared providers (``PolicyConfiguration/storage``) keep their
    /// counters in `store`, so that every process using the same store shares their caps.
    /// - Parameters:
    ///   - configuration: Limits, schedules and storage per provider.
    ///   - store: Where shared providers' counters live, such as `PostgresPolicyStore`
    ///     (`PolicyGatePostgres`, trait `Postgres`); `nil` when no provider is shared.
    ///   - clock: The clock waits and schedule transitions are measured on (windows of shared
    ///     providers are measured on the store's clock).
    ///   - startDate: The wall-clock date at `clock`'s current instant.
    ///   - telemetry: Receives every acquire, commit, reject, release, limits change and store
    ///     failure.
    /// - Throws: ``PolicyError/Code/invalidLimits`` for a bad cap or schedule;
    ///   ``PolicyError/Code/invalidArgument`` if a provider is shared but `store` is `nil`.
    public init<C: Clock>(
        configuration: PolicyConfiguration, store: (any PolicyQuotaStore)?, clock: C, startDate: Date = Date(),
        telemetry: (any PolicyTelemetry)? = nil
    ) throws(PolicyError) where C.Duration == Duration {
        try Self.validate(permitHoldWarning: configuration.permitHoldWarning)
        try self.init(
            limits: configuration.limits, schedules: configuration.schedules, storage: configuration.resolvedStorage,
            store: store,
            clock: clock, startDate: startDate, telemetry: telemetry, feedbackScopes: configuration.feedbackScope,
            adaptive: configuration.adaptive, scopeLimits: configuration.scopeLimits, modelGroups: configuration.modelGroups,
            tiers: configuration.providerTiers)
        core.environment.holdWatch.set(configuration.permitHoldWarning)
    }

    /// Creates a gate on the continuous clock whose shared providers keep their counters in
    /// `store` (see ``init(configuration:store:clock:startDate:telemetry:)``).
    public init(
        configuration: PolicyConfiguration, store: (any PolicyQuotaStore)?, telemetry: (any PolicyTelemetry)? = nil
    ) throws(PolicyError) {
        try self.init(configuration: configuration, store: store, clock: ContinuousClock(), telemetry: telemetry)
    }

    /// Applies a new configuration to the running gate (a live reload).
    ///
    /// All providers switch at once: a call sees either the old limits or the new ones, never
    /// a mix. Usage already recorded is kept (lowering a cap below it makes the next calls
    /// wait), waiters that fit the new limits are admitted at once, and waiters whose estimate
    /// exceeds a new token cap fail as ``PolicyError/Code/oversized``. Providers missing from
    /// `configuration` stop being gated. Telemetry receives one
    /// ``PolicyTelemetry/didChangeLimits(_:)`` per provider whose limits or schedule changed;
    /// providers left as they were are not touched. Its ``PolicyConfiguration/permitHoldWarning``
    /// replaces the service's (``permitHoldWarning``), `nil` turning it off.
    ///
    /// Tiers and per-scope overrides are replaced by the file's, like every other table. An
    /// override set at runtime (``setScopeOverride(_:for:provider:)``) is therefore dropped by
    /// a file that does not list it, unless `keepingScopeOverrides` is `true`: then every
    /// override in force for a scope the file does not mention stays (the file's own win for
    /// the scopes it lists), as long as its provider stays gated in memory.
    /// - Parameters:
    ///   - configuration: The new configuration.
    ///   - keepingScopeOverrides: Whether overrides in force for scopes `configuration` does
    ///     not mention survive it; `false` by default (the file is the whole truth).
    /// - Throws: ``PolicyError`` (``PolicyError/Code/invalidLimits``) if any cap or schedule is
    ///   invalid, ``PolicyError/Code/invalidArgument`` for a hold warning that is not positive;
    ///   nothing changes then.
    public func apply(_ configuration: PolicyConfiguration, keepingScopeOverrides: Bool = false) throws(PolicyError) {
        var configuration = configuration
        if keepingScopeOverrides {
            let current = self.configuration
            for (provider, overrides) in current.scopeOverrides
            where configuration.limits[provider] != nil || configuration.schedules[provider] != nil {
                configuration.scopeOverrides[provider, default: [:]].merge(overrides) { file, _ in file }
            }
        }
        try Self.validate(limits: configuration.limits, schedules: configuration.schedules)
        let storage = configuration.resolvedStorage
        try Self.validate(storage: storage, store: core.shared?.store)
        try Self.validate(split: configuration.limits, schedules: configuration.schedules, storage: storage)
        try Self.validate(reserve: configuration.limits, storage: storage)
        try Self.validate(adaptive: configuration.adaptive, feedbackScopes: configuration.feedbackScope)
        try Self.validate(scopeLimits: configuration.scopeLimits, storage: storage, limits: configuration.limits, store: core.shared?.store)
        try Self.validate(
            modelGroups: configuration.modelGroups, storage: storage, limits: configuration.limits,
            feedbackScopes: configuration.feedbackScope)
        try Self.validate(permitHoldWarning: configuration.permitHoldWarning)
        let tiers = configuration.providerTiers
        try Self.validate(
            tiers: tiers, storage: storage, scopeLimits: configuration.scopeLimits, modelGroups: configuration.modelGroups,
            schedules: configuration.schedules)
        var changes: [String: ProviderChange] = [:]
        for (provider, storage) in storage {
            changes[provider] = ProviderChange(
                limits: configuration.limits[provider] ?? .unlimited, schedule: configuration.schedules[provider], storage: storage,
                adaptive: configuration.adaptive.contains(provider),
                scopes: ProviderLevels(
                    kinds: configuration.scopeLimits[provider] ?? [:], groups: configuration.modelGroups[provider] ?? [:]),
                tiers: tiers[provider] ?? ProviderTiers())
        }
        swap(changes, replacingAll: true)
        core.setFeedbackScopes(configuration.feedbackScope)
        if configuration.permitHoldWarning != permitHoldWarning { core.environment.holdWatch.set(configuration.permitHoldWarning) }
    }

    /// The configuration in force now: the base limits, schedule, storage, tiers and per-scope
    /// overrides (runtime ones included) of every gated provider (storage listed per provider;
    /// ``PolicyConfiguration/postgres`` is not kept), and the ``permitHoldWarning``.
    public nonisolated var configuration: PolicyConfiguration {
        core.providers.readLocked { table in
            var configuration = PolicyConfiguration()
            for (name, entry) in table.entries {
                if !entry.limits.isUnlimited || entry.schedule == nil { configuration.limits[name.name] = entry.limits }
                if let schedule = entry.schedule?.schedule { configuration.schedules[name.name] = schedule }
                if entry.storage != .memory { configuration.storage[name.name] = entry.storage }
                if entry.adaptive != nil { configuration.adaptive.insert(name.name) }
                if !entry.levels.kinds.isEmpty { configuration.scopeLimits[name.name] = entry.levels.kinds }
                if !entry.levels.groups.isEmpty { configuration.modelGroups[name.name] = entry.levels.groups }
                if !entry.tiers.tiers.isEmpty { configuration.tiers[name.name] = entry.tiers.tiers }
                if !entry.tiers.overrides.isEmpty { configuration.scopeOverrides[name.name] = entry.tiers.overrides }
            }
            configuration.feedbackScope = core.feedbackScopesByProvider.filter { table[ProviderName($0.key)] != nil }
            configuration.permitHoldWarning = permitHoldWarning
            return configuration
        }
    }

    /// What applies to `provider` at `date`: its effective caps, the schedule entry that sets
    /// them and whether it closes the gate, and until when that holds. A provider without a
    /// schedule has its base limits for ever (`validUntil` is `nil`); one that is not gated has
    /// ``PolicyLimits/unlimited``.
    public nonisolated func effectiveLimits(for provider: String, at date: Date) -> PolicySchedule.Resolution {
        configuration.effectiveLimits(for: provider, at: date)
    }

    /// Every change of `provider`'s effective limits in `[start, end)`, in order.
    public nonisolated func transitions(for provider: String, from start: Date, to end: Date) -> [PolicySchedule.Transition] {
        configuration.transitions(for: provider, from: start, to: end)
    }

    /// The wall-clock date the gate's schedules see now.
    public nonisolated var currentDate: Date {
        core.wallClock.date(at: core.environment.time.now())
    }
}

extension PolicyConfiguration {
    /// Tiers and overrides per provider, in the form the gate keeps them.
    var providerTiers: [String: ProviderTiers] {
        var result: [String: ProviderTiers] = [:]
        for (provider, named) in tiers where !named.isEmpty { result[provider, default: ProviderTiers()].tiers = named }
        for (provider, scopes) in scopeOverrides where !scopes.isEmpty {
            result[provider, default: ProviderTiers()].overrides = scopes
        }
        return result
    }

    /// The caps of `scope` under `provider` at `date`: the provider's (its schedule resolved),
    /// with the scope's override over them if it has one, else its tier's (`tier`, when it is
    /// one of the provider's). What `policy-gate check --scope` shows.
    /// - Returns: The caps, or `nil` when `tier` is not one of the provider's tiers and the
    ///   scope has no override.
    public func effectiveLimits(for provider: String, scope: PolicyScope, tier: String?, at date: Date) -> PolicySchedule.Resolution? {
        let resolution = effectiveLimits(for: provider, at: date)
        let configured = providerTiers[provider] ?? ProviderTiers()
        let entryTiers = schedules[provider]?.tierLimits(ofEntry: resolution.entry) ?? [:]
        guard let limits = configured.limits(over: resolution.limits, scope: scope, tier: tier, entryTiers: entryTiers) else {
            return nil
        }
        return PolicySchedule.Resolution(
            limits: limits, entry: resolution.entry, isClosed: resolution.isClosed, validUntil: resolution.validUntil)
    }

    /// What applies to `provider` at `date` under this configuration (see
    /// ``PolicyService/effectiveLimits(for:at:)``).
    public func effectiveLimits(for provider: String, at date: Date) -> PolicySchedule.Resolution {
        let base = limits[provider] ?? .unlimited
        guard let schedule = schedules[provider] else {
            return PolicySchedule.Resolution(limits: base, entry: nil, isClosed: false, validUntil: nil)
        }
        return schedule.resolve(base: base, at: date)
    }

    /// Every change of `provider`'s effective limits in `[start, end)` under this
    /// configuration; empty for a provider without a schedule.
    public func transitions(for provider: String, from start: Date, to end: Date) -> [PolicySchedule.Transition] {
        guard let schedule = schedules[provider] else { return [] }
        return schedule.transitions(base: limits[provider] ?? .unlimited, from: start, to: end)
    }
}
