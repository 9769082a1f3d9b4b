import Foundation
import PolicyGate

/// One gated call as both clients (URLSession's and AsyncHTTPClient's) make it: the request
/// prepared and estimated, the attempts within the caller's maximum wait, and each reply
/// settled the same way. The clients only move bytes.
///
/// How a reply is settled:
/// - every reply's rate-limit headers are fed back to the gate;
/// - a 429 pauses the provider for its retry hint (`PolicyService.defaultThrottlePause`
///   without one), commits 0 and releases; it is sent again if retrying is on, attempts are
///   left and the pause ends within the maximum wait;
/// - a 2xx reply commits the usage it reports, in parts, and calibrates the estimator; one
///   without usage keeps its estimate (the provider billed something);
/// - any other status, or a transport error, commits 0, as the provider bills it.
package struct GatedAttempts: Sendable {
    /// The API the request is for.
    package let api: ProviderAPI
    /// The body to send: the caller's, with `stream_options.include_usage` added to a streamed
    /// OpenAI chat request that lacks it when asked (``ProviderAPI/requestingStreamUsage(_:)``).
    package let body: Data
    /// The call's estimate, the same for every attempt.
    package let estimate: TokenEstimate
    /// The estimator that made it, calibrated by the usage of a successful reply.
    package let estimator: TokenEstimator
    /// Attempts made so far (each is one permit).
    package private(set) var count = 0
    private let retrying: Bool
    private let maxAttempts: Int
    private let clock = ContinuousClock()
    private let deadline: ContinuousClock.Instant?

    /// Prepares a call of `api` with `body`: reads and estimates the body and, for a stream
    /// when `requestingStreamUsage`, asks for its usage.
    /// - Parameters:
    ///   - maxWait: The longest to wait for the gate over all attempts (`nil`: no limit).
    ///   - retryThrottled: Whether a 429 is sent again (see ``mayRetry(after:)``).
    ///   - maxAttempts: The most calls sent, first included.
    /// - Throws: ``ProviderWireError`` if the body cannot be read.
    package init(
        api: ProviderAPI, body: Data, estimator: TokenEstimator, maxWait: Duration?, retryThrottled: Bool, maxAttempts: Int,
        requestingStreamUsage: Bool = false
    ) throws(ProviderWireError) {
        self.api = api
        self.body = requestingStreamUsage ? api.requestingStreamUsage(body) : body
        self.estimate = try estimator.estimate(api, request: body)
        self.estimator = estimator
        self.retrying = retryThrottled
        self.maxAttempts = maxAttempts
        deadline = maxWait.map { ContinuousClock().now.advanced(by: $0) }
    }

    /// Acquires the next attempt's permit, waiting no longer than what is left of the maximum wait.
    package mutating func acquire(from gate: PolicyService, for key: PolicyKey) async throws -> PolicyPermit {
        count += 1
        return try await gate.acquire(
            key, estimatedInputTokens: estimate.input, estimatedOutputTokens: estimate.output,
            // The request's model: the provider's model groups (and prices) apply by it.
            model: estimate.model, maxWait: deadline.map { max(.zero, clock.now.duration(to: $0)) })
    }

    /// Whether a throttled attempt should be retried: retrying is on, attempts are left, and a
    /// pause of `pause` still ends within the maximum wait.
    package func mayRetry(after pause: Duration) -> Bool {
        retrying && count < maxAttempts && (deadline.map { clock.now.advanced(by: pause) <= $0 } ?? true)
    }

    /// Feeds a reply's head back through its permit: the rate-limit headers and, for a 429,
    /// the pause. Returns whether the attempt is to be sent again (a 429 that may be retried);
    /// the caller then settles the permit (``discard(_:)``) and acquires the next.
    package func feedBack(status: Int, headers: [(String, String)], through permit: borrowing PolicyPermit) -> Bool {
        permit.observe(headers: headers)
        guard status == 429 else { return false }
        let hint = PolicyProviderFeedback(headers: headers).retryAfter
        permit.reportThrottled(retryAfter: hint)
        return mayRetry(after: hint ?? PolicyService.defaultThrottlePause)
    }

    /// What became of an attempt whose whole reply was read.
    package enum Outcome: Sendable {
        /// A 429 to send again: its permit is settled; acquire the next.
        case retry
        /// The reply to return, with the usage committed (`nil`: none read, see ``settle(_:status:headers:body:)``).
        case reply(usage: ProviderUsage?)
    }

    /// Settles an attempt whose reply was read whole: feeds back its head, commits what it
    /// used, calibrates the estimator on a 2xx with usage, and releases the permit.
    package func settle(_ permit: consuming PolicyPermit, status: Int, headers: [(String, String)], body: Data) -> Outcome {
        let retry = feedBack(status: status, headers: headers, through: permit)
        guard (200..<300).contains(status) else {
            Self.discard(permit)
            return retry ? .retry : .reply(usage: nil)
        }
        // A success without usage keeps its estimate: the provider billed something.
        guard let usage = try? api.usage(fromResponse: body) else { return .reply(usage: nil) }
        permit.commitTokensClamping(input: usage.input, output: usage.output, cacheReads: usage.cacheReads)
        estimator.calibrate(estimate, actual: usage)
        return .reply(usage: usage)
    }

    /// Settles an attempt that got no usable reply (a transport error, a throttled head about
    /// to be retried): commits 0, as the provider bills it, and releases the permit.
    package static func discard(_ permit: consuming PolicyPermit) {
        permit.commitTokensClamping(input: 0, output: 0)
    }

    /// Settles a streamed attempt once its stream ended, failed or was dropped: commits
    /// `usage` (``ProviderUsage/committed(status:stream:estimate:)``, which the caller records
    /// first, so that it is readable once the permit is released), releases the permit, and
    /// calibrates the estimator on a complete 2xx stream with usage.
    package static func settleStream(
        _ permit: consuming PolicyPermit, committing usage: ProviderUsage, status: Int, stream: StreamUsageParser,
        estimate: TokenEstimate, estimator: TokenEstimator
    ) {
        permit.commitTokensClamping(input: usage.input, output: usage.output, cacheReads: usage.cacheReads)
        permit.release()
        if (200..<300).contains(status), stream.isComplete, let seen = stream.usage { estimator.calibrate(estimate, actual: seen) }
    }
}

extension ProviderUsage {
    /// What a streamed call commits when it ends: 0 for a non-2xx reply; the usage if the
    /// stream completed; otherwise the input seen (or estimated) and the larger of the output
    /// seen and the output cap, since the provider bills what it generated before it noticed.
    package static func committed(status: Int, stream: StreamUsageParser, estimate: TokenEstimate) -> ProviderUsage {
        if !(200..<300).contains(status) { return ProviderUsage(input: 0, output: 0) }
        if stream.isComplete, let seen = stream.usage { return seen }
        let seen = stream.usage
        return ProviderUsage(
            input: seen?.input ?? estimate.input, output: max(seen?.output ?? 0, estimate.output), cacheReads: seen?.cacheReads ?? 0)
    }
}
