// Built only with the package trait `Tracing`; without it this module is empty, so the default
// build needs no swift-distributed-tracing.
#if Tracing
import Instrumentation
import PolicyGate
import PolicyGateTelemetrySupport
import Tracing

/// A `PolicyTelemetry` that records the gate's waits and refusals as spans through
/// swift-distributed-tracing, children of the caller's current span.
///
/// ```swift
/// let gate = try PolicyService(limits: limits, telemetry: PolicyTracing())
/// ```
///
/// Hooks run on the caller's task, so each span's parent is the caller's task-local
/// `ServiceContext` (`InstrumentationContext.current`), as with `withSpan`:
/// - a call that **waited** gets a `policygate.acquire` span from when it asked to when it was
///   admitted (its start is the admission minus the time waited, on the tracer's clock), with
///   outcome `acquired`; calls admitted at once get none unless `recordsImmediateAdmissions`;
/// - a **refused** call gets a zero-length `policygate.acquire` span at the refusal, with
///   outcome `rejected` or `timed_out`, its reason, limit and retry-after, the error recorded
///   and status `error` (a commit refused for a bad token count is reported the same way, with
///   reason `invalid_token_count`).
///
/// The hooks see a wait only once it ended and never see a cancellation, so a timed-out wait
/// shows as a point, not its length. For exact spans of one call site, timeouts and
/// cancellations included, use `PolicyService.acquire(_:estimatedTokens:maxWait:tracer:)`;
/// inside it these hooks record nothing, so using both never duplicates a span.
///
/// A permit held longer than the service's `PolicyService.permitHoldWarning` gets
/// a `policygate.long_hold` span from its admission to the report (the report comes from the
/// gate's timer, so the span has no parent), with the key's attributes,
/// `policygate.held_seconds`, `policygate.threshold_seconds`, `policygate.estimated_tokens` and,
/// if it committed, `policygate.committed_tokens`. Its status is left unset: the permit is still
/// held, and may yet be released.
///
/// Attributes (``Attribute``): `policygate.provider`, `policygate.scope_kind`, `policygate.scope`
/// (such as `user:u-42`), `policygate.estimated_tokens`, `policygate.outcome`, and on refusals
/// `policygate.reason`, `policygate.limit`, `policygate.retry_after_seconds`.
public struct PolicyTracing: PolicyTelemetry {
    /// The name of every span recorded for an acquire: `policygate.acquire`.
    public static let operationName = "policygate.acquire"
    /// The name of the span recorded for a permit held too long: `policygate.long_hold`.
    public static let longHoldOperationName = "policygate.long_hold"

    /// The span attribute names.
    public enum Attribute {
        /// The provider name.
        public static let provider = "policygate.provider"
        /// The scope's kind: `global`, `user`, `org`, `project` or a custom kind.
        public static let scopeKind = "policygate.scope_kind"
        /// The whole scope, such as `user:u-42` or `global`.
        public static let scope = "policygate.scope"
        /// The call's pre-flight token estimate.
        public static let estimatedTokens = "policygate.estimated_tokens"
        /// The call's input estimate, when given apart.
        public static let estimatedInputTokens = "policygate.estimated_input_tokens"
        /// The call's output estimate, when given apart.
        public static let estimatedOutputTokens = "policygate.estimated_output_tokens"
        /// How the acquire ended: a ``Outcome`` value.
        public static let outcome = "policygate.outcome"
        /// Why a call was refused: `rate_limited`, `timed_out`, `oversized`, `invalid_token_count`, …
        public static let reason = "policygate.reason"
        /// The cap that refused or delayed the call (`tokens_per_minute`, `concurrency`, …), when known.
        public static let limit = "policygate.limit"
        /// Seconds until the same call would be admitted, when known.
        public static let retryAfterSeconds = "policygate.retry_after_seconds"
        /// Seconds a permit held too long had been held when reported.
        public static let heldSeconds = "policygate.held_seconds"
        /// The hold warning's threshold, in seconds.
        public static let thresholdSeconds = "policygate.threshold_seconds"
        /// The tokens a permit held too long committed last, if it committed.
        public static let committedTokens = "policygate.committed_tokens"
    }

    /// The values of the `policygate.outcome` attribute.
    public enum Outcome {
        /// The call was admitted.
        public static let acquired = "acquired"
        /// The call was refused: rate limited, oversized, or given a bad token count.
        public static let rejected = "rejected"
        /// The call waited up to its maximum wait and was not admitted.
        public static let timedOut = "timed_out"
        /// The waiting task was cancelled.
        public static let cancelled = "cancelled"
        /// The call failed with an error that is none of the above.
        public static let failed = "failed"
    }

    /// The tracer, or `nil` for `InstrumentationSystem.tracer` at the time of each span.
    private let tracer: (any Tracer)?
    /// Whether calls admitted without waiting get a (zero-length) span too.
    public let recordsImmediateAdmissions: Bool

    /// Records spans into `tracer`.
    /// - Parameters:
    ///   - tracer: The tracer; by default the one bootstrapped in `InstrumentationSystem`,
    ///     looked up for each span (so bootstrapping after creating this works).
    ///   - recordsImmediateAdmissions: Whether calls admitted at once get a span too (off: a
    ///     span per call would mostly record that nothing happened).
    public init(tracer: (any Tracer)? = nil, recordsImmediateAdmissions: Bool = false) {
        self.tracer = tracer
        self.recordsImmediateAdmissions = recordsImmediateAdmissions
    }

    /// Records a span for the wait that ended in this admission.
    public func didAcquire(_ event: PolicyAcquireEvent) {
        guard event.waited > .zero || recordsImmediateAdmissions, !Self.insideTracedAcquire else { return }
        let end = DefaultTracerClock.now
        let waited = UInt64(LabelNames.nanoseconds(event.waited))
        let start = DefaultTracerClock.Timestamp(
            nanosecondsSinceEpoch: end.nanosecondsSinceEpoch > waited ? end.nanosecondsSinceEpoch - waited : 0)
        let span = (tracer ?? InstrumentationSystem.tracer).startSpan(Self.operationName, at: start)
        span.attributes = Self.attributes(
            key: event.key, estimatedTokens: event.estimatedTokens, input: event.estimatedInputTokens,
            output: event.estimatedOutputTokens)
        span.attributes[Attribute.outcome] = Outcome.acquired
        span.end(at: end)
    }

    /// Records a zero-length span for the refusal.
    public func didReject(_ event: PolicyRejectEvent) {
        guard !Self.insideTracedAcquire else { return }
        let now = DefaultTracerClock.now
        let span = (tracer ?? InstrumentationSystem.tracer).startSpan(Self.operationName, at: now)
        span.attributes = Self.attributes(key: event.key, estimatedTokens: event.estimatedTokens)
        Self.recordFailure(event.error, on: span)
        span.end(at: now)
    }

    /// Records a `policygate.long_hold` span from the permit's admission to now.
    public func didHoldPermitTooLong(_ event: PolicyLongHoldEvent) {
        let end = DefaultTracerClock.now
        let held = UInt64(LabelNames.nanoseconds(event.held))
        let start = DefaultTracerClock.Timestamp(
            nanosecondsSinceEpoch: end.nanosecondsSinceEpoch > held ? end.nanosecondsSinceEpoch - held : 0)
        let span = (tracer ?? InstrumentationSystem.tracer).startSpan(Self.longHoldOperationName, context: .topLevel, at: start)
        var attributes = Self.attributes(key: event.key, estimatedTokens: event.estimatedTokens)
        attributes[Attribute.heldSeconds] = LabelNames.seconds(event.held)
        attributes[Attribute.thresholdSeconds] = LabelNames.seconds(event.threshold)
        if let committed = event.committedTokens { attributes[Attribute.committedTokens] = committed }
        span.attributes = attributes
        span.end(at: end)
    }

    // MARK: Shared with the traced acquire

    /// Whether the current task is inside a traced `acquire`, whose own span covers the wait.
    static var insideTracedAcquire: Bool {
        InstrumentationContext.current?[TracedAcquireKey.self] == true
    }

    static func attributes(key: PolicyKey, estimatedTokens: Int, input: Int? = nil, output: Int? = nil) -> SpanAttributes {
        var attributes = SpanAttributes()
        attributes[Attribute.provider] = key.provider
        attributes[Attribute.scopeKind] = key.scope.kind
        attributes[Attribute.scope] = key.scope.description
        attributes[Attribute.estimatedTokens] = estimatedTokens
        if let input { attributes[Attribute.estimatedInputTokens] = input }
        if let output { attributes[Attribute.estimatedOutputTokens] = output }
        return attributes
    }

    /// Sets the outcome, reason, limit and status of a span whose acquire threw `error`.
    static func recordFailure(_ error: any Error, on span: any Span) {
        if let error = error as? PolicyError {
            span.attributes[Attribute.outcome] = error.code == .timedOut ? Outcome.timedOut : Outcome.rejected
            span.attributes[Attribute.reason] = LabelNames.reason(error.code)
            if let limit = error.limit { span.attributes[Attribute.limit] = LabelNames.limit(limit) }
            if let retryAfter = error.retryAfter {
                span.attributes[Attribute.retryAfterSeconds] = LabelNames.seconds(retryAfter)
            }
            span.recordError(error)
            span.setStatus(SpanStatus(code: .error, message: error.message))
        } else if error is CancellationError {
            // Giving up is the caller's choice, not a failure of the gate: no error status.
            span.attributes[Attribute.outcome] = Outcome.cancelled
        } else {
            span.attributes[Attribute.outcome] = Outcome.failed
            span.recordError(error)
            span.setStatus(SpanStatus(code: .error))
        }
    }
}

/// Marks the context of a traced `acquire`'s span, so the telemetry hooks it triggers do not
/// record the same wait again.
enum TracedAcquireKey: InstrumentationContextKey {
    typealias Value = Bool
    static var nameOverride: String? { "policygate-traced-acquire" }
}
#endif
