/// ``PolicyLimits`` in the form the state machine checks on every call: missing caps become
/// `Int64.max`, so the hot path compares numbers instead of unwrapping optionals.
struct CompiledLimits: Sendable {
    /// Request caps per window (minute, hour, day); `.max` when not set.
    var requestCaps: InlineArray<3, Int64>
    /// Token caps per window; `.max` when not set.
    var tokenCaps: InlineArray<3, Int64>
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
    /// Whether the provider's counters live in the service's shared store (its calls take the
    /// store's path rather than the in-process machine's).
    var isShared = false
    /// For a shared provider: whether a failing store admits calls uncounted.
    var failsOpen = false
    /// Whether adaptive mode lowered these caps below the configured ones (see
    /// ``AdaptiveState``): the token caps then are not what decides an oversized estimate.
    var isAdapted = false
    /// The largest estimate that can ever be admitted: the smallest token cap as configured
    /// (before adaptive mode lowers it). An estimate above an adapted cap but within this waits
    /// for the caps to grow back instead of failing as oversized. `.max` without token caps.
    var largestEstimate: Int64

    init(_ limits: PolicyLimits, generation: UInt64) {
        self.init(limits, adaptedBy: AdaptiveState.full, generation: generation)
    }

    /// `limits` with every cap multiplied by `factor` thousandths (``PolicyLimits/adapted(by:)``).
    init(_ limits: PolicyLimits, adaptedBy factor: Int, generation: UInt64) {
        func cap(_ value: Int?) -> Int64 { value.map { Int64($0) } ?? .max }
        largestEstimate = min(cap(limits.tokensPerMinute), cap(limits.tokensPerHour), cap(limits.tokensPerDay))
        isAdapted = factor < AdaptiveState.full
        let limits = limits.adapted(by: factor)
        requestCaps = [cap(limits.requestsPerMinute), cap(limits.requestsPerHour), cap(limits.requestsPerDay)]
        tokenCaps = [cap(limits.tokensPerMinute), cap(limits.tokensPerHour), cap(limits.tokensPerDay)]
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
        requestCaps[window] != .max || tokenCaps[window] != .max
    }

    var hasTokenCaps: Bool {
        tokenCaps[0] != .max || tokenCaps[1] != .max || tokenCaps[2] != .max
    }

    /// Whether a schedule entry closes the gate at `now`.
    @inline(__always)
    func isClosed(at now: Int64) -> Bool { now < closedUntil }

    /// The token cap an estimate of `tokens` exceeds, so that it can never be admitted, and
    /// that cap (as configured).
    @inline(__always)
    func oversized(_ tokens: Int64) -> (kind: PolicyLimitKind, cap: Int64)? {
        guard tokens > largestEstimate else { return nil }
        return oversizedCap(tokens)
    }

    /// The kind of token cap an estimate of `tokens` exceeds, if any.
    func oversizedKind(_ tokens: Int64) -> PolicyLimitKind? { oversized(tokens)?.kind }

    // Out of line: the rare path, kept out of the callers' code on the hot path.
    @inline(never)
    private func oversizedCap(_ tokens: Int64) -> (kind: PolicyLimitKind, cap: Int64)? {
        if !isAdapted {
            for window in 0..<3 where tokens > tokenCaps[window] {
                return (.tokens(PolicyWindow.at(window)), tokenCaps[window])
            }
            return nil
        }
        // Adapted caps keep the configured ones' order: the smallest is the one exceeded.
        var smallest = 0
        for window in 1..<3 where tokenCaps[window] < tokenCaps[smallest] { smallest = window }
        return (.tokens(PolicyWindow.at(smallest)), largestEstimate)
    }
}
