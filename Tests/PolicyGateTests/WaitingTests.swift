import PolicyGate
import PolicyGateTestKit
import Testing

@Suite("Waiting: concurrency slots, FIFO, maximum waits, timeouts", .timeLimit(.minutes(5)))
struct WaitingTests {
    let clock = ManualClock()

    @Test("a wait whose maximum ends exactly when the call fits is admitted, not timed out")
    func admittedAtItsDeadline() async throws {
        let key = PolicyKey(provider: "p")
        let gate = try PolicyService(limits: ["p": PolicyLimits(requestsPerMinute: 1)], clock: clock)
        _ = try gate.tryAcquire(key)
        let refusal = try #require(throws: PolicyError.self) { _ = try gate.tryAcquire(key) }
        let retryAfter = try #require(refusal.retryAfter)
        let (box, task) = startWaiter(gate, key, tokens: 0, maxWait: retryAfter)
        await eventually("queued") { gate.currentState(for: key).queued == 1 }
        clock.advance(by: retryAfter)
        await task.value
        let admitted = box.hasPermit, failure = box.error.map { "\($0)" } ?? "none"
        #expect(admitted, "\(failure)")
    }

    @Test("releasing a permit admits the next waiter synchronously")
    func releaseWakesSynchronously() async throws {
        let gate = try PolicyService(limits: ["p": PolicyLimits(maxConcurrent: 2)], clock: clock)
        let key = PolicyKey(provider: "p")
        let first = try await gate.acquire(key)
        let second = try await gate.acquire(key)
        let (box, task) = startWaiter(gate, key, tokens: 0)
        await eventually("queued") { gate.currentState(for: key).queued == 1 }
        first.release()
        // Before the waiter's task even runs again, the slot is already its own.
        let state = gate.currentState(for: key)
        #expect(state.inFlight == 2 && state.queued == 0)
        await task.value
        #expect(box.hasPermit)
        _ = consume second
        box.release()
        #expect(gate.currentState(for: key).inFlight == 0)
    }

    @Test("waiters are admitted in arrival order, and tryAcquire does not jump the queue")
    func fifo() async throws {
        let gate = try PolicyService(limits: ["p": PolicyLimits(tokensPerMinute: 1_000, maxConcurrent: 1)], clock: clock)
        let key = PolicyKey(provider: "p")
        var holder: PolicyPermit? = try await gate.acquire(key, estimatedTokens: 100)
        var waiters: [(PermitBox, Task<Void, Never>)] = []
        for i in 0..<6 {
            waiters.append(startWaiter(gate, key, tokens: 100 + i))
            await eventually("waiter \(i) queued") { gate.currentState(for: key).queued == i + 1 }
        }
        // Capacity is there, but the queue is not empty: no barging.
        let barge = try #require(throws: PolicyError.self) { _ = try gate.tryAcquire(key, estimatedTokens: 1) }
        #expect(barge.limit == .concurrency)
        holder = nil
        for (i, (box, task)) in waiters.enumerated() {
            await task.value
            #expect(box.hasPermit, "waiter \(i)")
            #expect(waiters[(i + 1)...].allSatisfy { !$0.0.isDone }, "only waiter \(i) has been served")
            box.release()
        }
        _ = holder
    }

    @Test("a large call at the head is not starved by smaller ones behind it")
    func headOfLineHolds() async throws {
        let gate = try PolicyService(limits: ["p": PolicyLimits(tokensPerMinute: 1_000)], clock: clock)
        let key = PolicyKey(provider: "p")
        _ = try gate.tryAcquire(key, estimatedTokens: 700)
        let (big, bigTask) = startWaiter(gate, key, tokens: 900)
        await eventually("queued") { gate.currentState(for: key).queued == 1 }
        let small = try #require(throws: PolicyError.self) { _ = try gate.tryAcquire(key, estimatedTokens: 10) }
        #expect(small.limit == .tokensPerMinute)
        clock.advance(by: .seconds(61))
        await bigTask.value
        #expect(big.hasPermit)
        #expect(clock.now.offset == .seconds(61))
    }

    @Test("a waiter for quota is admitted by the gate's timer exactly when capacity frees")
    func timerAdmits() async throws {
        let recorder = TelemetryRecorder()
        let gate = try PolicyService(limits: ["p": PolicyLimits(requestsPerMinute: 1)], clock: clock, telemetry: recorder)
        let key = PolicyKey(provider: "p")
        _ = try gate.tryAcquire(key)
        clock.advance(by: .seconds(10))
        let (box, task) = startWaiter(gate, key, tokens: 0)
        await eventually("timer armed") { clock.nextDeadline != nil }
        #expect(clock.nextDeadline?.offset == .seconds(61))
        clock.advance(by: .seconds(50))  // 60 s: not yet
        for _ in 0..<100 { await Task.yield() }
        #expect(!box.isDone)
        clock.advance(by: .seconds(1))
        await task.value
        #expect(box.hasPermit)
        #expect(recorder.acquires.last?.waited == .seconds(51))
    }

    @Test("a maximum wait that cannot be met fails at once, with the limit and retryAfter")
    func maxWaitFailsFast() async throws {
        let gate = try PolicyService(limits: ["p": PolicyLimits(requestsPerMinute: 1)], clock: clock)
        let key = PolicyKey(provider: "p")
        _ = try gate.tryAcquire(key)
        let error = await #expect(throws: PolicyError.self) {
            _ = try await gate.acquire(key, maxWait: .seconds(10))
        }
        #expect(error?.code == .rateLimited)
        #expect(error?.limit == .requestsPerMinute)
        #expect(error?.retryAfter == .seconds(61))
        #expect(clock.now.offset == .zero)  // no time passed: it did not wait it out
        #expect(gate.currentState(for: key).queued == 0)
        // A maximum wait long enough waits and succeeds.
        let (box, task) = startWaiter(gate, key, tokens: 0, maxWait: .seconds(70))
        await eventually("queued") { gate.currentState(for: key).queued == 1 }
        clock.advance(by: .seconds(61))
        await task.value
        #expect(box.hasPermit)
        // maxWait zero behaves like tryAcquire.
        await #expect(throws: PolicyError.self) { _ = try await gate.acquire(key, maxWait: .zero) }
    }

    @Test("a wait that runs out throws timedOut, having recorded nothing and holding no slot")
    func timeout() async throws {
        let recorder = TelemetryRecorder()
        let gate = try PolicyService(
            limits: ["p": PolicyLimits(requestsPerMinute: 10, maxConcurrent: 1)], clock: clock, telemetry: recorder)
        let key = PolicyKey(provider: "p")
        let held = try gate.tryAcquire(key)
        let (box, task) = startWaiter(gate, key, tokens: 0, maxWait: .seconds(5))
        await eventually("queued") { gate.currentState(for: key).queued == 1 }
        clock.advance(by: .seconds(5))
        await task.value
        let error = try #require(box.error as? PolicyError)
        #expect(error.code == .timedOut)
        #expect(error.limit == .concurrency)
        let state = gate.currentState(for: key)
        #expect(state.queued == 0 && state.inFlight == 1 && state[.minute]?.requests.used == 1)
        #expect(recorder.rejects.last?.error.code == .timedOut)
        _ = consume held
        _ = try gate.tryAcquire(key)
    }

    @Test("deadlines are instants of the service's clock; other clocks' instants are refused")
    func deadlines() async throws {
        let gate = try PolicyService(limits: ["p": PolicyLimits(requestsPerMinute: 1)], clock: clock)
        let key = PolicyKey(provider: "p")
        _ = try gate.tryAcquire(key)
        let early = await #expect(throws: PolicyError.self) {
            _ = try await gate.acquire(key, deadline: clock.now.advanced(by: .seconds(30)))
        }
        #expect(early?.code == .rateLimited)
        let foreign = await #expect(throws: PolicyError.self) {
            _ = try await gate.acquire(key, deadline: ContinuousClock.now.advanced(by: .seconds(600)))
        }
        #expect(foreign?.code == .invalidArgument)
        let deadline = clock.now.advanced(by: .seconds(90))
        let box = PermitBox()
        let task = Task {
            do { box.store(try await gate.acquire(key, deadline: deadline)) } catch { box.fail(error) }
        }
        await eventually("queued") { gate.currentState(for: key).queued == 1 }
        clock.advance(by: .seconds(61))
        await task.value
        #expect(box.hasPermit)
    }

    @Test("a permit can be released explicitly, once, and moved into a task")
    func explicitRelease() async throws {
        let recorder = TelemetryRecorder()
        let gate = try PolicyService(limits: ["p": PolicyLimits(maxConcurrent: 1)], clock: clock, telemetry: recorder)
        let key = PolicyKey(provider: "p")
        do {
            let permit = try await gate.acquire(key)
            clock.advance(by: .seconds(3))
            permit.release()
            #expect(gate.currentState(for: key).inFlight == 0)
        }  // leaving the scope does not release again
        #expect(recorder.releases.count == 1)
        #expect(recorder.releases.first?.held == .seconds(3))
        var permit = try await gate.acquire(key, estimatedTokens: 0)
        try permit.commitTokens(0)
        let done = Task { [permit = consume permit] in
            let permitKey = permit.key
            #expect(permitKey == key)
        }
        await done.value
        #expect(gate.currentState(for: key).inFlight == 0)
        #expect(recorder.releases.count == 2)
    }
}
