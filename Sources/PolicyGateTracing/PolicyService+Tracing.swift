#if Tracing
import Instrumentation
import PolicyGate
import Tracing

extension PolicyService {
    /// Acquires like `PolicyService.acquire(_:estimatedTokens:maxWait:)`, inside a
    /// `policygate.acquire` span that covers the whole call: the wait, and how it ended.
    ///
    /// ```swift
    /// var permit = try await gate.acquire(key, estimatedTokens: 1_200, tracer: InstrumentationSystem.tracer)
    /// ```
    ///
    /// The span is a child of the caller's current `ServiceContext` and is the current context
    /// while the call waits (so log lines the gate's telemetry writes meanwhile carry its ids).
    /// Attributes are those of ``PolicyTracing``; `policygate.outcome` is `acquired`, `rejected`,
    /// `timed_out` or `cancelled`. Refusals and timeouts record the error and set status
    /// `error`; a cancellation does not.
    /// - Parameters:
    ///   - key: The provider and scope to count the call under.
    ///   - estimatedTokens: The pre-flight token estimate.
    ///   - maxWait: The longest to wait; `nil` waits as long as it takes.
    ///   - tracer: The tracer, such as `InstrumentationSystem.tracer`.
    /// - Returns: The permit.
    /// - Throws: As `PolicyService.acquire(_:estimatedTokens:maxWait:)`.
    nonisolated(nonsending) public func acquire(
        _ key: PolicyKey, estimatedTokens: Int = 0, maxWait: Duration? = nil, tracer: some Tracer
    ) async throws -> PolicyPermit {
        try await traced(key, estimatedTokens: estimatedTokens, tracer: tracer) {
            try await self.acquire(key, estimatedTokens: estimatedTokens, maxWait: maxWait)
        }
    }

    /// Acquires like `PolicyService.acquire(_:estimatedInputTokens:estimatedOutputTokens:maxWait:)`,
    /// inside a `policygate.acquire` span that covers the whole call (see
    /// ``acquire(_:estimatedTokens:maxWait:tracer:)``), with the input and output estimates as
    /// attributes too.
    /// - Parameters:
    ///   - key: The provider and scope to count the call under.
    ///   - estimatedInputTokens: The pre-flight input estimate.
    ///   - estimatedOutputTokens: The pre-flight output estimate (usually the request's `max_tokens`).
    ///   - maxWait: The longest to wait; `nil` waits as long as it takes.
    ///   - tracer: The tracer, such as `InstrumentationSystem.tracer`.
    /// - Returns: The permit.
    /// - Throws: As `PolicyService.acquire(_:estimatedInputTokens:estimatedOutputTokens:maxWait:)`.
    nonisolated(nonsending) public func acquire(
        _ key: PolicyKey, estimatedInputTokens: Int, estimatedOutputTokens: Int, maxWait: Duration? = nil, tracer: some Tracer
    ) async throws -> PolicyPermit {
        let total = estimatedInputTokens.addingReportingOverflow(estimatedOutputTokens)
        return try await traced(
            key, estimatedTokens: total.overflow ? .max : total.partialValue, input: estimatedInputTokens,
            output: estimatedOutputTokens, tracer: tracer
        ) {
            try await self.acquire(
                key, estimatedInputTokens: estimatedInputTokens, estimatedOutputTokens: estimatedOutputTokens, maxWait: maxWait)
        }
    }

    /// Acquires like `PolicyService.acquire(_:estimatedTokens:deadline:)`, inside a
    /// `policygate.acquire` span that covers the whole call.
    ///
    /// See ``acquire(_:estimatedTokens:maxWait:tracer:)`` for the span.
    /// - Parameters:
    ///   - key: The provider and scope to count the call under.
    ///   - estimatedTokens: The pre-flight token estimate.
    ///   - deadline: The instant, on the gate's clock, after which the call gives up.
    ///   - tracer: The tracer, such as `InstrumentationSystem.tracer`.
    /// - Returns: The permit.
    /// - Throws: As `PolicyService.acquire(_:estimatedTokens:deadline:)`.
    nonisolated(nonsending) public func acquire<I: InstantProtocol>(
        _ key: PolicyKey, estimatedTokens: Int = 0, deadline: I, tracer: some Tracer
    ) async throws -> PolicyPermit where I.Duration == Duration {
        try await traced(key, estimatedTokens: estimatedTokens, tracer: tracer) {
            try await self.acquire(key, estimatedTokens: estimatedTokens, deadline: deadline)
        }
    }

    nonisolated(nonsending) private func traced(
        _ key: PolicyKey, estimatedTokens: Int, input: Int? = nil, output: Int? = nil, tracer: some Tracer,
        _ operation: nonisolated(nonsending) () async throws -> PolicyPermit
    ) async throws -> PolicyPermit {
        let span = tracer.startSpan(PolicyTracing.operationName)
        span.attributes = PolicyTracing.attributes(key: key, estimatedTokens: estimatedTokens, input: input, output: output)
        var context = span.context
        context[TracedAcquireKey.self] = true
        // `withValue` cannot return a noncopyable permit, so the result is carried out in a
        // variable (its first value is always replaced).
        var result: Result<PolicyPermit, any Error> = .failure(CancellationError())
        await InstrumentationContext.$current.withValue(context) {
            do {
                result = .success(try await operation())
            } catch {
                result = .failure(error)
            }
        }
        switch consume result {
        case .success(let permit):
            span.attributes[PolicyTracing.Attribute.outcome] = PolicyTracing.Outcome.acquired
            span.end()
            return permit
        case .failure(let error):
            PolicyTracing.recordFailure(error, on: span)
            span.end()
            throw error
        }
    }
}
#endif
