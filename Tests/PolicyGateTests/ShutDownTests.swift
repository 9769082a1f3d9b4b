import PolicyGate
import PolicyGateTestKit
import Synchronization
import Testing

/// ``PolicyService/shutDown(gracePeriod:)`` through the public API, on a manual clock.
@Suite("Graceful shutdown")
struct ShutDownTests {
    static let key = PolicyKey(provider: "llm", scope: .user("u"))

    /// Runs a shutdown in a task and says when it has returned.
    final class Shutdown: Sendable {
        let task: Task<Void, Never>
        private let done: Locked<Bool>

        init(_ gate: PolicyService, grace: Duration) {
            let done = Locked(false)
            self.done = done
            task = Task {
                await gate.shutDown(gracePeriod: grace)
                done.withLock { $0 = true }
            }
        }

        var isDone: Bool { done.withLock { $0 } }
    }

    @Test(
        "after shutDown every acquire fails with .shutDown; waiters queued are refused; permits in flight commit and release, and the shutdown returns when the last is released"
    )
    func refusesNewCallsAndLetsPermitsFinish() async throws {
        let clock = ManualClock()
        let recorder = TelemetryRecorder()
        let gate = try PolicyService(
            limits: ["llm": PolicyLimits(tokensPerMinute: 1_000, maxConcurrent: 1)], clock: clock, telemetry: recorder)
        var held = try gate.tryAcquire(Self.key, estimatedTokens: 100)
        let (waiter, waiterTask) = startWaiter(gate, Self.key, tokens: 100)
        await eventually("waiter queued") { gate.currentState(for: Self.key).queued == 1 }

        let shutdown = Shutdown(gate, grace: .seconds(30))
        await waiterTask.value
        #expect((waiter.error as? PolicyError)?.code == .shutDown)
        #expect(gate.isShutDown)
        #expect(gate.currentState(for: Self.key).queued == 0)

        // New callers, waiting or not, and of a provider without caps too.
        #expect(throws: PolicyError.self) { _ = try gate.tryAcquire(Self.key, estimatedTokens: 10) }
        do {
            _ = try await gate.acquire(PolicyKey(provider: "ungated"), maxWait: .seconds(5))
            Issue.record("admitted after shutdown")
        } catch let error as PolicyError {
            #expect(error.code == .shutDown)
            #expect(error.description.contains("shut down"))
        }

        // The permit in flight still commits, and the shutdown waits for it.
        try held.commitTokens(40)
        #expect(gate.currentState(for: Self.key).windows.first?.tokens.used == 40)
        for _ in 0..<1_000 { await Task.yield() }
        #expect(!shutdown.isDone)
        held.release()
        await shutdown.task.value
        #expect(clock.now.offset == .zero)  // it did not wait for the grace period
        #expect(recorder.releases.count == 1)
        #expect(recorder.rejects.filter { $0.error.code == .shutDown }.count == 3)
    }

    @Test("batch waiters are refused too, and the readouts count no queued batch call afterwards")
    func batchWaiters() async throws {
        let clock = ManualClock()
        let gate = try PolicyService(limits: ["llm": PolicyLimits(maxConcurrent: 1)], clock: clock)
        let held = try gate.tryAcquire(Self.key)
        let box = PermitBox()
        let task = Task {
            do { box.store(try await gate.acquire(Self.key, priority: .batch)) } catch { box.fail(error) }
        }
        await eventually("batch waiter queued") { gate.currentState(for: Self.key).queuedBatch == 1 }
        let shutdown = Shutdown(gate, grace: .seconds(5))
        await task.value
        #expect((box.error as? PolicyError)?.code == .shutDown)
        let state = gate.currentState(for: Self.key)
        #expect(state.queued == 0 && state.queuedBatch == 0 && state.promotedBatch == 0)
        _ = consume held
        await shutdown.task.value
    }

    @Test("when the grace period ends with a permit held the shutdown returns; the permit releases harmlessly later")
    func gracePeriodEnds() async throws {
        let clock = ManualClock()
        let gate = try PolicyService(limits: ["llm": PolicyLimits(maxConcurrent: 2)], clock: clock)
        let held = try gate.tryAcquire(Self.key)
        let shutdown = Shutdown(gate, grace: .seconds(10))
        await eventually("grace timer armed") { clock.nextDeadline != nil }
        clock.advance(by: .seconds(9))
        for _ in 0..<1_000 { await Task.yield() }
        #expect(!shutdown.isDone)
        clock.advance(by: .seconds(1))
        await shutdown.task.value
        #expect(gate.currentState(for: Self.key).inFlight == 1)
        held.release()
        #expect(gate.currentState(for: Self.key).inFlight == 0)
    }

    @Test("shutDown is idempotent: a second call returns once the first has finished, a later one at once")
    func idempotent() async throws {
        let clock = ManualClock()
        let gate = try PolicyService(limits: ["llm": PolicyLimits(maxConcurrent: 1)], clock: clock)
        let held = try gate.tryAcquire(Self.key)
        let first = Shutdown(gate, grace: .seconds(60))
        await eventually("first shutdown under way") { gate.isShutDown }
        let second = Shutdown(gate, grace: .zero)
        for _ in 0..<1_000 { await Task.yield() }
        #expect(!first.isDone)
        #expect(!second.isDone)  // the first one's grace period still runs
        held.release()
        await first.task.value
        await second.task.value
        await gate.shutDown(gracePeriod: .seconds(60))  // returns at once
        #expect(clock.now.offset == .zero)
    }

    @Test("cancelling the shutdown's task skips the rest of the grace period")
    func cancellationSkipsGrace() async throws {
        let clock = ManualClock()
        let gate = try PolicyService(limits: ["llm": PolicyLimits(maxConcurrent: 1)], clock: clock)
        let held = try gate.tryAcquire(Self.key)
        let shutdown = Shutdown(gate, grace: .seconds(60))
        await eventually("grace timer armed") { clock.nextDeadline != nil }
        shutdown.task.cancel()
        await shutdown.task.value
        #expect(gate.isShutDown)
        held.release()
    }

    @Test(
        "a shared provider: its waiters are refused, a permit still held when the grace period ends is given back to the store, writes are flushed"
    )
    func sharedStore() async throws {
        let clock = ManualClock()
        let store = FakeQuotaStore(clock: clock, callTimeout: .seconds(2), writeRetryPeriod: .seconds(10))
        var configuration = PolicyConfiguration(limits: ["llm": PolicyLimits(maxConcurrent: 1)])
        configuration.storage["llm"] = PolicyStorage(store: .postgres, failurePolicy: .failClosed)
        let gate = try PolicyService(configuration: configuration, store: store, clock: clock)
        var held = try await gate.acquire(Self.key, estimatedTokens: 10)
        #expect(store.liveLeases.count == 1)
        let (waiter, waiterTask) = startWaiter(gate, Self.key, tokens: 10)
        await eventually("waiter refused by the store once") { store.requests.count == 2 }

        let shutdown = Shutdown(gate, grace: .seconds(5))
        await waiterTask.value
        #expect((waiter.error as? PolicyError)?.code == .shutDown)
        await eventually("grace timer armed") { clock.nextDeadline != nil }
        clock.advance(by: .seconds(5))
        await shutdown.task.value
        // Given back and written before shutDown returned: other processes get the slot now.
        #expect(store.liveLeases.isEmpty)
        #expect(store.releaseCount == 1)
        // The permit still works; its commit and release write nothing more.
        try held.commitTokens(5)
        held.release()
        await gate.flushStoreWrites()
        #expect(store.releaseCount == 1)
    }
}
