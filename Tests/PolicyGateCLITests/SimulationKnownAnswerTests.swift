import Foundation
import PolicyGate
import PolicyGateCLI
import Testing

/// Scenarios small enough to work out by hand, replayed through the simulator.
///
/// The gate counts a call in one-second buckets of the minute window (1/60 of it) until its
/// bucket leaves the window, 60 to 61 s after the call: a call admitted at 0 s frees its place
/// at exactly 61 s (never before 60 s). The answers below follow from that.
@Suite("Simulation: known answers")
struct SimulationKnownAnswerTests {
    static func simulate(
        _ toml: String, _ calls: [SimulatedCall], start: Date = SyntheticWorkload.startDate
    ) throws -> (report: SimulationReport, outcomes: [CallOutcome]) {
        let configuration = try PolicyConfiguration(toml: toml)
        return try Simulation(configuration: configuration, options: SimulationOptions(startDate: start)).runWithOutcomes(calls)
    }

    static func call(
        _ at: Duration, _ provider: String = "p", scope: PolicyScope = .global, estimate: Int = 100, actual: Int = 100,
        duration: Duration = .seconds(1), maxWait: Duration? = nil, cancelAfter: Duration? = nil
    ) -> SimulatedCall {
        SimulatedCall(
            at: at, provider: provider, scope: scope, estimatedTokens: estimate, actualTokens: actual, duration: duration,
            maxWait: maxWait, cancelAfter: cancelAfter)
    }

    @Test("10 calls at 0 under requests_per_minute = 5: 5 admitted at 0, 5 at 61 s, wait p50 61 s")
    func requestsPerMinute() throws {
        let calls = (0..<10).map { _ in Self.call(.zero) }
        let (report, outcomes) = try Self.simulate("[limits.p]\nrequests_per_minute = 5", calls)
        #expect(outcomes.prefix(5).allSatisfy { $0 == CallOutcome(.completed, admittedAt: .zero) })
        // The "5 at 60 s": the gate guarantees no earlier than 60 s and no later than
        // 60 s + 1/60 of the window; for calls counted at 0 s that is exactly 61 s.
        #expect(outcomes.suffix(5).allSatisfy { $0 == CallOutcome(.completed, admittedAt: .seconds(61)) })
        let p = try #require(report[provider: "p"])
        #expect(p.calls == 10 && p.admitted == 10 && p.admittedAtOnce == 5)
        #expect(p.delayed == ["requests_per_minute": 5])
        #expect(p.wait.p50 == 61 && p.wait.p95 == 61 && p.wait.p99 == 61 && p.wait.max == 61 && p.wait.mean == 30.5)
        #expect(p.peakQueued == 5 && p.peakQueuedAt == 0)
        #expect(p.peakInFlight == 5 && p.peakInFlightAt == 0)
        let rpm = try #require(p[limit: "requests_per_minute"])
        #expect(rpm.cap == 5 && rpm.peakUsed == 5 && rpm.peakAt == 0 && rpm.capAtPeak == 5)
        #expect(rpm.firstHitAt == 0 && rpm.hits == 5)
        #expect(report.simulatedSeconds == 62)
        #expect(p.committedTokens == 1_000 && p.estimatedTokens == 1_000)
    }

    @Test("max_concurrent 2, five 10 s calls at 0: admitted at 0, 0, 10, 10, 20 s")
    func concurrency() throws {
        let calls = (0..<5).map { _ in Self.call(.zero, duration: .seconds(10)) }
        let (report, outcomes) = try Self.simulate("[limits.p]\nmax_concurrent = 2", calls)
        #expect(outcomes.map(\.admittedAt) == [0, 0, 10, 10, 20].map { Duration.seconds($0) })
        let p = try #require(report[provider: "p"])
        #expect(p.delayed == ["max_concurrent": 3])
        // Waits 0, 0, 10, 10, 20: p50 is the 3rd (index ⌊0.5·5⌋ = 2), p95 the 5th.
        #expect(p.wait.p50 == 10 && p.wait.p95 == 20 && p.wait.max == 20 && p.wait.mean == 8)
        #expect(p.peakInFlight == 2 && p.peakQueued == 3)
        let slots = try #require(p[limit: "max_concurrent"])
        #expect(slots.peakUsed == 2 && slots.cap == 2 && slots.firstHitAt == 0 && slots.hits == 3)
        #expect(report.simulatedSeconds == 30)
        #expect(p.timeline.queued.prefix(3) == [3, 3, 3])  // samples at 0, 1, 2 s
    }

    @Test("A commit below the estimate frees token capacity at once; an overrun holds the next call back")
    func tokenCommits() throws {
        let toml = "[limits.p]\ntokens_per_minute = 1000"
        // A counts 800 until it completes at 5 s and commits 200; B (700) fits then: 200 + 700.
        let lower = try Self.simulate(
            toml,
            [
                Self.call(.zero, estimate: 800, actual: 200, duration: .seconds(5)),
                Self.call(.seconds(1), estimate: 700, actual: 700),
            ])
        #expect(lower.outcomes[1].admittedAt == .seconds(5))
        #expect(lower.report[provider: "p"]?.delayed == ["tokens_per_minute": 1])
        #expect(lower.report[provider: "p"]?.committedTokens == 900)
        #expect(lower.report[provider: "p"]?[limit: "tokens_per_minute"]?.firstHitAt == 1)
        // Committing all 800 leaves no room for B until A's bucket leaves the window, at 61 s.
        let same = try Self.simulate(
            toml,
            [
                Self.call(.zero, estimate: 800, actual: 800, duration: .seconds(5)),
                Self.call(.seconds(1), estimate: 700, actual: 700),
            ])
        #expect(same.outcomes[1].admittedAt == .seconds(61))
        // An estimate of 300 that commits 900 at 1 s: B (200) arriving at 2 s waits for 61 s.
        let overrun = try Self.simulate(
            toml,
            [
                Self.call(.zero, estimate: 300, actual: 900, duration: .seconds(1)),
                Self.call(.seconds(2), estimate: 200, actual: 200),
            ])
        #expect(overrun.outcomes[1].admittedAt == .seconds(61))
        #expect(overrun.report[provider: "p"]?[limit: "tokens_per_minute"]?.peakUsed == 900)
    }

    @Test("max_wait: refused at once when the window cannot free in time, else waits, and times out")
    func maxWait() throws {
        let (report, outcomes) = try Self.simulate(
            "[limits.p]\nrequests_per_minute = 1",
            [
                Self.call(.zero),
                // The window frees at 61 s: 60 s away, more than 10 s.
                Self.call(.seconds(1), maxWait: .seconds(10)),
                // 61 s is within 2 + 100 s: it waits and is admitted then.
                Self.call(.seconds(2), maxWait: .seconds(100)),
                // Behind it; next room at 122 s (its bucket at 61 s leaves then), after 3 + 70 s.
                Self.call(.seconds(3), maxWait: .seconds(70)),
                // Behind a queue with no wait allowed at all.
                Self.call(.seconds(4), maxWait: .zero),
            ])
        #expect(
            outcomes == [
                CallOutcome(.completed, admittedAt: .zero),
                CallOutcome(.rejected, limit: "requests_per_minute"),
                CallOutcome(.completed, admittedAt: .seconds(61)),
                CallOutcome(.timedOut, limit: "requests_per_minute"),
                CallOutcome(.rejected, limit: "requests_per_minute"),
            ])
        let p = try #require(report[provider: "p"])
        #expect(p.rejected == ["requests_per_minute": 2] && p.timedOut == ["requests_per_minute": 1])
        #expect(p.delayed == ["requests_per_minute": 2] && p.admitted == 2 && p.refused == 2)
        #expect(p[limit: "requests_per_minute"]?.hits == 4)
        #expect(report.simulatedSeconds == 73)  // the last event: the timeout
    }

    @Test("A waiter is still admitted at the very instant its max_wait ends")
    func admittedAtDeadline() throws {
        let (_, outcomes) = try Self.simulate(
            "[limits.p]\nrequests_per_minute = 1",
            [
                Self.call(.zero),
                Self.call(.seconds(1), maxWait: .seconds(60)),  // room at 61 s = 1 + 60 s
            ])
        #expect(outcomes[1] == CallOutcome(.completed, admittedAt: .seconds(61)))
    }

    @Test("cancel_after: while waiting the call leaves having used nothing; while running it is cut short")
    func cancelAfter() throws {
        let (report, outcomes) = try Self.simulate(
            "[limits.p]\nmax_concurrent = 1\ntokens_per_day = 1_000_000",
            [
                Self.call(.zero, estimate: 100, actual: 50, duration: .seconds(10)),
                Self.call(.seconds(1), estimate: 100, actual: 80, cancelAfter: .seconds(5)),  // gives up at 6 s
                Self.call(.seconds(2), estimate: 300, actual: 250, duration: .seconds(10), cancelAfter: .seconds(12)),
                Self.call(.seconds(3), estimate: 100, actual: 70),
            ])
        #expect(
            outcomes == [
                CallOutcome(.completed, admittedAt: .zero),
                CallOutcome(.cancelled),
                CallOutcome(.cutShort, admittedAt: .seconds(10)),  // admitted at 10 s, stopped at 14 s
                CallOutcome(.completed, admittedAt: .seconds(14)),
            ])
        let p = try #require(report[provider: "p"])
        #expect(p.cancelled == 1 && p.cutShort == 1 && p.admitted == 3)
        // 50 committed, 300 (the estimate of the call cut short, no reply), 70 committed.
        #expect(p.committedTokens == 420 && p.estimatedTokens == 500)
        #expect(report.simulatedSeconds == 15)
    }

    static let closedEveryHour = """
        [limits.p]
        max_concurrent = 10

        [[limits.p.schedule]]
        name   = "maintenance"
        cron   = "0-9 * * * *"
        closed = true
        """

    @Test("A schedule's closed window holds calls until it opens, or refuses them when max_wait is too short")
    func closedWindow() throws {
        let start = try #require(Values.parseInstant("2026-01-05T00:05:00Z"))  // closed until 00:10
        let (report, outcomes) = try Self.simulate(
            Self.closedEveryHour,
            [
                Self.call(.zero),
                Self.call(.zero, maxWait: .seconds(60)),
                Self.call(.seconds(400)),
            ], start: start)
        #expect(
            outcomes == [
                CallOutcome(.completed, admittedAt: .seconds(300)),
                CallOutcome(.rejected, limit: "closed"),
                CallOutcome(.completed, admittedAt: .seconds(400)),
            ])
        let p = try #require(report[provider: "p"])
        #expect(p[limit: "closed"]?.firstHitAt == 0 && p[limit: "closed"]?.hits == 2)
        #expect(p.timeline.closed.first == true && p.timeline.closed.last == false)
        #expect(p.timeline.time.first == 0)
    }

    @Test("A call waiting for a slot is admitted at the schedule transition that raises max_concurrent")
    func transitionRaisesConcurrency() throws {
        let toml = """
            [limits.p]
            max_concurrent = 2

            [[limits.p.schedule]]
            name = "midnight-hour"
            cron = "* 0 * * *"
            max_concurrent = 1
            """
        let start = try #require(Values.parseInstant("2026-01-05T00:59:00Z"))  // 1 slot until 01:00
        let (_, outcomes) = try Self.simulate(
            toml,
            [
                Self.call(.zero, duration: .seconds(600)),
                Self.call(.seconds(1)),
            ], start: start)
        #expect(outcomes[1].admittedAt == .seconds(60))
    }

    @Test("A gate closed for good leaves its waiters unfinished, and the simulation ends")
    func closedForGood() throws {
        let toml = """
            [limits.p]
            max_concurrent = 1

            [[limits.p.schedule]]
            name = "never"
            cron = "* * * * *"
            closed = true
            """
        let (report, outcomes) = try Self.simulate(toml, [Self.call(.seconds(5))])
        #expect(outcomes == [CallOutcome(.unfinished)])
        #expect(report[provider: "p"]?.unfinished == 1 && report[provider: "p"]?.delayed == ["closed": 1])
    }

    @Test("Oversized estimates and token counts the gate refuses are counted apart")
    func refusedCounts() throws {
        let (report, outcomes) = try Self.simulate(
            "[limits.p]\ntokens_per_minute = 1000",
            [
                Self.call(.zero, estimate: 2_000),
                Self.call(.zero, estimate: 0),
            ])
        #expect(outcomes == [CallOutcome(.oversized, limit: "tokens_per_minute"), CallOutcome(.invalid)])
        let p = try #require(report[provider: "p"])
        #expect(p.oversized == ["tokens_per_minute": 1] && p.invalid == 1 && p.refused == 2 && p.admitted == 0)
    }

    @Test("Providers without caps admit everything at once; keys are counted apart")
    func ungatedAndKeys() throws {
        let calls =
            (0..<4).map { Self.call(.zero, "free", scope: .user("u\($0 % 2)")) }
            + (0..<4).map { Self.call(.zero, scope: .user("u\($0 % 2)")) }
        let (report, _) = try Self.simulate("[limits.p]\nrequests_per_minute = 1", calls)
        let free = try #require(report[provider: "free"])
        #expect(!free.isGated && free.admittedAtOnce == 4 && free.keys == 2 && free.limits.isEmpty)
        // Each user has its own minute: one admitted at once per user, the other at 61 s.
        let p = try #require(report[provider: "p"])
        #expect(p.isGated && p.keys == 2 && p.admittedAtOnce == 2 && p.wait.max == 61)
        #expect(report.providers.map(\.provider) == ["free", "p"])
    }

    @Test("Calls may come in any order; ties keep their order")
    func unsortedInput() throws {
        let calls = [Self.call(.seconds(2), estimate: 1), Self.call(.zero, estimate: 2), Self.call(.zero, estimate: 3)]
        let (report, outcomes) = try Self.simulate("[limits.p]\nrequests_per_minute = 2", calls)
        // Taken in the order 2, 3 (both at 0 s), then 1 at 2 s, which waits for 61 s.
        #expect(outcomes.map(\.admittedAt) == [.seconds(61), .zero, .zero])
        #expect(report[provider: "p"]?.admittedAtOnce == 2)
    }

    @Test("Invalid calls built in code are refused with the call's number")
    func invalidCall() throws {
        let configuration = try PolicyConfiguration(toml: "[limits.p]\nmax_concurrent = 1")
        let simulation = Simulation(configuration: configuration)
        #expect(throws: SimulationError(field: "estimated_tokens", "call 2: must be in 0...\(PolicyLimits.maximumTokenCount), got -1")) {
            try simulation.run([Self.call(.zero), Self.call(.zero, estimate: -1)])
        }
        #expect(throws: SimulationError.self) { try simulation.run([Self.call(.seconds(-1))]) }
    }

    @Test("Timeline samples every interval, after the events of their instant")
    func sampling() throws {
        let configuration = try PolicyConfiguration(toml: "[limits.p]\nrequests_per_minute = 5\ntokens_per_hour = 10_000")
        let options = SimulationOptions(startDate: SyntheticWorkload.startDate, sampleInterval: .seconds(30))
        let report = try Simulation(configuration: configuration, options: options)
            .run((0..<10).map { _ in Self.call(.zero, duration: .seconds(2)) })
        let p = try #require(report[provider: "p"])
        #expect(report.sampleIntervalSeconds == 30)
        #expect(p.timeline.time == [0, 30, 60, 63])  // the last one at the end (61 s + 2 s)
        #expect(p.timeline.queued == [5, 5, 5, 0])
        #expect(p.timeline.inFlight == [5, 0, 0, 0])
        #expect(p.timeline.series.map(\.limit) == ["requests_per_minute", "tokens_per_hour"])
        #expect(p.timeline.series[0].used == [5, 5, 5, 5])  // at 63 s the second five are counted
        #expect(p.timeline.series[0].cap == [5, 5, 5, 5])
        #expect(p.timeline.series[1].used == [500, 500, 500, 1_000])
        #expect(p[limit: "tokens_per_hour"]?.peakUsed == 1_000 && p[limit: "tokens_per_hour"]?.peakAt == 63)
    }

    @Test("Samples are thinned to at most maximumSamples, the interval doubling each time")
    func thinning() throws {
        let configuration = try PolicyConfiguration(toml: "[limits.p]\nrequests_per_minute = 5")
        let options = SimulationOptions(sampleInterval: .milliseconds(10))
        let report = try Simulation(configuration: configuration, options: options)
            .run((0..<10).map { _ in Self.call(.zero, duration: .seconds(2)) })
        let timeline = try #require(report[provider: "p"]?.timeline)
        // 63 s at 10 ms would be 6 300 samples: thinned twice, to 40 ms.
        #expect(report.sampleIntervalSeconds == 0.04)
        #expect(timeline.time.count <= SimulationOptions.maximumSamples && timeline.time.count > SimulationOptions.maximumSamples / 2)
        #expect(zip(timeline.time, timeline.time.dropFirst()).dropLast().allSatisfy { abs($1 - $0 - 0.04) < 1e-9 })
        #expect(timeline.time.last == 63)
    }

    @Test("No calls: an empty report; progress is reported up to 1")
    func emptyAndProgress() throws {
        let configuration = try PolicyConfiguration(toml: "[limits.p]\nrequests_per_minute = 5")
        let empty = try Simulation(configuration: configuration).run([])
        #expect(empty.providers.isEmpty && empty.calls == 0 && empty.simulatedSeconds == 0)
        let seen = Locked<[Double]>([])
        let options = SimulationOptions(progress: { fraction in seen.withLock { $0.append(fraction) } })
        _ = try Simulation(configuration: configuration, options: options).run((0..<1_000).map { Self.call(.milliseconds($0)) })
        let fractions = seen.withLock { $0 }
        #expect(fractions.count > 10 && fractions.last == 1)
        #expect(zip(fractions, fractions.dropFirst()).allSatisfy { $0 <= $1 })
    }

    @Test("Input and output caps: a commit lowering the output lets a waiter in; a total counts as both")
    func inputOutput() throws {
        func split(_ at: Duration, _ input: Int, _ output: Int, actual: SimulatedTokenParts? = nil) -> SimulatedCall {
            Self.call(at).withParts(
                estimated: SimulatedTokenParts(input: input, output: output),
                actual: actual ?? SimulatedTokenParts(input: input, output: output))
        }
        let toml = """
            [limits.p]
            input_tokens_per_minute  = 1000
            output_tokens_per_minute = 300
            count_cache_reads        = false
            """
        let calls = [
            // Counts 600 in, 200 out; commits at 1 s 500 in, 100 out (the 300 cache reads do not count).
            split(.zero, 600, 200, actual: SimulatedTokenParts(input: 500, output: 100, cacheReads: 300)),
            // 200 + 200 out is over 300: waits for the commit at 1 s, then fits (100 + 200 out, 500 + 300 in).
            split(.zero, 300, 200),
            // A total of 100 counts 100 in and 100 out: 300 + 100 out is over 300 until the first
            // call's bucket leaves the minute at 61 s (200 + 100 out then).
            Self.call(.seconds(2), estimate: 100, actual: 100),
            // 2,000 out can never fit under 300 (arriving while nobody waits, it is refused at once).
            split(.milliseconds(1_500), 50, 2_000),
        ]
        let (report, outcomes) = try Self.simulate(toml, calls)
        #expect(
            outcomes == [
                CallOutcome(.completed, admittedAt: .zero), CallOutcome(.completed, admittedAt: .seconds(1)),
                CallOutcome(.completed, admittedAt: .seconds(61)), CallOutcome(.oversized, limit: "output_tokens_per_minute"),
            ])
        let p = try #require(report[provider: "p"])
        #expect(p.delayed == ["output_tokens_per_minute": 2])
        #expect(p.oversized == ["output_tokens_per_minute": 1])
        #expect(p.estimatedTokens == 1_400 && p.estimatedInputTokens == 1_000 && p.estimatedOutputTokens == 500)
        #expect(p.committedTokens == 1_200 && p.committedInputTokens == 900 && p.committedOutputTokens == 400)
        let input = try #require(p[limit: "input_tokens_per_minute"])
        #expect(input.peakUsed == 800 && input.peakAt == 1 && input.firstHitAt == nil)
        let output = try #require(p[limit: "output_tokens_per_minute"])
        #expect(output.peakUsed == 300 && output.peakAt == 1 && output.firstHitAt == 0 && output.hits == 3)
        // Without parts, the report has no input and output totals.
        let totals = try Self.simulate("[limits.p]\ntokens_per_minute = 1000", [Self.call(.zero)]).report
        #expect(totals[provider: "p"]?.estimatedInputTokens == nil && totals[provider: "p"]?.committedOutputTokens == nil)
    }
}
