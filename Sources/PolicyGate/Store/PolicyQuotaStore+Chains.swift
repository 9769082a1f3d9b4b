/// Nested limits in a shared store: one admission for every level of a chain.
extension PolicyQuotaStore {
    /// Refuses: a store that does not implement chains cannot count nested limits, and
    /// counting only the innermost level would let the account's caps be exceeded.
    public func admitChain(_ request: PolicyStoreChainRequest) async throws -> PolicyStoreChainDecision {
        throw PolicyStoreRequestError(
            "this store does not support nested limits (per.<kind> tables): it cannot admit a call at every level at once")
    }

    /// `false`: the store does not implement ``admitChain(_:)``.
    public var supportsChains: Bool { false }
}

/// One admission attempt of a provider with nested limits: the call, and the caps of every
/// level of its chain, the account first and the key itself last.
///
/// A store admits it only if every level fits, and then records it in all of them at once
/// (its windows and a concurrency slot at each level) — or in none. The lease it returns
/// stands for the whole chain: ``PolicyQuotaStore/commit(_:tokens:)`` and
/// ``PolicyQuotaStore/release(_:)`` correct every level.
public struct PolicyStoreChainRequest: Sendable, Hashable {
    /// The levels, outermost (the account) first; each names its key, its store name and its
    /// caps, and carries the call's ``tokens``.
    public let levels: [PolicyStoreRequest]
    /// The call's estimated tokens.
    public var tokens: Int { levels.last?.tokens ?? 0 }
    /// How long the caller still waits for this answer (see ``PolicyStoreRequest/maximumWait``).
    public var maximumWait: Duration? { levels.last?.maximumWait }

    /// Creates a request (the gate does; store tests may too). `levels` must not be empty and
    /// carry the same token count.
    public init(levels: [PolicyStoreRequest]) {
        self.levels = levels
    }
}

/// What a store answered to ``PolicyQuotaStore/admitChain(_:)``.
public enum PolicyStoreChainDecision: Sendable, Hashable {
    /// Recorded at every level, with a concurrency slot held at each until released.
    case admitted(PolicyStoreLease)
    /// Not recorded anywhere: the levels that would not fit, each with what a single key's
    /// admission would have answered for it (never `.admitted`). Not empty.
    case refused([PolicyStoreLevelRefusal])
}

/// A level of a chain that refused a call.
public struct PolicyStoreLevelRefusal: Sendable, Hashable {
    /// The level's index in ``PolicyStoreChainRequest/levels`` (0: the account).
    public let level: Int
    /// ``PolicyStoreDecision/concurrencyFull(retryAfter:)`` or
    /// ``PolicyStoreDecision/windowsFull(_:)`` for that level.
    public let decision: PolicyStoreDecision

    /// Creates a refusal (stores do).
    public init(level: Int, decision: PolicyStoreDecision) {
        self.level = level
        self.decision = decision
    }
}
