import PolicyGate

/// The bookkeeping of a gated call's attempts, shared by the clients (URLSession's and
/// AsyncHTTPClient's): the estimate, the caller's maximum wait over all attempts, and how many
/// attempts were made.
package struct GatedAttempts: Sendable {
    /// The call's estimate, the same for every attempt.
    package let estimate: TokenEstimate
    /// Attempts made so far (each is one permit).
    package private(set) var count = 0
    private let clock = ContinuousClock()
    private let deadline: ContinuousClock.Instant?

    /// Attempts of a call estimated at `estimate`, within `maxWait` in all (`nil`: no limit).
    package init(estimate: TokenEstimate, maxWait: Duration?) {
        self.estimate = estimate
        deadline = maxWait.map { ContinuousClock().now.advanced(by: $0) }
    }

    /// Acquires the next attempt's permit, waiting no longer than what is left of the maximum wait.
    package mutating func acquire(from gate: PolicyService, for key: PolicyKey) async throws -> PolicyPermit {
        count += 1
        return try await gate.acquire(
            key, estimatedInputTokens: estimate.input, estimatedOutputTokens: estimate.output,
            maxWait: deadline.map { max(.zero, clock.now.duration(to: $0)) })
    }

    /// Whether a throttled attempt should be retried: retrying is on, attempts are left, and a
    /// pause of `pause` still ends within the maximum wait.
    package func mayRetry(after pause: Duration, retrying: Bool, maxAttempts: Int) -> Bool {
        retrying && count < maxAttempts && (deadline.map { clock.now.advanced(by: pause) <= $0 } ?? true)
    }
}
