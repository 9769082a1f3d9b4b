/// Tiers and per-scope overrides on the gate's paths: which set of its provider's caps a key
/// is under, found once per key and change of limits (``CompiledLimits/isTierVerified``).
extension GateCore {
    /// The tier of each level of `key`'s chain under a nested provider with tiers: the key's
    /// own level's named on the key or by the resolver, its parents' by the resolver.
    /// - Throws: ``PolicyError/Code/invalidArgument`` when a tier is not one of the provider's.
    /// With `strict` false (readouts), a tier the provider lacks is kept as named, not refused.
    func levelTiers(
        for key: PolicyKey, reporting: Bool = true, estimate: Int = 0, strict: Bool = true
    ) throws(PolicyError) -> ChainGate.Machine.LevelTiers {
        let levels = key.levels
        var result = ChainGate.Machine.LevelTiers()
        result.version = tierResolver.version
        result.levels.reserveCapacity(levels.count)
        let name = ProviderName(of: key)
        let configured = providers.read { $0.configuredTiers(name) }
        let names = configured?.tiers
        for depth in levels.indices {
            let isOwn = depth == levels.count - 1 && key.scope != .global
            let named = isOwn && key.tier != nil
            var tier = named ? key.tier : tierResolver.tier(for: key.level(depth + 1))
            // A provider without tiers (overrides only) ignores the tier named.
            if (names ?? [:]).isEmpty { tier = nil }
            // A level with an override of its own is not refused for its tier, as a flat key is not.
            if let known = tier, names?[known] == nil, configured?.overrides[levels[depth]] != nil { tier = nil }
            if strict, let tier, names?[tier] == nil {
                let error = Self.unknownTier(tier, of: levels[depth], key: key, tiers: (names ?? [:]).keys.sorted())
                throw reporting ? reject(key, estimate, error) : error
            }
            result.levels.append((tier, named))
        }
        return result
    }

    /// The compiled tiers and overrides of `key`'s provider, if it has any.
    func compiledTiers(for key: PolicyKey) -> CompiledTiers? {
        let name = ProviderName(of: key)
        return providers.read { $0.compiledTiers(name) }
    }

    /// The limits of `key` under a provider with tiers or overrides (`limits` are the
    /// provider's own, ``CompiledLimits/isTiered``): its override's, its tier's (named on the
    /// key, else by the resolver) or the provider's. Out of line: providers without tiers
    /// pay one branch.
    /// - Throws: ``PolicyError/Code/invalidArgument`` when the tier is not one of the provider's.
    @inline(never)
    func tieredLimits(
        _ limits: CompiledLimits, for key: PolicyKey, estimate: Int, reporting: Bool = true
    ) throws(PolicyError) -> CompiledLimits {
        // The sets first, then the tier: an answer of a resolver replaced meanwhile then comes
        // with sets older than the replacement's, which keys do not go back to.
        let compiled = compiledTiers(for: key)
        let tier = key.tier ?? tierResolver.tier(for: key)
        guard let tiers = compiled else {
            // The provider lost its tiers since `limits` were read: its own caps are the key's.
            var own = limits
            own.isTiered = false
            return own
        }
        guard let own = tiers.limits(for: key, tier: tier, named: key.tier != nil) else {
            let error = Self.unknownTier(tier ?? "", of: nil, key: key, tiers: tiers.names)
            throw reporting ? reject(key, estimate, error) : error
        }
        return own
    }

    /// The refusal of a call whose tier (of `level`, nested) is not one of `tiers`.
    static func unknownTier(_ tier: String, of level: PolicyScope?, key: PolicyKey, tiers: [String]) -> PolicyError {
        let whose = level.map { " of \($0)" } ?? ""
        return PolicyError(
            .invalidArgument, key: key,
            message: "tier '\(tier)'\(whose) is not one of provider '\(key.provider)''s tiers (\(tiers.joined(separator: ", ")))")
    }

    /// The set a key of a changed provider moves to: its override's, else that of the tier it
    /// was in (by name: the one its latest call named, else the resolver's answer), else the
    /// provider's. A tier removed by the change leaves it on the provider's caps; its next
    /// call is refused.
    func limits(
        in tiers: CompiledTiers, for storage: KeyStorage, previous: CompiledTiers?
    ) -> CompiledLimits {
        let key = storage.key
        let variant = storage.machine.limits.variant
        let named = variant & CompiledTiers.namedVariant != 0
        let tier: String?
        if !named, case .some(let answer) = tierResolver.cachedTier(for: key) {
            tier = answer
        } else if named {
            tier = previous?.name(of: variant) ?? key.tier
        } else {
            tier = previous?.name(of: variant)
        }
        return tiers.limits(scope: key.scope, tier: tier, named: named) ?? tiers.base
    }

    /// One locked attempt to admit a call of a provider with tiers (flat, in memory, without
    /// spend caps) on the limits its key already holds, when they are its tier's in the
    /// provider's current `generation` and the call names the tier the key's first call
    /// named. The lookup of the tier (a second read of the provider table, the resolver's
    /// cache, the override table) is then paid once per key and change of limits, not per call.
    /// - Returns: The key's storage, the attempt's result and the estimate as counted; `nil`
    ///   when the key's limits are not known to be its tier's, or the estimate does not fit
    ///   them (the caller's lookup then refuses it, reported).
    @inline(never)
    func admitVerifiedTier(
        _ key: PolicyKey, estimate: PolicyService.Estimate, generation: UInt64, now: Int64, priority: PolicyPriority
    ) -> (KeyStorage, Result<Admission, Rejection>, TokenCounts)? {
        let shard = shard(for: key)
        let (attempt, aftermath) = shard.table.withLock { table -> ((KeyStorage, Result<Admission, Rejection>, TokenCounts)?, Aftermath) in
            var aftermath = Aftermath()
            guard let storage = table.lookup(key), storage.machine.limits.isTierVerified,
                storage.machine.limits.generation == generation, key.tier == storage.key.tier,
                let tokens = try? estimate.checked(against: storage.machine.limits, key: key)
            else { return (nil, aftermath) }
            table.sweep(count: 1, now: now, sparing: storage, aftermath: &aftermath)
            let (result, effects) = storage.machine.tryAdmit(tokens: tokens, now: now, priority: priority)
            if effects.resumes.items != nil || effects.wake != nil { storage.settle(effects, into: &aftermath) }
            return ((storage, result, tokens), aftermath)
        }
        if !aftermath.isEmpty { aftermath.run() }
        return attempt
    }

    /// Marks `storage`'s limits as its key's tier's (``CompiledLimits/isTierVerified``) if
    /// they still are `limits`, looked up for `key`'s call, and the call named the tier the
    /// key's first call named: a change of limits or a call naming another tier since then
    /// leaves the mark off, and the next call looks its tier up again.
    func verifyTier(of storage: KeyStorage, for key: PolicyKey, limits: CompiledLimits) {
        guard key.tier == storage.key.tier else { return }
        shard(for: key).table.withLock { _ in
            let current = storage.machine.limits
            guard current.generation == limits.generation, current.variant == limits.variant else { return }
            storage.machine.markTierVerified()
        }
    }
}
