import Foundation
import Synchronization

/// A provider's configured limits, in both forms: as given (for readouts) and compiled.
struct ProviderEntry: Sendable {
    /// The base limits, as configured.
    let limits: PolicyLimits
    /// What the gate enforces now: the base limits, or a schedule entry's over them. Their
    /// `validUntil` is the next schedule transition (`.max` without a schedule).
    var compiled: CompiledLimits
    /// The provider's schedule and what it resolved to last, if it has one.
    var schedule: ScheduleTrack?
    /// Where its counters are kept.
    var storage: PolicyStorage = .memory
    /// For a provider in adaptive mode: its factor (``AdaptiveState``), which `compiled`
    /// already applies.
    var adaptive: AdaptiveState?
    /// Nested limits per scope kind and model groups; empty when flat.
    var levels = ProviderLevels()
    /// The provider's spend caps and prices, when it has spend caps (``CostPolicy``).
    var costs: CostPolicy?
    /// Its tiers and per-scope overrides, as configured.
    var tiers = ProviderTiers()
    /// The same compiled with ``compiled``'s generation; `nil` without tiers or overrides.
    var compiledTiers: CompiledTiers?

    /// The nested limits compiled, with the account's generation.
    var compiledScopes: [String: CompiledLimits] {
        levels.kinds.mapValues { CompiledLimits($0, generation: compiled.generation) }
    }

    /// For a nested provider with tiers or overrides: them compiled over each kind's caps
    /// (`""` over none, for kinds without a table), with the account's generation.
    var compiledKindTiers: [String: CompiledTiers] {
        guard compiled.hasLevelTiers else { return [:] }
        let generation = compiled.generation
        var result: [String: CompiledTiers] = [:]
        for (kind, caps) in levels.kinds.map({ ($0.key, $0.value) }) + [("", PolicyLimits.unlimited)] {
            var configured = tiers
            if !kind.isEmpty { configured.overrides = configured.overrides.filter { $0.key.kind == kind } }
            result[kind] = CompiledTiers(configured, over: caps) { CompiledLimits($0, generation: generation) }
        }
        return result
    }

    /// The model groups compiled, in the order a tree numbers them.
    var compiledGroups: [ModelGroupCaps] { levels.compiledGroups(generation: compiled.generation) }
}

/// A provider's schedule with its latest resolution.
struct ScheduleTrack: Sendable {
    let schedule: PolicySchedule
    var resolution: PolicySchedule.Resolution

    /// The applying entry's caps per tier.
    var entryTiers: [String: PolicyLimits] { schedule.tierLimits(ofEntry: resolution.entry) }
}

/// The providers' entries, with the schedules kept apart: the per-call lookup then copies a
/// plain value (caps and compiled caps) instead of an entry holding a schedule, whose copy
/// goes through value witnesses and costs ≈ 250 instructions per call.
struct ProviderTable: Sendable {
    private struct Stored: Sendable {
        let limits: PolicyLimits
        let compiled: CompiledLimits
        let storage: PolicyStorage
    }

    private var stored: [ProviderName: Stored] = [:]
    private var tracks: [ProviderName: ScheduleTrack] = [:]
    /// Adaptive providers' factors, apart for the same reason as the schedules.
    private var adaptive: [ProviderName: AdaptiveState] = [:]
    /// Nested limits, apart for the same reason.
    private var scopes: [ProviderName: ProviderLevels] = [:]
    /// Spend caps and prices, apart for the same reason: read only when the compiled limits
    /// say the provider has them.
    private var costs: [ProviderName: CostPolicy] = [:]

    /// Tiers and overrides, apart for the same reason: read only when the compiled limits
    /// say the provider has them.
    private var tiers: [ProviderName: ProviderTiers] = [:]
    /// Flat providers' tiers compiled: the per-call lookup, one reference.
    private var tierSets: [ProviderName: CompiledTiers] = [:]

    /// A provider's spend caps and prices, if it has spend caps.
    func costs(_ name: ProviderName) -> CostPolicy? { costs[name] }

    /// A provider's compiled tiers and overrides, if it has any.
    @inline(__always)
    func compiledTiers(_ name: ProviderName) -> CompiledTiers? { tierSets[name] }

    /// A provider's tiers and overrides as configured, if it has any.
    func configuredTiers(_ name: ProviderName) -> ProviderTiers? { tiers[name] }

    /// The compiled limits of a provider: the only lookup on the hot path.
    @inline(__always)
    func compiled(_ name: ProviderName) -> CompiledLimits? { stored[name]?.compiled }

    subscript(name: ProviderName) -> ProviderEntry? {
        get {
            stored[name].map {
                ProviderEntry(
                    limits: $0.limits, compiled: $0.compiled, schedule: tracks[name], storage: $0.storage,
                    adaptive: adaptive[name], levels: scopes[name] ?? ProviderLevels(), costs: costs[name],
                    tiers: tiers[name] ?? ProviderTiers(), compiledTiers: tierSets[name])
            }
        }
        set {
            stored[name] = newValue.map { Stored(limits: $0.limits, compiled: $0.compiled, storage: $0.storage) }
            tracks[name] = newValue?.schedule
            adaptive[name] = newValue?.adaptive
            scopes[name] = newValue.flatMap { $0.levels.isEmpty ? nil : $0.levels }
            costs[name] = newValue?.costs
            tiers[name] = newValue.flatMap { $0.tiers.isEmpty ? nil : $0.tiers }
            tierSets[name] = newValue?.compiledTiers
        }
    }

    /// How long a batch call of the provider waits before it is promoted, in nanoseconds
    /// (``PolicyLimits/batchAging``). Read on the waiting path only.
    func batchAging(_ name: ProviderName) -> Int64 {
        stored[name]?.limits.batchAgingNanoseconds ?? PolicyLimits.defaultBatchAging.nanosecondsSaturating
    }

    /// The providers' names.
    var names: [ProviderName] { Array(stored.keys) }
    /// Every entry, assembled.
    var entries: [(name: ProviderName, entry: ProviderEntry)] { stored.keys.compactMap { name in self[name].map { (name, $0) } } }
    /// Whether any provider's limits may change with time: a schedule, or adaptive caps.
    var hasTransitions: Bool { !tracks.isEmpty || !adaptive.isEmpty }
    /// The earliest instant a provider's limits expire (a schedule's transition, an adaptive
    /// step), if any may.
    var nextTransition: Int64? {
        Set(tracks.keys).union(adaptive.keys).compactMap { stored[$0]?.compiled.validUntil }.min()
    }
}

/// Maps the service's nanoseconds to wall-clock dates, for schedules: the date at nanosecond 0
/// is fixed when the service starts (or given, in tests and simulations).
struct WallClock: Sendable {
    let start: Date

    func date(at nanos: Int64) -> Date {
        start.addingTimeInterval(Double(nanos) / 1e9)
    }

    /// The service instant of `date`, rounded up so that an instant mapped back is never
    /// before `date`; saturating at the ends of `Int64`.
    func nanos(at date: Date) -> Int64 {
        let seconds = date.timeIntervalSince(start)
        let nanos = (seconds * 1e9).rounded(.up)
        if nanos >= 9.2e18 { return .max }
        return nanos <= -9.2e18 ? .min : Int64(nanos)
    }
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
    /// Providers with at least one cap or a schedule. Absent providers are not gated.
    let providers: Snapshotted<ProviderTable>
    private let waiterIDs = Atomic<UInt64>(0)
    /// The trees of providers with nested limits (``ChainGate``), made on first use.
    let chains = Locked<[ProviderName: ChainGate]>([:])
    /// The last generation handed out; taken under the `providers` lock, so that the table's
    /// order of changes is the generations' order.
    private let generations = Atomic<UInt64>(1)
    let wallClock: WallClock
    /// Sleeps until the next schedule transition and applies it (one task per service).
    private let scheduleTimer = Locked<Task<Void, Never>?>(nil)
    /// Drives shared providers' calls through the service's store, if it has one.
    let shared: SharedGate?
    /// What each provider said about its own limits (see ``ProviderFeedbackState``), made when
    /// a key of the provider is first created and kept for the service's life.
    private let feedbackStates = Locked<[FeedbackOwner: ProviderFeedbackState]>([:])
    /// Providers whose feedback applies per key rather than provider-wide.
    private let feedbackScopes: Locked<[ProviderName: PolicyFeedbackScope]>

    /// The application's scope → tier resolver, with its answers cached.
    let tierResolver = TierResolver()

    /// Whose feedback state a key uses: its provider's, or its own.
    enum FeedbackOwner: Hashable {
        case provider(ProviderName)
        case key(HashedKey)
    }

    init(
        limits: [String: PolicyLimits], schedules: [String: PolicySchedule], storage: [String: PolicyStorage],
        store: (any PolicyQuotaStore)?, time: any TimeSource, startDate: Date, telemetry: (any PolicyTelemetry)?,
        feedbackScopes: [String: PolicyFeedbackScope] = [:], adaptive: Set<String> = [],
        scopeLimits: [String: [String: PolicyLimits]] = [:], modelGroups: [String: [String: PolicyModelGroup]] = [:],
        tiers: [String: ProviderTiers] = [:]
    ) {
        self.feedbackScopes = Locked(Self.perKey(feedbackScopes))
        let environment = GateEnvironment(time: time, telemetry: telemetry)
        self.environment = environment
        shared = store.map { SharedGate(store: $0, environment: environment) }
        shards = (0..<Self.shardCount).map { _ in Shard() }
        wallClock = WallClock(start: startDate)
        let now = time.now()
        var table = ProviderTable()
        for name in Set(limits.keys).union(schedules.keys).union(scopeLimits.keys).union(modelGroups.keys).union(tiers.keys) {
            let base = limits[name] ?? .unlimited
            let scopes = ProviderLevels(kinds: scopeLimits[name] ?? [:], groups: modelGroups[name] ?? [:])
            let tiers = tiers[name] ?? ProviderTiers()
            guard !base.isUnlimited || schedules[name] != nil || !scopes.isEmpty || !tiers.isEmpty else { continue }
            table[ProviderName(name)] = Self.entry(
                base, schedules[name], storage: storage[name] ?? .memory, generation: 1, now: now, wallClock: wallClock,
                adaptive: adaptive.contains(name) ? AdaptiveState() : nil, scopes: scopes, tiers: tiers, provider: name)
        }
        providers = Snapshotted(table)
        environment.attach(self)
        armScheduleTimer()
    }

    func nextWaiterID() -> UInt64 {
        waiterIDs.wrappingAdd(1, ordering: .relaxed).newValue
    }

    func nextGeneration() -> UInt64 {
        generations.wrappingAdd(1, ordering: .relaxed).newValue
    }

    /// Compiles a provider's limits as they stand at `now`: its schedule resolved, then its
    /// adaptive factor applied (each layer only tightens). They are valid until the earlier of
    /// the schedule's next transition and the factor's next step. Its tiers and overrides are
    /// compiled the same way over the resolved caps (``CompiledTiers``).
    static func entry(
        _ base: PolicyLimits, _ schedule: PolicySchedule?, storage: PolicyStorage, generation: UInt64, now: Int64,
        wallClock: WallClock, adaptive: AdaptiveState? = nil, scopes: ProviderLevels = ProviderLevels(),
        tiers: ProviderTiers = ProviderTiers(), provider: String
    ) -> ProviderEntry {
        let factor = adaptive?.factor(at: now) ?? AdaptiveState.full
        let adaptiveUntil = adaptive?.nextStep(after: now) ?? .max
        let costs = costPolicy(base, scopes: scopes.kinds, schedule: schedule, wallClock: wallClock)
        var validUntil = adaptiveUntil
        var closedUntil = Int64.min
        var track: ScheduleTrack?
        var resolved = base
        if let schedule {
            let date = wallClock.date(at: now)
            let resolution = schedule.resolve(base: base, at: date)
            resolved = resolution.limits
            // Never `now` itself: limits valid until now would be stale at once.
            validUntil = min(adaptiveUntil, resolution.validUntil.map { max(now + 1, wallClock.nanos(at: $0)) } ?? .max)
            if resolution.isClosed {
                closedUntil = schedule.nextOpening(from: date).map { max(now + 1, wallClock.nanos(at: $0)) } ?? .max
            }
            track = ScheduleTrack(schedule: schedule, resolution: resolution)
        }
        func compile(_ limits: PolicyLimits) -> CompiledLimits {
            var compiled = CompiledLimits(limits, adaptedBy: factor, generation: generation)
            compiled.validUntil = validUntil
            compiled.closedUntil = closedUntil
            compiled.share(storage)
            compiled.isNested = !scopes.isEmpty
            compiled.hasCostCaps = costs != nil
            return compiled
        }
        var compiled = compile(resolved)
        var compiledTiers: CompiledTiers?
        if !tiers.isEmpty && scopes.kinds.isEmpty {
            compiledTiers = CompiledTiers(tiers, over: resolved, provider: provider, entryTiers: track?.entryTiers ?? [:], compile: compile)
            compiled.isTiered = true
        }
        // Nested: the tiers set the levels' caps (``ProviderEntry/compiledKindTiers``).
        compiled.hasLevelTiers = !tiers.isEmpty && !scopes.kinds.isEmpty
        return ProviderEntry(
            limits: base, compiled: compiled, schedule: track, storage: storage, adaptive: adaptive, levels: scopes, costs: costs,
            tiers: tiers, compiledTiers: compiledTiers)
    }

    /// A provider's spend caps, prices and calendar, or `nil` without spend caps. Its months
    /// are those of ``PolicyLimits/costTimeZone``, else of its schedule's zone, else UTC.
    static func costPolicy(
        _ base: PolicyLimits, scopes: [String: PolicyLimits] = [:], schedule: PolicySchedule?, wallClock: WallClock
    ) -> CostPolicy? {
        let kinds = scopes.filter { $0.value.hasCostCaps }.mapValues(CostCaps.init)
        guard base.hasCostCaps || !kinds.isEmpty else { return nil }
        let zone = base.costTimeZone ?? schedule?.timeZone ?? .gmt
        return CostPolicy(
            caps: CostCaps(base), kindCaps: kinds, prices: PriceTable(base.prices),
            calendar: MonthCalendar(timeZone: zone, wallClock: wallClock))
    }

    /// The spend caps and prices of `key`'s provider, if it has spend caps.
    func costs(for key: PolicyKey) -> CostPolicy? {
        let name = ProviderName(of: key)
        return providers.read { $0.costs(name) }
    }

    @inline(__always)
    func shard(for key: PolicyKey) -> Shard {
        shards[key.keyHash & (Self.shardCount - 1)]
    }

    /// The limits of `key`'s provider as the table holds them, or `nil` if it is not gated.
    /// Their `validUntil` may have passed: see ``limits(for:at:)``.
    /// Read without a lock (see ``Snapshotted``): every call reads it.
    @inline(__always)
    func compiledLimits(for key: PolicyKey) -> CompiledLimits? {
        let name = ProviderName(of: key)
        return providers.read { $0.compiled(name) }
    }

    /// The limits a key created now starts on: `given` (what its caller read from the table),
    /// unless the table changed since. A change is handed over to the keys that exist (see
    /// ``handOver(_:cause:now:)``); a key created just after that pass, on limits read just
    /// before the change, would otherwise keep them, and past a schedule transition its queue
    /// would admit nobody, with no timer armed, until an unrelated event. Call under the key's
    /// shard lock (the table's lock is taken inside it, never the other way round).
    func limitsForNewKey(_ key: PolicyKey, given: CompiledLimits) -> CompiledLimits {
        guard generations.load(ordering: .relaxed) > given.generation else { return given }
        // Under the writers' lock: a change whose generation was seen above may not be published yet.
        let name = ProviderName(of: key)
        guard let fresh = providers.readLocked({ $0.compiled(name) }) else {
            return CompiledLimits(.unlimited, generation: nextGeneration())
        }
        guard fresh.isTiered else { return fresh }
        // The key's own set, from what is known without running the application's resolver
        // (not under a lock): the tier named, or the resolver's cached answer; else `given`,
        // which the key's next call replaces.
        guard let tier = key.tier.map({ .some($0) }) ?? tierResolver.cachedTier(for: key),
            let own = providers.readLocked({ $0.compiledTiers(name) })?.limits(scope: key.scope, tier: tier, named: key.tier != nil)
        else { return given }
        return own
    }

    /// `limits` if still valid at `now`; otherwise the provider's limits once the schedule
    /// transitions due by `now` are applied (the timer may not have run yet), or `nil` if the
    /// provider stopped being gated meanwhile.
    @inline(__always)
    func limits(_ limits: CompiledLimits, for key: PolicyKey, at now: Int64) -> CompiledLimits? {
        guard limits.validUntil <= now else { return limits }
        advanceSchedules(now: now)
        return compiledLimits(for: key)
    }

    // MARK: Provider feedback

    /// Whose feedback `key` uses, by its provider's scope.
    private func owner(of key: PolicyKey) -> FeedbackOwner {
        let name = ProviderName(of: key)
        let scope = feedbackScopes.withLock { $0[name] } ?? .provider
        return scope == .key ? .key(HashedKey(key)) : .provider(name)
    }

    /// The feedback state `key` uses (its provider's, or its own under `feedback_scope =
    /// "key"`), made on first use.
    func feedback(for key: PolicyKey) -> ProviderFeedbackState {
        let owner = owner(of: key)
        return feedbackStates.withLock { states in
            if let state = states[owner] { return state }
            let state = ProviderFeedbackState()
            states[owner] = state
            return state
        }
    }

    /// The feedback state `key` uses, if one was made.
    func existingFeedback(for key: PolicyKey) -> ProviderFeedbackState? {
        let owner = owner(of: key)
        return feedbackStates.withLock { $0[owner] }
    }

    /// The scopes that differ from the default, by provider name (the form kept).
    private static func perKey(_ scopes: [String: PolicyFeedbackScope]) -> [ProviderName: PolicyFeedbackScope] {
        Dictionary(scopes.filter { $0.value != .provider }.map { (ProviderName($0.key), $0.value) }, uniquingKeysWith: { $1 })
    }

    /// The providers whose feedback applies per key.
    var feedbackScopesByProvider: [String: PolicyFeedbackScope] {
        feedbackScopes.withLock { Dictionary($0.map { ($0.key.name, $0.value) }, uniquingKeysWith: { $1 }) }
    }

    /// Replaces every provider's feedback scope; the keys of a provider whose scope changed
    /// consult the state of their new owner from now on.
    func setFeedbackScopes(_ scopes: [String: PolicyFeedbackScope]) {
        let new = Self.perKey(scopes)
        let old = feedbackScopes.withLock { old in
            defer { old = new }
            return old
        }
        let changed = Set(old.keys).union(new.keys).filter { old[$0] != new[$0] }
        for name in changed {
            forEachStorage(of: name.name) { storage, _ in storage.adopt(feedback: self.feedback(for: storage.key)) }
            chains.withLock { $0[name] }?.adopt(feedback: feedback(for: PolicyKey(provider: name.name)))
        }
    }

    /// Why a `retry-after` paused the gate, as the readouts say.
    static let retryAfterCause = "asked to wait (retry-after)"

    /// Reads `headers` received now (on the service's clock and its wall-clock dates) and
    /// adopts them.
    func observe<S: Sequence>(headers: S, for key: PolicyKey) where S.Element == (String, String) {
        let now = environment.time.now()
        observe(PolicyProviderFeedback(headers: headers, receivedAt: wallClock.date(at: now)), for: key, at: now)
    }

    /// Pauses `key`'s provider after a 429.
    func reportThrottled(_ key: PolicyKey, retryAfter: Duration?) {
        let wait = max(.zero, retryAfter ?? PolicyService.defaultThrottlePause)
        var feedback = PolicyProviderFeedback()
        feedback.retryAfter = wait
        observe(feedback, for: key, at: environment.time.now(), cause: "paused the gate after a 429 (retry after \(wait))")
    }

    /// Adopts what `key`'s provider said in a response received at `now` (the service's
    /// nanoseconds) for the keys that share its feedback, and lets parked waiters look again if
    /// that may admit more, and reports what was adopted. Feedback for a provider without caps
    /// is not kept: it is not gated.
    func observe(
        _ feedback: PolicyProviderFeedback, for key: PolicyKey, at now: Int64, cause: String = GateCore.retryAfterCause
    ) {
        guard compiledLimits(for: key) != nil else { return }
        let state = self.feedback(for: key)
        func allowance(_ quantity: PolicyProviderFeedback.Quantity) -> ProviderFeedbackState.Allowance? {
            guard let quota = feedback.quotas[quantity], let remaining = quota.remaining, let resetIn = quota.resetIn,
                resetIn > .zero
            else { return nil }
            return .init(remaining: Int64(remaining), until: now.clampedAdding(resetIn.nanosecondsSaturating))
        }
        let requests = allowance(.requests)
        let tokens = allowance(.tokens)
        let pauseUntil = feedback.retryAfter.map { now.clampedAdding($0.nanosecondsSaturating) }
        let applied = state.apply(pauseUntil: pauseUntil, cause: cause, requests: requests, tokens: tokens, now: now)
        if feedback.retryAfter != nil { throttled(ProviderName(of: key), now: now, pausedUntil: pauseUntil) }
        if applied.mayAdmitMore {
            // Waiters parked on the old state look again. (A pause needs no such pass: a
            // waiter it blocks learns of it when it next could be admitted.)
            forEachStorage(of: key.provider) { storage, aftermath in
                storage.settle(storage.machine.tick(now: now), into: &aftermath)
            }
            chains.withLock { $0[ProviderName(of: key)] }?.tickNow()
            shared?.announce(nil)
        }
        let event = PolicyFeedbackEvent(
            key: key, feedback: feedback,
            pausedFor: pauseUntil.map { .nanoseconds($0 - now) }, pauseCause: pauseUntil == nil ? nil : cause,
            requestsRemaining: requests.map { Int($0.remaining) }, tokensRemaining: tokens.map { Int($0.remaining) })
        if environment.hasTelemetry { environment.telemetry?.didObserveFeedback(event) }
    }

    // MARK: Adaptive caps

    /// A 429 (or a retry-after) for `provider` at `now`: if it is adaptive, its caps drop
    /// (once per congestion event, see ``AdaptiveState``), through the same hand-over as any
    /// change of limits, and telemetry hears of it.
    private func throttled(_ provider: ProviderName, now: Int64, pausedUntil: Int64?) {
        // A due schedule transition first, so that the one below is not mistaken for it. (Only
        // the instant is read: a closure identical to `compiledLimits(for:)`'s would be merged
        // with it, and the hot path would call it through a thunk, ≈ 6 instructions a call.)
        if let until = providers.read({ $0.compiled(provider)?.validUntil }), until <= now { advanceSchedules(now: now) }
        var change: LimitsChange?
        var event: PolicyAdaptiveEvent?
        providers.withLock { table in
            guard let entry = table[provider], var adaptive = entry.adaptive else { return }
            let before = adaptive.factor(at: now)
            guard adaptive.throttled(at: now, pausedUntil: pausedUntil) else { return }
            let next = Self.entry(
                entry.limits, entry.schedule?.schedule, storage: entry.storage, generation: nextGeneration(), now: now,
                wallClock: wallClock, adaptive: adaptive, scopes: entry.levels, tiers: entry.tiers, provider: provider.name)
            table[provider] = next
            change = LimitsChange(provider: provider.name, previous: entry, current: next, isReported: false)
            event = next.adaptiveEvent(provider: provider.name, previousFactor: before, now: now)
        }
        guard let change else { return }
        armScheduleTimer()
        handOver([change], cause: .configuration, now: now)
        if let event, environment.hasTelemetry { environment.telemetry?.didAdaptLimits(event) }
    }

    // MARK: Schedules

    /// Names the schedule entry in an error the state machine made for a closed gate.
    func naming(_ error: PolicyError) -> PolicyError {
        guard error.closedBy != nil, let provider = error.key?.provider,
            let entry = entry(for: provider)?.schedule?.resolution.entry
        else { return error }
        return error.naming(closedBy: entry)
    }

    /// Re-resolves every schedule whose limits expired by `now`, hands changed limits to the
    /// provider's keys (waking waiters that now fit), and reports the changes.
    func advanceSchedules(now: Int64) {
        var changes: [LimitsChange] = []
        var adapted: [PolicyAdaptiveEvent] = []
        providers.withLock { table in
            for (name, entry) in table.entries {
                guard entry.compiled.validUntil <= now, entry.schedule != nil || entry.adaptive != nil else { continue }
                let next = Self.entry(
                    entry.limits, entry.schedule?.schedule, storage: entry.storage, generation: nextGeneration(), now: now,
                    wallClock: wallClock, adaptive: entry.adaptive, scopes: entry.levels, tiers: entry.tiers, provider: name.name)
                table[name] = next
                // Same caps, only a later `validUntil` (the search horizon, an adaptive step):
                // nothing to report as a schedule's change, but keys still need the new limits,
                // since past their `validUntil` their queues admit nobody.
                let sameEffect =
                    entry.schedule.map { track in
                        next.schedule.map { $0.resolution.hasSameEffect(as: track.resolution) } ?? false
                            && next.compiled.closedUntil == entry.compiled.closedUntil
                    } ?? true
                changes.append(LimitsChange(provider: name.name, previous: entry, current: next, isReported: !sameEffect))
                // The factor the old limits were compiled with: the same until just before
                // they expired (they expire at its next step at the latest).
                if let adaptive = entry.adaptive,
                    let event = next.adaptiveEvent(
                        provider: name.name, previousFactor: adaptive.factor(at: entry.compiled.validUntil - 1), now: now)
                {
                    adapted.append(event)
                }
            }
        }
        handOver(changes, cause: .schedule, now: now)
        if environment.hasTelemetry, let telemetry = environment.telemetry {
            for event in adapted { telemetry.didAdaptLimits(event) }
        }
    }

    /// One provider's limits replaced in the table: what keys and telemetry must hear of.
    struct LimitsChange {
        let provider: String
        let previous: ProviderEntry?
        /// `nil`: the provider is no longer gated.
        let current: ProviderEntry?
        /// Whether telemetry hears of it (not when only a schedule's horizon moved).
        var isReported = true
    }

    /// Hands limits already swapped into the table to the providers' keys (waking waiters that
    /// now fit) and reports them. Runs outside the table's lock; a key that saw the new table
    /// first has adopted them already, and generations keep it from going back.
    func handOver(_ changes: [LimitsChange], cause: PolicyLimitsChangeEvent.Cause, now: Int64) {
        guard !changes.isEmpty else { return }
        var byProvider: [String: CompiledLimits] = [:]
        var tiered: [String: (current: CompiledTiers, previous: CompiledTiers?)] = [:]
        var ungated: CompiledLimits?  // one generation for every provider no longer gated
        for change in changes {
            if let current = change.current?.compiledTiers {
                tiered[change.provider] = (current, change.previous?.compiledTiers)
            }
            if let compiled = change.current?.compiled {
                byProvider[change.provider] = compiled
            } else {
                let limits = ungated ?? CompiledLimits(.unlimited, generation: nextGeneration())
                ungated = limits
                byProvider[change.provider] = limits
            }
        }
        var costs: [String: CostPolicy] = [:]
        for change in changes { if let policy = change.current?.costs { costs[change.provider] = policy } }
        forEachStorage(of: nil) { storage, aftermath in
            guard var compiled = byProvider[storage.key.provider] else { return }
            if let tiers = tiered[storage.key.provider] {
                compiled = self.limits(in: tiers.current, for: storage, previous: tiers.previous)
            }
            let policy = costs[storage.key.provider]
            storage.settle(storage.machine.setLimits(compiled, costs: policy, now: now), into: &aftermath)
        }
        handOverToChains(changes, ungated: ungated, now: now)
        // Shared keys read the limits afresh on every attempt: wake their waiting heads.
        shared?.announce(nil)
        guard let telemetry = environment.telemetry else { return }
        for change in changes where change.isReported {
            let resolution = change.current?.schedule?.resolution
            telemetry.didChangeLimits(
                PolicyLimitsChangeEvent(
                    provider: change.provider, previous: change.previous?.effectiveLimits ?? .unlimited,
                    current: change.current?.effectiveLimits ?? .unlimited, cause: cause,
                    scheduleEntry: resolution?.entry, isClosed: resolution?.isClosed ?? false,
                    nextTransition: resolution?.validUntil))
        }
    }

    /// (Re)starts the task that applies schedule transitions on time, so that waiters are
    /// woken at the transition rather than by the next unrelated event.
    /// Called from the actor (configuration) and from any caller (a 429 lowering adaptive caps):
    /// the old task is swapped for the new one under one lock, so two callers at once cannot
    /// leave a timer running that nobody cancels.
    func armScheduleTimer() {
        let hasTransitions = !environment.lifecycle.isStopping && providers.readLocked { $0.hasTransitions }
        let previous = scheduleTimer.withLock { timer -> Task<Void, Never>? in
            let previous = timer
            timer = hasTransitions ? makeTransitionTimer() : nil
            return previous
        }
        previous?.cancel()
    }

    private func makeTransitionTimer() -> Task<Void, Never> {
        Task { [self] in
            while !Task.isCancelled {
                let next = providers.readLocked { $0.nextTransition }
                guard let next, next != .max else { return }
                do { try await environment.time.sleep(until: next) } catch { return }
                advanceSchedules(now: environment.time.now())
            }
        }
    }

    /// Cancels the schedule timer and the hold watch's.
    func stopTimers() {
        scheduleTimer.withLock { $0.take() }?.cancel()
        for gate in chains.withLock({ Array($0.values) }) { gate.shutdown() }
        environment.holdWatch.stop()
    }

    func entry(for provider: String) -> ProviderEntry? {
        let name = ProviderName(provider)
        return providers.read { $0[name] }
    }

    // MARK: Acquire

    /// Checks a token estimate against the provider's caps (``AdmissionRules``), reporting a
    /// refusal to telemetry.
    @inline(__always)
    func validate(
        estimate: Int, limits: CompiledLimits, key: PolicyKey, priority: PolicyPriority = .interactive
    ) throws(PolicyError) -> TokenCounts {
        do {
            return try AdmissionRules.checkedEstimate(estimate, limits: limits, key: key)
        } catch {
            throw reject(key, estimate, error, priority: priority)
        }
    }

    /// Checks an estimate given as input and output (``AdmissionRules``), reporting a refusal
    /// to telemetry.
    func validate(
        input: Int, output: Int, limits: CompiledLimits, key: PolicyKey, priority: PolicyPriority = .interactive
    ) throws(PolicyError) -> TokenCounts {
        do {
            return try AdmissionRules.checkedEstimate(input: input, output: output, limits: limits, key: key)
        } catch {
            throw reject(key, input.addingReportingOverflow(output).partialValue, error, priority: priority)
        }
    }

    /// Reports a refusal to telemetry and returns it, for `throw reject(…)`. Out of line: the
    /// refusal path, kept out of the acquire paths it is called from (inlined, it cost them a
    /// retain and a release per call).
    @inline(never)
    func reject(_ key: PolicyKey, _ estimate: Int, _ error: PolicyError, priority: PolicyPriority = .interactive) -> PolicyError {
        if environment.hasTelemetry {
            var event = PolicyRejectEvent(key: key, estimatedTokens: estimate, error: error)
            event.priority = priority
            environment.telemetry?.didReject(event)
        }
        return error
    }

    /// One locked attempt to admit now. Returns the permit's parts or why not.
    ///
    /// A batch call goes out of line: capturing the class in the locked closure made the
    /// optimizer retain and release the shard's lock around it on every call (≈ 55
    /// instructions of a 2 000-instruction cycle).
    @inline(__always)
    func admitNow(_ key: PolicyKey, tokens: TokenCounts, limits: CompiledLimits, now: Int64, priority: PolicyPriority = .interactive)
        -> (KeyStorage, Result<Admission, Rejection>)
    {
        guard priority == .interactive else { return admitBatchNow(key, tokens: tokens, limits: limits, now: now) }
        let shard = shard(for: key)
        let (storage, result, aftermath) = shard.table.withLock { table in
            var aftermath = Aftermath()
            let storage = table.storage(for: key, limits: limits, now: now, core: self, shard: shard, aftermath: &aftermath)
            let (result, effects) = storage.machine.tryAdmit(tokens: tokens, now: now)
            if effects.resumes.items != nil || effects.wake != nil { storage.settle(effects, into: &aftermath) }
            return (storage, result, aftermath)
        }
        if !aftermath.isEmpty { aftermath.run() }
        return (storage, result)
    }

    /// ``admitNow(_:tokens:limits:now:priority:)`` for a batch call.
    @inline(never)
    func admitBatchNow(_ key: PolicyKey, tokens: TokenCounts, limits: CompiledLimits, now: Int64)
        -> (KeyStorage, Result<Admission, Rejection>)
    {
        let shard = shard(for: key)
        let (storage, result, aftermath) = shard.table.withLock { table in
            var aftermath = Aftermath()
            let storage = table.storage(for: key, limits: limits, now: now, core: self, shard: shard, aftermath: &aftermath)
            let (result, effects) = storage.machine.tryAdmit(tokens: tokens, now: now, priority: .batch)
            if effects.resumes.items != nil || effects.wake != nil { storage.settle(effects, into: &aftermath) }
            return (storage, result, aftermath)
        }
        if !aftermath.isEmpty { aftermath.run() }
        return (storage, result)
    }

    /// Waits in the key's queue until admitted, rejected, timed out or cancelled.
    func wait(
        _ key: PolicyKey, tokens: TokenCounts, limits: CompiledLimits, deadline: Int64, priority: PolicyPriority = .interactive
    ) async throws -> Grant {
        let id = nextWaiterID()
        let provider = ProviderName(of: key)
        let aging = priority == .batch ? providers.read { $0.batchAging(provider) } : 0
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
                    // Under the lock, like cancellation: a shutdown's sweep of this shard either
                    // finds this waiter or runs before it and is seen here.
                    if environment.lifecycle.isStopping { return (.rejected(GateLifecycle.refusal(key)), aftermath) }
                    let storage = table.storage(
                        for: key, limits: limits, now: now, core: self, shard: shard, aftermath: &aftermath)
                    let outcome: Outcome
                    switch storage.machine.enqueue(
                        id: id, tokens: tokens, deadline: deadline, payload: continuation, now: now, priority: priority,
                        batchAging: aging)
                    {
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
        stopTimers()
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

extension ProviderEntry {
    /// The limits in force now before adaptive mode: the schedule's resolution, or the base
    /// limits.
    var effectiveLimits: PolicyLimits { schedule?.resolution.limits ?? limits }

    /// The telemetry event for an adaptive factor that was `previousFactor` before this entry
    /// was compiled at `now`; `nil` if it did not change.
    func adaptiveEvent(provider: String, previousFactor: Int, now: Int64) -> PolicyAdaptiveEvent? {
        guard let adaptive else { return nil }
        let factor = adaptive.factor(at: now)
        guard factor != previousFactor else { return nil }
        return PolicyAdaptiveEvent(
            provider: provider, previousFactor: Double(previousFactor) / 1_000, factor: Double(factor) / 1_000,
            limits: effectiveLimits.adapted(by: factor), configured: effectiveLimits)
    }
}
