/// A provider's own feedback was read (``PolicyPermit/observe(headers:)-([String:String])``,
/// ``PolicyService/reportThrottled(_:retryAfter:)``): what the gate adopted.
public struct PolicyFeedbackEvent: Sendable, Hashable {
    /// The key whose call the feedback came with; it applies to every key of the provider.
    public let key: PolicyKey
    /// What was read, with the values that were not believed (``PolicyProviderFeedback/ignored``).
    public let feedback: PolicyProviderFeedback
    /// How long the provider paused the gate from now, if it did.
    public let pausedFor: Duration?
    /// Why, if it did ("paused the gate after a 429", …).
    public let pauseCause: String?
    /// The requests the gate now admits at most until the provider's reset, if it said.
    public let requestsRemaining: Int?
    /// The tokens likewise.
    public let tokensRemaining: Int?

    /// Creates the event (the gate does; adapters' tests may too).
    public init(
        key: PolicyKey, feedback: PolicyProviderFeedback, pausedFor: Duration?, pauseCause: String?,
        requestsRemaining: Int?, tokensRemaining: Int?
    ) {
        self.key = key
        self.feedback = feedback
        self.pausedFor = pausedFor
        self.pauseCause = pauseCause
        self.requestsRemaining = requestsRemaining
        self.tokensRemaining = tokensRemaining
    }
}
