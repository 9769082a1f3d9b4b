import PolicyGate
import PolicyGateTestKit
import Testing

@Suite("Runtime limits and reset", .timeLimit(.minutes(5)))
struct ConfigurationTests {
    let clock = ManualClock()
    let key = PolicyKey(provider: "p", scope: .user("u"))

    @Test("replacing limits keeps the usage already recorded")
    func setLimitsKeepsUsage() async throws {
        let gate = try PolicyService(limits: ["p": PolicyLimits(requestsPerMinute: 5)], clock: clock)
        for _ in 0..<3 { _ = try gate.tryAcquire(key) }
        try await gate.setLimits(PolicyLimits(requestsPerMinute: 2), for: "p")
        let error = try #require(throws: PolicyError.self) { _ = try gate.tryAcquire(key) }
        #expect(error.limit == .requestsPerMinute)
        #expect(gate.currentState(for: key)[.minute]?.requests.used == 3)
        // Adding a token cap for the same window keeps the window's history too.
        try await gate.setLimits(PolicyLimits(requestsPerMinute: 10, tokensPerMinute: 100), for: "p")
        _ = try gate.tryAcquire(key, estimatedTokens: 100)
        #expect(gate.currentState(for: key)[.minute]?.requests.used == 4)
        // A window length capped for the first time starts counting now.
        try await gate.setLimits(PolicyLimits(requestsPerMinute: 10, requestsPerDay: 1, tokensPerMinute: 100), for: "p")
        clock.advance(by: .seconds(61))
        _ = try gate.tryAcquire(key, estimatedTokens: 1)
        let daily = try #require(throws: PolicyError.self) { _ = try gate.tryAcquire(key, estimatedTokens: 1) }
        #expect(daily.limit == .requestsPerDay)
    }

    @Test("raising a cap admits waiters that now fit, at once")
    func setLimitsWakesWaiters() async throws {
        let gate = try PolicyService(limits: ["p": PolicyLimits(requestsPerMinute: 1)], clock: clock)
        _ = try gate.tryAcquire(key)
        let (box, task) = startWaiter(gate, key, tokens: 0)
        await eventually("queued") { gate.currentState(for: key).queued == 1 }
        try await gate.setLimits(PolicyLimits(requestsPerMinute: 2), for: "p")
        await task.value
        #expect(box.hasPermit)
        #expect(clock.now.offset == .zero)
    }

    @Test("lowering a token cap below a waiter's estimate fails that waiter as oversized")
    func setLimitsFailsOversizedWaiters() async throws {
        let gate = try PolicyService(limits: ["p": PolicyLimits(tokensPerMinute: 1_000)], clock: clock)
        _ = try gate.tryAcquire(key, estimatedTokens: 900)
        let (box, task) = startWaiter(gate, key, tokens: 800)
        await eventually("queued") { gate.currentState(for: key).queued == 1 }
        try await gate.setLimits(PolicyLimits(tokensPerMinute: 500), for: "p")
        await task.value
        #expect((box.error as? PolicyError)?.code == .oversized)
    }

    @Test("removing every cap makes the provider a no-op and lets waiters through")
    func removingLimits() async throws {
        let gate = try PolicyService(limits: ["p": PolicyLimits(maxConcurrent: 1)], clock: clock)
        let held = try gate.tryAcquire(key)
        let (box, task) = startWaiter(gate, key, tokens: 0)
        await eventually("queued") { gate.currentState(for: key).queued == 1 }
        try await gate.setLimits(nil, for: "p")
        await task.value
        #expect(box.hasPermit)
        let fresh = try gate.tryAcquire(key)
        let inert = fresh.isInert
        #expect(inert)
        #expect(gate.limits(for: "p") == nil)
        _ = consume held
        box.release()
        #expect(gate.purgeIdleKeys() == 0)
        // And a provider can be gated later.
        try await gate.setLimits(PolicyLimits(requestsPerMinute: 1), for: "new")
        _ = try gate.tryAcquire(PolicyKey(provider: "new"))
        #expect(throws: PolicyError.self) { _ = try gate.tryAcquire(PolicyKey(provider: "new")) }
    }

    @Test("reset forgets a key's usage and admits its waiters")
    func reset() async throws {
        let gate = try PolicyService(limits: ["p": PolicyLimits(requestsPerMinute: 1, tokensPerDay: 1_000)], clock: clock)
        let other = PolicyKey(provider: "p", scope: .user("other"))
        var permit = try gate.tryAcquire(key, estimatedTokens: 500)
        _ = try gate.tryAcquire(other, estimatedTokens: 500)
        let (box, task) = startWaiter(gate, key, tokens: 10)
        await eventually("queued") { gate.currentState(for: key).queued == 1 }
        await gate.reset(key)
        await task.value
        #expect(box.hasPermit)
        #expect(gate.currentState(for: key)[.day]?.tokens.used == 10)
        #expect(gate.currentState(for: other)[.day]?.tokens.used == 500)
        // A permit from before the reset commits without touching the new counts.
        try permit.commitTokens(900)
        #expect(gate.currentState(for: key)[.day]?.tokens.used == 10)
        #expect(gate.currentState(for: key).inFlight == 2)
    }
}
