#if ServiceLifecycle
import Logging
import PolicyGate
import PolicyGateServiceLifecycle
import PolicyGateTestKit
import ServiceLifecycle
import Synchronization
import Testing

/// ``PolicyGateService`` in a real `ServiceGroup`, the gate on a manual clock.
@Suite("PolicyGateService in a ServiceGroup")
struct PolicyGateServiceTests {
    static let key = PolicyKey(provider: "llm", scope: .user("u"))

    static func group(_ gate: PolicyService, grace: Duration) -> ServiceGroup {
        ServiceGroup(services: [PolicyGateService(gate, gracePeriod: grace)], logger: Logger(label: "policy-gate-test"))
    }

    @Test(
        "on the group's graceful shutdown new and waiting callers get .shutDown, the permit in flight commits and releases, and run() returns"
    )
    func gracefulShutdownOfTheGroup() async throws {
        let clock = ManualClock()
        let gate = try PolicyService(limits: ["llm": PolicyLimits(tokensPerMinute: 1_000, maxConcurrent: 1)], clock: clock)
        let group = Self.group(gate, grace: .seconds(30))
        let done = Locked(false)
        let running = Task {
            try await group.run()
            done.withLock { $0 = true }
        }
        var held = try gate.tryAcquire(Self.key, estimatedTokens: 100)
        let waiter = Task { try await gate.acquire(Self.key, estimatedTokens: 100).isInert }
        while gate.currentState(for: Self.key).queued == 0 { await Task.yield() }

        await group.triggerGracefulShutdown()
        do {
            _ = try await waiter.value
            Issue.record("the waiter was admitted after the group shut down")
        } catch let error as PolicyError {
            #expect(error.code == .shutDown)
        }
        #expect(gate.isShutDown)
        #expect(throws: PolicyError.self) { _ = try gate.tryAcquire(Self.key, estimatedTokens: 10) }
        do {
            _ = try await gate.acquire(Self.key, estimatedTokens: 10, maxWait: .seconds(1))
            Issue.record("admitted after the group shut down")
        } catch let error as PolicyError {
            #expect(error.code == .shutDown)
        }

        // The gate's service waits for the permit in flight, which still commits.
        try held.commitTokens(60)
        #expect(gate.currentState(for: Self.key).windows.first?.tokens.used == 60)
        for _ in 0..<1_000 { await Task.yield() }
        #expect(!done.withLock { $0 })
        held.release()
        try await running.value
        #expect(done.withLock { $0 })
        #expect(clock.now.offset == .zero)  // drained, not timed out
    }

    @Test("a permit still held when the grace period ends does not keep the group running")
    func gracePeriodEnds() async throws {
        let clock = ManualClock()
        let gate = try PolicyService(limits: ["llm": PolicyLimits(maxConcurrent: 1)], clock: clock)
        let group = Self.group(gate, grace: .seconds(5))
        let running = Task { try await group.run() }
        let held = try gate.tryAcquire(Self.key)
        await group.triggerGracefulShutdown()
        while clock.nextDeadline == nil { await Task.yield() }
        clock.advance(by: .seconds(5))
        try await running.value
        #expect(gate.isShutDown)
        held.release()
    }
}
#endif
