import PolicyGate
import PolicyGateTestKit
import Testing

@Suite("Admission: keys, caps, sliding windows, retryAfter")
struct AdmissionTests {
    let clock = ManualClock()

    func gate(_ limits: [String: PolicyLimits], telemetry: (any PolicyTelemetry)? = nil) throws -> PolicyService {
        try PolicyService(limits: limits, clock: clock, telemetry: telemetry)
    }

    @Test("every (provider, scope) key has its own counters")
    func keysAreIndependent() throws {
        let gate = try gate(["openai": PolicyLimits(requestsPerMinute: 2)])
        let scopes: [PolicyScope] = [.global, .user("a"), .user("b"), .org("a"), .project("a"), .custom(kind: "tenant", id: "a")]
        for scope in scopes {
            let key = PolicyKey(provider: "openai", scope: scope)
            _ = try gate.tryAcquire(key)
            _ = try gate.tryAcquire(key)
            #expect(throws: PolicyError.self) { _ = try gate.tryAcquire(key) }
        }
        #expect(gate.activeKeys().count == scopes.count)
        #expect(PolicyKey(provider: "openai", scope: .user("a")) != PolicyKey(provider: "openai", scope: .org("a")))
        #expect(PolicyKey(provider: "openai", scope: .user("a")) == PolicyKey(provider: "openai", scope: .user("a")))
    }

    @Test("windows slide: a call is counted for one minute, plus at most one bucket (1/60)")
    func windowsSlide() throws {
        let gate = try gate(["p": PolicyLimits(requestsPerMinute: 3)])
        let key = PolicyKey(provider: "p")
        _ = try gate.tryAcquire(key)  // t = 0
        clock.advance(by: .seconds(30))
        _ = try gate.tryAcquire(key)  // t = 30
        clock.advance(by: .milliseconds(29_500))
        _ = try gate.tryAcquire(key)  // t = 59.5
        clock.advance(by: .milliseconds(500))  // t = 60: the first call is in its last bucket
        let error = try #require(throws: PolicyError.self) { _ = try gate.tryAcquire(key) }
        #expect(error.code == .rateLimited)
        #expect(error.limit == .requestsPerMinute)
        #expect(error.retryAfter == .seconds(1))
        #expect(error.key == key)
        clock.advance(by: .seconds(1))  // t = 61: the first call has left
        _ = try gate.tryAcquire(key)
        // Not calendar-aligned: the call at 30 s still counts at 61 s.
        #expect(throws: PolicyError.self) { _ = try gate.tryAcquire(key) }
    }

    @Test(
        "retryAfter is accurate: 1 ns earlier fails, at retryAfter succeeds",
        arguments: [
            PolicyLimits(requestsPerMinute: 2),
            PolicyLimits(tokensPerMinute: 1_000),
            PolicyLimits(requestsPerHour: 2),
            PolicyLimits(tokensPerDay: 1_000),
            PolicyLimits(requestsPerMinute: 10, tokensPerMinute: 1_000, tokensPerHour: 1_500),
        ])
    func retryAfterIsAccurate(limits: PolicyLimits) throws {
        let gate = try gate(["p": limits])
        let key = PolicyKey(provider: "p")
        var admitted = 0
        // Spread calls over time so that buckets expire one by one.
        while admitted < 100 {
            do {
                _ = try gate.tryAcquire(key, estimatedTokens: 400)
                admitted += 1
                clock.advance(by: .milliseconds(700))
            } catch let error {
                let retryAfter = try #require(error.retryAfter)
                #expect(retryAfter > .zero)
                clock.advance(by: retryAfter - .nanoseconds(1))
                let early = try #require(throws: PolicyError.self) { _ = try gate.tryAcquire(key, estimatedTokens: 400) }
                #expect(early.retryAfter == .nanoseconds(1))
                clock.advance(by: .nanoseconds(1))
                _ = try gate.tryAcquire(key, estimatedTokens: 400)
                admitted += 1
            }
        }
    }

    @Test("the binding limit is named: requests vs tokens, minute vs hour")
    func rejectionNamesTheLimit() throws {
        let gate = try gate(["p": PolicyLimits(requestsPerMinute: 100, requestsPerHour: 3, tokensPerMinute: 1_000)])
        let key = PolicyKey(provider: "p")
        _ = try gate.tryAcquire(key, estimatedTokens: 900)
        let tokens = try #require(throws: PolicyError.self) { _ = try gate.tryAcquire(key, estimatedTokens: 200) }
        #expect(tokens.limit == .tokensPerMinute)
        #expect(tokens.retryAfter == .seconds(61))
        _ = try gate.tryAcquire(key, estimatedTokens: 100)  // exactly fills the minute's tokens
        clock.advance(by: .seconds(61))
        _ = try gate.tryAcquire(key, estimatedTokens: 100)  // the hour's third request
        let hourly = try #require(throws: PolicyError.self) { _ = try gate.tryAcquire(key, estimatedTokens: 100) }
        #expect(hourly.limit == .requestsPerHour)
        // The first calls sit in the hour's first bucket (60 s wide), which leaves at 61 × 60 s.
        #expect(hourly.retryAfter == .seconds(61 * 60 - 61))
    }

    @Test("commitTokens replaces the estimate; again replaces again; overruns make later callers wait")
    func commitReplacesTheEstimate() throws {
        let gate = try gate(["p": PolicyLimits(tokensPerMinute: 1_000)])
        let key = PolicyKey(provider: "p")
        var permit = try gate.tryAcquire(key, estimatedTokens: 600)
        #expect(gate.currentState(for: key)[.minute]?.tokens.used == 600)
        #expect(throws: PolicyError.self) { _ = try gate.tryAcquire(key, estimatedTokens: 500) }
        try permit.commitTokens(300)
        #expect(permit.committedTokens == 300)
        #expect(gate.currentState(for: key)[.minute]?.tokens.used == 300)
        try permit.commitTokens(0)  // the provider call failed
        #expect(gate.currentState(for: key)[.minute]?.tokens.used == 0)
        try permit.commitTokens(1_400)  // more than the cap: the overrun shows
        let state = gate.currentState(for: key)
        #expect(state[.minute]?.tokens.used == 1_400)
        #expect(state[.minute]?.tokens.remaining == 0)
        let error = try #require(throws: PolicyError.self) { _ = try gate.tryAcquire(key, estimatedTokens: 1) }
        #expect(error.limit == .tokensPerMinute)
        // A commit after the call left every window changes nothing.
        clock.advance(by: .seconds(61))
        try permit.commitTokens(50)
        #expect(gate.currentState(for: key)[.minute]?.tokens.used == 0)
        _ = try gate.tryAcquire(key, estimatedTokens: 1_000)
    }

    @Test("estimates larger than a token cap fail at once, before waiting for a slot")
    func oversizedFailsAtOnce() async throws {
        let gate = try gate(["p": PolicyLimits(tokensPerMinute: 1_000, tokensPerDay: 500, maxConcurrent: 1)])
        let key = PolicyKey(provider: "p")
        let held = try gate.tryAcquire(key, estimatedTokens: 10)  // the only slot is taken
        let error = await #expect(throws: PolicyError.self) {
            _ = try await gate.acquire(key, estimatedTokens: 600)
        }
        #expect(error?.code == .oversized)
        #expect(error?.limit == .tokensPerDay)
        #expect(gate.currentState(for: key).queued == 0)
        _ = consume held
    }

    @Test("bad token counts get a clear error and change nothing")
    func badTokenCounts() throws {
        let gate = try gate(["t": PolicyLimits(tokensPerMinute: 1_000), "r": PolicyLimits(requestsPerMinute: 5)])
        let tokenKey = PolicyKey(provider: "t")
        let requestKey = PolicyKey(provider: "r")
        for bad in [-1, 0, Int.max, PolicyLimits.maximumTokenCount + 1] {
            let error = try #require(throws: PolicyError.self) { _ = try gate.tryAcquire(tokenKey, estimatedTokens: bad) }
            #expect(error.code == .invalidTokenCount, "\(bad)")
        }
        // Without token caps an estimate is optional.
        _ = try gate.tryAcquire(requestKey)
        #expect(throws: PolicyError.self) { _ = try gate.tryAcquire(requestKey, estimatedTokens: -5) }
        // Commits: negative or too large are refused, the permit and windows unchanged.
        var permit = try gate.tryAcquire(tokenKey, estimatedTokens: 100)
        for bad in [-1, Int.max, Int.min] {
            let error = try #require(throws: PolicyError.self) { try permit.commitTokens(bad) }
            #expect(error.code == .invalidTokenCount)
        }
        #expect(permit.committedTokens == 100)
        #expect(gate.currentState(for: tokenKey)[.minute]?.tokens.used == 100)
        // The largest count is accepted and sums stay exact.
        try permit.commitTokens(PolicyLimits.maximumTokenCount)
        #expect(gate.currentState(for: tokenKey)[.minute]?.tokens.used == PolicyLimits.maximumTokenCount)
    }

    @Test("caps that are zero, negative or too large are refused")
    func badLimits() async throws {
        #expect(throws: PolicyError.self) { try PolicyService(limits: ["p": PolicyLimits(requestsPerMinute: 0)]) }
        #expect(throws: PolicyError.self) { try PolicyService(limits: ["p": PolicyLimits(tokensPerDay: -1)]) }
        #expect(throws: PolicyError.self) { try PolicyService(limits: ["p": PolicyLimits(maxConcurrent: 0)]) }
        #expect(throws: PolicyError.self) { try PolicyService(limits: ["p": PolicyLimits(requestsPerDay: Int(UInt32.max) + 1)]) }
        let gate = try gate(["p": PolicyLimits(requestsPerMinute: 1)])
        let error = await #expect(throws: PolicyError.self) { try await gate.setLimits(PolicyLimits(requestsPerMinute: -3), for: "p") }
        #expect(error?.code == .invalidLimits)
        #expect(error?.limit == .requestsPerMinute)
        #expect(gate.limits(for: "p") == PolicyLimits(requestsPerMinute: 1))
    }

    @Test("a provider with no caps is a no-op: inert permits, nothing stored, nothing reported")
    func noOpProviders() throws {
        let recorder = TelemetryRecorder()
        let gate = try gate(["empty": PolicyLimits(), "capped": PolicyLimits(requestsPerMinute: 1)], telemetry: recorder)
        for provider in ["empty", "absent"] {
            let key = PolicyKey(provider: provider, scope: .user("u"))
            for _ in 0..<1_000 {
                var permit = try gate.tryAcquire(key, estimatedTokens: 10)
                let inert = permit.isInert
                #expect(inert)
                try permit.commitTokens(20)
            }
            let state = gate.currentState(for: key)
            #expect(state.windows.isEmpty && state.inFlight == 0 && state.limits.isUnlimited)
        }
        #expect(gate.storedKeyCount == 0)
        #expect(recorder.events.isEmpty)
    }
}
