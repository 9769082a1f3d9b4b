/// A permit has been held longer than the service's ``PolicyService/permitHoldWarning``.
///
/// Reported once per permit, while it is still held, from the service's own timer (not from a
/// caller's task). A permit that is never released (kept in a stored property by mistake, or
/// in a task that never ends) holds its key's concurrency slot for good; this is how it shows.
/// A permit released before the threshold is never reported.
public struct PolicyLongHoldEvent: Sendable, Hashable {
    /// The permit's key.
    public let key: PolicyKey
    /// How long it had been held when reported (at least ``threshold``).
    public let held: Duration
    /// The threshold in force: the service's ``PolicyService/permitHoldWarning``.
    public let threshold: Duration
    /// The tokens it was admitted with (input plus output when estimated in parts).
    public let estimatedTokens: Int
    /// The tokens it committed last, or `nil` if it has committed nothing yet.
    public let committedTokens: Int?

    /// Creates the event (the gate does; adapters' tests and fakes may too).
    public init(key: PolicyKey, held: Duration, threshold: Duration, estimatedTokens: Int, committedTokens: Int?) {
        self.key = key
        self.held = held
        self.threshold = threshold
        self.estimatedTokens = estimatedTokens
        self.committedTokens = committedTokens
    }
}
