/// The rules of a provider with nested limits (``PolicyConfiguration/scopeLimits``): one bucket
/// per level — the account, then every scope a key names (its parents, then itself) — each with
/// its windows, concurrency count and FIFO queue, in a tree rooted at the account.
///
/// A call is admitted only when it fits every bucket of its chain, and is then recorded in all
/// of them at once; commits and releases correct every level. Like ``GateStateMachine`` it never
/// locks, suspends, reads a clock or calls out: every method takes `now` and returns what its
/// caller must do.
///
/// **Waiting.** A waiter joins the queue of its own (innermost) bucket. When it is the head of a
/// bucket's queue and fits that bucket (a slot free, every window with room, the gate open), it
/// *passes* it: it joins the queue of the bucket above, keeping its place (the head) below, so
/// nobody overtakes it there. At the account it is admitted if it still fits every level below
/// (a commit overrun or a change of limits may have taken the room it saw); if not, it falls
/// back to the lowest level that no longer fits, leaving the queues above. So each bucket serves
/// in the order calls reach it (FIFO per bucket), a user at its own cap never holds up its
/// organisation, waits only ever point upwards (no deadlock), and any change at any level pumps
/// the whole tree (no lost wake-up).
///
/// **Priority.** In every queue, interactive waiters (and batch ones promoted by aging) come
/// before the batch waiters not yet promoted, never ahead of a head that has passed the bucket.
///
/// **Sequences.** One counter for the whole tree numbers the admissions, so a permit's
/// ``Admission`` names its call in every bucket of its chain.
struct ChainStateMachine<Payload>: ~Copyable {
    typealias Effects = GateStateMachine<Payload>.Effects

    struct Bucket {
        /// The level's own key (the account's is the provider's `.global` key; a model group's
        /// names the group as a `model` scope; a route's is its key's).
        let key: PolicyKey
        /// The bucket above; -1 for the account.
        let parent: Int32
        /// What the bucket stands for (a level, a model group or a route to one).
        var role: Role = .level
        /// For a route, its group bucket (read on every walk); -1 otherwise.
        var side: Int32 = -1
        var limits: CompiledLimits
        var windows: WindowSlots
        var inFlight = 0
        /// Buckets below this one (it is kept while any exists).
        var children = 0
        /// Waiter ids in the order they reached this bucket.
        var queue = WaiterQueue<UInt64>()
        /// Whether the head of `queue` passed this bucket (it waits above).
        var headPassed = false
        /// Whether the slot is in use (slots of dropped buckets are reused).
        var isLive = true
        /// The level's spend, while it has spend caps (its `limits` say so: ``CompiledLimits/hasCostCaps``).
        var spend: SpendWindows? = nil
        /// Waiters admitted through this route (queued at its key's bucket, not here): it is
        /// kept while any exists.
        var routeWaiters: Int32 = 0
    }

    /// Levels are the scopes a key names. A provider's model groups (``PolicyModelGroup``) add a
    /// *group* bucket per group (under the account, or under each key when the provider's caps
    /// count per key) and, for each key calling a group's models, a *route*: an uncapped bucket
    /// below the key's own whose chain takes the group bucket just below the account. So a
    /// permit still names one bucket (the route), and every chain keeps one order — scopes
    /// innermost first, then the group, then the account — so waits still only point upwards.
    enum Role: Equatable {
        case level
        /// Model group `group` of `owner` (the account, or a key's bucket when flat).
        case group(owner: Int32, group: Int32)
        /// Calls of its parent's key for models of group `group`; the bucket's `side` is that
        /// group's bucket.
        case route(group: Int32)
    }

    /// A pair of bucket and group numbers, as the model groups' indexes key them.
    struct GroupSlot: Hashable {
        let bucket: Int32
        let group: Int32
    }

    struct Waiter {
        let leaf: Int32
        let tokens: TokenCounts
        let deadline: Int64
        /// The highest bucket whose queue it is in.
        var top: Int32
        /// A batch call not yet promoted: it queues behind every interactive (or promoted) one.
        var isLow = false
        /// When a batch call is promoted (`.max` for an interactive one).
        var promoteAt: Int64 = .max
    }

    typealias Refusal = ChainRefusal

    enum EnqueueResult {
        case admitted(Admission, Effects)
        case rejected(PolicyError, Effects)
        case enqueued(Effects)
    }

    private(set) var buckets: [Bucket]
    private var freeSlots: [Int32] = []
    /// Each level's bucket by its key (``KeyIndex``: 8 bytes a level instead of a dictionary
    /// entry holding a copy of the key).
    private var index = KeyIndex()
    /// What the rules read of each waiter: a plain value, so that the pump's lookups copy no
    /// references (the payloads, with their keys, are kept apart).
    private var waiters: [UInt64: Waiter] = [:]
    private var payloads: [UInt64: Payload] = [:]
    private var deadlines = 0
    /// Batch waiters not yet promoted.
    private var lowWaiters = 0
    private var sequence: UInt64 = 0
    private var latest: Int64
    private var cursor = 1
    /// Caps per scope kind (`org`, `user`…); a kind not listed has none.
    private(set) var kindLimits: [String: CompiledLimits]
    /// Tiers and per-scope overrides over each kind's caps (`""`: over no caps, for kinds
    /// without a table); empty when the provider has none. A level's caps are its scope's
    /// override's, else its tier's, else its kind's.
    private(set) var kindTiers: [String: CompiledTiers] = [:]
    /// Whether ``leaf(for:tiers:now:)`` moved a level to other caps since the last
    /// ``takeRetierEffects(now:)``: its waiters may fit now.
    private var retiered = false
    /// Model groups by number (their order by name). A change of limits renumbers them and
    /// their buckets by name; the buckets of a group that went drain uncapped.
    private(set) var groups: [ModelGroupCaps]
    /// The groups' patterns, most specific first, to their numbers.
    private var models: ModelTable<Int32>
    /// Models already matched (names to group numbers, -1: none): a call's model is matched
    /// once, then looked up. Emptied when the groups change, and when it grows past
    /// ``modelCacheLimit`` (model names come from callers).
    private var modelCache: [String: Int32] = [:]
    static var modelCacheLimit: Int { 1_024 }
    /// A flat provider's caps, which every key's bucket holds.
    private var flatCaps: CompiledLimits?
    /// Group buckets by owner and group, and routes by key bucket and group.
    private var groupIndex: [GroupSlot: Int32] = [:]
    private var routeIndex: [GroupSlot: Int32] = [:]
    /// The provider's caps count per key, not for the whole account (a provider with model
    /// groups but no per-scope tables): every key has one bucket under the account holding the
    /// provider's caps, and the account bucket only carries what is provider-wide (schedule
    /// closures, the limits' validity, provider feedback).
    let isFlat: Bool
    /// The generation of the account limits `kindLimits` came with.
    private var kindsGeneration: UInt64
    private let unlimited: CompiledLimits
    /// What the provider said about its own limits, checked at the account (see
    /// ``GateStateMachine``). Kept alive by the shell.
    private var feedbackReference: Unmanaged<ProviderFeedbackState>?
    /// The provider's spend caps per level and calendar, if any level has some.
    private var costs: CostPolicy?

    init(
        provider: String, account: CompiledLimits, kinds: [String: CompiledLimits], groups: [ModelGroupCaps] = [],
        flat: Bool = false, now: Int64, feedback: ProviderFeedbackState? = nil, costs: CostPolicy? = nil,
        kindTiers: [String: CompiledTiers] = [:]
    ) {
        latest = now
        kindLimits = kinds
        self.kindTiers = kindTiers
        self.groups = groups
        models = Self.table(of: groups)
        isFlat = flat
        flatCaps = flat ? account : nil
        kindsGeneration = account.generation
        unlimited = CompiledLimits(.unlimited, generation: 0)
        feedbackReference = feedback.map { Unmanaged.passUnretained($0) }
        self.costs = costs
        let key = PolicyKey(provider: provider)
        let top = flat ? account.accountPart : account
        buckets = [Bucket(key: key, parent: -1, limits: top, windows: WindowSlots(limits: top, now: now, firstSequence: 1))]
        // Flat, a `.global` key has a bucket of its own under the account, and the provider's
        // spend caps are each key's, like its other caps.
        if !flat {
            index.insert(key, at: 0, in: buckets)
            buckets[0].spend = costs?.windows(costs?.caps, now: now, firstSequence: 1)
        }
    }

    /// The next bucket up `b`'s chain from a leaf whose route goes through `side` (-1: none):
    /// the parent, except that the group bucket comes between the outermost level and the account.
    @inline(__always)
    private func up(_ b: Int32, side: Int32) -> Int32 {
        let parent = buckets[Int(b)].parent
        return parent == 0 && side > 0 && b != side ? side : parent
    }

    /// The group bucket a chain starting at `leaf` goes through, or -1.
    @inline(__always)
    private func side(of leaf: Int32) -> Int32 {
        buckets[Int(leaf)].side
    }

    /// The account's limits.
    var accountLimits: CompiledLimits { buckets[0].limits }
    var hasWaiters: Bool { !waiters.isEmpty }
    var waiterCount: Int { waiters.count }
    /// Live buckets, the account included.
    var bucketCount: Int { buckets.count - freeSlots.count }

    @inline(__always)
    private mutating func monotonic(_ now: Int64) -> Int64 {
        if now > latest { latest = now }
        return latest
    }

    // MARK: The tree

    /// The tier of each of a key's levels (``PolicyKey/levels``, outermost first): its name
    /// and whether the call named it (the key's own level) rather than the resolver.
    struct LevelTiers {
        var levels: [(tier: String?, named: Bool)] = []
        /// The resolver's version the answers came from (``TierResolver/version``): answers
        /// of a resolver since replaced do not move a level back.
        var version = 0

        var count: Int { levels.count }
        var last: (tier: String?, named: Bool)? { levels.last }
        subscript(depth: Int) -> (tier: String?, named: Bool) { levels[depth] }
    }

    /// The version of the resolver whose answers the levels were last moved by.
    private var tierVersion = 0

    /// The caps of the level of `scope` in `tier`: its override's, else the tier's, else its
    /// kind's (a tier the provider lacks is refused before the machine is reached).
    private func levelLimits(_ scope: PolicyScope, tier: String?, named: Bool) -> CompiledLimits {
        let kind = scope.kind
        if !kindTiers.isEmpty, let tiers = kindTiers[kind] ?? kindTiers[""],
            let own = tiers.limits(scope: scope, tier: tier, named: named)
        {
            return own
        }
        return kindLimits[kind] ?? unlimited
    }

    /// The bucket of `key` (its innermost level), created with its parents if absent, each
    /// level on the caps of its tier (`tiers`, when the provider has tiers or overrides); an
    /// existing level whose tier changed moves to the new tier's caps.
    mutating func leaf(for key: PolicyKey, tiers: LevelTiers? = nil, now: Int64) -> Int32 {
        if let found = level(of: key) {
            if let tiers, !kindTiers.isEmpty { retier(found, tiers, now: now) }
            return found
        }
        let now = monotonic(now)
        sweep(count: 2, now: now)
        if isFlat {
            var bucket = Bucket(
                key: key, parent: 0, limits: flatLimits, windows: WindowSlots(limits: flatLimits, now: now, firstSequence: sequence + 1))
            if flatLimits.hasCostCaps { bucket.spend = costs?.windows(costs?.caps, now: now, firstSequence: sequence + 1) }
            let slot = place(bucket)
            index.insert(key, at: Int(slot), in: buckets)
            return slot
        }
        var parent: Int32 = 0
        var path: [PolicyScope] = []
        for (depth, scope) in key.levels.enumerated() {
            let levelKey = PolicyKey(provider: key.provider, scope: scope, within: path)
            path.append(scope)
            let tier = tiers.flatMap { depth < $0.count ? $0[depth] : nil }
            if let found = level(of: levelKey) {
                if let tier, !kindTiers.isEmpty, tiers!.version >= tierVersion || tier.named { retier(level: Int(found), tier, now: now) }
                parent = found
                continue
            }
            let limits =
                kindTiers.isEmpty ? kindLimits[scope.kind] ?? unlimited : levelLimits(scope, tier: tier?.tier, named: tier?.named ?? false)
            var bucket = Bucket(
                key: levelKey, parent: parent, limits: limits,
                windows: WindowSlots(limits: limits, now: now, firstSequence: sequence + 1))
            if limits.hasCostCaps { bucket.spend = costs?.windows(costs?.kindCaps[scope.kind], now: now, firstSequence: sequence + 1) }
            let slot = place(bucket)
            index.insert(levelKey, at: Int(slot), in: buckets)
            parent = slot
        }
        return parent
    }

    /// Moves each level of `leaf`'s chain whose tier changed to its new tier's caps.
    private mutating func retier(_ leaf: Int32, _ tiers: LevelTiers, now: Int64) {
        var b = leaf
        var depth = tiers.count - 1
        let isStale = tiers.version < tierVersion
        while b > 0, depth >= 0 {
            // A stale resolver's answer does not move a level its successor's answers moved.
            if buckets[Int(b)].role == .level, !isStale || tiers[depth].named { retier(level: Int(b), tiers[depth], now: now) }
            b = buckets[Int(b)].parent
            depth -= 1
        }
    }

    private mutating func retier(level i: Int, _ tier: (tier: String?, named: Bool), now: Int64) {
        let limits = levelLimits(buckets[i].key.scope, tier: tier.tier, named: tier.named)
        guard limits.supersedes(buckets[i].limits) else { return }
        adopt(limits, at: i, now: monotonic(now))
        retiered = true
    }

    /// The admissions a change of some level's tier made possible (see
    /// ``leaf(for:tiers:now:)``), if one happened since the last call.
    mutating func takeRetierEffects(now: Int64) -> Effects {
        guard retiered else { return Effects() }
        retiered = false
        return waiters.isEmpty ? Effects() : pump(now: monotonic(now))
    }

    /// The keys of every level whose tier the resolver decides (not named by a call), so
    /// that a new resolver's answers can be asked for outside the lock.
    var resolvedLevelKeys: [PolicyKey] {
        guard !kindTiers.isEmpty else { return [] }
        return buckets.indices.filter {
            $0 > 0 && buckets[$0].isLive && buckets[$0].role == .level && buckets[$0].limits.variant & CompiledTiers.namedVariant == 0
        }.map { buckets[$0].key }
    }

    /// Moves the levels in `answers` (a new resolver's, by level key) to their tiers' caps.
    mutating func retier(_ answers: [HashedKey: String?], version: Int, now: Int64) -> Effects {
        tierVersion = max(tierVersion, version)
        for i in buckets.indices where i > 0 && buckets[i].isLive && buckets[i].role == .level {
            guard buckets[i].limits.variant & CompiledTiers.namedVariant == 0, let answer = answers[HashedKey(buckets[i].key)] else {
                continue
            }
            retier(level: i, (answer, false), now: now)
        }
        return takeRetierEffects(now: now)
    }

    /// The route of `leaf`'s key for model group `group` (its group bucket made if absent):
    /// the bucket a call of that key for one of the group's models is admitted at.
    /// The number of the group `model` belongs to, or -1.
    mutating func group(of model: String) -> Int32 {
        if let found = modelCache[model] { return found }
        let group = models.match(model)?.value ?? -1
        if modelCache.count >= Self.modelCacheLimit { modelCache.removeAll(keepingCapacity: true) }
        modelCache[model] = group
        return group
    }

    /// Where a call of `key` for `model` is admitted: the route of its key's bucket for the
    /// model's group, or the key's bucket itself (no model, or a model of no group).
    @inline(__always)
    mutating func leaf(for key: PolicyKey, model: String?, tiers: LevelTiers? = nil, now: Int64) -> Int32 {
        let leaf = leaf(for: key, tiers: tiers, now: now)
        guard let model, !groups.isEmpty else { return leaf }
        return route(from: leaf, group: group(of: model), now: now)
    }

    /// How a group bucket is named: `model:<group>` inside its owner's levels.
    static func groupKey(_ name: String, of owner: PolicyKey) -> PolicyKey {
        PolicyKey(
            provider: owner.provider, scope: .custom(kind: PolicyModelGroup.scopeKind, id: name),
            within: owner.scope == .global ? owner.parents : owner.parents + [owner.scope])
    }

    /// The level naming `model`'s group for calls of `key`, if the model is in one.
    mutating func groupLevel(of key: PolicyKey, model: String) -> PolicyKey? {
        let group = group(of: model)
        guard group >= 0 else { return nil }
        return Self.groupKey(groups[Int(group)].name, of: isFlat ? key : PolicyKey(provider: key.provider))
    }

    /// The route of `leaf`'s key for model group `group` (its group bucket made if absent).
    mutating func route(from leaf: Int32, group: Int32, now: Int64) -> Int32 {
        guard group >= 0, Int(group) < groups.count else { return leaf }
        let caps = groups[Int(group)]
        if let found = routeIndex[GroupSlot(bucket: leaf, group: group)] { return found }
        let now = monotonic(now)
        let owner: Int32 = isFlat ? leaf : 0
        let side: Int32
        if let found = groupIndex[GroupSlot(bucket: owner, group: group)] {
            side = found
        } else {
            let key = Self.groupKey(caps.name, of: buckets[Int(owner)].key)
            let limits = caps.limits
            var bucket = Bucket(
                key: key, parent: 0, limits: limits, windows: WindowSlots(limits: limits, now: now, firstSequence: sequence + 1))
            bucket.role = .group(owner: owner, group: group)
            side = place(bucket)
            groupIndex[GroupSlot(bucket: owner, group: group)] = side
            // A flat key's group bucket keeps the key's bucket alive with it.
            if owner != 0 { buckets[Int(owner)].children += 1 }
        }
        var route = Bucket(
            key: buckets[Int(leaf)].key, parent: leaf, limits: unlimited,
            windows: WindowSlots(limits: unlimited, now: now, firstSequence: sequence + 1))
        route.role = .route(group: group)
        route.side = side
        let slot = place(route)
        buckets[Int(side)].children += 1
        routeIndex[GroupSlot(bucket: leaf, group: group)] = slot
        return slot
    }

    /// Puts `bucket` in a free slot (or a new one) and counts it as its parent's child.
    private mutating func place(_ bucket: Bucket) -> Int32 {
        let slot: Int32
        if let free = freeSlots.popLast() {
            slot = free
            buckets[Int(slot)] = bucket
        } else {
            slot = Int32(buckets.count)
            buckets.append(bucket)
        }
        if bucket.parent >= 0 { buckets[Int(bucket.parent)].children += 1 }
        return slot
    }

    /// The caps of a flat provider's key buckets: the provider's own.
    private var flatLimits: CompiledLimits { flatCaps ?? unlimited }

    /// The bucket of `key`, if it exists.
    func existingLeaf(for key: PolicyKey) -> Int32? { level(of: key) }

    /// How many levels the index holds: every live level's bucket, no other (for tests).
    var indexedLevelCount: Int { index.count }

    /// The bucket of the level `key` names, if it exists.
    @inline(__always)
    private func level(of key: PolicyKey) -> Int32? {
        // Inlined here (not the shards' out-of-line `position(of:in:)`): the chain's walk calls it
        // for every level, and the call cost 30 instructions a nested cycle.
        index.position(ofHash: key.keyHash) { buckets[$0].key == key }.map { Int32(truncatingIfNeeded: $0) }
    }

    /// The chain of `leaf`, innermost first, the account last.
    func chain(of leaf: Int32) -> [Int32] {
        var result: [Int32] = []
        let side = side(of: leaf)
        var b = leaf
        while b >= 0 {
            result.append(b)
            b = up(b, side: side)
        }
        return result
    }

    /// Drops up to `count` idle buckets at the cursor (never the account).
    private mutating func sweep(count: Int, now: Int64) {
        for _ in 0..<count {
            guard buckets.count > 1 else { return }
            if cursor >= buckets.count { cursor = 1 }
            dropIfIdle(Int32(cursor), now: now)
            cursor += 1
        }
    }

    /// Drops every idle bucket (innermost first, so that emptied parents go too).
    mutating func sweepAll(now: Int64) {
        let now = monotonic(now)
        var dropped = true
        while dropped {
            dropped = false
            for b in 1..<max(1, buckets.count) where dropIfIdle(Int32(b), now: now) { dropped = true }
        }
    }

    @discardableResult
    private mutating func dropIfIdle(_ b: Int32, now: Int64) -> Bool {
        let i = Int(b)
        guard b > 0, buckets[i].isLive, buckets[i].inFlight == 0, buckets[i].children == 0, buckets[i].queue.isEmpty,
            buckets[i].routeWaiters == 0
        else {
            return false
        }
        buckets[i].windows.advance(to: now)
        guard buckets[i].windows.isEmpty else { return false }
        if let spend = buckets[i].spend {
            // A month's spend keeps its level.
            spend.advance(to: now)
            guard spend.isEmpty else { return false }
        }
        switch buckets[i].role {
        case .level: index.remove(at: i, in: buckets)
        case .group(let owner, let group):
            if group >= 0 { groupIndex[GroupSlot(bucket: owner, group: group)] = nil }
            if owner != 0 { buckets[Int(owner)].children -= 1 }
        case .route(let group):
            if group >= 0 { routeIndex[GroupSlot(bucket: buckets[i].parent, group: group)] = nil }
            buckets[Int(buckets[i].side)].children -= 1
        }
        buckets[Int(buckets[i].parent)].children -= 1
        buckets[i].isLive = false
        buckets[i].windows = WindowSlots()
        buckets[i].spend = nil
        freeSlots.append(b)
        return true
    }

    // MARK: Fitting

    /// Why `tokens` does not fit bucket `b` now, ignoring its queue (windows advanced);
    /// `nil` if it fits.
    private func refusal(at b: Int32, tokens: TokenCounts, now: Int64) -> Rejection? {
        let bucket = buckets[Int(b)]
        if let oversized = AdmissionRules.oversized(tokens, limits: bucket.limits) { return oversized }
        if b == 0 && now >= bucket.limits.validUntil { return Rejection(kind: nil, retryAt: .max) }
        if bucket.windows.fit(tokens, limits: bucket.limits, now: now) {
            guard bucket.inFlight < bucket.limits.maxConcurrent else { return .concurrency }
            guard let spend = bucket.spend else { return nil }
            spend.advance(to: now)
            return spend.refusal(cost: tokens.cost, now: now)
        }
        return AdmissionRules.windowRefusal(in: bucket.windows, limits: bucket.limits, tokens: tokens, now: now)
    }

    @inline(__always)
    private func fits(_ b: Int32, _ tokens: TokenCounts, now: Int64) -> Bool { passes(Int(b), tokens, now: now) }

    /// The more binding of two refusals: a window's, closing later, over a concurrency cap's.
    private static func worse(_ a: Refusal?, _ b: Refusal) -> Refusal {
        guard let a else { return b }
        if b.rejection.exceededCap != nil && a.rejection.exceededCap == nil { return b }
        if a.rejection.exceededCap != nil { return a }
        return (b.rejection.retryAt ?? .min) > (a.rejection.retryAt ?? .min) ? b : a
    }

    /// Why `tokens` does not fit the chain of `leaf` now ignoring every queue, the most binding
    /// level first; `nil` if it fits everywhere.
    private func chainRefusal(leaf: Int32, tokens: TokenCounts, now: Int64) -> Refusal? {
        var worst: Refusal?
        let side = side(of: leaf)
        var b = leaf
        while b >= 0 {
            if let rejection = refusal(at: b, tokens: tokens, now: now) {
                worst = Self.worse(worst, Refusal(rejection: rejection, level: buckets[Int(b)].key))
            }
            b = up(b, side: side)
        }
        return worst
    }

    private func advanceChain(_ leaf: Int32, to now: Int64) {
        let side = side(of: leaf)
        var b = leaf
        while b >= 0 {
            buckets[Int(b)].windows.advance(to: now)
            b = up(b, side: side)
        }
    }

    /// Takes a call from what the provider said is left, or says why not.
    private func providerRefusal(_ tokens: TokenCounts, now: Int64) -> Rejection? {
        feedbackReference?._withUnsafeGuaranteedRef { $0.take(tokens: tokens.total, now: now) }
    }

    @inline(__always)
    private mutating func admit(leaf: Int32, tokens: TokenCounts, now: Int64) -> Admission {
        sequence += 1
        let side = side(of: leaf)
        var b = leaf
        while b >= 0 {
            buckets[Int(b)].windows.record(tokens, limits: buckets[Int(b)].limits)
            buckets[Int(b)].inFlight += 1
            b = up(b, side: side)
        }
        if buckets[0].limits.hasCostCaps { recordSpend(leaf: leaf, tokens, now: now) }
        return Admission(time: now, sequence: sequence)
    }

    // MARK: Admission

    /// Admits a call at once if no bucket of its chain has a queue and it fits every one;
    /// otherwise says why not, at which level.
    @inline(__always)
    mutating func tryAdmit(
        leaf: Int32, tokens: TokenCounts, account: CompiledLimits, now: Int64
    ) -> (Result<Admission, Refusal>, Effects) {
        let now = monotonic(now)
        let effects = catchUp(account: account, now: now)
        // One pass up the chain: nobody queued and room at every level.
        let side = side(of: leaf)
        var b = leaf
        while b >= 0 {
            buckets[Int(b)].windows.advance(to: now)
            guard buckets[Int(b)].queue.isEmpty, passes(Int(b), tokens, now: now) else {
                return (.failure(refusal(leaf: leaf, tokens: tokens, now: now)), effects)
            }
            b = up(b, side: side)
        }
        if let provider = providerRefusal(tokens, now: now) {
            return (.failure(Refusal(rejection: provider, level: buckets[0].key)), effects)
        }
        return (.success(admit(leaf: leaf, tokens: tokens, now: now)), effects)
    }

    /// Adopts the account limits a caller read if they are newer (a change of limits is under
    /// way and it saw it first), else runs what is due for the waiters.
    @inline(__always)
    private mutating func catchUp(account: CompiledLimits, now: Int64) -> Effects {
        if account.generation > buckets[0].limits.generation { return setLimits(account: account, kinds: nil, now: now) }
        return waiters.isEmpty ? Effects() : pump(now: now)
    }

    /// Whether `tokens` fits bucket `b` now (its windows advanced), ignoring its queue.
    @inline(__always)
    private func passes(_ b: Int, _ tokens: TokenCounts, now: Int64) -> Bool {
        buckets[b].inFlight < buckets[b].limits.maxConcurrent && (b != 0 || now < buckets[b].limits.validUntil)
            && buckets[b].windows.fit(tokens, limits: buckets[b].limits, now: now)
            && (!buckets[b].limits.hasCostCaps || spendFits(b, tokens, now: now))
    }

    /// Whether the cost of `tokens` fits bucket `b`'s spend caps. Out of line: only levels
    /// with spend caps get here.
    @inline(never)
    private func spendFits(_ b: Int, _ tokens: TokenCounts, now: Int64) -> Bool {
        guard let spend = buckets[b].spend else { return true }
        spend.advance(to: now)
        return spend.refusal(cost: tokens.cost, now: now) == nil
    }

    /// Records a call's cost at every level of `leaf`'s chain with spend caps. Out of line,
    /// and tested once per call (the account's limits say whether any level has spend caps).
    @inline(never)
    private func recordSpend(leaf: Int32, _ tokens: TokenCounts, now: Int64) {
        let side = side(of: leaf)
        var b = leaf
        while b >= 0 {
            buckets[Int(b)].spend?.record(cost: tokens.cost, now: now)
            b = up(b, side: side)
        }
    }

    /// Why a call of `tokens` at `leaf` is not admitted at once: behind a waiter (what holds
    /// the nearest queue's head up, a lower bound), or the most binding level.
    @inline(never)
    private func refusal(leaf: Int32, tokens: TokenCounts, now: Int64) -> Refusal {
        advanceChain(leaf, to: now)
        let side = side(of: leaf)
        var b = leaf
        while b >= 0 {
            if let head = buckets[Int(b)].queue.first, let waiter = waiters[head] {
                let rejection = refusal(at: b, tokens: waiter.tokens, now: now) ?? .concurrency
                return Refusal(rejection: rejection, level: buckets[Int(b)].key)
            }
            b = up(b, side: side)
        }
        return chainRefusal(leaf: leaf, tokens: tokens, now: now) ?? Refusal(rejection: .concurrency, level: buckets[0].key)
    }

    /// Queues a call that could not be admitted at once, or admits or rejects it if the state
    /// changed meanwhile or its deadline can never be met.
    mutating func enqueue(
        id: UInt64, leaf: Int32, tokens: TokenCounts, account: CompiledLimits, deadline: Int64, payload: Payload, now: Int64,
        priority: PolicyPriority = .interactive, aging: Int64 = 0
    ) -> EnqueueResult {
        let now = monotonic(now)
        var effects = catchUp(account: account, now: now)
        advanceChain(leaf, to: now)
        for b in chain(of: leaf) {
            if let oversized = AdmissionRules.oversized(tokens, limits: buckets[Int(b)].limits) {
                return .rejected(AdmissionRules.oversizedError(oversized, tokens: tokens).at(level: buckets[Int(b)].key), effects)
            }
        }
        let queued = chain(of: leaf).contains { !buckets[Int($0)].queue.isEmpty }
        let refusal = chainRefusal(leaf: leaf, tokens: tokens, now: now)
        var provider: Rejection?
        if !queued && refusal == nil {
            provider = providerRefusal(tokens, now: now)
            if provider == nil { return .admitted(admit(leaf: leaf, tokens: tokens, now: now), effects) }
        }
        if deadline != .max {
            // The earliest this call could start, ignoring everyone ahead: a lower bound.
            let block = refusal ?? provider.map { Refusal(rejection: $0, level: buckets[0].key) }
            if let block, block.rejection.retryAt != .max,
                AdmissionRules.isHopeless(block.rejection, now: now, deadline: deadline)
            {
                return .rejected(AdmissionRules.refusal(block.rejection, now: now, waited: false).at(level: block.level), effects)
            }
            deadlines += 1
        }
        // A route has no caps: its waiters queue at their key's bucket, with the key's other
        // calls, so that a key's waiters reach it in arrival order whatever their models.
        let start = side(of: leaf) >= 0 ? buckets[Int(leaf)].parent : leaf
        if start != leaf { buckets[Int(leaf)].routeWaiters += 1 }
        var waiter = Waiter(leaf: leaf, tokens: tokens, deadline: deadline, top: start)
        if priority == .batch {
            waiter.isLow = true
            waiter.promoteAt = now.clampedAdding(max(0, aging))
            lowWaiters += 1
        }
        waiters[id] = waiter
        payloads[id] = payload
        join(id, start)
        effects.merge(pump(now: now))
        return .enqueued(effects)
    }

    /// Removes a waiter that gave up (cancelled). Returns its payload if it was still queued.
    mutating func cancel(id: UInt64, now: Int64) -> (Payload?, Effects) {
        guard let (_, payload) = remove(id) else { return (nil, Effects()) }
        return (payload, pump(now: monotonic(now)))
    }

    /// Fails every waiter with `error` (the gate is shutting down).
    mutating func failAll(_ error: PolicyError) -> Effects {
        var effects = Effects()
        for id in waiters.keys.sorted() {
            if let (_, payload) = remove(id) { effects.resume(payload, .failure(error)) }
        }
        return effects
    }

    /// Runs what time made due: expired deadlines, waiters that now fit.
    mutating func tick(now: Int64) -> Effects {
        waiters.isEmpty ? Effects() : pump(now: monotonic(now))
    }

    // MARK: Permits

    /// A permit of `leaf`'s chain gave back its slot. Returns whether waiters may now proceed.
    mutating func release(leaf: Int32) -> Bool {
        let side = side(of: leaf)
        var b = leaf
        while b >= 0 {
            buckets[Int(b)].inFlight -= 1
            b = up(b, side: side)
        }
        return !waiters.isEmpty
    }

    /// Replaces a call's counts `old` by `new` in every bucket of its chain.
    /// - Throws: `invalidTokenCount` if a sum would overflow; nothing is changed then.
    mutating func commit(leaf: Int32, _ admission: Admission, from old: TokenCounts, to new: TokenCounts) throws(PolicyError) -> Bool {
        if buckets[0].limits.hasCostCaps { return try commitWithSpend(leaf: leaf, admission, from: old, to: new) }
        return try commitCounts(leaf: leaf, admission, from: old, to: new)
    }

    /// ``commit(leaf:_:from:to:)`` for a provider with spend caps: checked first, adjusted
    /// last, so that a commit that throws changes nothing.
    @inline(never)
    private mutating func commitWithSpend(
        leaf: Int32, _ admission: Admission, from old: TokenCounts, to new: TokenCounts
    ) throws(PolicyError) -> Bool {
        let delta = new.cost - old.cost
        let side = side(of: leaf)
        var b = leaf
        while b >= 0 {
            if let spend = buckets[Int(b)].spend, !spend.canAdjust(admission, by: delta) {
                throw PolicyError(
                    .invalidTokenCount,
                    message: "committing a cost of \(PolicyMoney(microUnits: new.cost)) would overflow the spend's total")
            }
            b = up(b, side: side)
        }
        let freed = try commitCounts(leaf: leaf, admission, from: old, to: new)
        guard delta != 0 else { return freed }
        b = leaf
        while b >= 0 {
            buckets[Int(b)].spend?.adjust(admission, by: delta)
            b = up(b, side: side)
        }
        return freed || (delta < 0 && !waiters.isEmpty)
    }

    @inline(__always)
    private mutating func commitCounts(
        leaf: Int32, _ admission: Admission, from old: TokenCounts, to new: TokenCounts
    ) throws(PolicyError) -> Bool {
        let (delta, input, output) = (new.total - old.total, new.input - old.input, new.output - old.output)
        if delta == 0 && input == 0 && output == 0 { return false }
        let side = side(of: leaf)
        var b = leaf
        // Only a count that grows can overflow a window's total.
        while b >= 0 && (delta > 0 || input > 0 || output > 0) {
            guard buckets[Int(b)].windows.canAdjust(admission, by: delta, input: input, output: output) else {
                throw PolicyError(.invalidTokenCount, message: "committing \(new.total) tokens would overflow the window's total")
            }
            b = up(b, side: side)
        }
        b = leaf
        while b >= 0 {
            buckets[Int(b)].windows.adjust(admission, by: delta, input: input, output: output)
            b = up(b, side: side)
        }
        return (delta < 0 || input < 0 || output < 0) && !waiters.isEmpty
    }

    /// Whether cache reads count as input: the account's setting, for every level.
    var countsCacheReads: Bool { buckets[0].limits.countsCacheReads }

    // MARK: Administration

    /// Adopts newer account limits and per-kind caps, keeping every window's usage.
    /// Permits in flight keep their slots; from now on nobody passes a level whose permits in
    /// flight reach its new cap.
    mutating func setLimits(
        account: CompiledLimits?, kinds: [String: CompiledLimits]?, groups: [ModelGroupCaps]? = nil, costs newCosts: CostPolicy? = nil,
        kindTiers newTiers: [String: CompiledTiers] = [:], now: Int64
    ) -> Effects {
        let now = monotonic(now)
        if let account, account.generation > buckets[0].limits.generation {
            adopt(isFlat ? account.accountPart : account, at: 0, now: now)
            if isFlat {
                // Flat, the provider's caps are every key's.
                flatCaps = account
                for i in 1..<max(1, buckets.count) where buckets[i].isLive && buckets[i].role == .level {
                    adopt(account, at: i, now: now)
                }
            }
        }
        if let kinds, let generation = account?.generation, generation > kindsGeneration {
            kindsGeneration = generation
            kindLimits = kinds
            // Each level keeps its tier (by name) across the change; the old tiers name it.
            let oldTiers = kindTiers
            kindTiers = newTiers
            if let groups { renumber(groups) }
            // Spend caps come with the kinds' caps (a caller that saw the account's limits first
            // hands over neither). Flat, they are each key's.
            costs = newCosts
            buckets[0].spend = isFlat ? nil : costs?.adopt(buckets[0].spend, costs?.caps, now: now, firstSequence: sequence + 1)
            for i in 1..<max(1, buckets.count) where buckets[i].isLive {
                switch buckets[i].role {
                case .level where !isFlat:
                    let kind = buckets[i].key.scope.kind
                    var limits = kinds[kind] ?? unlimited
                    if !newTiers.isEmpty {
                        let variant = buckets[i].limits.variant
                        let tier = (oldTiers[kind] ?? oldTiers[""])?.name(of: variant)
                        limits = levelLimits(buckets[i].key.scope, tier: tier, named: variant & CompiledTiers.namedVariant != 0)
                    }
                    adopt(limits, at: i, now: now)
                    buckets[i].spend =
                        limits.hasCostCaps
                        ? costs?.adopt(buckets[i].spend, costs?.kindCaps[kind], now: now, firstSequence: sequence + 1) : nil
                case .level:
                    buckets[i].spend =
                        buckets[i].limits.hasCostCaps
                        ? costs?.adopt(buckets[i].spend, costs?.caps, now: now, firstSequence: sequence + 1) : nil
                case .group(_, let group): adopt(group >= 0 ? self.groups[Int(group)].limits : unlimited, at: i, now: now)
                case .route: break
                }
            }
        }
        return waiters.isEmpty ? Effects() : pump(now: now)
    }

    /// Adopts a new list of model groups: buckets of groups kept are renumbered (by name), those
    /// of groups gone are retired (no new call reaches them; they drain, then go).
    private mutating func renumber(_ new: [ModelGroupCaps]) {
        var numbers: [String: Int32] = [:]
        for (number, group) in new.enumerated() { numbers[group.name] = Int32(number) }
        let old = groups
        func renumbered(_ group: Int32) -> Int32 { group >= 0 ? numbers[old[Int(group)].name] ?? -1 : -1 }
        groups = new
        models = Self.table(of: new)
        modelCache.removeAll()
        groupIndex.removeAll()
        routeIndex.removeAll()
        for i in 1..<max(1, buckets.count) where buckets[i].isLive {
            switch buckets[i].role {
            case .level: break
            case .group(let owner, let group):
                let number = renumbered(group)
                buckets[i].role = .group(owner: owner, group: number)
                if number >= 0 { groupIndex[GroupSlot(bucket: owner, group: number)] = Int32(i) }
            case .route(let group):
                let number = renumbered(group)
                buckets[i].role = .route(group: number)
                if number >= 0 { routeIndex[GroupSlot(bucket: buckets[i].parent, group: number)] = Int32(i) }
            }
        }
    }

    private static func table(of groups: [ModelGroupCaps]) -> ModelTable<Int32> {
        ModelTable(groups.enumerated().flatMap { number, group in group.patterns.map { (pattern: $0, value: Int32(number)) } })
    }

    /// Bucket `i` counts against `limits` from now on, keeping its usage.
    private mutating func adopt(_ limits: CompiledLimits, at i: Int, now: Int64) {
        buckets[i].windows.advance(to: now)
        buckets[i].windows.adopt(limits, now: now, firstSequence: sequence + 1)
        buckets[i].limits = limits
    }

    /// Consults `feedback` from now on; the caller keeps it alive.
    mutating func adopt(feedback: ProviderFeedbackState?) {
        feedbackReference = feedback.map { Unmanaged.passUnretained($0) }
    }

    /// Forgets the usage recorded in bucket `b` (permits and waiters stay; the levels above
    /// keep theirs).
    mutating func reset(_ b: Int32, now: Int64) -> Effects {
        let now = monotonic(now)
        for w in 0..<3 { buckets[Int(b)].windows[w]?.clear(firstSequence: sequence + 1) }
        buckets[Int(b)].spend?.clear(firstSequence: sequence + 1)
        return waiters.isEmpty ? Effects() : pump(now: now)
    }

    /// A one-line summary of every live bucket, for test failures.
    var debugSummary: String {
        buckets.indices.filter { buckets[$0].isLive }.map { i in
            "\(i)[\(buckets[i].key) inFlight \(buckets[i].inFlight) children \(buckets[i].children) queue \(buckets[i].queue.count) passed \(buckets[i].headPassed)]"
        }.joined(separator: " ") + " waiters \(waiters.count) low \(lowWaiters)"
    }

    /// Whether nothing is held, queued or counted any more in the whole tree.
    mutating func isIdle(now: Int64) -> Bool {
        sweepAll(now: now)
        guard waiters.isEmpty, bucketCount == 1, buckets[0].inFlight == 0 else { return false }
        buckets[0].windows.advance(to: max(now, latest))
        if let spend = buckets[0].spend {
            spend.advance(to: max(now, latest))
            guard spend.isEmpty else { return false }
        }
        return buckets[0].windows.isEmpty
    }

    /// A bucket's spend per capped window at `now`, in micro-units; empty without spend caps.
    func spendUsage(of b: Int32, now: Int64) -> [(cap: PolicyCostCap, spent: Int64, limit: Int64, resetsAt: Int64?)] {
        guard let spend = buckets[Int(b)].spend else { return [] }
        spend.advance(to: max(now, latest))
        return spend.usage
    }

    // MARK: Readouts

    /// The keys of every bucket with something in flight, queued or counted (idle ones are
    /// dropped first); the account's only while it holds something itself.
    mutating func activeKeys(now: Int64) -> [PolicyKey] {
        sweepAll(now: now)
        buckets[0].windows.advance(to: max(now, latest))
        // Flat, the account is no key's; model groups and routes are not keys either.
        let accountActive = !isFlat && (buckets[0].inFlight > 0 || !buckets[0].queue.isEmpty || !buckets[0].windows.isEmpty)
        return buckets.indices.filter { buckets[$0].isLive && buckets[$0].role == .level && ($0 > 0 || accountActive) }
            .map { buckets[$0].key }
    }

    /// A bucket's usage at `now` (its windows advanced).
    func usage(of b: Int32, now: Int64) -> [GateStateMachine<Payload>.WindowUsage] {
        let bucket = buckets[Int(b)]
        bucket.windows.advance(to: max(now, latest))
        var result: [GateStateMachine<Payload>.WindowUsage] = []
        for w in 0..<3 {
            guard let window = bucket.windows[w] else { continue }
            result.append(
                .init(
                    window: PolicyWindow.at(w), requests: window.requestTotal, tokens: window.tokenTotal,
                    inputTokens: bucket.limits.inputCaps[w] == .max ? nil : window.split?.inputTotal,
                    outputTokens: bucket.limits.outputCaps[w] == .max ? nil : window.split?.outputTotal))
        }
        return result
    }

    /// Why a call of `tokens` at bucket `b` could not pass it now (nil if it could).
    func blocker(at b: Int32, tokens: TokenCounts, now: Int64) -> Rejection? {
        let now = max(now, latest)
        buckets[Int(b)].windows.advance(to: now)
        if let head = buckets[Int(b)].queue.first, let waiter = waiters[head] {
            return refusal(at: b, tokens: waiter.tokens, now: now) ?? .concurrency
        }
        return refusal(at: b, tokens: tokens, now: now)
    }

    /// Waiters in bucket `b`'s queue, and how many of them hold their turn there (have passed
    /// every bucket below).
    func queued(at b: Int32) -> Int { buckets[Int(b)].queue.count }

    /// When some recorded usage next leaves a window of the tree.
    func nextExpiry() -> Int64? {
        buckets.filter(\.isLive).compactMap { $0.windows.nextExpiry() }.min()
    }

    // MARK: Internals

    /// Removes a waiter from every queue it is in.
    private mutating func remove(_ id: UInt64) -> (Waiter, Payload)? {
        guard let waiter = waiters.removeValue(forKey: id), let payload = payloads.removeValue(forKey: id) else { return nil }
        if waiter.deadline != .max { deadlines -= 1 }
        if waiter.isLow { lowWaiters -= 1 }
        let side = side(of: waiter.leaf)
        if side >= 0 { buckets[Int(waiter.leaf)].routeWaiters -= 1 }
        var b = waiter.leaf
        while b >= 0 {
            leave(id, b)
            if b == waiter.top { break }
            b = up(b, side: side)
        }
        return (waiter, payload)
    }

    /// Puts `id` in bucket `b`'s queue: a batch call not yet promoted at the end, any other
    /// call behind the others of its class but ahead of those batch calls (never ahead of a
    /// head that has passed the bucket: it holds its turn there).
    private mutating func join(_ id: UInt64, _ b: Int32) {
        let i = Int(b)
        guard waiters[id]?.isLow == false else {
            buckets[i].queue.append(id)
            return
        }
        var position = buckets[i].queue.count
        let first = buckets[i].headPassed ? 1 : 0
        while position > first, waiters[buckets[i].queue[position - 1]]?.isLow == true { position -= 1 }
        buckets[i].queue.insert(id, at: position)
    }

    /// Promotes the batch waiters whose aging has run out: from now on each queues, in every
    /// bucket it is in, as an interactive call arriving now (a head keeps its place).
    private mutating func promote(now: Int64) {
        guard lowWaiters > 0 else { return }
        let due = waiters.filter { $0.value.isLow && $0.value.promoteAt <= now }.keys.sorted()
        for id in due {
            guard let waiter = waiters[id] else { continue }
            waiters[id]?.isLow = false
            lowWaiters -= 1
            let side = side(of: waiter.leaf)
            var b = waiter.leaf
            while b >= 0 {
                if let position = buckets[Int(b)].queue.firstIndex(where: { $0 == id }), position > 0 {
                    buckets[Int(b)].queue.remove(at: position)
                    join(id, b)
                }
                if b == waiter.top { break }
                b = up(b, side: side)
            }
        }
    }

    /// Takes `id` out of bucket `b`'s queue; the head's pass goes with it.
    private mutating func leave(_ id: UInt64, _ b: Int32) {
        guard let position = buckets[Int(b)].queue.firstIndex(where: { $0 == id }) else { return }
        buckets[Int(b)].queue.remove(at: position)
        if position == 0 { buckets[Int(b)].headPassed = false }
    }

    /// Expires deadlines, lets heads pass the buckets they fit and admits at the account;
    /// reports when to look again.
    private mutating func pump(now: Int64) -> Effects {
        var effects = Effects()
        promote(now: now)
        if deadlines > 0 { expire(now: now, including: false, into: &effects) }
        advance(now: now, into: &effects)
        if deadlines > 0, expire(now: now, including: true, into: &effects) {
            advance(now: now, into: &effects)
        }
        if deadlines > 0 || lowWaiters > 0 {
            for waiter in waiters.values {
                if waiter.deadline != .max { effects.wake = min(effects.wake ?? .max, waiter.deadline) }
                if waiter.isLow { effects.wake = min(effects.wake ?? .max, waiter.promoteAt) }
            }
        }
        return effects
    }

    @discardableResult
    private mutating func expire(now: Int64, including: Bool, into effects: inout Effects) -> Bool {
        let due = waiters.filter { $0.value.deadline < now || (including && $0.value.deadline == now) }
        for (id, waiter) in due.sorted(by: { $0.key < $1.key }) {
            advanceChain(waiter.leaf, to: now)
            // Where it is held up: the level it waits at (its top), else the most binding.
            let top = waiter.top
            let why =
                buckets[Int(top)].queue.first == id && !buckets[Int(top)].headPassed
                ? refusal(at: top, tokens: waiter.tokens, now: now).map { Refusal(rejection: $0, level: buckets[Int(top)].key) }
                : nil
            let blocking = why ?? Refusal(rejection: .concurrency, level: buckets[Int(top)].key)
            guard let (_, payload) = remove(id) else { continue }
            effects.resume(
                payload, .failure(AdmissionRules.refusal(blocking.rejection, now: now, waited: true).at(level: blocking.level)))
        }
        return !due.isEmpty
    }

    /// Moves heads up while they fit, admits at the account, and sets `wake` to when a head
    /// held up by a window could pass.
    private mutating func advance(now: Int64, into effects: inout Effects) {
        effects.wake = nil
        var progressed = true
        while progressed {
            progressed = false
            for i in buckets.indices where buckets[i].isLive && !buckets[i].headPassed {
                guard let id = buckets[i].queue.first, let waiter = waiters[id] else { continue }
                let b = Int32(i)
                buckets[i].windows.advance(to: now)
                if let oversized = AdmissionRules.oversized(waiter.tokens, limits: buckets[i].limits) {
                    // Limits lowered below this estimate while it waited: it can never fit.
                    guard let (_, payload) = remove(id) else { continue }
                    effects.resume(
                        payload,
                        .failure(
                            AdmissionRules.oversizedError(oversized, tokens: waiter.tokens).at(level: buckets[i].key)))
                    progressed = true
                    continue
                }
                guard fits(b, waiter.tokens, now: now) else { continue }
                let side = side(of: waiter.leaf)
                let next = up(b, side: side)
                if next >= 0 {
                    buckets[i].headPassed = true
                    waiters[id]?.top = next
                    join(id, next)
                    progressed = true
                    continue
                }
                // At the account: every level below must still fit.
                advanceChain(waiter.leaf, to: now)
                var lowest: Int32?
                var c = waiter.leaf
                while c > 0 {
                    if lowest == nil, !fits(c, waiter.tokens, now: now) { lowest = c }
                    c = up(c, side: side)
                }
                if let lowest {
                    fallBack(id, to: lowest)
                    progressed = true
                    continue
                }
                if providerRefusal(waiter.tokens, now: now) != nil { continue }
                guard let (_, payload) = remove(id) else { continue }
                effects.resume(payload, .success(admit(leaf: waiter.leaf, tokens: waiter.tokens, now: now)))
                progressed = true
            }
        }
        // When to look again: the earliest a held-up head could pass (a slot frees only on a
        // release, which pumps).
        for i in buckets.indices where buckets[i].isLive && !buckets[i].headPassed {
            guard let id = buckets[i].queue.first, let waiter = waiters[id] else { continue }
            let b = Int32(i)
            var at = refusal(at: b, tokens: waiter.tokens, now: now)?.retryAt
            if b == 0, at == nil,
                let provider = feedbackReference?._withUnsafeGuaranteedRef({
                    $0.refusal(tokens: waiter.tokens.total, now: now)
                })
            {
                at = provider.retryAt
            }
            if let at, at != .max { effects.wake = min(effects.wake ?? .max, max(at, now + 1)) }
        }
    }

    /// A waiter that reached the account no longer fits bucket `level` below: it leaves every
    /// queue above `level` and waits there again, still its head.
    private mutating func fallBack(_ id: UInt64, to level: Int32) {
        guard let waiter = waiters[id] else { return }
        let side = side(of: waiter.leaf)
        var b = up(level, side: side)
        while b >= 0 {
            leave(id, b)
            if b == waiter.top { break }
            b = up(b, side: side)
        }
        buckets[Int(level)].headPassed = false
        waiters[id]?.top = level
    }
}

/// Why a call of a nested provider was refused, and at which level.
struct ChainRefusal: Error {
    let rejection: Rejection
    let level: PolicyKey
}

extension PolicyError {
    /// The error naming the level of a nested chain that refused the call.
    func at(level: PolicyKey) -> PolicyError {
        var error = self
        error.level = level
        return error
    }
}

/// One model group as a tree counts it: its name (for readouts and refusals) and its caps.
struct ModelGroupCaps: Sendable {
    let name: String
    let patterns: [ModelPattern]
    let limits: CompiledLimits
}

extension ChainStateMachine.Bucket: KeyIndexed {}
