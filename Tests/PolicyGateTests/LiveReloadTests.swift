import PolicyGate
import PolicyGateTestKit
import Testing

@Suite("Applying a configuration to a running gate", .timeLimit(.minutes(5)))
struct LiveReloadTests {
    let clock = ManualClock()
    let openai = PolicyKey(provider: "openai", scope: .user("u"))
    let anthropic = PolicyKey(provider: "anthropic", scope: .user("u"))

    @Test("a reload keeps recorded usage, swaps every provider, and ungates providers it drops")
    func reloadSwapsEverything() async throws {
        let gate = try PolicyService(
            configuration: PolicyConfiguration(limits: [
                "openai": PolicyLimits(requestsPerMinute: 5),
                "anthropic": PolicyLimits(requestsPerMinute: 1),
            ]), clock: clock)
        for _ in 0..<3 { _ = try gate.tryAcquire(openai) }
        _ = try gate.tryAcquire(anthropic)
        #expect(throws: PolicyError.self) { _ = try gate.tryAcquire(anthropic) }

        try await gate.apply(PolicyConfiguration(limits: ["openai": PolicyLimits(requestsPerMinute: 4)]))

        #expect(gate.configuration == PolicyConfiguration(limits: ["openai": PolicyLimits(requestsPerMinute: 4)]))
        #expect(gate.currentState(for: openai)[.minute]?.requests.used == 3)
        _ = try gate.tryAcquire(openai)
        let error = try #require(throws: PolicyError.self) { _ = try gate.tryAcquire(openai) }
        #expect(error.limit == .requestsPerMinute)
        // Dropped from the configuration: no longer gated.
        for _ in 0..<10 { _ = try gate.tryAcquire(anthropic) }
        #expect(gate.limits(for: "anthropic") == nil)
    }

    @Test("a reload admits waiters that now fit and tells telemetry what changed, once per provider")
    func reloadWakesWaitersAndReports() async throws {
        let recorder = TelemetryRecorder()
        let gate = try PolicyService(
            configuration: PolicyConfiguration(limits: [
                "openai": PolicyLimits(maxConcurrent: 1),
                "anthropic": PolicyLimits(requestsPerMinute: 50),
            ]), clock: clock, telemetry: recorder)
        let held = try gate.tryAcquire(openai)
        let (box, task) = startWaiter(gate, openai, tokens: 0)
        await eventually("queued") { gate.currentState(for: openai).queued == 1 }

        try await gate.apply(
            PolicyConfiguration(limits: [
                "openai": PolicyLimits(maxConcurrent: 2),
                "anthropic": PolicyLimits(requestsPerMinute: 50),  // unchanged: not reported
                "azure-openai": PolicyLimits(maxConcurrent: 4),
            ]))
        await task.value
        #expect(box.hasPermit)
        #expect(clock.now.offset == .zero)
        #expect(
            recorder.limitChanges == [
                PolicyLimitsChangeEvent(provider: "azure-openai", previous: .unlimited, current: PolicyLimits(maxConcurrent: 4)),
                PolicyLimitsChangeEvent(
                    provider: "openai", previous: PolicyLimits(maxConcurrent: 1), current: PolicyLimits(maxConcurrent: 2)),
            ])
        _ = consume held
        box.release()
    }

    @Test("an invalid configuration changes nothing, not even its valid providers")
    func invalidConfigurationIsNotHalfApplied() async throws {
        let recorder = TelemetryRecorder()
        let before = PolicyConfiguration(limits: ["openai": PolicyLimits(requestsPerMinute: 2)])
        let gate = try PolicyService(configuration: before, clock: clock, telemetry: recorder)
        let bad = PolicyConfiguration(limits: [
            "anthropic": PolicyLimits(requestsPerMinute: 10),
            "openai": PolicyLimits(requestsPerMinute: 0),
        ])
        #expect(bad.validate().map(\.keyPath) == ["limits.openai.requests_per_minute"])
        await #expect(throws: PolicyError.self) { try await gate.apply(bad) }
        #expect(gate.configuration == before)
        #expect(recorder.limitChanges.isEmpty)
    }

    @Test("setLimits reports its change too, and a no-op change reports nothing")
    func setLimitsReports() async throws {
        let recorder = TelemetryRecorder()
        let gate = try PolicyService(limits: ["openai": PolicyLimits(requestsPerMinute: 2)], clock: clock, telemetry: recorder)
        try await gate.setLimits(PolicyLimits(requestsPerMinute: 2), for: "openai")
        try await gate.setLimits(nil, for: "openai")
        #expect(
            recorder.limitChanges == [
                PolicyLimitsChangeEvent(provider: "openai", previous: PolicyLimits(requestsPerMinute: 2), current: .unlimited)
            ])
    }
}
