/// ``PolicyLimits`` in the form the state machine checks on every call: missing caps become
/// `.max`, so the hot path compares numbers instead of unwrapping optionals.
///
/// Copied on every acquire (out of the provider table, into the waiter's wait): kept at 120
/// bytes. Measured with `Benchmarks/callgrind-cycles.sh`: at 128 bytes the no-op cycle cost 355
/// instructions instead of 289, at 132 a copy became a call to `memcpy`. Request caps and the
/// concurrency cap are 32-bit for that (``PolicyLimits/maximumRequestCap`` is below `UInt32.max`).
struct CompiledLimits: Sendable {
    /// Request caps per window (minute, hour, day); `.max` when not set.
    var requestCaps: InlineArray<3, UInt32>
    // The flags, the adaptive factor and the concurrency cap next, in the request caps'
    // padding: 120 bytes in all.
    /// Whether any input or output cap is set: only then does a key keep input and output
    /// windows (``SplitWindows``), so that a provider without them pays one branch.
    var hasSplitCaps: Bool
    /// ``PolicyLimits/countsCacheReads``.
    var countsCacheReads: Bool
    /// Which path the provider's calls take, as bits (``isShared``, ``failsOpen``, ``isNested``):
    /// one byte, so that the flags, the factor, the reserve and the concurrency cap share the
    /// request caps' padding (separate flags made the limits 128 bytes).
    private var routing: UInt8 = 0
    /// Which of its provider's cap sets a key's limits are (``CompiledTiers``): 0 the
    /// provider's own, a tier's number, or ``CompiledTiers/overrideVariant``. In the byte of
    /// padding after the flags: keys of one generation switch sets when it differs.
    var variant: UInt8 = 0
    /// The factor adaptive mode applied to the configured caps, in thousandths
    /// (``AdaptiveState/full`` when it did not lower them). Beside the flags, in the padding.
    var adaptedBy: UInt16
    /// ``PolicyLimits/reservedForInteractive`` in thousandths (rounded up; 0: no reserve).
    /// Right after `adaptedBy`, in the two bytes of padding before the concurrency cap: the
    /// limits stay 120 bytes.
    var reservePermille: UInt16 = 0
    /// The concurrency cap, 32-bit to fit beside the flags (`Int32.max`: not set; larger caps
    /// are clamped just below, which no machine reaches). Read through ``maxConcurrent``.
    private var concurrencyCap: Int32
    /// Token caps per window; `.max` when not set.
    var tokenCaps: InlineArray<3, Int64>
    /// Input-token caps per window; `.max` when not set.
    var inputCaps: InlineArray<3, Int64>
    /// Output-token caps per window; `.max` when not set.
    var outputCaps: InlineArray<3, Int64>
    /// Bumped on every change of the provider's limits, so keys adopt new limits exactly once
    /// and never go back to older ones.
    var generation: UInt64
    /// The instant these limits stop being right (a schedule's next transition, in the
    /// service's nanoseconds); `.max` for limits without a schedule. Past it the machine
    /// admits nobody from its queue until the schedule hands it the next limits.
    var validUntil: Int64 = .max
    /// While `now < closedUntil`, a schedule entry closes the gate: nothing is admitted.
    /// `.min` when open; `.max` when closed beyond the schedule's search horizon.
    var closedUntil: Int64 = .min

    init(_ limits: PolicyLimits, generation: UInt64) {
        self.init(limits, adaptedBy: AdaptiveState.full, generation: generation)
    }

    /// `limits` with every cap multiplied by `factor` thousandths (``PolicyLimits/adapted(by:)``).
    init(_ limits: PolicyLimits, adaptedBy factor: Int, generation: UInt64) {
        func cap(_ value: Int?) -> Int64 { value.map { Int64($0) } ?? .max }
        // Validated caps are below `UInt32.max`; clamping keeps an unvalidated one a cap.
        func requestCap(_ value: Int?) -> UInt32 { value.map { UInt32(clamping: min($0, PolicyLimits.maximumRequestCap)) } ?? .max }
        adaptedBy = UInt16(clamping: min(factor, AdaptiveState.full))
        let limits = limits.adapted(by: factor)
        requestCaps = [requestCap(limits.requestsPerMinute), requestCap(limits.requestsPerHour), requestCap(limits.requestsPerDay)]
        tokenCaps = [cap(limits.tokensPerMinute), cap(limits.tokensPerHour), cap(limits.tokensPerDay)]
        inputCaps = [cap(limits.inputTokensPerMinute), cap(limits.inputTokensPerHour), cap(limits.inputTokensPerDay)]
        outputCaps = [cap(limits.outputTokensPerMinute), cap(limits.outputTokensPerHour), cap(limits.outputTokensPerDay)]
        hasSplitCaps = limits.hasInputOutputCaps
        countsCacheReads = limits.countsCacheReads
        reservePermille = UInt16(limits.reservePermille)
        concurrencyCap = limits.maxConcurrent.map { Int32(clamping: min($0, Int(Int32.max) - 1)) } ?? .max
        self.generation = generation
        hasCostCaps = limits.hasCostCaps
    }

    /// Whether the provider's counters live in the service's shared store (its calls take the
    /// store's path rather than the in-process machine's).
    var isShared: Bool {
        @inline(__always) get { routing & 1 != 0 }
        set { routing = newValue ? routing | 1 : routing & ~1 }
    }

    /// For a shared provider: whether a failing store admits calls uncounted.
    var failsOpen: Bool {
        @inline(__always) get { routing & 2 != 0 }
        set { routing = newValue ? routing | 2 : routing & ~2 }
    }

    /// Whether the provider has nested limits (its calls take ``ChainGate``'s path).
    var isNested: Bool {
        @inline(__always) get { routing & 4 != 0 }
        set { routing = newValue ? routing | 4 : routing & ~4 }
    }

    /// Whether the provider (or, in a nested tree, any level) has spend caps
    /// (``PolicyLimits/costPerHour`` …): only then does an acquire price its call and a key
    /// keep ``SpendWindows``. The caps themselves live beside the limits (``CostPolicy``), so
    /// that the limits stay 120 bytes and a provider without them pays one branch.
    var hasCostCaps: Bool {
        @inline(__always) get { routing & 8 != 0 }
        set { routing = newValue ? routing | 8 : routing & ~8 }
    }

    /// Whether the call takes a path other than this process's flat one (shared or nested):
    /// one test on the hot path.
    /// Whether the provider has tiers or per-scope overrides: these are its own caps, and a
    /// key's are looked up per scope (``CompiledTiers``) before admission. Cleared in the
    /// limits a key is handed.
    var isTiered: Bool {
        @inline(__always) get { routing & 16 != 0 }
        set { routing = newValue ? routing | 16 : routing & ~16 }
    }

    /// Whether a nested provider has tiers or per-scope overrides: its levels' caps are looked
    /// up per scope (``ChainStateMachine/LevelTiers``) on every call.
    var hasLevelTiers: Bool {
        @inline(__always) get { routing & 32 != 0 }
        set { routing = newValue ? routing | 32 : routing & ~32 }
    }

    /// In a key of a provider with tiers: whether these limits are known to be the set of the
    /// key's own tier, as the call that created the key named it (or, naming none, as the
    /// resolver answered) in this generation. A later call naming the same then finds its
    /// limits in the key, under the lock it takes anyway, instead of looking them up
    /// (``GateCore/admitVerifiedTier(_:estimate:generation:now:priority:)``). Never set in the
    /// provider table's sets, so that every change of limits clears it.
    var isTierVerified: Bool {
        @inline(__always) get { routing & 64 != 0 }
        set { routing = newValue ? routing | 64 : routing & ~64 }
    }

    /// Whether `self` should replace `current` in a key: newer, or of the same generation but
    /// another of the provider's cap sets (a call named another tier).
    @inline(__always)
    func supersedes(_ current: CompiledLimits) -> Bool {
        generation > current.generation || (generation == current.generation && variant != current.variant)
    }

    var isRouted: Bool {
        @inline(__always) get { routing & 5 != 0 }
    }

    /// Marks the limits as kept in a shared store, with its failure policy.
    mutating func share(_ storage: PolicyStorage) {
        isShared = storage.store != .memory
        failsOpen = isShared && storage.failurePolicy == .failOpen
    }

    /// Whether a window's usage is kept: any cap over it is set. Usage is recorded for requests
    /// and tokens alike, so adding the other cap of the same window at runtime keeps history.
    @inline(__always)
    func tracks(_ window: Int) -> Bool {
        requestCaps[window] != .max || tokenCaps[window] != .max || (hasSplitCaps && countsSplit(window))
    }

    /// Whether a window counts input and output tokens: an input or output cap over it is set.
    /// Both are counted then, so that adding the other cap at runtime keeps history.
    @inline(__always)
    func countsSplit(_ window: Int) -> Bool {
        inputCaps[window] != .max || outputCaps[window] != .max
    }

    /// The request cap over window `window` as the windows compare it: `Int64.max` when not set.
    @inline(__always)
    func requestCap(_ window: Int) -> Int64 {
        let cap = requestCaps[window]
        return cap == .max ? .max : Int64(cap)
    }

    var hasTokenCaps: Bool {
        tokenCaps[0] != .max || tokenCaps[1] != .max || tokenCaps[2] != .max
    }

    var hasInputCaps: Bool {
        inputCaps[0] != .max || inputCaps[1] != .max || inputCaps[2] != .max
    }

    var hasOutputCaps: Bool {
        outputCaps[0] != .max || outputCaps[1] != .max || outputCaps[2] != .max
    }

    /// Whether a schedule entry closes the gate at `now`.
    @inline(__always)
    func isClosed(at now: Int64) -> Bool { now < closedUntil }

    /// The concurrency cap; `Int.max` when not set.
    @inline(__always)
    var maxConcurrent: Int {
        get { concurrencyCap == .max ? .max : Int(concurrencyCap) }
        set { concurrencyCap = newValue == .max ? .max : Int32(clamping: min(newValue, Int(Int32.max) - 1)) }
    }

    /// Whether batch calls see lower caps than interactive ones.
    @inline(__always)
    var reservesForInteractive: Bool { reservePermille != 0 }

    /// The caps a batch call is checked against: every cap less its reserve for interactive
    /// calls, `cap − ⌈cap × permille / 1000⌉` (so the reserve is never smaller than asked; a
    /// small cap may leave batch calls 0). Unset caps stay unset. Only waiting and batch paths
    /// call it.
    func reservingForInteractive() -> CompiledLimits {
        guard reservePermille != 0 else { return self }
        let permille = Int64(reservePermille)
        // Caps are at most 2^48 (tokens) or 2^32 (requests): times 1000 stays inside Int64.
        func cut(_ cap: Int64) -> Int64 { cap == .max ? .max : cap - (cap * permille + 999) / 1_000 }
        var batch = self
        for w in 0..<3 {
            let requests = requestCaps[w]
            batch.requestCaps[w] = requests == .max ? .max : UInt32(cut(Int64(requests)))
            batch.tokenCaps[w] = cut(tokenCaps[w])
            batch.inputCaps[w] = cut(inputCaps[w])
            batch.outputCaps[w] = cut(outputCaps[w])
        }
        if concurrencyCap != .max { batch.concurrencyCap = Int32(cut(Int64(concurrencyCap))) }
        return batch
    }

    /// Whether adaptive mode lowered these caps below the configured ones (``AdaptiveState``).
    @inline(__always)
    var isAdapted: Bool { Int(adaptedBy) < AdaptiveState.full }

    /// The token, input or output cap an estimate of `tokens` exceeds, so that it can never be
    /// admitted, and that cap.
    ///
    /// While adaptive mode lowers the caps, an estimate is refused only above the most the
    /// configured cap can be, given the adapted one: `((adapted + 1) × 1000 − 1) / factor`,
    /// within 1000 / factor tokens of the configured cap (≤ 10). An estimate above the adapted
    /// cap but within that bound waits for the caps to grow back (and is judged exactly against
    /// the configured caps once they have).
    @inline(__always)
    func oversized(_ tokens: TokenCounts) -> (kind: PolicyLimitKind, cap: Int64)? {
        if tokens.total > tokenCaps[0] || tokens.total > tokenCaps[1] || tokens.total > tokenCaps[2] {
            return oversizedCap(tokens)
        }
        if hasSplitCaps
            && (tokens.input > inputCaps[0] || tokens.input > inputCaps[1] || tokens.input > inputCaps[2]
                || tokens.output > outputCaps[0] || tokens.output > outputCaps[1] || tokens.output > outputCaps[2])
        {
            return oversizedCap(tokens)
        }
        return nil
    }

    // Out of line: the rare path, kept out of the callers' code on the hot path.
    @inline(never)
    private func oversizedCap(_ tokens: TokenCounts) -> (kind: PolicyLimitKind, cap: Int64)? {
        for window in 0..<3 {
            let w = PolicyWindow.at(window)
            if let cap = exceeded(tokens.total, tokenCaps[window]) { return (.tokens(w), cap) }
            guard hasSplitCaps else { continue }
            if let cap = exceeded(tokens.input, inputCaps[window]) { return (.inputTokens(w), cap) }
            if let cap = exceeded(tokens.output, outputCaps[window]) { return (.outputTokens(w), cap) }
        }
        return nil
    }

    /// The cap `count` can never fit under, given the (maybe adapted) cap in force; `nil` if it
    /// may fit.
    private func exceeded(_ count: Int64, _ cap: Int64) -> Int64? {
        guard count > cap else { return nil }
        guard isAdapted, cap != .max else { return cap }
        let factor = Int64(adaptedBy)
        let bound = ((cap + 1) * Int64(AdaptiveState.full) - 1) / factor  // caps are ≤ 2^48: no overflow
        return count > bound ? bound : nil
    }
}

extension CompiledLimits {
    /// What of these limits is provider-wide when the caps count per key (a tree of a flat
    /// provider with model groups): no caps, but the same generation, flags, schedule validity
    /// and closure, so the account still closes and still goes stale with the schedule.
    var accountPart: CompiledLimits {
        var part = CompiledLimits(.unlimited, generation: generation)
        part.routing = routing
        part.countsCacheReads = countsCacheReads
        part.validUntil = validUntil
        part.closedUntil = closedUntil
        return part
    }
}
