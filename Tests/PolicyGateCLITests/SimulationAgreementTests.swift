import Foundation
import PolicyGate
import PolicyGateCLI
import PolicyGateTestKit
import Testing

/// The simulator against the real thing: the same calls replayed by one task per call, each
/// calling `acquire` (with its `maxWait`) on a `ManualClock`, holding the permit for the call's
/// duration, committing and releasing; cancelled at `cancel_after`. Admission instants and
/// outcomes must be the same.
@Suite("Simulation: agreement with acquire", .serialized, .timeLimit(.minutes(5)))
struct SimulationAgreementTests {
    static func call(
        _ at: Double, _ estimate: Int = 100, _ actual: Int = 100, _ duration: Double = 1, scope: PolicyScope = .global,
        maxWait: Double? = nil, cancelAfter: Double? = nil
    ) -> SimulatedCall {
        func seconds(_ value: Double) -> Duration { .milliseconds(Int64((value * 1_000).rounded())) }
        return SimulatedCall(
            at: seconds(at), provider: "p", scope: scope, estimatedTokens: estimate, actualTokens: actual,
            duration: seconds(duration), maxWait: maxWait.map(seconds), cancelAfter: cancelAfter.map(seconds))
    }

    static func compare(
        _ toml: String, _ calls: [SimulatedCall], start: Date = SyntheticWorkload.startDate
    ) async throws -> [CallOutcome] {
        let configuration = try PolicyConfiguration(toml: toml)
        let simulated = try Simulation(configuration: configuration, options: SimulationOptions(startDate: start))
            .runWithOutcomes(calls).outcomes
        let real = try await AcquireReplay.run(configuration, calls, start: start)
        #expect(simulated == real)
        return simulated
    }

    @Test("10 calls at 0 under requests_per_minute = 5")
    func requestsPerMinute() async throws {
        let outcomes = try await Self.compare("[limits.p]\nrequests_per_minute = 5", (0..<10).map { _ in Self.call(0) })
        #expect(outcomes.map(\.admittedAt) == Array(repeating: .zero, count: 5) + Array(repeating: .seconds(61), count: 5))
    }

    @Test("max_concurrent 2 with 10 s calls")
    func concurrency() async throws {
        _ = try await Self.compare("[limits.p]\nmax_concurrent = 2", (0..<5).map { _ in Self.call(0, 100, 100, 10) })
    }

    @Test("Token caps with commits below and above the estimate")
    func tokens() async throws {
        _ = try await Self.compare(
            "[limits.p]\ntokens_per_minute = 1000",
            [
                Self.call(0, 800, 200, 5), Self.call(1, 700, 700, 1), Self.call(7, 300, 900, 1), Self.call(9.5, 200, 200, 1),
            ])
    }

    @Test("Requests, tokens and slots together, with max_wait refusals and a timeout")
    func mixed() async throws {
        let outcomes = try await Self.compare(
            "[limits.p]\nrequests_per_minute = 4\ntokens_per_minute = 3000\nmax_concurrent = 2",
            [
                Self.call(0, 900, 700, 7.3), Self.call(0.4, 800, 1_000, 3.1), Self.call(1.1, 600, 500, 2.2),
                Self.call(1.7, 1_200, 900, 4.4, maxWait: 2), Self.call(2.3, 500, 400, 1.9, cancelAfter: 30),
                Self.call(6.1, 700, 600, 2), Self.call(8, 2_000, 1_800, 1, maxWait: 20), Self.call(9.5, 400, 300, 1.5),
                Self.call(62.7, 2_500, 2_400, 2), Self.call(70.2, 100, 100, 1, scope: .user("other")),
            ])
        #expect(
            outcomes.map(\.kind) == [
                .completed, .completed, .completed, .timedOut, .completed, .completed, .rejected, .completed, .completed,
                .completed,
            ])
    }

    @Test("cancel_after while waiting and while running")
    func cancellation() async throws {
        _ = try await Self.compare(
            "[limits.p]\nmax_concurrent = 1\ntokens_per_day = 1_000_000",
            [
                Self.call(0, 100, 50, 10), Self.call(1, 100, 80, 1, cancelAfter: 5),
                Self.call(2, 300, 250, 10, cancelAfter: 12), Self.call(3, 100, 70, 1),
            ])
    }

    @Test("A closed schedule entry, and a transition that raises max_concurrent")
    func schedules() async throws {
        let closed = """
            [limits.p]
            max_concurrent = 10

            [[limits.p.schedule]]
            name   = "maintenance"
            cron   = "0-9 * * * *"
            closed = true
            """
        let outcomes = try await Self.compare(
            closed, [Self.call(0), Self.call(0.5, maxWait: 60), Self.call(400)],
            start: try #require(Values.parseInstant("2026-01-05T00:05:00Z")))
        #expect(outcomes.map(\.kind) == [.completed, .rejected, .completed])
        let transition = """
            [limits.p]
            max_concurrent = 2

            [[limits.p.schedule]]
            name = "midnight-hour"
            cron = "* 0 * * *"
            max_concurrent = 1
            """
        _ = try await Self.compare(
            transition, [Self.call(0, 100, 100, 600), Self.call(1)],
            start: try #require(Values.parseInstant("2026-01-05T00:59:00Z")))
    }

    @Test("Input and output caps, calls with parts and without, behind a head waiting for input capacity")
    func inputOutput() async throws {
        // The head (1 s) waits for input capacity until 61 s. Behind it: a call with less input
        // but far more output, and more tokens in all, that fits now (the gate must not be asked:
        // it would admit it ahead of the head); a call needing at least as much of each, refused
        // on arrival since it cannot fit within its max_wait; a call needing no more of any,
        // which fits no later than the head; and total-only calls, which count their total as
        // input and as output. Commits lower only the output, overrun the input, and read from
        // the cache, which does not count as input here.
        func split(
            _ at: Double, _ input: Int, _ output: Int, actual: (Int, Int, Int)? = nil, _ duration: Double = 1,
            maxWait: Double? = nil
        ) -> SimulatedCall {
            Self.call(at, 0, 0, duration, maxWait: maxWait).withParts(
                estimated: SimulatedTokenParts(input: input, output: output),
                actual: SimulatedTokenParts(
                    input: actual?.0 ?? input, output: actual?.1 ?? output, cacheReads: actual?.2 ?? 0))
        }
        let toml = """
            [limits.p]
            input_tokens_per_minute  = 1000
            output_tokens_per_minute = 2000
            tokens_per_minute        = 3000
            count_cache_reads        = false
            """
        let outcomes = try await Self.compare(
            toml,
            [
                split(0, 800, 10, actual: (800, 5, 400)),
                split(1, 900, 50),
                split(2, 50, 1_000, maxWait: 100),
                split(3, 950, 60, maxWait: 10),
                split(4, 40, 40, actual: (60, 20, 0), maxWait: 120),
                Self.call(5, 900, 300, 1, maxWait: 200),
                Self.call(6, 30, 30, 1),
                split(300, 100, 100, actual: (100, 50, 0), maxWait: 5),
            ])
        #expect(
            outcomes.map(\.kind) == [
                .completed, .completed, .completed, .rejected, .completed, .completed, .completed, .completed,
            ])
        #expect(outcomes[2].admittedAt == outcomes[1].admittedAt)
    }

    @Test("Known difference: a call with max_wait that finds every slot taken")
    func knownDifference() async throws {
        // The window frees at 61 s, after the second call's deadline (1 + 10 s). `acquire` sees
        // that at once and refuses; the simulator cannot ask the gate about the windows while the
        // slot is taken, so the call waits and times out at 11 s. Neither admits it.
        let configuration = try PolicyConfiguration(toml: "[limits.p]\nrequests_per_minute = 1\nmax_concurrent = 1")
        let calls = [Self.call(0, 100, 100, 30), Self.call(1, maxWait: 10)]
        let simulated = try Simulation(configuration: configuration).runWithOutcomes(calls).outcomes
        let real = try await AcquireReplay.run(configuration, calls, start: SyntheticWorkload.startDate)
        #expect(simulated[1] == CallOutcome(.timedOut, limit: "max_concurrent"))
        #expect(real[1].kind == .rejected)
        #expect(simulated[0] == real[0])
    }
}

/// One task per call on a manual clock, driven step by step: at each instant, calls that end
/// complete (commit, release), then calls arrive in order, then waiting calls give up; the
/// clock then moves to the next instant anything happens (a call's end, an arrival, a
/// cancellation, or a timer of the gate).
final class AcquireReplay: Sendable {
    struct Entry: Sendable {
        var inAcquire = false
        var admittedAt: Duration?
        var kind: CallOutcome.Kind?
        var limit: String?
        var finisher: CheckedContinuation<Bool, Never>?
        var signalled = false
    }

    let clock = ManualClock()
    let gate: PolicyService
    let calls: [SimulatedCall]
    let keys: [PolicyKey]
    let entries: Locked<[Entry]>
    let tasks = Locked<[Int: Task<Void, Never>]>([:])

    init(_ configuration: PolicyConfiguration, _ calls: [SimulatedCall], start: Date) throws {
        gate = try PolicyService(configuration: configuration, clock: clock, startDate: start)
        self.calls = calls
        keys = Array(Set(calls.map(\.key)))
        entries = Locked(Array(repeating: Entry(), count: calls.count))
    }

    static func run(_ configuration: PolicyConfiguration, _ calls: [SimulatedCall], start: Date) async throws -> [CallOutcome] {
        let replay = try AcquireReplay(configuration, calls, start: start)
        try await replay.drive()
        return replay.entries.withLock { entries in
            entries.map { CallOutcome($0.kind ?? .unfinished, admittedAt: $0.admittedAt, limit: $0.limit) }
        }
    }

    private func start(_ c: Int) {
        entries.withLock { $0[c].inAcquire = true }
        let call = calls[c]
        let task = Task { [self] in
            do {
                var permit =
                    if let parts = call.estimatedParts {
                        try await gate.acquire(
                            call.key, estimatedInputTokens: parts.input, estimatedOutputTokens: parts.output, maxWait: call.maxWait)
                    } else {
                        try await gate.acquire(call.key, estimatedTokens: call.estimatedTokens, maxWait: call.maxWait)
                    }
                let now = clock.now.offset
                let commit = await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                    entries.withLock { entries in
                        entries[c].inAcquire = false
                        entries[c].admittedAt = now
                        entries[c].finisher = continuation
                    }
                }
                if commit, let parts = call.actualParts {
                    try permit.commitTokens(input: parts.input, output: parts.output, cacheReads: parts.cacheReads)
                } else if commit {
                    try permit.commitTokens(call.actualTokens)
                }
                permit.release()
                entries.withLock { $0[c].kind = commit ? .completed : .cutShort }
            } catch let error as PolicyError {
                let kind: CallOutcome.Kind =
                    switch error.code {
                    case .timedOut: .timedOut
                    case .rateLimited: .rejected
                    case .oversized: .oversized
                    default: .invalid
                    }
                entries.withLock { entries in
                    entries[c].inAcquire = false
                    entries[c].kind = kind
                    if kind != .invalid {
                        entries[c].limit = error.limit?.configurationKey ?? (error.closedBy != nil ? "closed" : nil)
                    }
                }
            } catch {
                entries.withLock { entries in
                    entries[c].inAcquire = false
                    entries[c].kind = .cancelled
                }
            }
        }
        tasks.withLock { $0[c] = task }
    }

    /// When call `c` stops running, once admitted: its end, or its cancellation.
    private func end(of c: Int, admittedAt: Duration) -> (at: Duration, commit: Bool) {
        let ends = admittedAt + calls[c].duration
        if let cancelAfter = calls[c].cancelAfter, calls[c].at + cancelAfter < ends {
            return (max(admittedAt, calls[c].at + cancelAfter), false)
        }
        return (ends, true)
    }

    private func drive() async throws {
        let order = calls.indices.sorted { (calls[$0].at, $0) < (calls[$1].at, $1) }
        var nextArrival = 0
        while true {
            let now = clock.now.offset
            let snapshot = entries.withLock { $0 }
            if nextArrival == order.count && snapshot.allSatisfy({ $0.kind != nil }) { break }
            var next: [Duration] = []
            if nextArrival < order.count { next.append(calls[order[nextArrival]].at) }
            for (c, entry) in snapshot.enumerated() {
                if let admittedAt = entry.admittedAt, !entry.signalled { next.append(end(of: c, admittedAt: admittedAt).at) }
                if entry.inAcquire, let cancelAfter = calls[c].cancelAfter { next.append(calls[c].at + cancelAfter) }
            }
            if let timer = clock.nextDeadline?.offset, timer > now { next.append(timer) }
            guard let instant = next.filter({ $0 >= now }).min() else {
                Issue.record("calls left that can never end: \(snapshot)")
                return
            }
            if instant > now {
                clock.advance(to: ManualClock.Instant(offset: instant))
                try await settle()
            }
            for (c, entry) in entries.withLock({ $0 }).enumerated() {
                guard let admittedAt = entry.admittedAt, !entry.signalled else { continue }
                let (at, commit) = end(of: c, admittedAt: admittedAt)
                guard at == instant else { continue }
                let finisher = entries.withLock { entries in
                    entries[c].signalled = true
                    return entries[c].finisher
                }
                finisher?.resume(returning: commit)
                try await settle()
            }
            while nextArrival < order.count && calls[order[nextArrival]].at == instant {
                start(order[nextArrival])
                nextArrival += 1
                try await settle()
            }
            for (c, entry) in entries.withLock({ $0 }).enumerated() {
                guard entry.inAcquire, let cancelAfter = calls[c].cancelAfter, calls[c].at + cancelAfter == instant else { continue }
                tasks.withLock { $0[c] }?.cancel()
                try await settle()
            }
        }
    }

    /// Waits until every task is parked where the driver expects it (in the gate's queue,
    /// waiting for its end, or done) and nothing has moved for a while: timers and resumed
    /// tasks run on other threads.
    private func settle() async throws {
        struct State: Equatable {
            var entries: [String]
            var gate: [String]
            var sleepers: Int
        }
        var previous: State?
        var quiet = 0
        for _ in 0..<10_000 {
            try await Task.sleep(for: .milliseconds(1))
            let entries = self.entries.withLock { $0 }
            let states = keys.map { gate.currentState(for: $0) }
            let state = State(
                entries: entries.map {
                    "\($0.inAcquire) \($0.admittedAt.map { "\($0)" } ?? "-") \($0.kind.map { "\($0)" } ?? "-") \($0.finisher != nil)"
                },
                gate: states.map { "\($0.queued) \($0.inFlight)" }, sleepers: clock.sleeperCount)
            let parked =
                states.reduce(0) { $0 + $1.queued } == entries.filter(\.inAcquire).count
                && entries.allSatisfy { $0.admittedAt == nil || $0.finisher != nil }
                && entries.allSatisfy { !$0.signalled || $0.kind != nil }
            if parked && state == previous {
                quiet += 1
                if quiet >= 10 { return }
            } else {
                quiet = 0
            }
            previous = state
        }
        Issue.record("the tasks did not settle")
    }
}
