import PolicyGate
import PolicyGateTestKit
import Testing

@Suite("Cancellation", .timeLimit(.minutes(5)))
struct CancellationTests {
    @Test("cancelling a waiter removes it at once and leaves the others' order alone")
    func cancelKeepsOrder() async throws {
        let clock = ManualClock()
        let gate = try PolicyService(limits: ["p": PolicyLimits(maxConcurrent: 1)], clock: clock)
        let key = PolicyKey(provider: "p")
        var holder: PolicyPermit? = try gate.tryAcquire(key)
        var waiters: [(PermitBox, Task<Void, Never>)] = []
        for i in 0..<5 {
            waiters.append(startWaiter(gate, key, tokens: 0))
            await eventually("queued") { gate.currentState(for: key).queued == i + 1 }
        }
        waiters[1].1.cancel()
        waiters[3].1.cancel()
        await waiters[1].1.value
        await waiters[3].1.value
        #expect(waiters[1].0.error is CancellationError && waiters[3].0.error is CancellationError)
        #expect(gate.currentState(for: key).queued == 3)
        holder = nil
        for i in [0, 2, 4] {
            await waiters[i].1.value
            #expect(waiters[i].0.hasPermit)
            #expect([0, 2, 4].filter { $0 > i }.allSatisfy { !waiters[$0].0.isDone })
            waiters[i].0.release()
        }
        _ = holder
    }

    @Test("a task cancelled before it waits throws and records nothing")
    func cancelledBeforeWaiting() async throws {
        let gate = try PolicyService(limits: ["p": PolicyLimits(requestsPerMinute: 1)], clock: ManualClock())
        let key = PolicyKey(provider: "p")
        _ = try gate.tryAcquire(key)
        let task = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            _ = try await gate.acquire(key)
        }
        await #expect(throws: CancellationError.self) { try await task.value }
        let state = gate.currentState(for: key)
        #expect(state.queued == 0 && state[.minute]?.requests.used == 1)
    }

    @Test("many waiters cancelled at random moments: counts are exactly what the survivors explain", arguments: [11, 12, 13] as [UInt64])
    func randomCancellations(seed: UInt64) async throws {
        var rng = SeededGenerator(seed: seed)
        let clock = ManualClock()
        let limits = PolicyLimits(
            requestsPerMinute: 40, requestsPerDay: 1_000_000, tokensPerMinute: 3_000, tokensPerDay: 100_000_000, maxConcurrent: 3)
        let gate = try PolicyService(limits: ["p": limits], clock: clock)
        let key = PolicyKey(provider: "p", scope: .org("o"))
        struct Caller {
            let box: PermitBox
            let task: Task<Void, Never>
            let tokens: Int
            var released = false
        }
        var callers: [Caller] = []
        let total = 240
        for _ in 0..<total {
            let tokens = Int.random(in: 10...200, using: &rng)
            let (box, task) = startWaiter(gate, key, tokens: tokens)
            callers.append(Caller(box: box, task: task, tokens: tokens))
            if Int.random(in: 0..<4, using: &rng) == 0 { task.cancel() }  // often before it even queued
            if Int.random(in: 0..<8, using: &rng) == 0 { await Task.yield() }
        }
        func settle() async {
            await eventually("every caller admitted, failed or queued") {
                callers.filter { !$0.box.isDone }.count == gate.currentState(for: key).queued
            }
        }
        func check() async {
            await settle()
            let state = gate.currentState(for: key)
            let admitted = callers.filter { $0.box.hasPermit || $0.released }
            let held = callers.filter { $0.box.hasPermit }
            #expect(state.inFlight == held.count, "seed \(seed)")
            #expect(state.queued == callers.filter { !$0.box.isDone }.count, "seed \(seed)")
            #expect(state[.day]?.requests.used == admitted.count, "seed \(seed)")
            #expect(state[.day]?.tokens.used == admitted.map(\.tokens).reduce(0, +), "seed \(seed)")
            #expect(callers.allSatisfy { $0.box.error == nil || $0.box.error is CancellationError }, "seed \(seed)")
        }
        for round in 0..<400 {
            switch Int.random(in: 0..<10, using: &rng) {
            case 0..<4:
                if let i = callers.indices.filter({ !callers[$0].box.isDone }).randomElement(using: &rng) {
                    callers[i].task.cancel()
                }
            case 4..<8:
                if let i = callers.indices.filter({ callers[$0].box.hasPermit }).randomElement(using: &rng) {
                    callers[i].box.release()
                    callers[i].released = true
                }
            default:
                clock.advance(by: .seconds(Int.random(in: 1...20, using: &rng)))
            }
            if round % 20 == 0 { await check() }
        }
        for caller in callers { caller.task.cancel() }
        for caller in callers { await caller.task.value }
        await check()
        for i in callers.indices where callers[i].box.hasPermit {
            callers[i].box.release()
            callers[i].released = true
        }
        await check()
        let state = gate.currentState(for: key)
        #expect(state.inFlight == 0 && state.queued == 0)
        let cancelled = callers.filter { $0.box.error is CancellationError }.count
        #expect(cancelled > 0 && cancelled < total, "seed \(seed): \(cancelled) cancelled")
    }
}
