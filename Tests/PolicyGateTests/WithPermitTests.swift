import PolicyGate
import PolicyGateTestKit
import Synchronization
import Testing

/// Scoped use: `withPermit` holds the permit exactly for its body; the clamping commit never
/// throws; and the documented ways to hold a permit in a task group, a `Task` and a stored
/// property, compiled and run.
@Suite("Scoped permits", .timeLimit(.minutes(5)))
struct WithPermitTests {
    let key = PolicyKey(provider: "openai", scope: .user("u"))
    let limits = PolicyLimits(tokensPerMinute: 100_000, inputTokensPerMinute: 50_000, maxConcurrent: 2)

    struct Failure: Error {}

    @Test("returns the body's value, with the slot held during the body and released after it")
    func returnsAndReleases() async throws {
        let gate = try PolicyService(limits: ["openai": limits], clock: ManualClock())
        let value = try await gate.withPermit(key, estimatedTokens: 500) { permit in
            #expect(gate.currentState(for: key).inFlight == 1)
            try permit.commitTokens(420)
            return "reply"
        }
        #expect(value == "reply")
        #expect(gate.currentState(for: key).inFlight == 0)
        #expect(gate.currentState(for: key).windows.first?.tokens.used == 420)
    }

    @Test("released when the body throws; a call that commits nothing counts its estimate")
    func releasedOnThrow() async throws {
        let gate = try PolicyService(limits: ["openai": limits], clock: ManualClock())
        await #expect(throws: Failure.self) {
            try await gate.withPermit(key, estimatedTokens: 300) { _ in throw Failure() }
        }
        #expect(gate.currentState(for: key).inFlight == 0)
        #expect(gate.currentState(for: key).windows.first?.tokens.used == 300)
    }

    @Test("released when the task is cancelled during the body")
    func releasedOnCancellation() async throws {
        let gate = try PolicyService(limits: ["openai": limits], clock: ManualClock())
        let started = AsyncStream<Void>.makeStream()
        let task = Task {
            try await gate.withPermit(key, estimatedTokens: 100) { _ in
                started.continuation.yield()
                // Waits until cancelled (a cancelled stream iteration ends).
                for await _ in AsyncStream<Void>.makeStream().stream {}
                try Task.checkCancellation()
            }
        }
        for await _ in started.stream { break }
        #expect(gate.currentState(for: key).inFlight == 1)
        task.cancel()
        await #expect(throws: CancellationError.self) { try await task.value }
        #expect(gate.currentState(for: key).inFlight == 0)
    }

    @Test("estimates in parts count against the input cap; a refused acquire never runs the body")
    func splitEstimate() async throws {
        let gate = try PolicyService(limits: ["openai": limits], clock: ManualClock())
        let counted = try await gate.withPermit(key, estimatedInputTokens: 2_000, estimatedOutputTokens: 500) { permit in
            #expect(gate.currentState(for: key).windows.first?.inputTokens?.used == 2_000)
            return permit.commitTokensClamping(input: 1_500, output: 200, cacheReads: 100)
        }
        #expect(counted == 1_800)
        let ran = Mutex(false)
        await #expect(throws: PolicyError.self) {
            try await gate.withPermit(key, estimatedInputTokens: 60_000, estimatedOutputTokens: 1, maxWait: .zero) { _ in
                ran.withLock { $0 = true }
            }
        }
        #expect(!ran.withLock { $0 })
    }

    @Test("the clamping commit records what it can and reports what it clamped")
    func clampingCommit() async throws {
        let telemetry = TelemetryRecorder()
        let gate = try PolicyService(limits: ["openai": limits], clock: ManualClock(), telemetry: telemetry)
        try await gate.withPermit(key, estimatedTokens: 500) { permit in
            #expect(permit.commitTokensClamping(-5) == 0)
            #expect(permit.commitTokensClamping(input: PolicyLimits.maximumTokenCount + 1, output: 10) > 0)
        }
        let rejects = telemetry.rejects
        #expect(rejects.count == 2)
        #expect(rejects.allSatisfy { $0.error.code == .invalidTokenCount && $0.key == key })
        #expect(rejects.first?.error.message.contains("clamped to 0") == true)
    }

    // MARK: Holding a permit elsewhere (the examples in `withPermit`'s documentation)

    @Test("in a task group: each child acquires and releases its own")
    func inTaskGroup() async throws {
        let gate = try PolicyService(limits: ["openai": limits], clock: ManualClock())
        let total = try await withThrowingTaskGroup(of: Int.self) { group in
            for n in 1...5 {
                group.addTask {
                    try await gate.withPermit(key, estimatedTokens: 100) { permit in
                        try permit.commitTokens(n * 10)
                        return n * 10
                    }
                }
            }
            return try await group.reduce(0, +)
        }
        #expect(total == 150)
        #expect(gate.currentState(for: key).inFlight == 0)
        #expect(gate.currentState(for: key).windows.first?.tokens.used == 150)
    }

    @Test("in a Task: acquired inside it, or moved in explicitly and released when the task ends")
    func inTask() async throws {
        let gate = try PolicyService(limits: ["openai": limits], clock: ManualClock())
        // Best: acquire inside the task.
        let inside = Task {
            try await gate.withPermit(key, estimatedTokens: 100) { permit in permit.commitTokensClamping(70) }
        }
        #expect(try await inside.value == 70)
        // Moved in: the task can read it and feed back headers (a captured permit cannot be
        // mutated, so commit through a holder), and it is released when the task ends.
        let permit = try await gate.acquire(key, estimatedTokens: 100)
        let (resumed, resume) = AsyncStream<Void>.makeStream()
        let moved = Task { [permit = consume permit] in
            for await _ in resumed { break }
            permit.observe(headers: ["x-ratelimit-remaining-requests": "99"])
            return permit.estimatedTokens
        }
        #expect(gate.currentState(for: key).inFlight == 1)
        resume.yield()
        #expect(await moved.value == 100)
        #expect(gate.currentState(for: key).inFlight == 0)
        // Committed in a task through a class holder.
        let holder = Conversation(permit: try await gate.acquire(key, estimatedTokens: 100))
        await Task { holder.finish(tokens: 30) }.value
        #expect(gate.currentState(for: key).inFlight == 0)
        #expect(gate.currentState(for: key).windows.first?.tokens.used == 200)
    }

    /// A stored property: a class keeps the permit in a `Mutex<PolicyPermit?>`.
    final class Conversation: Sendable {
        let permit: Mutex<PolicyPermit?>
        init(permit: consuming PolicyPermit) { self.permit = Mutex(Optional(permit)) }
        func finish(tokens: Int) {
            guard var permit = permit.withLock({ $0.take() }) else { return }
            permit.commitTokensClamping(tokens)
            permit.release()
        }
    }

    /// …or a `~Copyable` struct holds it as a field.
    struct Turn: ~Copyable {
        var permit: PolicyPermit
        let label: String
    }

    @Test("in a stored property: a class with a Mutex, or a ~Copyable struct")
    func inStoredProperty() async throws {
        let gate = try PolicyService(limits: ["openai": limits], clock: ManualClock())
        let conversation = Conversation(permit: try await gate.acquire(key, estimatedTokens: 100))
        var turn = Turn(permit: try await gate.acquire(key, estimatedTokens: 100), label: "t1")
        #expect(gate.currentState(for: key).inFlight == 2)
        conversation.finish(tokens: 40)
        #expect(gate.currentState(for: key).inFlight == 1)
        try turn.permit.commitTokens(30)
        _ = consume turn
        #expect(gate.currentState(for: key).inFlight == 0)
        #expect(gate.currentState(for: key).windows.first?.tokens.used == 70)
    }
}
