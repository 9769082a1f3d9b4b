import Foundation
import PolicyGate
import PolicyGateTestKit
import Testing

/// The provider's own feedback through the gate, on a manual clock: what is left until a reset,
/// 429 pauses, expiry, and that feedback never loosens a configured cap.
@Suite("Provider feedback through the gate", .timeLimit(.minutes(5)))
struct ProviderFeedbackGateTests {
    let clock = ManualClock()
    let a = PolicyKey(provider: "openai", scope: .user("a"))
    let b = PolicyKey(provider: "openai", scope: .user("b"))

    func gate(
        _ limits: PolicyLimits = PolicyLimits(requestsPerMinute: 1_000, tokensPerMinute: 1_000_000),
        telemetry: (any PolicyTelemetry)? = nil
    ) throws -> PolicyService {
        try PolicyService(limits: ["openai": limits], clock: clock, telemetry: telemetry)
    }

    func refusal(_ gate: PolicyService, _ key: PolicyKey, tokens: Int = 1) -> PolicyError? {
        do {
            _ = try gate.tryAcquire(key, estimatedTokens: tokens)
            return nil
        } catch {
            return error
        }
    }

    @Test("remaining requests bind every key of the provider until their reset")
    func remainingRequests() throws {
        let gate = try gate()
        var permit = try gate.tryAcquire(a, estimatedTokens: 10)
        permit.observe(headers: [
            "x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "2", "x-ratelimit-reset-requests": "10s",
        ])
        try permit.commitTokens(10)
        _ = consume permit
        _ = try gate.tryAcquire(a, estimatedTokens: 10)
        _ = try gate.tryAcquire(b, estimatedTokens: 10)
        let error = try #require(refusal(gate, b))
        #expect(error.code == .rateLimited && error.limit == nil && error.retryAfter == .seconds(10))
        #expect(error.providerCause == "has no requests left", "\(error)")
        let state = gate.currentState(for: b)
        #expect(state.providerFeedback?.requestsRemaining == 0 && state.providerFeedback?.requestsResetIn == .seconds(10))
        clock.advance(by: .seconds(10) - .nanoseconds(1))
        #expect(refusal(gate, a) != nil)
        clock.advance(by: .nanoseconds(1))
        #expect(refusal(gate, a) == nil)  // the reset: the feedback has expired
        #expect(gate.currentState(for: a).providerFeedback == nil)
    }

    @Test("remaining tokens bind estimates; Anthropic's instants are read on the gate's own wall clock")
    func remainingTokens() throws {
        let start = try Date("2026-06-01T12:00:00Z", strategy: .iso8601)
        let gate = try PolicyService(
            configuration: PolicyConfiguration(limits: ["anthropic": PolicyLimits(tokensPerMinute: 400_000)]),
            clock: clock, startDate: start)
        let key = PolicyKey(provider: "anthropic", scope: .global)
        gate.observe(
            headers: [
                "anthropic-ratelimit-tokens-limit": "400000", "anthropic-ratelimit-tokens-remaining": "2000",
                "anthropic-ratelimit-tokens-reset": "2026-06-01T12:00:30Z",
            ], for: key)
        // 2 000 rounded by the provider: 1 500 believed.
        _ = try gate.tryAcquire(key, estimatedTokens: 1_000)
        let error = try #require(refusal(gate, key, tokens: 600))
        #expect(error.providerCause == "has 500 tokens left" && error.retryAfter == .seconds(30))
        _ = try gate.tryAcquire(key, estimatedTokens: 500)
        clock.advance(by: .seconds(30))
        _ = try gate.tryAcquire(key, estimatedTokens: 50_000)
    }

    @Test("a 429 pauses every key until its retry time; a waiter is admitted at that instant")
    func throttled() async throws {
        let telemetry = TelemetryRecorder()
        let gate = try gate(telemetry: telemetry)
        let permit = try gate.tryAcquire(a, estimatedTokens: 5)
        permit.reportThrottled(retryAfter: .seconds(20))
        _ = consume permit
        let error = try #require(refusal(gate, b))
        #expect(error.retryAfter == .seconds(20))
        #expect(error.providerCause == "paused the gate", "\(error)")
        let state = gate.currentState(for: b)
        #expect(state.providerFeedback?.pausedFor == .seconds(20))
        #expect(state.providerFeedback?.pauseCause?.contains("429") == true)
        #expect(telemetry.feedback.count == 1 && telemetry.feedback.first?.pausedFor == .seconds(20))

        let (box, task) = startWaiter(gate, b, tokens: 5)
        await eventually("waiting") { gate.currentState(for: b).queued == 1 }
        clock.advance(by: .seconds(20) - .nanoseconds(1))
        for _ in 0..<500 { await Task.yield() }
        #expect(!box.isDone)
        clock.advance(by: .nanoseconds(1))
        await eventually("admitted at the end of the pause") { box.isDone }
        #expect(box.hasPermit)
        box.release()
        await task.value
        // A waiter whose maximum wait ends before the pause does is refused at once.
        gate.reportThrottled(a, retryAfter: .seconds(5))
        await #expect(throws: PolicyError.self) { _ = try await gate.acquire(a, estimatedTokens: 5, maxWait: .seconds(2)) }
        // Pauses only lengthen.
        gate.reportThrottled(a, retryAfter: .seconds(1))
        #expect(gate.currentState(for: a).providerFeedback?.pausedFor == .seconds(5))
    }

    @Test("feedback never loosens a configured cap")
    func neverLoosens() throws {
        let gate = try gate(PolicyLimits(requestsPerMinute: 2))
        gate.observe(headers: ["x-ratelimit-remaining-requests": "100", "x-ratelimit-reset-requests": "1m"], for: a)
        _ = try gate.tryAcquire(a)
        _ = try gate.tryAcquire(a)
        #expect(refusal(gate, a)?.limit == .requestsPerMinute)
    }

    @Test("a newer report with more left lets waiters of every key through at once")
    func newerReportWakesWaiters() async throws {
        let gate = try gate()
        gate.observe(headers: ["x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1m"], for: a)
        let (box, task) = startWaiter(gate, b, tokens: 1)
        await eventually("waiting") { gate.currentState(for: b).queued == 1 }
        gate.observe(headers: ["x-ratelimit-remaining-requests": "5", "x-ratelimit-reset-requests": "50s"], for: a)
        await eventually("admitted") { box.isDone }
        #expect(box.hasPermit)
        #expect(gate.currentState(for: a).providerFeedback?.requestsRemaining == 4)
        box.release()
        await task.value
    }

    @Test("a newer report that leaves less but resets sooner moves the waiters' wake-up to the sooner reset")
    func soonerReset() async throws {
        let gate = try gate()
        gate.observe(headers: ["x-ratelimit-remaining-tokens": "600", "x-ratelimit-reset-tokens": "70s"], for: a)
        let (box, task) = startWaiter(gate, b, tokens: 900)
        await eventually("waiting") { gate.currentState(for: b).queued == 1 }
        gate.observe(headers: ["x-ratelimit-remaining-tokens": "300", "x-ratelimit-reset-tokens": "10s"], for: a)
        await eventually("re-armed") { clock.nextDeadline.map { $0.offset <= .seconds(10) } ?? false }
        clock.advance(by: .seconds(10))
        await eventually("admitted at the sooner reset") { box.isDone }
        #expect(box.hasPermit)
        box.release()
        await task.value
    }

    @Test("values that cannot be believed change nothing and are reported")
    func unbelievable() throws {
        let telemetry = TelemetryRecorder()
        let gate = try gate(telemetry: telemetry)
        gate.observe(
            headers: [
                "x-ratelimit-remaining-requests": "-3", "x-ratelimit-reset-requests": "forever", "retry-after": "tomorrow",
            ], for: a)
        _ = try gate.tryAcquire(a, estimatedTokens: 1)
        #expect(gate.currentState(for: a).providerFeedback == nil)
        let event = try #require(telemetry.feedback.first)
        #expect(event.feedback.ignored.count == 3 && event.pausedFor == nil && event.requestsRemaining == nil)
    }

    @Test("a provider without caps is not gated: its feedback is not kept")
    func ungated() throws {
        let gate = try gate()
        let other = PolicyKey(provider: "local", scope: .global)
        gate.reportThrottled(other, retryAfter: .seconds(60))
        let permit = try gate.tryAcquire(other)
        let inert = permit.isInert
        #expect(inert)
        #expect(gate.currentState(for: other).providerFeedback == nil)
    }
}

/// `feedback_scope`: whose calls share what the provider said.
@Suite("Provider feedback scope", .timeLimit(.minutes(5)))
struct ProviderFeedbackScopeTests {
    let clock = ManualClock()
    let a = PolicyKey(provider: "byok", scope: .org("a"))
    let b = PolicyKey(provider: "byok", scope: .org("b"))

    func paused(_ gate: PolicyService, _ key: PolicyKey) -> Bool {
        (try? gate.tryAcquire(key)) == nil
    }

    @Test("read from the provider's table, with a suggestion for a near miss, and written back")
    func configuration() throws {
        let configuration = try PolicyConfiguration(
            toml: """
                [limits.byok]
                requests_per_minute = 100
                feedback_scope = "key"
                """)
        #expect(configuration.feedbackScope == ["byok": .key])
        let error = try #require(throws: PolicyConfigurationError.self) {
            try PolicyConfiguration(toml: "[limits.byok]\nrequests_per_minute = 1\nfeedback_scope = \"keys\"\n")
        }
        #expect(error.diagnostics.map(\.keyPath) == ["limits.byok.feedback_scope"])
        #expect(error.diagnostics.first?.suggestion == "key" && error.diagnostics.first?.line == 3)
        let again = try PolicyConfiguration(json: try JSONEncoder().encode(configuration))
        #expect(again == configuration)
    }

    @Test("per key, a 429 pauses only its own key; switched to provider-wide by a reload, keys share it")
    func perKeyThenShared() async throws {
        var configuration = PolicyConfiguration(limits: ["byok": PolicyLimits(requestsPerMinute: 100)])
        configuration.feedbackScope = ["byok": .key]
        let gate = try PolicyService(configuration: configuration, clock: clock)
        _ = try gate.tryAcquire(b)  // b's key exists before the reload
        gate.reportThrottled(a, retryAfter: .seconds(30))
        #expect(paused(gate, a) && !paused(gate, b))
        #expect(gate.configuration.feedbackScope == ["byok": .key])

        configuration.feedbackScope = [:]
        try await gate.apply(configuration)
        #expect(gate.configuration.feedbackScope.isEmpty)
        #expect(!paused(gate, a) && !paused(gate, b))  // the provider-wide state says nothing yet
        gate.reportThrottled(a, retryAfter: .seconds(30))
        #expect(paused(gate, a) && paused(gate, b))
    }
}
