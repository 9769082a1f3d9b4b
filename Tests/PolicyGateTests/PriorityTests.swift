import Foundation
import PolicyGate
import PolicyGateTestKit
import Testing

/// Starts a task that waits in `acquire` in class `priority`.
private func startWaiter(
    _ gate: PolicyService, _ key: PolicyKey, tokens: Int, priority: PolicyPriority, maxWait: Duration? = nil
) -> (PermitBox, Task<Void, Never>) {
    let box = PermitBox()
    let task = Task {
        do {
            box.store(try await gate.acquire(key, estimatedTokens: tokens, maxWait: maxWait, priority: priority))
        } catch {
            box.fail(error)
        }
    }
    return (box, task)
}

@Suite("Priority classes: interactive before batch, the reserve, aging", .timeLimit(.minutes(5)))
struct PriorityTests {
    let clock = ManualClock()
    let key = PolicyKey(provider: "p", scope: .user("u"))

    @Test("a waiting interactive call is admitted before earlier batch calls; FIFO within each class")
    func interactiveFirst() async throws {
        let gate = try PolicyService(limits: ["p": PolicyLimits(maxConcurrent: 1)], clock: clock)
        var holder: PolicyPermit? = try gate.tryAcquire(key)
        var waiters: [(name: String, box: PermitBox, task: Task<Void, Never>)] = []
        for (i, (name, priority)) in [("b1", PolicyPriority.batch), ("b2", .batch), ("i1", .interactive), ("i2", .interactive)].enumerated()
        {
            let (box, task) = startWaiter(gate, key, tokens: 0, priority: priority)
            waiters.append((name, box, task))
            await eventually("\(name) queued") { gate.currentState(for: key).queued == i + 1 }
        }
        let state = gate.currentState(for: key)
        #expect(state.queuedBatch == 2 && state.queuedInteractive == 2 && state.promotedBatch == 0)
        var order: [String] = []
        holder = nil
        for _ in 0..<4 {
            await eventually("one more admitted") { waiters.contains { $0.box.hasPermit } }
            let admitted = waiters.filter { $0.box.hasPermit }
            #expect(admitted.count == 1, "one permit at a time")
            guard let next = admitted.first else { break }
            order.append(next.name)
            next.box.release()
        }
        #expect(order == ["i1", "i2", "b1", "b2"])
        for waiter in waiters { await waiter.task.value }
        _ = holder
    }

    @Test("batch calls cannot take the reserved share of request, token and concurrency caps; interactive calls can")
    func reserve() throws {
        let gate = try PolicyService(
            limits: [
                "p": PolicyLimits(requestsPerMinute: 10, reservedForInteractive: 0.2),
                "c": PolicyLimits(maxConcurrent: 5, reservedForInteractive: 0.2),
                "t": PolicyLimits(tokensPerMinute: 7, reservedForInteractive: 0.2),
            ], clock: clock)
        for _ in 0..<8 { _ = try gate.tryAcquire(key, priority: .batch) }
        let refused = try #require(throws: PolicyError.self) { _ = try gate.tryAcquire(key, priority: .batch) }
        #expect(refused.code == .rateLimited && refused.limit == .requestsPerMinute)
        #expect(refused.retryAfter.map { $0 > .seconds(59) && $0 <= .seconds(61) } == true, "\(String(describing: refused.retryAfter))")
        #expect(refused.message.contains("exhausted for batch calls"), "\(refused.message)")
        // The reserve is the interactive calls' own: two more fit.
        for _ in 0..<2 { _ = try gate.tryAcquire(key) }
        #expect(throws: PolicyError.self) { _ = try gate.tryAcquire(key) }

        let concurrent = PolicyKey(provider: "c")
        var held: [PermitBox] = []
        for _ in 0..<4 {
            let box = PermitBox()
            box.store(try gate.tryAcquire(concurrent, priority: .batch))
            held.append(box)
        }
        let slot = try #require(throws: PolicyError.self) { _ = try gate.tryAcquire(concurrent, priority: .batch) }
        #expect(slot.limit == .concurrency)
        let interactive = try gate.tryAcquire(concurrent)
        #expect(gate.currentState(for: concurrent).inFlight == 5)
        _ = consume interactive

        // ⌈7 × 0.2⌉ = 2 tokens reserved: never less than asked.
        let tokens = PolicyKey(provider: "t")
        for _ in 0..<5 { _ = try gate.tryAcquire(tokens, estimatedTokens: 1, priority: .batch) }
        #expect(throws: PolicyError.self) { _ = try gate.tryAcquire(tokens, estimatedTokens: 1, priority: .batch) }
        for _ in 0..<2 { _ = try gate.tryAcquire(tokens, estimatedTokens: 1) }
    }

    @Test("an interactive call is admitted at once past batch calls waiting for the reserved share")
    func interactivePassesBatchWaiters() async throws {
        let gate = try PolicyService(limits: ["p": PolicyLimits(tokensPerMinute: 1_000, reservedForInteractive: 0.2)], clock: clock)
        _ = try gate.tryAcquire(key, estimatedTokens: 700, priority: .batch)
        let (batch, task) = startWaiter(gate, key, tokens: 200, priority: .batch)
        await eventually("batch queued") { gate.currentState(for: key).queued == 1 }
        // A second batch call may not pass the first one.
        let behind = try #require(throws: PolicyError.self) { _ = try gate.tryAcquire(key, estimatedTokens: 10, priority: .batch) }
        #expect(behind.limit == .tokensPerMinute)
        _ = try gate.tryAcquire(key, estimatedTokens: 250)
        #expect(gate.currentState(for: key)[.minute]?.tokens.used == 950)
        #expect(!batch.isDone)
        task.cancel()
        await task.value
        #expect(batch.error is CancellationError)
        // Cancelled, it recorded nothing.
        #expect(gate.currentState(for: key)[.minute]?.tokens.used == 950 && gate.currentState(for: key).queued == 0)
    }

    @Test("a batch call that waited batch_aging is ordered by its arrival among interactive calls and may use the reserve")
    func aging() async throws {
        let telemetry = TelemetryRecorder()
        let gate = try PolicyService(
            limits: ["p": PolicyLimits(maxConcurrent: 1, batchAging: .seconds(30))], clock: clock, telemetry: telemetry)
        var holder: PolicyPermit? = try gate.tryAcquire(key)
        let (b, bTask) = startWaiter(gate, key, tokens: 0, priority: .batch)
        await eventually("b queued") { gate.currentState(for: key).queued == 1 }
        clock.advance(by: .seconds(10))
        let (i1, i1Task) = startWaiter(gate, key, tokens: 0, priority: .interactive)
        await eventually("i1 queued") { gate.currentState(for: key).queued == 2 }
        clock.advance(by: .seconds(10))
        holder = nil  // t = 20: b has not aged, i1 goes first
        await i1Task.value
        #expect(i1.hasPermit && !b.isDone)
        clock.advance(by: .seconds(5))
        let (i2, i2Task) = startWaiter(gate, key, tokens: 0, priority: .interactive)
        await eventually("i2 queued") { gate.currentState(for: key).queued == 2 }
        clock.advance(by: .seconds(6))  // t = 31: b promoted (by the key's timer), and it arrived before i2
        await eventually("b promoted") { gate.currentState(for: key).promotedBatch == 1 }
        i1.release()
        await bTask.value
        #expect(b.hasPermit && !i2.isDone)
        b.release()
        await i2Task.value
        #expect(i2.hasPermit)
        i2.release()
        let acquired = telemetry.events.compactMap { event -> PolicyAcquireEvent? in
            if case .acquire(let acquired) = event { return acquired }
            return nil
        }
        #expect(acquired.map(\.priority) == [.interactive, .interactive, .batch, .interactive])
        #expect(acquired[2].waited == .seconds(31))
        _ = holder
    }

    @Test("aging lets a batch call into the reserve at its promotion instant, by the clock alone")
    func agingReachesTheReserve() async throws {
        let gate = try PolicyService(
            limits: ["p": PolicyLimits(tokensPerMinute: 1_000, reservedForInteractive: 0.2, batchAging: .seconds(30))], clock: clock)
        _ = try gate.tryAcquire(key, estimatedTokens: 700)
        let (b, task) = startWaiter(gate, key, tokens: 300, priority: .batch)
        await eventually("queued") { gate.currentState(for: key).queued == 1 }
        clock.advance(by: .seconds(29))
        for _ in 0..<100 { await Task.yield() }
        #expect(!b.isDone)
        clock.advance(by: .seconds(1))
        await task.value
        #expect(b.hasPermit)
        #expect(gate.currentState(for: key)[.minute]?.tokens.used == 1_000)
    }

    @Test("a batch estimate above its reduced cap is refused by tryAcquire, refused at once with a shorter wait, admitted after aging")
    func estimateAboveTheReducedCap() async throws {
        let telemetry = TelemetryRecorder()
        let gate = try PolicyService(
            limits: ["p": PolicyLimits(tokensPerMinute: 1_000, reservedForInteractive: 0.2)], clock: clock, telemetry: telemetry)
        let now = try #require(throws: PolicyError.self) { _ = try gate.tryAcquire(key, estimatedTokens: 900, priority: .batch) }
        #expect(now.code == .rateLimited && now.limit == .tokensPerMinute && now.message.contains("batch"), "\(now)")
        await #expect(throws: PolicyError.self) {
            _ = try await gate.acquire(key, estimatedTokens: 900, maxWait: .seconds(10), priority: .batch)
        }
        let oversized = await #expect(throws: PolicyError.self) {
            _ = try await gate.acquire(key, estimatedTokens: 1_100, priority: .batch)
        }
        #expect(oversized?.code == .oversized)
        let rejects = telemetry.events.compactMap { event -> PolicyRejectEvent? in
            if case .reject(let rejected) = event { return rejected }
            return nil
        }
        #expect(rejects.count == 3 && rejects.allSatisfy { $0.priority == .batch })
        #expect(rejects[1].error.code == .rateLimited)
        let (b, task) = startWaiter(gate, key, tokens: 900, priority: .batch)
        await eventually("queued") { gate.currentState(for: key).queued == 1 }
        clock.advance(by: PolicyLimits.defaultBatchAging)
        await task.value
        #expect(b.hasPermit)
    }

    @Test("withPermit and the input/output estimates take a priority too")
    func everyEntryPoint() async throws {
        let gate = try PolicyService(
            limits: ["p": PolicyLimits(inputTokensPerMinute: 100, outputTokensPerMinute: 100, reservedForInteractive: 0.5)], clock: clock)
        try await gate.withPermit(key, estimatedInputTokens: 50, estimatedOutputTokens: 10, priority: .batch) { _ in }
        #expect(throws: PolicyError.self) {
            _ = try gate.tryAcquire(key, estimatedInputTokens: 1, estimatedOutputTokens: 1, priority: .batch)
        }
        _ = try gate.tryAcquire(key, estimatedInputTokens: 50, estimatedOutputTokens: 10)
        let deadline = clock.now.advanced(by: .seconds(1))
        await #expect(throws: PolicyError.self) {
            _ = try await gate.acquire(key, estimatedInputTokens: 1, estimatedOutputTokens: 1, deadline: deadline, priority: .batch)
        }
    }

    @Test("invalid shares and agings are refused with invalidLimits")
    func validation() {
        for limits in [
            PolicyLimits(requestsPerMinute: 1, reservedForInteractive: 1),
            PolicyLimits(requestsPerMinute: 1, reservedForInteractive: -0.1),
            PolicyLimits(requestsPerMinute: 1, reservedForInteractive: .nan),
            PolicyLimits(requestsPerMinute: 1, batchAging: .zero),
            PolicyLimits(requestsPerMinute: 1, batchAging: .seconds(86_401)),
        ] {
            let error = #expect(throws: PolicyError.self) { _ = try PolicyService(limits: ["p": limits], clock: clock) }
            #expect(error?.code == .invalidLimits, "\(limits)")
        }
    }
}

@Suite("Reading reserved_for_interactive and batch_aging_seconds")
struct PriorityConfigurationTests {
    @Test("both keys read into the provider's limits and survive a reload into the gate")
    func reads() async throws {
        let configuration = try PolicyConfiguration(
            toml: """
                [limits.openai]
                requests_per_minute = 500
                reserved_for_interactive = 0.2
                batch_aging_seconds = 45
                """)
        let limits = try #require(configuration.limits["openai"])
        #expect(limits.reservedForInteractive == 0.2 && limits.batchAging == .seconds(45))
        let gate = try PolicyService(configuration: configuration, clock: ManualClock())
        #expect(gate.limits(for: "openai")?.reservedForInteractive == 0.2)
        #expect(try JSONDecoder().decode(PolicyLimits.self, from: JSONEncoder().encode(limits)) == limits)
    }

    @Test("every problem at once, with line, column and a suggestion")
    func problems() throws {
        let text = """
            [limits.openai]
            requests_per_minute = 500
            reserved_for_interactiv = 0.2
            batch_aging_seconds = 0

            [limits.anthropic]
            requests_per_minute = 50
            reserved_for_interactive = 1.5

            [[limits.anthropic.schedule]]
            name = "night"
            cron = "* 0-6 * * *"
            requests_per_minute = 10
            reserved_for_interactive = 0.5
            """
        let error = try #require(throws: PolicyConfigurationError.self) { try PolicyConfiguration(toml: text) }
        let summary = error.diagnostics.map { "\($0.line ?? 0):\($0.column ?? 0) \($0.keyPath) \($0.suggestion ?? "")" }
        #expect(
            summary == [
                "3:1 limits.openai.reserved_for_interactiv reserved_for_interactive",
                "4:1 limits.openai.batch_aging_seconds ",
                "8:1 limits.anthropic.reserved_for_interactive ",
                "14:1 limits.anthropic.schedule[0].reserved_for_interactive ",
            ], "\(error.diagnostics)")
        #expect(error.diagnostics[1].message == "must be a positive number of seconds, at most 86400, got 0.0")
        #expect(error.diagnostics[2].message == "must be a share of every cap in 0 ..< 1, such as 0.2, got 1.5")
    }

    @Test("a reserve that takes a whole cap is a warning; a shared provider's reserve is an error")
    func warningsAndSharedStores() throws {
        let warned = try PolicyConfiguration(
            toml: """
                [limits.openai]
                max_concurrent = 1
                reserved_for_interactive = 0.2
                """)
        #expect(
            warned.warnings.map(\.description) == [
                "3:1: warning: limits.openai.reserved_for_interactive: leaves batch calls none of max_concurrent = 1: they are admitted only once promoted by batch_aging_seconds"
            ])
        let shared = try #require(throws: PolicyConfigurationError.self) {
            try PolicyConfiguration(
                toml: """
                    [store]
                    default = "postgres"

                    [limits.openai]
                    requests_per_minute = 500
                    reserved_for_interactive = 0.2
                    """)
        }
        #expect(shared.diagnostics.map(\.keyPath) == ["limits.openai.reserved_for_interactive"])
        #expect(shared.diagnostics.first?.message.contains("shared store") == true)
    }
}
