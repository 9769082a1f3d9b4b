#if Tracing
import InMemoryTracing
import Instrumentation
import PolicyGate
import PolicyGateTestKit
import PolicyGateTracing
import Testing
import Tracing

@Suite("PolicyTracing", .timeLimit(.minutes(5)))
struct PolicyTracingTests {
    typealias Attribute = PolicyTracing.Attribute
    let clock = ManualClock()
    let tracer = InMemoryTracer()
    let key = PolicyKey(provider: "openai", scope: .user("u-42"))

    func acquireSpans() -> [FinishedInMemorySpan] {
        tracer.finishedSpans.filter { $0.operationName == "policygate.acquire" }
    }

    func base(estimatedTokens: Int) -> SpanAttributes {
        [
            Attribute.provider: .string("openai"), Attribute.scopeKind: .string("user"),
            Attribute.scope: .string("user:u-42"), Attribute.estimatedTokens: .int64(Int64(estimatedTokens)),
        ]
    }

    /// Acquires (waiting if need be) inside a `request` span; returns that span's id.
    func request(_ gate: PolicyService, traced: Bool = false, maxWait: Duration? = nil) -> Task<String, any Error> {
        Task { [tracer, key] in
            try await tracer.withSpan("request") { span in
                if traced {
                    let permit = try await gate.acquire(key, estimatedTokens: 10, maxWait: maxWait, tracer: tracer)
                    permit.release()
                } else {
                    let permit = try await gate.acquire(key, estimatedTokens: 10, maxWait: maxWait)
                    permit.release()
                }
                return span.spanID
            }
        }
    }

    @Test("a wait becomes a span under the caller's span, as long as the wait on the gate's clock")
    func waitSpan() async throws {
        let gate = try PolicyService(
            limits: ["openai": PolicyLimits(maxConcurrent: 1)], clock: clock, telemetry: PolicyTracing(tracer: tracer))
        let holder = try await gate.acquire(key)
        let caller = request(gate)
        await eventually { gate.currentState(for: key).queued == 1 }
        clock.advance(by: .milliseconds(3_250))
        holder.release()
        let parentID = try await caller.value

        let spans = acquireSpans()
        try #require(spans.count == 1)  // the immediate admission recorded none
        let span = spans[0]
        #expect(span.parentSpanID == parentID)
        #expect(span.traceID == tracer.finishedSpans.first { $0.operationName == "request" }?.traceID)
        #expect(span.endInstant.nanosecondsSinceEpoch - span.startInstant.nanosecondsSinceEpoch == 3_250_000_000)
        var expected = base(estimatedTokens: 10)
        expected[Attribute.outcome] = "acquired"
        #expect(span.attributes == expected)
        #expect(span.status == nil && span.errors.isEmpty)
    }

    @Test("a permit held too long is a top-level span from its admission to the report")
    func longHold() async throws {
        let gate = try PolicyService(
            limits: ["openai": PolicyLimits(maxConcurrent: 2)], clock: clock, telemetry: PolicyTracing(tracer: tracer))
        try gate.setPermitHoldWarning(.seconds(60))
        var permit = try await gate.acquire(key, estimatedTokens: 10)
        try permit.commitTokens(3)
        clock.advance(by: .seconds(61))
        await eventually { !tracer.finishedSpans.isEmpty }
        let span = try #require(tracer.finishedSpans.first)
        #expect(span.operationName == "policygate.long_hold" && span.parentSpanID == nil)
        #expect(span.endInstant.nanosecondsSinceEpoch - span.startInstant.nanosecondsSinceEpoch == 61_000_000_000)
        var expected = base(estimatedTokens: 10)
        expected[Attribute.heldSeconds] = 61.0
        expected[Attribute.thresholdSeconds] = 60.0
        expected[Attribute.committedTokens] = 3
        #expect(span.attributes == expected)
        #expect(span.status == nil)
        permit.release()
        #expect(tracer.finishedSpans.count == 1)
    }

    @Test("immediate admissions get a zero-length span only when asked for")
    func immediateAdmissions() async throws {
        let gate = try PolicyService(
            limits: ["openai": PolicyLimits(requestsPerMinute: 10)], clock: clock,
            telemetry: PolicyTracing(tracer: tracer, recordsImmediateAdmissions: true))
        try await gate.acquire(key, estimatedTokens: 5).release()
        let span = try #require(acquireSpans().first)
        #expect(span.startInstant.nanosecondsSinceEpoch == span.endInstant.nanosecondsSinceEpoch)
        #expect(span.parentSpanID == nil)
        #expect(span.attributes.get(Attribute.outcome) == .string("acquired"))
    }

    @Test("a traced acquire with input and output estimates carries both, and their sum")
    func inputOutputSpan() async throws {
        let gate = try PolicyService(
            limits: ["openai": PolicyLimits(inputTokensPerMinute: 1_000, outputTokensPerMinute: 500)], clock: clock)
        try await gate.acquire(key, estimatedInputTokens: 700, estimatedOutputTokens: 200, tracer: tracer).release()
        let span = try #require(acquireSpans().first)
        #expect(span.attributes.get(Attribute.estimatedInputTokens) == .int64(700))
        #expect(span.attributes.get(Attribute.estimatedOutputTokens) == .int64(200))
        #expect(span.attributes.get(Attribute.estimatedTokens) == .int64(900))
        #expect(span.attributes.get(Attribute.outcome) == .string("acquired"))
    }

    @Test("a refusal is a zero-length error span with its reason, limit and retry-after")
    func rejectionSpan() async throws {
        let gate = try PolicyService(
            limits: ["openai": PolicyLimits(requestsPerMinute: 1)], clock: clock, telemetry: PolicyTracing(tracer: tracer))
        try await gate.acquire(key).release()
        clock.advance(by: .seconds(1))
        #expect(throws: PolicyError.self) { _ = try gate.tryAcquire(key, estimatedTokens: 7) }
        let span = try #require(acquireSpans().first)
        var expected = base(estimatedTokens: 7)
        expected[Attribute.outcome] = "rejected"
        expected[Attribute.reason] = "rate_limited"
        expected[Attribute.limit] = "requests_per_minute"
        expected[Attribute.retryAfterSeconds] = 60.0
        #expect(span.attributes == expected)
        #expect(span.status?.code == .error)
        #expect((span.errors.first?.error as? PolicyError)?.code == .rateLimited)
        #expect(span.startInstant.nanosecondsSinceEpoch == span.endInstant.nanosecondsSinceEpoch)
    }

    @Test("the traced acquire spans the whole call, is current while waiting, and is the only span")
    func tracedAcquire() async throws {
        let probe = ContextProbe()
        let gate = try PolicyService(
            limits: ["openai": PolicyLimits(maxConcurrent: 1)], clock: clock,
            telemetry: .fanOut(PolicyTracing(tracer: tracer, recordsImmediateAdmissions: true), probe))
        let holder = try await gate.acquire(key)
        let caller = request(gate, traced: true)
        await eventually { gate.currentState(for: key).queued == 1 }
        clock.advance(by: .seconds(1))
        holder.release()
        let parentID = try await caller.value

        let spans = acquireSpans()
        // One for the untraced holder (immediate admissions are on), one for the traced call.
        try #require(spans.count == 2)
        let span = try #require(spans.first { $0.parentSpanID == parentID })
        var expected = base(estimatedTokens: 10)
        expected[Attribute.outcome] = "acquired"
        #expect(span.attributes == expected)
        #expect(span.endInstant.nanosecondsSinceEpoch >= span.startInstant.nanosecondsSinceEpoch)
        // While it waited, the span was the current context: other sinks saw its id (the
        // holder, admitted outside any span, saw none).
        #expect(probe.seen.withLock { $0 } == [nil, span.spanID])
    }

    @Test("a traced acquire that times out records timed_out, the limit and the error")
    func tracedTimeout() async throws {
        let gate = try PolicyService(
            limits: ["openai": PolicyLimits(maxConcurrent: 1)], clock: clock, telemetry: PolicyTracing(tracer: tracer))
        let holder = try await gate.acquire(key)
        let caller = request(gate, traced: true, maxWait: .seconds(2))
        await eventually { gate.currentState(for: key).queued == 1 }
        clock.advance(by: .seconds(2))
        await #expect(throws: PolicyError.self) { _ = try await caller.value }
        holder.release()
        let spans = acquireSpans()
        try #require(spans.count == 1)
        var expected = base(estimatedTokens: 10)
        expected[Attribute.outcome] = "timed_out"
        expected[Attribute.reason] = "timed_out"
        expected[Attribute.limit] = "concurrency"
        #expect(spans[0].attributes == expected)
        #expect(spans[0].status?.code == .error)
        #expect(spans[0].errors.count == 1)
    }

    @Test("a traced acquire refused at once records rejected")
    func tracedRejection() async throws {
        let gate = try PolicyService(limits: ["openai": PolicyLimits(requestsPerMinute: 1)], clock: clock)
        try await gate.acquire(key).release()
        await #expect(throws: PolicyError.self) {
            let permit = try await gate.acquire(key, estimatedTokens: 3, maxWait: .seconds(5), tracer: tracer)
            permit.release()
        }
        let span = try #require(acquireSpans().first)
        #expect(span.attributes.get(Attribute.outcome) == .string("rejected"))
        #expect(span.attributes.get(Attribute.reason) == .string("rate_limited"))
        #expect(span.attributes.get(Attribute.limit) == .string("requests_per_minute"))
        #expect(span.attributes.get(Attribute.retryAfterSeconds) == .double(61))
        #expect(span.status?.code == .error)
    }

    @Test("a cancelled traced acquire records cancelled, without an error status")
    func tracedCancellation() async throws {
        let gate = try PolicyService(limits: ["openai": PolicyLimits(maxConcurrent: 1)], clock: clock)
        let holder = try await gate.acquire(key)
        let caller = request(gate, traced: true)
        await eventually { gate.currentState(for: key).queued == 1 }
        caller.cancel()
        await #expect(throws: CancellationError.self) { _ = try await caller.value }
        holder.release()
        let span = try #require(acquireSpans().first)
        #expect(span.attributes.get(Attribute.outcome) == .string("cancelled"))
        #expect(span.status == nil && span.errors.isEmpty)
    }

    @Test("the deadline form is traced too")
    func tracedDeadline() async throws {
        let gate = try PolicyService(limits: ["openai": PolicyLimits(requestsPerMinute: 5)], clock: clock)
        let permit = try await gate.acquire(key, deadline: clock.now.advanced(by: .seconds(1)), tracer: tracer)
        permit.release()
        #expect(acquireSpans().first?.attributes.get(Attribute.outcome) == .string("acquired"))
    }
}

/// Notes the current span id, if any, at each admission.
final class ContextProbe: PolicyTelemetry {
    let seen = Locked<[String?]>([])
    func didAcquire(_ event: PolicyAcquireEvent) {
        let id = InstrumentationContext.current?.inMemorySpanContext?.spanID
        seen.withLock { $0.append(id) }
    }
}

/// Yields until `condition` holds; records an issue if it never does.
func eventually(sourceLocation: SourceLocation = #_sourceLocation, _ condition: () -> Bool) async {
    for _ in 0..<200_000 {
        if condition() { return }
        await Task.yield()
    }
    Issue.record("condition never held", sourceLocation: sourceLocation)
}
#endif
