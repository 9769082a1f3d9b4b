/// Why the gate refused a call or an argument.
///
/// Inspect ``code`` to tell the cases apart; rejections also name the ``limit`` that bit and,
/// where it can be known, how long until trying again would succeed (``retryAfter``).
/// The gate's state is unchanged by any call that throws.
public struct PolicyError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The kind of failure. New codes may be added; match with `==` rather than exhaustively.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let name: String
        private init(_ name: String) { self.name = name }

        /// The call does not fit now (a non-waiting attempt, or a wait that could not end
        /// before its maximum wait).
        public static let rateLimited = Code("rateLimited")
        /// The call waited up to its maximum wait and was not admitted; it recorded nothing.
        public static let timedOut = Code("timedOut")
        /// The estimate is larger than a token cap, so the call can never be admitted.
        public static let oversized = Code("oversized")
        /// A token count is negative, zero where a count is required, or too large to add up.
        public static let invalidTokenCount = Code("invalidTokenCount")
        /// A configured cap is not usable (zero, negative or too large).
        public static let invalidLimits = Code("invalidLimits")
        /// An argument does not fit the gate, such as a deadline of another clock.
        public static let invalidArgument = Code("invalidArgument")
        /// The provider's shared store failed (an error, or no answer in time) and the provider
        /// fails closed. Nothing was recorded.
        public static let storeUnavailable = Code("storeUnavailable")
        /// The gate was shut down (``PolicyService/shutDown(gracePeriod:)``): it admits nothing
        /// more, and callers that were waiting were refused. Permits already held still commit
        /// and release.
        public static let shutDown = Code("shutDown")
        /// The provider has spend caps and the call's model has no price
        /// (``PolicyLimits/prices``), or the call named no model and there is no `"*"` price:
        /// its cost cannot be counted, so it is not admitted. Nothing was recorded.
        public static let unpriced = Code("unpriced")

        /// The code's name.
        public var description: String { name }
    }

    /// The kind of failure.
    public let code: Code
    /// The cap that refused the call, when one did.
    public let limit: PolicyLimitKind?
    /// How long until the same call would be admitted if nothing else arrives meanwhile;
    /// `nil` when that cannot be known (a full concurrency cap frees when a permit is released).
    public let retryAfter: Duration?
    /// The key the call was for, when there was one.
    public let key: PolicyKey?
    /// The schedule entry that closes the gate, when the call was refused because of it
    /// (``limit`` is `nil` then, and ``retryAfter`` is the time until the gate opens).
    public let closedBy: String?
    /// What the provider itself said, when its feedback refused the call: it paused the gate
    /// (a 429 or a `retry-after`: "paused the gate"; ``PolicyState/providerFeedback`` says
    /// why) or reported too little left until a reset ("has no requests left", "has 400
    /// tokens left"). ``limit`` is `nil` then, and ``retryAfter`` is the time
    /// until the pause ends or the quantity resets.
    public let providerCause: String?
    /// A sentence saying what happened.
    public let message: String
    /// For a provider with nested limits (``PolicyConfiguration/scopeLimits``): the level
    /// whose cap refused the call — the account (the provider's `.global` key), a parent
    /// scope, or the key's own scope. `nil` for a provider without nested limits.
    public internal(set) var level: PolicyKey? = nil
    /// The spend cap that refused the call, when one did (``limit`` is `nil` then, and
    /// ``retryAfter`` is the time until enough spend leaves its window, or the next month).
    public internal(set) var costCap: PolicyCostCap? = nil

    /// Creates an error; the gate throws these, and tests or adapters may build them too.
    public init(
        _ code: Code, limit: PolicyLimitKind? = nil, retryAfter: Duration? = nil,
        key: PolicyKey? = nil, closedBy: String? = nil, providerCause: String? = nil, costCap: PolicyCostCap? = nil,
        message: String
    ) {
        self.costCap = costCap
        self.code = code
        self.limit = limit
        self.retryAfter = retryAfter
        self.key = key
        self.closedBy = closedBy
        self.providerCause = providerCause
        self.message = message
    }

    /// The code, the key and the message.
    public var description: String {
        var text = "PolicyError.\(code)"
        if let key { text += " [\(key)]" }
        if let level, level != key { text += " at level \(level)" }
        text += ": \(message)"
        if let retryAfter { text += " (retry after \(retryAfter))" }
        return text
    }

    func with(key: PolicyKey) -> PolicyError {
        var error = PolicyError(
            code, limit: limit, retryAfter: retryAfter, key: key, closedBy: closedBy, providerCause: providerCause,
            message: message)
        error.level = level
        error.costCap = costCap
        return error
    }

    /// Names the schedule entry in an error the state machine made (it knows only that the
    /// gate is closed, not by which entry).
    func naming(closedBy entry: String) -> PolicyError {
        var error = PolicyError(
            code, limit: limit, retryAfter: retryAfter, key: key, closedBy: entry, providerCause: providerCause,
            message: message.replacingClosedBySchedule(with: entry))
        error.level = level
        error.costCap = costCap
        return error
    }
}

extension String {
    fileprivate func replacingClosedBySchedule(with entry: String) -> String {
        guard hasSuffix("closed by schedule") else { return self }
        return self + " '\(entry)'"
    }
}
