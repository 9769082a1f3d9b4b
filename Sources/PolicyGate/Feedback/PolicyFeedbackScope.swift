/// Which keys a provider's feedback (rate-limit headers, 429s) applies to.
///
/// Providers count limits per account or API key. When every scope of a provider calls it with
/// the same account, what one call hears applies to all of them (`provider`, the default). When
/// each scope has an account of its own (a customer's own API key, say), it applies to the key
/// of the call alone (`key`). In a configuration file: `feedback_scope = "key"` in the
/// provider's `[limits.<provider>]` table.
public enum PolicyFeedbackScope: String, Sendable, Hashable, Codable, CaseIterable {
    /// Every key of the provider shares what any of its calls heard.
    case provider
    /// Each key has its own.
    case key
}
