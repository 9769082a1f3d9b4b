/// An adaptive provider's caps moved (see ``PolicyConfiguration/adaptive``): they dropped after
/// a 429, or grew back a step while none came.
public struct PolicyAdaptiveEvent: Sendable, Hashable {
    /// The provider.
    public let provider: String
    /// The factor before, as a fraction of the configured caps (0.1 … 1).
    public let previousFactor: Double
    /// The factor now.
    public let factor: Double
    /// The caps enforced now: ``configured`` times ``factor``, rounded down, each at least 1.
    public let limits: PolicyLimits
    /// The caps configured (with a schedule, the applying entry's over the base ones).
    public let configured: PolicyLimits

    /// Whether the caps dropped (a 429) rather than grew back.
    public var isDecrease: Bool { factor < previousFactor }

    /// Creates the event (the gate does; adapters' tests may too).
    public init(provider: String, previousFactor: Double, factor: Double, limits: PolicyLimits, configured: PolicyLimits) {
        self.provider = provider
        self.previousFactor = previousFactor
        self.factor = factor
        self.limits = limits
        self.configured = configured
    }
}
