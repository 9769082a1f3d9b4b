#if Metrics
import CoreMetrics
import MetricsTestKit
import PolicyGate
import PolicyGateMetrics
import PolicyGateTestKit
import Testing

@Suite("PolicyMetrics", .timeLimit(.minutes(5)))
struct PolicyMetricsTests {
    let clock = ManualClock()
    let metrics = TestMetrics()
    let u1 = PolicyKey(provider: "openai", scope: .user("u-1"))
    let u2 = PolicyKey(provider: "openai", scope: .user("u-2"))
    let global = PolicyKey(provider: "openai")
    let user = [("provider", "openai"), ("scope_kind", "user")]
    let globalLabels = [("provider", "openai"), ("scope_kind", "global")]

    @Test("shared-store failures are counted by operation and outcome")
    func storeFailures() throws {
        let telemetry = PolicyMetrics(factory: metrics)
        telemetry.didFailStore(PolicyStoreFailureEvent(key: u1, operation: .admit, outcome: .admittedUncounted, error: "down"))
        telemetry.didFailStore(PolicyStoreFailureEvent(key: u1, operation: .admit, outcome: .admittedUncounted, error: "down"))
        telemetry.didFailStore(PolicyStoreFailureEvent(key: u1, operation: .commit, outcome: .willRetry, error: "down"))
        #expect(
            try metrics.expectCounter(
                "policygate_store_failures_total", user + [("operation", "admit"), ("outcome", "admitted_uncounted")]
            ).totalValue == 2)
        #expect(
            try metrics.expectCounter(
                "policygate_store_failures_total", user + [("operation", "commit"), ("outcome", "will_retry")]
            ).totalValue == 1)
    }

    @Test("lost leases are counted by reason")
    func leasesLost() throws {
        let telemetry = PolicyMetrics(factory: metrics)
        telemetry.didLoseLease(PolicyLeaseLossEvent(key: u1, reason: .unconfirmed))
        telemetry.didLoseLease(PolicyLeaseLossEvent(key: u1, reason: .unconfirmed))
        telemetry.didLoseLease(PolicyLeaseLossEvent(key: u1, reason: .expired))
        #expect(try metrics.expectCounter("policygate_leases_lost_total", user + [("reason", "unconfirmed")]).totalValue == 2)
        #expect(try metrics.expectCounter("policygate_leases_lost_total", user + [("reason", "expired")]).totalValue == 1)
    }

    @Test("provider pauses and header values not believed are counted")
    func providerFeedback() throws {
        let gate = try PolicyService(
            limits: ["openai": PolicyLimits(requestsPerMinute: 100)], clock: clock, telemetry: PolicyMetrics(factory: metrics))
        gate.reportThrottled(u1, retryAfter: .seconds(5))
        gate.reportThrottled(u1)
        gate.observe(headers: ["x-ratelimit-remaining-requests": "-1", "retry-after": "soon"], for: u1)
        #expect(try metrics.expectCounter("policygate_provider_pauses_total", user).totalValue == 2)
        #expect(try metrics.expectCounter("policygate_provider_feedback_ignored_total", user).totalValue == 2)
    }

    @Test("an adaptive provider's factor is a gauge")
    func adaptiveFactor() throws {
        var configuration = PolicyConfiguration(limits: ["openai": PolicyLimits(requestsPerMinute: 100)])
        configuration.adaptive = ["openai"]
        let gate = try PolicyService(configuration: configuration, clock: clock, telemetry: PolicyMetrics(factory: metrics))
        gate.reportThrottled(u1, retryAfter: .zero)
        #expect(try metrics.expectGauge("policygate_adaptive_factor", [("provider", "openai")]).lastValue == 0.7)
    }

    @Test("admissions, refusals, tokens, waits and holds: exact names, labels and values")
    func events() async throws {
        let gate = try PolicyService(
            limits: ["openai": PolicyLimits(tokensPerMinute: 2_000, maxConcurrent: 1)], clock: clock,
            telemetry: PolicyMetrics(factory: metrics))
        do {
            var permit = try await gate.acquire(u1, estimatedTokens: 800)
            #expect(try metrics.expectMeter("policygate_in_flight", user).lastValue == 1)
            #expect(throws: PolicyError.self) { _ = try gate.tryAcquire(u1, estimatedTokens: 100) }
            clock.advance(by: .seconds(3))
            try permit.commitTokens(950)
        }
        #expect(throws: PolicyError.self) { _ = try gate.tryAcquire(u2, estimatedTokens: 5_000) }

        #expect(try metrics.expectCounter("policygate_acquired_total", user).totalValue == 1)
        #expect(try metrics.expectCounter("policygate_estimated_tokens_total", user).totalValue == 800)
        #expect(try metrics.expectCounter("policygate_committed_tokens_total", user).totalValue == 950)
        #expect(try metrics.expectTimer("policygate_queue_wait_seconds", user).values == [0])
        #expect(try metrics.expectTimer("policygate_hold_seconds", user).values == [3_000_000_000])
        #expect(try metrics.expectMeter("policygate_in_flight", user).values == [1, 0])
        #expect(
            try metrics.expectCounter(
                "policygate_rejected_total", user + [("reason", "rate_limited"), ("limit", "concurrency")]
            ).totalValue == 1)
        #expect(
            try metrics.expectCounter(
                "policygate_rejected_total", user + [("reason", "oversized"), ("limit", "tokens_per_minute")]
            ).totalValue == 1)
        // Nothing else, and no scope id anywhere.
        #expect(
            Set(metrics.counters.map(\.label)) == [
                "policygate_acquired_total", "policygate_estimated_tokens_total",
                "policygate_committed_tokens_total", "policygate_rejected_total",
            ])
        #expect(metrics.counters.count == 5 && metrics.timers.count == 2 && metrics.meters.count == 1)
        // The commit's estimate error, labelled with the provider only.
        #expect(metrics.recorders.map(\.label) == ["policygate_estimate_ratio"])
        #expect(try metrics.expectRecorder("policygate_estimate_ratio", [("provider", "openai")]).values == [950.0 / 800])
        #expect(metrics.counters.allSatisfy { counter in !counter.dimensions.contains { $0.0 == "scope" } })
    }

    @Test("input and output: commits in parts are counted, the caps get remaining and limit gauges")
    func inputOutput() async throws {
        let telemetry = PolicyMetrics(factory: metrics)
        let gate = try PolicyService(
            limits: ["anthropic": PolicyLimits(inputTokensPerMinute: 4_000, outputTokensPerMinute: 1_000, countsCacheReads: false)],
            clock: clock, telemetry: telemetry)
        let key = PolicyKey(provider: "anthropic", scope: .user("u-1"))
        let labels = [("provider", "anthropic"), ("scope_kind", "user")]
        var permit = try await gate.acquire(key, estimatedInputTokens: 1_000, estimatedOutputTokens: 500)
        try permit.commitTokens(input: 700, output: 200, cacheReads: 5_000)
        telemetry.recordGauges(of: gate)
        #expect(try metrics.expectCounter("policygate_input_tokens_total", labels).totalValue == 700)
        #expect(try metrics.expectCounter("policygate_output_tokens_total", labels).totalValue == 200)
        #expect(try metrics.expectCounter("policygate_cache_read_tokens_total", labels).totalValue == 5_000)
        #expect(try metrics.expectGauge("policygate_remaining", labels + [("limit", "input_tokens_per_minute")]).lastValue == 3_300)
        #expect(try metrics.expectGauge("policygate_remaining", labels + [("limit", "output_tokens_per_minute")]).lastValue == 800)
        #expect(
            try metrics.expectGauge(
                "policygate_limit", [("provider", "anthropic"), ("limit", "output_tokens_per_minute")]
            ).lastValue == 1_000)
        // A commit of a total alone says nothing about the parts.
        try permit.commitTokens(900)
        #expect(try metrics.expectCounter("policygate_input_tokens_total", labels).totalValue == 700)
        permit.release()
    }

    @Test("estimate error: actual ÷ estimate per provider, per commit; commits of 0 and without an estimate left out")
    func estimateRatio() async throws {
        let gate = try PolicyService(
            limits: [
                "openai": PolicyLimits(tokensPerMinute: 100_000),
                "anthropic": PolicyLimits(inputTokensPerMinute: 100_000, outputTokensPerMinute: 100_000),
                "local": PolicyLimits(maxConcurrent: 2),
            ], clock: clock, telemetry: PolicyMetrics(dimensions: [("gate", "g")], factory: metrics))
        for (key, estimate, actual) in [(u1, 400, 100), (u2, 100, 150), (global, 100, 0)] {
            var permit = try await gate.acquire(key, estimatedTokens: estimate)
            try permit.commitTokens(actual)
        }
        var permit = try await gate.acquire(
            PolicyKey(provider: "anthropic", scope: .org("o")), estimatedInputTokens: 300, estimatedOutputTokens: 100)
        try permit.commitTokens(input: 250, output: 50, cacheReads: 100)  // cache reads count as input: 400 of 400
        permit.release()
        permit = try await gate.acquire(PolicyKey(provider: "local"))
        try permit.commitTokens(30)
        permit.release()
        // Users and scopes of a provider share one series.
        #expect(try metrics.expectRecorder("policygate_estimate_ratio", [("gate", "g"), ("provider", "openai")]).values == [0.25, 1.5])
        #expect(try metrics.expectRecorder("policygate_estimate_ratio", [("gate", "g"), ("provider", "anthropic")]).values == [1])
        #expect(metrics.recorders(label: "policygate_estimate_ratio").count == 2)
    }

    @Test("a permit held too long is counted once per permit")
    func permitsHeldTooLong() async throws {
        let gate = try PolicyService(
            limits: ["openai": PolicyLimits(maxConcurrent: 4)], clock: clock, telemetry: PolicyMetrics(factory: metrics))
        try gate.setPermitHoldWarning(.seconds(10))
        let first = try await gate.acquire(u1)
        let second = try await gate.acquire(u2)
        clock.advance(by: .seconds(11))
        await eventually { (try? metrics.expectCounter("policygate_permits_held_too_long_total", user).totalValue) == 2 }
        clock.advance(by: .seconds(60))
        #expect(try metrics.expectCounter("policygate_permits_held_too_long_total", user).totalValue == 2)
        first.release()
        second.release()
    }

    @Test("a wait is timed on the gate's clock; a timeout counts as timed_out")
    func waits() async throws {
        let gate = try PolicyService(
            limits: ["openai": PolicyLimits(maxConcurrent: 1)], clock: clock, telemetry: PolicyMetrics(factory: metrics))
        let first = try await gate.acquire(u1)
        let waiter = Task { [gate, u1] in
            let permit = try await gate.acquire(u1)
            permit.release()
        }
        await eventually { gate.currentState(for: u1).queued == 1 }
        clock.advance(by: .milliseconds(2_500))
        first.release()
        try await waiter.value
        #expect(try metrics.expectTimer("policygate_queue_wait_seconds", user).values == [0, 2_500_000_000])

        let holder = try await gate.acquire(u1)
        let timeout = Task { [gate, u1] in
            let permit = try await gate.acquire(u1, maxWait: .seconds(1))
            permit.release()
        }
        await eventually { gate.currentState(for: u1).queued == 1 }
        clock.advance(by: .seconds(1))
        await #expect(throws: PolicyError.self) { try await timeout.value }
        holder.release()
        #expect(
            try metrics.expectCounter(
                "policygate_rejected_total", user + [("reason", "timed_out"), ("limit", "concurrency")]
            ).totalValue == 1)
        #expect(try metrics.expectCounter("policygate_acquired_total", user).totalValue == 3)
        #expect(try metrics.expectMeter("policygate_in_flight", user).lastValue == 0)
    }

    @Test("sampled gauges: queued and keys summed, remaining the least among keys, caps per provider")
    func gauges() async throws {
        let telemetry = PolicyMetrics(factory: metrics)
        let gate = try PolicyService(
            limits: ["openai": PolicyLimits(requestsPerMinute: 10, tokensPerMinute: 1_000, maxConcurrent: 2)],
            clock: clock, telemetry: telemetry)
        let a = try await gate.acquire(u1, estimatedTokens: 300)
        let b = try await gate.acquire(u1, estimatedTokens: 200)
        try await gate.acquire(u2, estimatedTokens: 100).release()
        try await gate.acquire(global, estimatedTokens: 50).release()
        let waiter = Task { [gate, u1] in
            let permit = try await gate.acquire(u1, estimatedTokens: 10)
            permit.release()
        }
        await eventually { gate.currentState(for: u1).queued == 1 }

        telemetry.recordGauges(of: gate)
        func gauge(_ name: String, _ labels: [(String, String)]) throws -> Double? {
            try metrics.expectGauge(name, labels).lastValue
        }
        #expect(try gauge("policygate_queued", user) == 1)
        #expect(try gauge("policygate_active_keys", user) == 2)
        #expect(try gauge("policygate_remaining", user + [("limit", "requests_per_minute")]) == 8)
        #expect(try gauge("policygate_remaining", user + [("limit", "tokens_per_minute")]) == 500)
        #expect(try gauge("policygate_remaining", user + [("limit", "concurrency")]) == 0)
        #expect(try gauge("policygate_queued", globalLabels) == 0)
        #expect(try gauge("policygate_active_keys", globalLabels) == 1)
        #expect(try gauge("policygate_remaining", globalLabels + [("limit", "requests_per_minute")]) == 9)
        #expect(try gauge("policygate_remaining", globalLabels + [("limit", "tokens_per_minute")]) == 950)
        #expect(try gauge("policygate_remaining", globalLabels + [("limit", "concurrency")]) == 2)
        #expect(try gauge("policygate_limit", [("provider", "openai"), ("limit", "requests_per_minute")]) == 10)
        #expect(try gauge("policygate_limit", [("provider", "openai"), ("limit", "tokens_per_minute")]) == 1_000)
        #expect(try gauge("policygate_limit", [("provider", "openai"), ("limit", "concurrency")]) == 2)
        // Uncapped windows have no gauge.
        #expect(throws: (any Error).self) {
            try metrics.expectGauge("policygate_limit", [("provider", "openai"), ("limit", "requests_per_hour")])
        }
        #expect(metrics.recorders.count == 2 * 5 + 3)
        #expect(try metrics.expectMeter("policygate_in_flight", user).lastValue == 2)

        // Everything released and out of the window: the keys are idle, the gauges say so.
        a.release()
        await eventually { gate.currentState(for: u1).queued == 0 }
        b.release()
        try await waiter.value
        clock.advance(by: .seconds(62))
        telemetry.recordGauges(of: gate)
        #expect(gate.activeKeys().isEmpty)
        #expect(try gauge("policygate_queued", user) == 0)
        #expect(try gauge("policygate_active_keys", user) == 0)
        #expect(try gauge("policygate_remaining", user + [("limit", "tokens_per_minute")]) == 1_000)
        #expect(try gauge("policygate_remaining", globalLabels + [("limit", "concurrency")]) == 2)

        // A cap removed at run time loses its gauges.
        try await gate.setLimits(PolicyLimits(requestsPerMinute: 20), for: "openai")
        telemetry.recordGauges(of: gate)
        #expect(try gauge("policygate_limit", [("provider", "openai"), ("limit", "requests_per_minute")]) == 20)
        #expect(try gauge("policygate_remaining", user + [("limit", "requests_per_minute")]) == 20)
        #expect(throws: (any Error).self) {
            try metrics.expectGauge("policygate_limit", [("provider", "openai"), ("limit", "concurrency")])
        }
        #expect(throws: (any Error).self) { try metrics.expectGauge("policygate_remaining", user + [("limit", "tokens_per_minute")]) }
    }

    @Test("a limits change updates the cap gauges at once")
    func limitsChange() throws {
        let telemetry = PolicyMetrics(factory: metrics)
        telemetry.didChangeLimits(
            PolicyLimitsChangeEvent(
                provider: "anthropic", previous: .unlimited, current: PolicyLimits(tokensPerDay: 5_000_000, maxConcurrent: 8)))
        #expect(
            try metrics.expectGauge("policygate_limit", [("provider", "anthropic"), ("limit", "tokens_per_day")]).lastValue == 5_000_000)
        #expect(try metrics.expectGauge("policygate_limit", [("provider", "anthropic"), ("limit", "concurrency")]).lastValue == 8)
        telemetry.didChangeLimits(
            PolicyLimitsChangeEvent(
                provider: "anthropic", previous: PolicyLimits(tokensPerDay: 5_000_000, maxConcurrent: 8), current: .unlimited))
        #expect(metrics.recorders.isEmpty)
    }

    @Test("scope ids are a label only when asked for; idle scopes' gauges are then removed")
    func scopeIDs() async throws {
        let telemetry = PolicyMetrics(includeScopeID: true, factory: metrics)
        let gate = try PolicyService(limits: ["openai": PolicyLimits(requestsPerMinute: 5)], clock: clock, telemetry: telemetry)
        try await gate.acquire(u1).release()
        try await gate.acquire(global).release()
        #expect(try metrics.expectCounter("policygate_acquired_total", user + [("scope", "u-1")]).totalValue == 1)
        #expect(try metrics.expectCounter("policygate_acquired_total", globalLabels + [("scope", "")]).totalValue == 1)
        telemetry.recordGauges(of: gate)
        #expect(
            try metrics.expectGauge("policygate_remaining", user + [("scope", "u-1"), ("limit", "requests_per_minute")]).lastValue == 4)
        clock.advance(by: .seconds(62))
        telemetry.recordGauges(of: gate)
        #expect(metrics.recorders.map(\.label) == ["policygate_limit"])
    }

    @Test("a prefix and fixed labels apply to every metric")
    func prefixAndDimensions() async throws {
        let telemetry = PolicyMetrics(prefix: "llm", dimensions: [("gate", "primary")], factory: metrics)
        #expect(telemetry.names == PolicyMetrics.Names(prefix: "llm"))
        #expect(telemetry.names.acquired == "llm_acquired_total")
        let gate = try PolicyService(limits: ["openai": PolicyLimits(requestsPerMinute: 5)], clock: clock, telemetry: telemetry)
        try await gate.acquire(u1).release()
        telemetry.recordGauges(of: gate)
        #expect(try metrics.expectCounter("llm_acquired_total", [("gate", "primary")] + user).totalValue == 1)
        #expect(
            try metrics.expectGauge("llm_limit", [("gate", "primary"), ("provider", "openai"), ("limit", "requests_per_minute")]).lastValue
                == 5)
        let all = metrics.counters.map(\.label) + metrics.timers.map(\.label) + metrics.meters.map(\.label) + metrics.recorders.map(\.label)
        #expect(all.allSatisfy { $0.hasPrefix("llm_") })
    }

    @Test("metric objects are created once per label set, not per event")
    func cachesMetricObjects() async throws {
        let factory = CountingFactory()
        let gate = try PolicyService(
            limits: ["openai": PolicyLimits(requestsPerMinute: 10_000)], clock: clock,
            telemetry: PolicyMetrics(factory: factory))
        for _ in 0..<50 {
            try await gate.acquire(u1, estimatedTokens: 1).release()
            try await gate.acquire(u2, estimatedTokens: 1).release()
        }
        // acquired, estimated and committed counters, two timers, one meter: for one label set.
        #expect(factory.made == 6)
        #expect(try factory.metrics.expectCounter("policygate_acquired_total", user).totalValue == 100)
    }

    @Test("the sampling loop records at once and then every interval, until cancelled")
    func samplingLoop() async throws {
        let telemetry = PolicyMetrics(factory: metrics)
        let gate = try PolicyService(limits: ["openai": PolicyLimits(maxConcurrent: 1)], clock: clock, telemetry: telemetry)
        let held = try await gate.acquire(u1)
        let loop = Task { await telemetry.recordGauges(of: gate, every: .seconds(10), clock: clock) }
        await eventually { clock.sleeperCount == 1 }
        #expect(try metrics.expectGauge("policygate_remaining", user + [("limit", "concurrency")]).lastValue == 0)
        held.release()
        clock.advance(by: .seconds(10))
        await eventually { (try? metrics.expectGauge("policygate_remaining", user + [("limit", "concurrency")]).lastValue) == 1 }
        loop.cancel()
        await loop.value
    }

    @Test("metrics and a recorder fed together through a fan-out")
    func fanOut() async throws {
        let recorder = TelemetryRecorder()
        let gate = try PolicyService(
            limits: ["openai": PolicyLimits(requestsPerMinute: 1)], clock: clock,
            telemetry: .fanOut(PolicyMetrics(factory: metrics), recorder))
        try await gate.acquire(u1).release()
        #expect(throws: PolicyError.self) { _ = try gate.tryAcquire(u1) }
        #expect(recorder.events.count == 3)
        #expect(try metrics.expectCounter("policygate_acquired_total", user).totalValue == 1)
        #expect(
            try metrics.expectCounter(
                "policygate_rejected_total", user + [("reason", "rate_limited"), ("limit", "requests_per_minute")]
            ).totalValue == 1)
    }
}

/// Counts the metric objects a backend is asked for, and keeps them in a `TestMetrics`.
final class CountingFactory: MetricsFactory {
    let metrics = TestMetrics()
    private let count = Locked(0)
    var made: Int { count.withLock { $0 } }

    private func counted<T>(_ make: () -> T) -> T {
        count.withLock { $0 += 1 }
        return make()
    }

    func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        counted { metrics.makeCounter(label: label, dimensions: dimensions) }
    }
    func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        counted { metrics.makeMeter(label: label, dimensions: dimensions) }
    }
    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        counted { metrics.makeRecorder(label: label, dimensions: dimensions, aggregate: aggregate) }
    }
    func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        counted { metrics.makeTimer(label: label, dimensions: dimensions) }
    }
    func destroyCounter(_ handler: any CounterHandler) { metrics.destroyCounter(handler) }
    func destroyMeter(_ handler: any MeterHandler) { metrics.destroyMeter(handler) }
    func destroyRecorder(_ handler: any RecorderHandler) { metrics.destroyRecorder(handler) }
    func destroyTimer(_ handler: any TimerHandler) { metrics.destroyTimer(handler) }
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
