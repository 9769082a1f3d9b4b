import PolicyGate
import PolicyGateTestKit
import Testing

@Suite("Telemetry fan-out", .timeLimit(.minutes(5)))
struct TelemetryFanOutTests {
    let clock = ManualClock()
    let key = PolicyKey(provider: "p", scope: .user("u"))

    @Test("every sink sees every event, in the order the sinks were given")
    func fansOut() async throws {
        let first = TelemetryRecorder(), second = TelemetryRecorder()
        let order = OrderProbe()
        let gate = try PolicyService(
            limits: ["p": PolicyLimits(requestsPerMinute: 1)], clock: clock,
            telemetry: .fanOut(first, OrderProbe.Sink(name: "a", probe: order), second, OrderProbe.Sink(name: "b", probe: order)))
        do {
            var permit = try await gate.acquire(key, estimatedTokens: 3)
            try permit.commitTokens(4)
        }
        #expect(throws: PolicyError.self) { _ = try gate.tryAcquire(key) }
        let change = PolicyLimitsChangeEvent(provider: "p", previous: .unlimited, current: PolicyLimits(requestsPerMinute: 1))
        PolicyTelemetryFanOut(first, second).didChangeLimits(change)

        #expect(first.events.count == 5)
        #expect(first.events == second.events)
        #expect(first.limitChanges == [change])
        #expect(order.names.withLock { $0 } == ["a", "b", "a", "b", "a", "b", "a", "b"])
    }

    @Test("fan-outs nest flat, and a list built at run time works too")
    func flattens() {
        let a = TelemetryRecorder(), b = TelemetryRecorder(), c = TelemetryRecorder()
        let nested = PolicyTelemetryFanOut(.fanOut(a, b), c)
        #expect(nested.sinks.count == 3)
        let sinks: [any PolicyTelemetry] = [a, c]
        let fromList: any PolicyTelemetry = .fanOut(sinks)
        fromList.didRelease(PolicyReleaseEvent(key: key, held: .seconds(1), tokens: 2))
        #expect(a.releases.count == 1 && b.releases.isEmpty && c.releases.count == 1)
    }
}

/// Notes which named sink saw an event, across sinks.
final class OrderProbe: Sendable {
    let names = Locked<[String]>([])

    struct Sink: PolicyTelemetry {
        let name: String
        let probe: OrderProbe
        func didAcquire(_ event: PolicyAcquireEvent) { probe.names.withLock { $0.append(name) } }
        func didCommit(_ event: PolicyCommitEvent) { probe.names.withLock { $0.append(name) } }
        func didReject(_ event: PolicyRejectEvent) { probe.names.withLock { $0.append(name) } }
        func didRelease(_ event: PolicyReleaseEvent) { probe.names.withLock { $0.append(name) } }
    }
}
