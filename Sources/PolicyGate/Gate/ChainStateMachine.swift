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
        /// The level's own key (the account's is the provider's `.global` key).
        let key: PolicyKey
        /// The bucket above; -1 for the account.
        let parent: Int32
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
    private var index: [HashedKey: Int32] = [:]
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
    /// The generation of the account limits `kindLimits` came with.
    private var kindsGeneration: UInt64
    private let unlimited: CompiledLimits
    /// What the provider said about its own limits, checked at the account (see
    /// ``GateStateMachine``). Kept alive by the shell.
    private var feedbackReference: Unmanaged<ProviderFeedbackState>?
    /// The provider's spend caps per level and calendar, if any level has some.
    private var costs: CostPolicy?

    init(
        provider: String, account: CompiledLimits, kinds: [String: CompiledLimits], now: Int64,
        feedback: ProviderFeedbackState? = nil, costs: CostPolicy? = nil
    ) {
        latest = now
        kindLimits = kinds
        kindsGeneration = account.generation
        unlimited = CompiledLimits(.unlimited, generation: 0)
        feedbackReference = feedback.map { Unmanaged.passUnretained($0) }
        self.costs = costs
        let key = PolicyKey(provider: provider)
        buckets = [Bucket(key: key, parent: -1, limits: account, windows: WindowSlots(limits: account, now: now, firstSequence: 1))]
        buckets[0].spend = costs?.windows(costs?.caps, now: now, firstSequence: 1)
        index[HashedKey(key)] = 0
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

    /// The bucket of `key` (its innermost level), created with its parents if absent.
    mutating func leaf(for key: PolicyKey, now: Int64) -> Int32 {
        if let found = index[HashedKey(key)] { return found }
        let now = monotonic(now)
        sweep(count: 2, now: now)
        var parent: Int32 = 0
        var path: [PolicyScope] = []
        for scope in key.levels {
            let levelKey = PolicyKey(provider: key.provider, scope: scope, within: path)
            path.append(scope)
            if let found = index[HashedKey(levelKey)] {
                parent = found
                continue
            }
            let limits = kindLimits[scope.kind] ?? unlimited
            var bucket = Bucket(
                key: levelKey, parent: parent, limits: limits,
                windows: WindowSlots(limits: limits, now: now, firstSequence: sequence + 1))
            if limits.hasCostCaps { bucket.spend = costs?.windows(costs?.kindCaps[scope.kind], now: now, firstSequence: sequence + 1) }
            let slot: Int32
            if let free = freeSlots.popLast() {
                slot = free
                buckets[Int(slot)] = bucket
            } else {
                slot = Int32(buckets.count)
                buckets.append(bucket)
            }
            buckets[Int(parent)].children += 1
            index[HashedKey(levelKey)] = slot
            parent = slot
        }
        return parent
    }

    /// The bucket of `key`, if it exists.
    func existingLeaf(for key: PolicyKey) -> Int32? { index[HashedKey(key)] }

    /// The chain of `leaf`, innermost first, the account last.
    func chain(of leaf: Int32) -> [Int32] {
        var result: [Int32] = []
        var b = leaf
        while b >= 0 {
            result.append(b)
            b = buckets[Int(b)].parent
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
        guard b > 0, buckets[i].isLive, buckets[i].inFlight == 0, buckets[i].children == 0, buckets[i].queue.isEmpty else {
            return false
        }
        buckets[i].windows.advance(to: now)
        guard buckets[i].windows.isEmpty else { return false }
        if let spend = buckets[i].spend {
            // A month's spend keeps its level.
            spend.advance(to: now)
            guard spend.isEmpty else { return false }
        }
        index[HashedKey(buckets[i].key)] = nil
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
        var b = leaf
        while b >= 0 {
            if let rejection = refusal(at: b, tokens: tokens, now: now) {
                worst = Self.worse(worst, Refusal(rejection: rejection, level: buckets[Int(b)].key))
            }
            b = buckets[Int(b)].parent
        }
        return worst
    }

    private func advanceChain(_ leaf: Int32, to now: Int64) {
        var b = leaf
        while b >= 0 {
            buckets[Int(b)].windows.advance(to: now)
            b = buckets[Int(b)].parent
        }
    }

    /// Takes a call from what the provider said is left, or says why not.
    private func providerRefusal(_ tokens: TokenCounts, now: Int64) -> Rejection? {
        feedbackReference?._withUnsafeGuaranteedRef { $0.take(tokens: tokens.total, now: now) }
    }

    @inline(__always)
    private mutating func admit(leaf: Int32, tokens: TokenCounts, now: Int64) -> Admission {
        sequence += 1
        var b = Int(leaf)
        while b >= 0 {
            buckets[b].windows.record(tokens, limits: buckets[b].limits)
            buckets[b].inFlight += 1
            b = Int(buckets[b].parent)
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
        var b = Int(leaf)
        while b >= 0 {
            buckets[b].windows.advance(to: now)
            guard buckets[b].queue.isEmpty, passes(b, tokens, now: now) else {
                return (.failure(refusal(leaf: leaf, tokens: tokens, now: now)), effects)
            }
            b = Int(buckets[b].parent)
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
        var b = Int(leaf)
        while b >= 0 {
            buckets[b].spend?.record(cost: tokens.cost, now: now)
            b = Int(buckets[b].parent)
        }
    }

    /// Why a call of `tokens` at `leaf` is not admitted at once: behind a waiter (what holds
    /// the nearest queue's head up, a lower bound), or the most binding level.
    @inline(never)
    private func refusal(leaf: Int32, tokens: TokenCounts, now: Int64) -> Refusal {
        advanceChain(leaf, to: now)
        var b = leaf
        while b >= 0 {
            if let head = buckets[Int(b)].queue.first, let waiter = waiters[head] {
                let rejection = refusal(at: b, tokens: waiter.tokens, now: now) ?? .concurrency
                return Refusal(rejection: rejection, level: buckets[Int(b)].key)
            }
            b = buckets[Int(b)].parent
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
        var waiter = Waiter(leaf: leaf, tokens: tokens, deadline: deadline, top: leaf)
        if priority == .batch {
            waiter.isLow = true
            waiter.promoteAt = now.clampedAdding(max(0, aging))
            lowWaiters += 1
        }
        waiters[id] = waiter
        payloads[id] = payload
        join(id, leaf)
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
        var b = leaf
        while b >= 0 {
            buckets[Int(b)].inFlight -= 1
            b = buckets[Int(b)].parent
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
        var b = leaf
        while b >= 0 {
            if let spend = buckets[Int(b)].spend, !spend.canAdjust(admission, by: delta) {
                throw PolicyError(.invalidTokenCount, message: "committing a cost of \(PolicyMoney(microUnits: new.cost)) would overflow the spend's total")
            }
            b = buckets[Int(b)].parent
        }
        let freed = try commitCounts(leaf: leaf, admission, from: old, to: new)
        guard delta != 0 else { return freed }
        b = leaf
        while b >= 0 {
            buckets[Int(b)].spend?.adjust(admission, by: delta)
            b = buckets[Int(b)].parent
        }
        return freed || (delta < 0 && !waiters.isEmpty)
    }

    @inline(__always)
    private mutating func commitCounts(
        leaf: Int32, _ admission: Admission, from old: TokenCounts, to new: TokenCounts
    ) throws(PolicyError) -> Bool {
        let (delta, input, output) = (new.total - old.total, new.input - old.input, new.output - old.output)
        if delta == 0 && input == 0 && output == 0 { return false }
        var b = leaf
        // Only a count that grows can overflow a window's total.
        while b >= 0 && (delta > 0 || input > 0 || output > 0) {
            guard buckets[Int(b)].windows.canAdjust(admission, by: delta, input: input, output: output) else {
                throw PolicyError(.invalidTokenCount, message: "committing \(new.total) tokens would overflow the window's total")
            }
            b = buckets[Int(b)].parent
        }
        b = leaf
        while b >= 0 {
            buckets[Int(b)].windows.adjust(admission, by: delta, input: input, output: output)
            b = buckets[Int(b)].parent
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
        account: CompiledLimits?, kinds: [String: CompiledLimits]?, costs newCosts: CostPolicy? = nil, now: Int64
    ) -> Effects {
        let now = monotonic(now)
        if let account, account.generation > buckets[0].limits.generation {
            buckets[0].windows.advance(to: now)
            buckets[0].windows.adopt(account, now: now, firstSequence: sequence + 1)
            buckets[0].limits = account
        }
        if let kinds, let generation = account?.generation, generation > kindsGeneration {
            kindsGeneration = generation
            kindLimits = kinds
            // Spend caps come with the kinds' caps (a caller that saw the account's limits first
            // hands over neither).
            costs = newCosts
            buckets[0].spend = costs?.adopt(buckets[0].spend, costs?.caps, now: now, firstSequence: sequence + 1)
            for i in 1..<max(1, buckets.count) where buckets[i].isLive {
                let kind = buckets[i].key.scope.kind
                let limits = kinds[kind] ?? unlimited
                buckets[i].windows.advance(to: now)
                buckets[i].windows.adopt(limits, now: now, firstSequence: sequence + 1)
                buckets[i].limits = limits
                buckets[i].spend = limits.hasCostCaps
                    ? costs?.adopt(buckets[i].spend, costs?.kindCaps[kind], now: now, firstSequence: sequence + 1) : nil
            }
        }
        return waiters.isEmpty ? Effects() : pump(now: now)
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
        let accountActive = buckets[0].inFlight > 0 || !buckets[0].queue.isEmpty || !buckets[0].windows.isEmpty
        return buckets.indices.filter { buckets[$0].isLive && ($0 > 0 || accountActive) }.map { buckets[$0].key }
    }

    /// A bucket's usage at `now` (its windows advanced).
    func usage(of b: Int32, now: Int64) -> [GateStateMachine<Payload>.WindowUsage] {
        let bucket = buckets[Int(b)]
        bucket.windows.advance(to: max(now, latest))
        var result: [GateStateMachine<Payload>.WindowUsage] = []
        for w in 0..<3 {
            guard let window = bucket.windows[w] else { continue }
            result.append(.init(
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
        var b = waiter.leaf
        while b >= 0 {
            leave(id, b)
            if b == waiter.top { break }
            b = buckets[Int(b)].parent
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
            var b = waiter.leaf
            while b >= 0 {
                if let position = buckets[Int(b)].queue.firstIndex(where: { $0 == id }), position > 0 {
                    buckets[Int(b)].queue.remove(at: position)
                    join(id, b)
                }
                if b == waiter.top { break }
                b = buckets[Int(b)].parent
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
            let why = buckets[Int(top)].queue.first == id && !buckets[Int(top)].headPassed
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
                    effects.resume(payload, .failure(
                        AdmissionRules.oversizedError(oversized, tokens: waiter.tokens).at(level: buckets[i].key)))
                    progressed = true
                    continue
                }
                guard fits(b, waiter.tokens, now: now) else { continue }
                if buckets[i].parent >= 0 {
                    buckets[i].headPassed = true
                    let parent = buckets[i].parent
                    waiters[id]?.top = parent
                    join(id, parent)
                    progressed = true
                    continue
                }
                // At the account: every level below must still fit.
                advanceChain(waiter.leaf, to: now)
                var lowest: Int32?
                var c = waiter.leaf
                while c > 0 {
                    if lowest == nil, !fits(c, waiter.tokens, now: now) { lowest = c }
                    c = buckets[Int(c)].parent
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
            if b == 0, at == nil, let provider = feedbackReference?._withUnsafeGuaranteedRef({
                $0.refusal(tokens: waiter.tokens.total, now: now)
            }) {
                at = provider.retryAt
            }
            if let at, at != .max { effects.wake = min(effects.wake ?? .max, max(at, now + 1)) }
        }
    }

    /// A waiter that reached the account no longer fits bucket `level` below: it leaves every
    /// queue above `level` and waits there again, still its head.
    private mutating func fallBack(_ id: UInt64, to level: Int32) {
        guard let waiter = waiters[id] else { return }
        var b = buckets[Int(level)].parent
        while b >= 0 {
            leave(id, b)
            if b == waiter.top { break }
            b = buckets[Int(b)].parent
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
