import Foundation
import PolicyGate
import PolicyGateTestKit
import Testing

/// A permit held longer than the service's hold warning is reported once, with its key, how
/// long and its tokens; on a manual clock, no sleeps. The only sleeper on the clock in these
/// gates (no schedules, nobody waiting) is the hold warning's timer.
@Suite("Permits held too long", .timeLimit(.minutes(5)))
struct PermitHoldWarningTests {
    let clock = ManualClock()
    let key = PolicyKey(provider: "p", scope: .user("leaky"))
    let other = PolicyKey(provider: "p", scope: .user("slow"))
    let limits = ["p": PolicyLimits(tokensPerDay: 1_000_000, maxConcurrent: 4)]

    func at(_ offset: Duration) -> ManualClock.Instant { ManualClock.Instant(offset: offset) }

    @Test("each permit held past the warning is reported once, with its key, how long and its tokens, even if held for ever")
    func reportedOnce() async throws {
        let recorder = TelemetryRecorder()
        let gate = try PolicyService(limits: limits, clock: clock, telemetry: recorder)
        try gate.setPermitHoldWarning(.minutes(10))
        #expect(gate.permitHoldWarning == .minutes(10))

        var leaked = try await gate.acquire(key, estimatedTokens: 100)
        try leaked.commitTokens(80)
        await eventually("the timer armed") { clock.sleeperCount == 1 }
        clock.advance(by: .minutes(5))
        let slow = try await gate.acquire(other, estimatedInputTokens: 20, estimatedOutputTokens: 10)
        clock.advance(by: .seconds(299))
        // 9 min 59 s after the first admission: the one timer still waits for its threshold.
        #expect(clock.nextDeadline == at(.minutes(10)) && clock.sleeperCount == 1)
        #expect(recorder.longHolds.isEmpty)

        clock.advance(by: .seconds(1))
        await eventually("the first permit reported") { recorder.longHolds.count == 1 }
        #expect(
            recorder.longHolds == [
                PolicyLongHoldEvent(key: key, held: .minutes(10), threshold: .minutes(10), estimatedTokens: 100, committedTokens: 80)
            ])
        // Re-armed for the second permit's threshold.
        await eventually("the timer re-armed") { clock.nextDeadline == at(.minutes(15)) }

        clock.advance(by: .hours(2))
        await eventually("the second permit reported") { recorder.longHolds.count == 2 }
        #expect(
            recorder.longHolds.last
                == PolicyLongHoldEvent(
                    key: other, held: .hours(2) + .minutes(5), threshold: .minutes(10), estimatedTokens: 30, committedTokens: nil))
        // Both still held, both reported: nothing is left to watch, so no timer, and a day later
        // still two reports.
        #expect(clock.sleeperCount == 0)
        clock.advance(by: .hours(24))
        await Task.yield()
        #expect(recorder.longHolds.count == 2 && clock.sleeperCount == 0)
        #expect(gate.currentState(for: key).inFlight == 1)
        leaked.release()
        slow.release()
        #expect(recorder.longHolds.count == 2)
        #expect(gate.currentState(for: key).inFlight == 0 && gate.currentState(for: other).inFlight == 0)
    }

    @Test("a permit released before the warning is never reported")
    func releasedInTime() async throws {
        let recorder = TelemetryRecorder()
        let gate = try PolicyService(limits: limits, clock: clock, telemetry: recorder)
        try gate.setPermitHoldWarning(.seconds(60))
        let early = try await gate.acquire(key, estimatedTokens: 5)
        clock.advance(by: .seconds(30))
        // A witness held past its threshold: it is reported in the same pass that finds the
        // early one gone, so its report proves that pass ran.
        let witness = try await gate.acquire(other, estimatedTokens: 7)
        clock.advance(by: .seconds(29))
        early.release()  // held 59 s
        clock.advance(by: .seconds(31))
        await eventually("the witness reported") { recorder.longHolds.count == 1 }
        #expect(recorder.longHolds.map(\.key) == [other])
        #expect(recorder.longHolds.first?.held == .seconds(60))
        witness.release()
        // Many short calls are never reported either.
        for _ in 0..<100 {
            let permit = try await gate.acquire(key, estimatedTokens: 1)
            clock.advance(by: .seconds(30))
            permit.release()
        }
        clock.advance(by: .hours(1))
        await eventually("the last timer ran") { clock.sleeperCount == 0 }
        #expect(recorder.longHolds.count == 1)
    }

    @Test("off by default; a threshold that is not positive is refused; off forgets; a new threshold applies at once")
    func settings() async throws {
        let recorder = TelemetryRecorder()
        let gate = try PolicyService(limits: limits, clock: clock, telemetry: recorder)
        #expect(gate.permitHoldWarning == nil)
        var permit = try await gate.acquire(key, estimatedTokens: 1)
        clock.advance(by: .hours(24))
        #expect(clock.sleeperCount == 0 && recorder.longHolds.isEmpty)
        permit.release()

        for bad in [Duration.zero, .seconds(-5)] {
            let error = try #require(throws: PolicyError.self) { try gate.setPermitHoldWarning(bad) }
            #expect(error.code == .invalidArgument)
        }
        #expect(gate.permitHoldWarning == nil)

        // Turned off while a permit is noted: the timer goes and the permit is forgotten.
        try gate.setPermitHoldWarning(.minutes(1))
        permit = try await gate.acquire(key, estimatedTokens: 2)
        await eventually("the timer armed") { clock.sleeperCount == 1 }
        try gate.setPermitHoldWarning(nil)
        await eventually("the timer cancelled") { clock.sleeperCount == 0 }
        clock.advance(by: .minutes(5))
        #expect(recorder.longHolds.isEmpty)
        permit.release()

        // A lower threshold judges the permits noted at once.
        try gate.setPermitHoldWarning(.minutes(10))
        permit = try await gate.acquire(key, estimatedTokens: 3)
        clock.advance(by: .minutes(5))
        try gate.setPermitHoldWarning(.minutes(1))
        await eventually("reported under the new threshold") { recorder.longHolds.count == 1 }
        #expect(recorder.longHolds.first?.held == .minutes(5) && recorder.longHolds.first?.threshold == .minutes(1))
        permit.release()
    }

    @Test("without telemetry nothing is watched: no timer, and the setting is kept")
    func withoutTelemetry() async throws {
        let gate = try PolicyService(limits: limits, clock: clock)
        try gate.setPermitHoldWarning(.seconds(1))
        #expect(gate.permitHoldWarning == .seconds(1))
        let permit = try await gate.acquire(key, estimatedTokens: 1)
        await Task.yield()
        #expect(clock.sleeperCount == 0)
        permit.release()
    }

    @Test("a shared provider's permit is watched too")
    func sharedPermit() async throws {
        let store = FakeQuotaStore(clock: clock)
        let recorder = TelemetryRecorder()
        var configuration = PolicyConfiguration(limits: ["p": PolicyLimits(maxConcurrent: 2)])
        configuration.storage["p"] = PolicyStorage(store: .postgres, failurePolicy: .failClosed)
        configuration.permitHoldWarning = .seconds(30)
        let gate = try PolicyService(configuration: configuration, store: store, clock: clock, telemetry: recorder)
        var permit = try await gate.acquire(key, estimatedTokens: 9)
        try permit.commitTokens(4)
        clock.advance(by: .seconds(31))
        await eventually("reported") { recorder.longHolds.count == 1 }
        #expect(
            recorder.longHolds == [
                PolicyLongHoldEvent(key: key, held: .seconds(31), threshold: .seconds(30), estimatedTokens: 9, committedTokens: 4)
            ])
        permit.release()
        await gate.flushStoreWrites()
    }

    @Test("every sink of a fan-out hears of it")
    func fanOut() async throws {
        let first = TelemetryRecorder(), second = TelemetryRecorder()
        let gate = try PolicyService(limits: limits, clock: clock, telemetry: .fanOut(first, second))
        try gate.setPermitHoldWarning(.seconds(1))
        let permit = try await gate.acquire(key, estimatedTokens: 1)
        clock.advance(by: .seconds(2))
        await eventually("reported to both") { first.longHolds.count == 1 && second.longHolds.count == 1 }
        #expect(first.longHolds == second.longHolds)
        permit.release()
    }

    // MARK: Configuration

    @Test("[gate] permit_hold_warning: read, applied, reloaded, encoded")
    func configuration() async throws {
        let configuration = try PolicyConfiguration(
            toml: """
                [gate]
                permit_hold_warning = "1h30m"

                [limits.p]
                max_concurrent = 4
                """)
        #expect(configuration.permitHoldWarning == .minutes(90))
        let recorder = TelemetryRecorder()
        let gate = try PolicyService(configuration: configuration, clock: clock, telemetry: recorder)
        #expect(gate.permitHoldWarning == .minutes(90))
        #expect(gate.configuration.permitHoldWarning == .minutes(90))

        var reloaded = configuration
        reloaded.permitHoldWarning = .seconds(90)
        try await gate.apply(reloaded)
        #expect(gate.permitHoldWarning == .seconds(90))
        reloaded.permitHoldWarning = .zero
        await #expect(throws: PolicyError.self) { try await gate.apply(reloaded) }
        #expect(gate.permitHoldWarning == .seconds(90))
        try await gate.apply(PolicyConfiguration(limits: configuration.limits))
        #expect(gate.permitHoldWarning == nil)

        // The encoded form decodes to the same configuration, in whole units.
        for threshold in [Duration.minutes(90), .seconds(90), .milliseconds(1_500), .hours(2)] {
            var original = configuration
            original.permitHoldWarning = threshold
            let decoded = try JSONDecoder().decode(PolicyConfiguration.self, from: JSONEncoder().encode(original))
            #expect(decoded == original, "\(threshold)")
        }
        let json = String(decoding: try JSONEncoder().encode(configuration), as: UTF8.self)
        #expect(json.contains(#""gate":{"permit_hold_warning":"90m"}"#), "\(json)")

        // Built in code with a threshold that is not positive: refused by the gate, and by validate().
        var bad = configuration
        bad.permitHoldWarning = .seconds(-1)
        #expect(bad.validate().map(\.keyPath) == ["gate.permit_hold_warning"])
        #expect(throws: PolicyError.self) { _ = try PolicyService(configuration: bad, clock: clock) }
    }

    @Test("bad [gate] settings are errors with where and what was meant")
    func configurationErrors() throws {
        let text = """
            [gate]
            permit_hold_warning = 600
            hold_warning = "1m"

            [gates]
            permit_hold_warning = "1m"
            """
        let error = try #require(throws: PolicyConfigurationError.self) { try PolicyConfiguration(toml: text) }
        let summary = error.errors.map { "\($0.line ?? 0) \($0.keyPath) \($0.suggestion ?? "")" }
        #expect(
            summary == [
                "2 gate.permit_hold_warning ", "3 gate.hold_warning permit_hold_warning", "5 gates gate",
            ])
        #expect(error.errors.first?.message.contains(#"write "600s" for 600 seconds"#) == true, "\(error)")

        for (value, expected) in [
            (#""0s""#, "must be positive"), (#""ten minutes""#, "must be a duration"), (#""-5m""#, "must be a duration"),
            ("true", "must be a duration"),
        ] {
            let error = try #require(throws: PolicyConfigurationError.self) {
                try PolicyConfiguration(toml: "[gate]\npermit_hold_warning = \(value)\n")
            }
            #expect(error.errors.map(\.keyPath) == ["gate.permit_hold_warning"])
            #expect(error.errors.first?.message.contains(expected) == true, "\(value): \(error)")
        }
        let table = try #require(throws: PolicyConfigurationError.self) { try PolicyConfiguration(toml: "gate = 5\n") }
        #expect(table.errors.map(\.keyPath) == ["gate"])
    }
}

extension Duration {
    fileprivate static func minutes(_ count: Int64) -> Duration { .seconds(count * 60) }
    fileprivate static func hours(_ count: Int64) -> Duration { .seconds(count * 3_600) }
}
