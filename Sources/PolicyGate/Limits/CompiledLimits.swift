/// ``PolicyLimits`` in the form the state machine checks on every call: missing caps become
/// `.max`, so the hot path compares numbers instead of unwrapping optionals.
///
/// Copied on every acquire (out of the provider table, into the waiter's wait): kept within
/// 128 bytes, the size up to which a copy is a few moves rather than a call to `memcpy`
/// (request caps are 32-bit for that: ``PolicyLimits/maximumRequestCap`` is below `UInt32.max`).
struct CompiledLimits: Sendable {
    /// Request caps per window (minute, hour, day); `.max` when not set.
    var requestCaps: InlineArray<3, UInt32>
    // The flags next, in the request caps' padding: the struct stays 120 bytes.
    /// Whether any input or output cap is set: only then does a key keep input and output
    /// windows (``SplitWindows``), so that a provider without them pays one branch.
    var hasSplitCaps: Bool
    /// ``PolicyLimits/countsCacheReads``.
    var countsCacheReads: Bool
    /// Whether the provider's counters live in the service's shared store (its calls take the
    /// store's path rather than the in-process machine's).
    var isShared = false
    /// For a shared provider: whether a failing store admits calls uncounted.
    var failsOpen = false
    /// Token caps per window; `.max` when not set.
    var tokenCaps: InlineArray<3, Int64>
    /// Input-token caps per window; `.max` when not set.
    var inputCaps: InlineArray<3, Int64>
    /// Output-token caps per window; `.max` when not set.
    var outputCaps: InlineArray<3, Int64>
    /// `Int.max` when not set.
    var maxConcurrent: Int
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
        func cap(_ value: Int?) -> Int64 { value.map { Int64($0) } ?? .max }
        // Validated caps are below `UInt32.max`; clamping keeps an unvalidated one a cap.
        func requestCap(_ value: Int?) -> UInt32 { value.map { UInt32(clamping: min($0, PolicyLimits.maximumRequestCap)) } ?? .max }
        requestCaps = [requestCap(limits.requestsPerMinute), requestCap(limits.requestsPerHour), requestCap(limits.requestsPerDay)]
        tokenCaps = [cap(limits.tokensPerMinute), cap(limits.tokensPerHour), cap(limits.tokensPerDay)]
        inputCaps = [cap(limits.inputTokensPerMinute), cap(limits.inputTokensPerHour), cap(limits.inputTokensPerDay)]
        outputCaps = [cap(limits.outputTokensPerMinute), cap(limits.outputTokensPerHour), cap(limits.outputTokensPerDay)]
        hasSplitCaps = limits.hasInputOutputCaps
        countsCacheReads = limits.countsCacheReads
        maxConcurrent = limits.maxConcurrent ?? .max
        self.generation = generation
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

    /// The token cap an estimate of `tokens` exceeds, so that it can never be admitted, and
    /// that cap.
    @inline(__always)
    func oversized(_ tokens: TokenCounts) -> (kind: PolicyLimitKind, cap: Int64)? {
        for window in 0..<3 where tokens.total > tokenCaps[window] {
            return (.tokens(PolicyWindow.at(window)), tokenCaps[window])
        }
        guard hasSplitCaps else { return nil }
        for window in 0..<3 {
            if tokens.input > inputCaps[window] { return (.inputTokens(PolicyWindow.at(window)), inputCaps[window]) }
            if tokens.output > outputCaps[window] { return (.outputTokens(PolicyWindow.at(window)), outputCaps[window]) }
        }
        return nil
    }
}
