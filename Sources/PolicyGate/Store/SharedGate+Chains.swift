/// Nested providers in a shared store: a key's whole chain (the account, each parent, the key)
/// is admitted by one store call (``PolicyQuotaStore/admitChain(_:)``); a refusal names the
/// level, and a change at any level wakes this process's callers waiting under it.
extension SharedGate {
    /// A level of a chain: its key and the caps in force there.
    typealias Level = (key: PolicyKey, limits: CompiledLimits)

    /// The levels of `key`'s chain that have caps, the account first (always kept, so that a
    /// chain is never empty): a level without caps has nothing to check or count. A level's
    /// caps are its kind's, or its override's or tier's over them.
    /// - Throws: ``PolicyError/Code/invalidArgument`` when a level's tier is not one of the
    ///   provider's.
    func chainLevels(of key: PolicyKey, account: CompiledLimits, core: GateCore) throws(PolicyError) -> [Level] {
        let entry = core.entry(for: key.provider)
        let kinds = entry?.compiledScopes ?? [:]
        let kindTiers = account.hasLevelTiers ? entry?.compiledKindTiers ?? [:] : [:]
        let tiers = kindTiers.isEmpty ? nil : try core.levelTiers(for: key, reporting: false)
        var levels: [Level] = [(PolicyKey(provider: key.provider), account)]
        let scopes = key.levels
        for (index, scope) in scopes.enumerated() {
            var limits = kinds[scope.kind]
            if let tiers,
                let own = (kindTiers[scope.kind] ?? kindTiers[""])?.limits(
                    scope: scope, tier: tiers[index].tier, named: tiers[index].named),
                limits != nil || tiers[index].tier != nil || entry?.tiers.overrides[scope] != nil
            {
                limits = own
            }
            guard let limits else { continue }
            levels.append((key.level(index + 1), limits))
        }
        return levels
    }

    /// What one chain admission came to.
    enum ChainAttempt {
        case admitted(PolicyStoreLease)
        /// Refused: the most binding level's refusal, and every refusing level's index.
        case refused(ChainRefusal, [Int])
        /// The store failed and the provider fails open.
        case uncounted
    }

    /// One store call for the whole chain, bounded and failing as a single key's
    /// (``attempt(_:limits:now:deadline:_:lease:)``).
    func admitChain(
        _ key: PolicyKey, _ chain: [Level], tokens: Int64, limits: CompiledLimits, now: Int64, deadline: Int64
    ) async throws -> ChainAttempt {
        @Sendable func cap(_ value: Int64) -> Int? { value == .max ? nil : Int(value) }
        let store = store
        let found = try await attempt(
            key, limits: limits, now: now, deadline: deadline,
            { maximumWait in
                let levels = chain.map { level in
                    PolicyStoreRequest(
                        key: level.key, keyName: level.key.chainStoreName, tokens: Int(tokens),
                        requestCaps: [cap(level.limits.requestCap(0)), cap(level.limits.requestCap(1)), cap(level.limits.requestCap(2))],
                        tokenCaps: [cap(level.limits.tokenCaps[0]), cap(level.limits.tokenCaps[1]), cap(level.limits.tokenCaps[2])],
                        maxConcurrent: level.limits.maxConcurrent == .max ? nil : level.limits.maxConcurrent,
                        maximumWait: maximumWait)
                }
                return try await store.admitChain(PolicyStoreChainRequest(levels: levels))
            },
            lease: { decision in
                if case .admitted(let lease) = decision { return lease }
                return nil
            })
        guard let decision = found else { return .uncounted }
        switch decision {
        case .admitted(let lease):
            return .admitted(lease)
        case .refused(let refusals):
            let localNow = environment.time.now()
            var worst: ChainRefusal?
            var levels: [Int] = []
            // The innermost level first, as in-process: of equal refusals, the key's own is named.
            for refusal in refusals.sorted(by: { $0.level > $1.level }) where chain.indices.contains(refusal.level) {
                let level = chain[refusal.level]
                let rejection: Rejection
                switch refusal.decision {
                case .concurrencyFull(let retryAfter):
                    rejection = Rejection(kind: .concurrency, retryAt: retryAfter.map { localNow.clampedAdding($0.nanosecondsSaturating) })
                case .windowsFull(let usage):
                    rejection = Self.rejection(usage, limits: level.limits, tokens: tokens, localNow: localNow)
                case .admitted:
                    continue  // not a refusal: a store's mistake, ignored
                }
                levels.append(refusal.level)
                worst = Self.worse(worst, ChainRefusal(rejection: rejection, level: level.key))
            }
            guard let worst else {
                // A refusal that names no level of the chain: look again shortly.
                return .refused(
                    ChainRefusal(rejection: Rejection(kind: .requests(.minute), retryAt: localNow + 10_000_000), level: chain[0].key), [0])
            }
            return .refused(worst, levels)
        }
    }

    /// The more binding of two refusals, as in-process (``ChainStateMachine``): a window's,
    /// closing later, over a concurrency cap's.
    static func worse(_ a: ChainRefusal?, _ b: ChainRefusal) -> ChainRefusal {
        guard let a else { return b }
        return (b.rejection.retryAt ?? .min) > (a.rejection.retryAt ?? .min) ? b : a
    }

    // MARK: News of levels

    /// Makes news of each of `levels` (store names) reach the turns of `leaf`.
    func watch(_ levels: [String], by leaf: String) {
        watchers.withLock { table in
            for level in levels { table[level, default: [:]][leaf, default: 0] += 1 }
        }
    }

    /// Undoes one ``watch(_:by:)``.
    func unwatch(_ levels: [String], by leaf: String) {
        watchers.withLock { table in
            for level in levels {
                table[level]?[leaf, default: 1] -= 1
                if table[level]?[leaf] == 0 { table[level]?[leaf] = nil }
                if table[level]?.isEmpty == true { table[level] = nil }
            }
        }
    }

    /// After a commit or release of `key`'s permit was written: announces the key and, for a
    /// nested provider, every level of its chain (each may have room again).
    func announceWrite(of key: PolicyKey) {
        announce(key.storeName)
        guard !key.levels.isEmpty, let limits = environment.core?.compiledLimits(for: key), limits.isNested else { return }
        for depth in 0...key.levels.count { announce(key.level(depth).chainStoreName) }
    }
}
