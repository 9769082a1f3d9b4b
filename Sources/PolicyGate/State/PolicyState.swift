import Foundation

/// A snapshot of one key: usage per window against its caps, permits in flight, callers queued.
///
/// Window usage is read from the gate's buckets, so it counts a call until its bucket leaves
/// the window: up to 1/60 of the window longer than an exact sliding log would. That is the
/// same count admission uses, never less than the exact one.
public struct PolicyState: Sendable, CustomStringConvertible {
    /// Usage of one quantity (requests or tokens) in one window.
    public struct Usage: Sendable, Hashable {
        /// Counted in the window now.
        public let used: Int
        /// The cap, or `nil` when this quantity is not capped for this window.
        public let cap: Int?
        /// What is left under the cap (never negative), or `nil` when uncapped.
        public var remaining: Int? { cap.map { Swift.max(0, $0 - used) } }
    }

    /// Usage in one sliding window.
    public struct Window: Sendable, Hashable {
        /// Which window.
        public let window: PolicyWindow
        /// Requests admitted in it.
        public let requests: Usage
        /// Tokens counted in it (estimates, replaced by commits).
        public let tokens: Usage
        /// Input tokens counted in it, when the provider caps input tokens over this window.
        public var inputTokens: Usage? = nil
        /// Output tokens counted in it, when the provider caps output tokens over this window.
        public var outputTokens: Usage? = nil
    }

    /// The key described.
    public let key: PolicyKey
    /// The provider's limits now (``PolicyLimits/unlimited`` when it has none).
    public let limits: PolicyLimits
    /// One entry per window with a cap, shortest first; for an adaptive provider, against the
    /// adapted caps (``adaptive``).
    public let windows: [Window]
    /// Permits holding a concurrency slot.
    public let inFlight: Int
    /// Callers waiting, for a slot or for capacity.
    public let queued: Int
    /// Of the queued callers, those already holding a slot and waiting for window capacity.
    public let waitingForCapacity: Int
    /// Why a new call of one request and no tokens would have to wait now, if a cap is why
    /// (`nil` too while a schedule closes the gate: see ``isClosed``).
    public let blockedBy: PolicyLimitKind?
    /// The schedule entry that sets the provider's limits now, if any.
    public let scheduleEntry: String?
    /// Whether that schedule entry closes the gate now.
    public let isClosed: Bool
    /// When the provider's schedule changes its limits next, if it has one that will.
    public let nextTransition: Date?
    /// Time until some recorded usage next leaves a window (freeing capacity), or `nil` when
    /// nothing is recorded.
    public let nextCapacityIn: Duration?

    /// What the provider itself said about its limits (``PolicyPermit/observe(headers:)-([String:String])``,
    /// ``PolicyService/reportThrottled(_:retryAfter:)``), while some of it is in force.
    public struct ProviderFeedback: Sendable, Hashable {
        /// How long the provider still pauses the gate, if it does.
        public let pausedFor: Duration?
        /// Why it pauses it.
        public let pauseCause: String?
        /// Requests the gate admits at most until the provider's reset, if it said.
        public let requestsRemaining: Int?
        /// Time until that reset.
        public let requestsResetIn: Duration?
        /// Tokens the gate admits at most until the provider's reset, if it said.
        public let tokensRemaining: Int?
        /// Time until that reset.
        public let tokensResetIn: Duration?
    }

    /// What the provider said, while some of it is in force; `nil` otherwise. It applies to
    /// every key of the provider and only ever tightens the configured caps.
    public internal(set) var providerFeedback: ProviderFeedback?

    /// An adaptive provider's caps now (``PolicyConfiguration/adaptive``).
    public struct Adaptive: Sendable, Hashable {
        /// The fraction of the configured caps enforced now (0.1 … 1; 1 until a 429).
        public let factor: Double
        /// The caps enforced now: ``PolicyState/limits`` times ``factor``, rounded down, each
        /// at least 1.
        public let limits: PolicyLimits
        /// Time until the caps grow back by the next step, if they are below the configured
        /// ones.
        public let nextIncreaseIn: Duration?
    }

    /// For a provider in adaptive mode, its adapted caps; `nil` for other providers.
    public internal(set) var adaptive: Adaptive?

    /// For a provider with nested limits: every level of the key's chain, the account first
    /// and the key's own scope last (this state is the last one's, with ``levels`` filled in).
    /// Each level's ``key`` names it, its ``limits`` are its caps, and its counts are shared by
    /// every key below it. Empty for a provider without nested limits.
    public internal(set) var levels: [PolicyState] = []

    /// The tier the key's scope is in (``PolicyKey/tier``, else the service's tier resolver),
    /// when its provider has tiers; ``limits`` are then the tier's over the provider's.
    public internal(set) var tier: String?

    /// Whether the key's scope has caps of its own (``PolicyService/setScopeOverride(_:for:provider:)``,
    /// ``PolicyConfiguration/scopeOverrides``); ``limits`` are then the override's over the
    /// provider's, whatever its ``tier``.
    public internal(set) var hasScopeOverride = false

    /// Of the queued callers, those queued as batch calls (``PolicyPriority/batch``), promoted
    /// by aging or not.
    public internal(set) var queuedBatch = 0
    /// Of the queued callers, those queued as interactive calls.
    public var queuedInteractive: Int { queued - queuedBatch }
    /// Of the batch callers queued, those promoted by aging (``PolicyLimits/batchAging``):
    /// ordered among the interactive ones and allowed into the reserve.
    public internal(set) var promotedBatch = 0

    /// A key's spend over one capped window (``PolicyLimits/costPerHour`` …).
    public struct Spend: Sendable, Hashable {
        /// The window.
        public let cap: PolicyCostCap
        /// What calls in the window count for: estimated costs, replaced by actual costs as
        /// they commit.
        public let spent: PolicyMoney
        /// The cap.
        public let limit: PolicyMoney
        /// For the month: when the next one begins (its spend starts at 0 then).
        public let resetsAt: Date?
        /// What is left under the cap (0 when spent beyond it by commits over their estimates).
        public var remaining: PolicyMoney { PolicyMoney(microUnits: Swift.max(0, limit.microUnits - spent.microUnits)) }
    }

    /// The key's spend per capped window, hour, day, month; empty without spend caps.
    public internal(set) var spend: [Spend] = []
    /// The spend cap that refuses a call now, if one does.
    public internal(set) var blockedByCost: PolicyCostCap?

    /// The window entry for `window`, if it is capped.
    public subscript(window: PolicyWindow) -> Window? {
        windows.first { $0.window == window }
    }

    /// A one-line summary.
    public var description: String {
        var parts = ["\(key)", "inFlight=\(inFlight)", "queued=\(queued)"]
        if queuedBatch > 0 { parts.append("queuedBatch=\(queuedBatch)") }
        for w in windows {
            var line =
                "\(w.window): requests \(w.requests.used)/\(w.requests.cap.map(String.init) ?? "-") tokens \(w.tokens.used)/\(w.tokens.cap.map(String.init) ?? "-")"
            if let input = w.inputTokens { line += " input \(input.used)/\(input.cap.map(String.init) ?? "-")" }
            if let output = w.outputTokens { line += " output \(output.used)/\(output.cap.map(String.init) ?? "-")" }
            parts.append(line)
        }
        for s in spend { parts.append("\(s.cap): \(s.spent)/\(s.limit)") }
        if let blockedBy { parts.append("blockedBy=\(blockedBy)") }
        if let blockedByCost { parts.append("blockedBy=\(blockedByCost)") }
        if let scheduleEntry { parts.append("schedule=\(scheduleEntry)\(isClosed ? " (closed)" : "")") }
        if let pause = providerFeedback?.pausedFor { parts.append("providerPause=\(pause)") }
        if let adaptive, adaptive.factor < 1 { parts.append("adaptive=\(adaptive.factor)") }
        return parts.joined(separator: " ")
    }
}
