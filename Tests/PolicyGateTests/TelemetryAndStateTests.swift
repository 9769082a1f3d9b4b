import PolicyGate
import PolicyGateTestKit
import Synchronization
import Testing

@Suite("Telemetry and state", .timeLimit(.minutes(5)))
struct TelemetryAndStateTests {
    let clock = ManualClock()
    let key = PolicyKey(provider: "p", scope: .project("x"))

    @Test("acquire, commit, reject and release are reported with their figures")
    func events() async throws {
        let recorder = TelemetryRecorder()
        let gate = try PolicyService(limits: ["p": PolicyLimits(tokensPerMinute: 1_000)], clock: clock, telemetry: recorder)
        do {
            var permit = try await gate.acquire(key, estimatedTokens: 800)
            clock.advance(by: .seconds(2))
            try permit.commitTokens(950)
            #expect(throws: PolicyError.self) { _ = try gate.tryAcquire(key, estimatedTokens: 100) }
            clock.advance(by: .seconds(1))
        }
        #expect(
            recorder.events == [
                .acquire(PolicyAcquireEvent(key: key, estimatedTokens: 800, waited: .zero)),
                .commit(PolicyCommitEvent(key: key, estimatedTokens: 800, previousTokens: 800, actualTokens: 950)),
                .reject(PolicyRejectEvent(key: key, estimatedTokens: 100, error: recorder.rejects.first!.error)),
                .release(PolicyReleaseEvent(key: key, held: .seconds(3), tokens: 950)),
            ])
        let reject = try #require(recorder.rejects.first)
        #expect(reject.error.code == .rateLimited && reject.error.limit == .tokensPerMinute)
        #expect(reject.error.retryAfter == .seconds(59))
        // Oversized and invalid counts are rejections too.
        #expect(throws: PolicyError.self) { _ = try gate.tryAcquire(key, estimatedTokens: 5_000) }
        #expect(recorder.rejects.last?.error.code == .oversized)
    }

    /// A hook that calls back into the gate from inside every event.
    final class ReentrantTelemetry: PolicyTelemetry {
        let gate = Locked<PolicyService?>(nil)
        let seen = Locked<[Int]>([])
        let nested = Locked(0)
        func didRelease(_ event: PolicyReleaseEvent) {
            guard let gate = gate.withLock({ $0 }) else { return }
            let state = gate.currentState(for: event.key)
            seen.withLock { $0.append(state.inFlight) }
            // Re-enter: acquire and release again from inside the release hook (a few times).
            let again = nested.withLock { count in
                count += 1
                return count <= 5
            }
            if again, let permit = try? gate.tryAcquire(event.key) { permit.release() }
        }
        func didAcquire(_ event: PolicyAcquireEvent) {
            _ = gate.withLock({ $0 })?.activeKeys()
        }
    }

    @Test("hooks run outside the gate's locks: calling back into the gate cannot deadlock")
    func reentrantHooks() async throws {
        let telemetry = ReentrantTelemetry()
        let gate = try PolicyService(
            limits: ["p": PolicyLimits(requestsPerMinute: 100, maxConcurrent: 1)], clock: clock, telemetry: telemetry)
        telemetry.gate.withLock { $0 = gate }
        for _ in 0..<3 {
            let permit = try await gate.acquire(key)
            permit.release()
        }
        // Each release saw the slot already free, and its nested acquire/release ran through.
        #expect(telemetry.seen.withLock { $0 }.allSatisfy { $0 == 0 })
        #expect(telemetry.seen.withLock { $0 }.count == 3 + 5)
        #expect(gate.currentState(for: key).inFlight == 0)
        telemetry.gate.withLock { $0 = nil }
    }

    @Test("currentState reports usage, caps, remaining, in-flight, queued and when capacity frees")
    func state() async throws {
        let gate = try PolicyService(
            limits: ["p": PolicyLimits(requestsPerMinute: 2, tokensPerHour: 10_000, maxConcurrent: 5)], clock: clock)
        var empty = gate.currentState(for: key)
        #expect(empty.windows.map(\.window) == [.minute, .hour])
        #expect(empty.inFlight == 0 && empty.queued == 0 && empty.nextCapacityIn == nil && empty.blockedBy == nil)
        #expect(empty[.minute]?.requests.remaining == 2 && empty[.hour]?.tokens.remaining == 10_000)
        #expect(empty[.minute]?.tokens.cap == nil && empty[.minute]?.tokens.remaining == nil)
        let a = try gate.tryAcquire(key, estimatedTokens: 1_000)
        clock.advance(by: .seconds(5))
        let b = try gate.tryAcquire(key, estimatedTokens: 2_000)
        let (box, task) = startWaiter(gate, key, tokens: 3_000)
        await eventually("queued") { gate.currentState(for: key).queued == 1 }
        let state = gate.currentState(for: key)
        #expect(state[.minute]?.requests.used == 2 && state[.minute]?.requests.remaining == 0)
        #expect(state[.hour]?.tokens.used == 3_000 && state[.hour]?.tokens.remaining == 7_000)
        #expect(state.inFlight == 2 && state.queued == 1 && state.waitingForCapacity == 1)
        #expect(state.blockedBy == .requestsPerMinute)
        #expect(state.nextCapacityIn == .seconds(56))  // the first call leaves the minute at 61 s
        #expect(state.limits == PolicyLimits(requestsPerMinute: 2, tokensPerHour: 10_000, maxConcurrent: 5))
        #expect(gate.activeKeys() == [key])
        task.cancel()
        await task.value
        _ = box.error
        _ = consume a
        _ = consume b
        empty = gate.currentState(for: key)
        #expect(empty.inFlight == 0 && empty.queued == 0)
    }
}
