import Foundation
import PolicyGate
import PolicyGateTestKit
import Testing

private func utc(_ text: String) throws -> Date {
    try Date(text, strategy: .iso8601)
}

/// Calendar schedules seen through the gate: caps per time of day and weekday, transitions on a
/// manual clock, closed days, daylight-saving changes, readouts and telemetry.
///
/// Every gate starts at a fixed wall-clock date (`startDate`) on a `ManualClock`, so "now" in
/// Europe/Berlin is known exactly and moves only when the test advances the clock. March 2026 is
/// CET (UTC+1) until the 29th; October 2026 is CEST (UTC+2) until the 25th.
@Suite("Schedules through the gate", .timeLimit(.minutes(5)))
struct ScheduledGateTests {
    let clock = ManualClock()
    let openai = PolicyKey(provider: "openai", scope: .user("u"))
    let peakLimits = PolicyLimits(requestsPerMinute: 200)
    let nightLimits = PolicyLimits(requestsPerMinute: 1_000)
    let base = PolicyLimits(requestsPerMinute: 500)

    /// The schedule of the issue: weekday peak hours, a night batch, closed holidays.
    func issueSchedule(holidaysFirst: Bool = false) throws -> PolicySchedule {
        var entries = [
            PolicyScheduleEntry(name: "peak", cron: try CronExpression("* 9-17 * * mon-fri"), limits: peakLimits),
            PolicyScheduleEntry(name: "night-batch", cron: try CronExpression("* 0-5 * * *"), limits: nightLimits),
            PolicyScheduleEntry(
                name: "holidays", dates: try ["2026-12-25", "2026-12-26", "2027-01-01"].map { try LocalDate($0) },
                isClosed: true),
        ]
        if holidaysFirst { entries.insert(entries.removeLast(), at: 0) }
        return PolicySchedule(timeZone: try PolicySchedule.timeZone(named: "Europe/Berlin"), entries: entries)
    }

    func issueConfiguration(holidaysFirst: Bool = false) throws -> PolicyConfiguration {
        PolicyConfiguration(
            limits: ["openai": base, "anthropic": PolicyLimits(requestsPerMinute: 50)],
            schedules: ["openai": try issueSchedule(holidaysFirst: holidaysFirst)])
    }

    /// A Berlin schedule with one cron entry.
    func berlin(_ name: String, _ cron: String, limits: PolicyLimits = .unlimited, closed: Bool = false) throws
        -> PolicySchedule
    {
        PolicySchedule(
            timeZone: try PolicySchedule.timeZone(named: "Europe/Berlin"),
            entries: [PolicyScheduleEntry(name: name, cron: try CronExpression(cron), limits: limits, isClosed: closed)])
    }

    func gate(
        _ configuration: PolicyConfiguration, at start: String, telemetry: (any PolicyTelemetry)? = nil
    ) throws -> PolicyService {
        try PolicyService(configuration: configuration, clock: clock, startDate: try utc(start), telemetry: telemetry)
    }

    /// Admits `count` calls for `openai` now (each permit released at once).
    func admit(_ gate: PolicyService, _ count: Int) throws {
        for _ in 0..<count { _ = try gate.tryAcquire(openai) }
    }

    /// Requests used and capped in the minute window, as `used/cap`.
    func minute(_ gate: PolicyService) -> String {
        minute(gate.currentState(for: openai))
    }

    func minute(_ state: PolicyState) -> String {
        guard let requests = state[.minute]?.requests else { return "none" }
        return "\(requests.used)/\(requests.cap.map(String.init) ?? "-")"
    }

    // MARK: Caps by time of day and weekday

    @Test("weekday peak hours cap lower than the weekend's base")
    func weekdayVersusWeekend() throws {
        let configuration = PolicyConfiguration(
            limits: ["openai": PolicyLimits(requestsPerMinute: 5)],
            schedules: ["openai": try berlin("peak", "* 9-17 * * mon-fri", limits: PolicyLimits(requestsPerMinute: 2))])

        // Saturday 2026-03-07 10:00 in Berlin: the weekday entry does not apply.
        let saturday = try gate(configuration, at: "2026-03-07T09:00:00Z")
        try admit(saturday, 5)
        let weekendError = try #require(throws: PolicyError.self) { _ = try saturday.tryAcquire(openai) }
        #expect(weekendError.limit == .requestsPerMinute)
        #expect(weekendError.closedBy == nil)
        #expect(saturday.currentState(for: openai).scheduleEntry == nil)

        // Monday 2026-03-02 10:00: peak hours.
        let monday = try gate(configuration, at: "2026-03-02T09:00:00Z")
        try admit(monday, 2)
        let weekdayError = try #require(throws: PolicyError.self) { _ = try monday.tryAcquire(openai) }
        #expect(weekdayError.code == .rateLimited)
        #expect(weekdayError.limit == .requestsPerMinute)
        #expect(monday.currentState(for: openai).scheduleEntry == "peak")
        #expect(minute(monday) == "2/2")
    }

    @Test("crossing 09:00 applies the peak caps to windows that keep their usage")
    func transitionKeepsUsage() throws {
        // Monday 2026-03-02 08:59:30 in Berlin (07:59:30Z): base limits, 500 a minute.
        let gate = try gate(try issueConfiguration(), at: "2026-03-02T07:59:30Z")
        try admit(gate, 300)
        let before = gate.currentState(for: openai)
        #expect(before.scheduleEntry == nil)
        #expect(minute(before) == "300/500")
        #expect(before.nextTransition == (try utc("2026-03-02T08:00:00Z")))

        clock.advance(by: .seconds(30))  // 09:00:00 local
        let error = try #require(throws: PolicyError.self) { _ = try gate.tryAcquire(openai) }
        #expect(error.code == .rateLimited)
        #expect(error.limit == .requestsPerMinute)
        #expect(error.closedBy == nil)
        // The 300 calls made 30 s ago leave the minute window 60 s after they were made (plus
        // at most one bucket, 1 s, of conservative counting).
        let retryAfter = try #require(error.retryAfter)
        #expect(retryAfter >= .seconds(30) && retryAfter <= .seconds(31), "\(retryAfter)")
        let after = gate.currentState(for: openai)
        #expect(after.scheduleEntry == "peak")
        #expect(after.limits == peakLimits)
        #expect(minute(after) == "300/200")

        clock.advance(by: retryAfter)
        _ = try gate.tryAcquire(openai)
        #expect(minute(gate) == "1/200")
    }

    // MARK: Wake-ups at transitions

    @Test("a waiter held back by the peak cap is admitted at the very instant peak hours end")
    func waiterAdmittedAtTransition() async throws {
        let recorder = TelemetryRecorder()
        let configuration = PolicyConfiguration(
            limits: ["openai": PolicyLimits(requestsPerMinute: 5)],
            schedules: ["openai": try berlin("peak", "* 9-17 * * mon-fri", limits: PolicyLimits(requestsPerMinute: 2))])
        // Monday 2026-03-02 17:59:30 in Berlin: peak hours for 30 more seconds.
        let gate = try gate(configuration, at: "2026-03-02T16:59:30Z", telemetry: recorder)
        try admit(gate, 2)
        let (box, task) = startWaiter(gate, openai, tokens: 0)
        await eventually("queued") { gate.currentState(for: openai).queued == 1 }
        // The window alone would let it in only when the two calls leave it, 60 s from now.
        let retry = try #require(gate.currentState(for: openai).nextCapacityIn)
        #expect(retry >= .seconds(60))

        // Only the clock moves: no call, release or reload wakes the gate.
        clock.advance(to: .init(offset: .seconds(30)))  // 18:00:00 local
        await eventually("admitted") { box.isDone }
        await task.value
        let admitted = box.hasPermit
        #expect(admitted)
        #expect(clock.now.offset == .seconds(30))
        #expect(recorder.acquires.last?.waited == .seconds(30))
        #expect(recorder.limitChanges.map(\.cause) == [.schedule])
        #expect(minute(gate) == "3/5")
        box.release()
    }

    @Test("a waiter on a closed day is admitted at the opening instant, by the clock alone")
    func closedWaiterAdmittedAtOpening() async throws {
        let recorder = TelemetryRecorder()
        // Saturday 2026-12-26 13:00 in Berlin: closed by "holidays" until Sunday's night batch
        // starts at 00:00 local, 2026-12-26T23:00Z, 11 hours from now.
        let gate = try gate(try issueConfiguration(), at: "2026-12-26T12:00:00Z", telemetry: recorder)
        let (box, task) = startWaiter(gate, openai, tokens: 0)
        await eventually("queued") { gate.currentState(for: openai).queued == 1 }

        clock.advance(to: .init(offset: .seconds(11 * 3_600 - 1)))
        for _ in 0..<1_000 { await Task.yield() }
        let done = box.isDone
        #expect(!done)

        clock.advance(to: .init(offset: .seconds(11 * 3_600)))
        await eventually("admitted") { box.isDone }
        await task.value
        let admitted = box.hasPermit
        #expect(admitted)
        #expect(clock.now.offset == .seconds(11 * 3_600))
        #expect(recorder.acquires.last?.waited == .seconds(11 * 3_600))
        #expect(gate.currentState(for: openai).scheduleEntry == "night-batch")
        box.release()
    }

    // MARK: Closed

    @Test("closed by a holiday: the error names the entry and the time until the opening")
    func closedDay() async throws {
        let recorder = TelemetryRecorder()
        // Saturday 2026-12-26 12:00 in Berlin (11:00Z): closed until 00:00 local (23:00Z), in 12 h.
        let gate = try gate(try issueConfiguration(), at: "2026-12-26T11:00:00Z", telemetry: recorder)
        let opening = Duration.seconds(12 * 3_600)

        let error = try #require(throws: PolicyError.self) { _ = try gate.tryAcquire(openai) }
        #expect(error.code == .rateLimited)
        #expect(error.closedBy == "holidays")
        #expect(error.limit == nil)
        #expect(error.key == openai)
        #expect(error.message.contains("closed by schedule 'holidays'"), "\(error.message)")
        #expect(error.retryAfter == opening)
        #expect(recorder.rejects.last?.error == error)

        let state = gate.currentState(for: openai)
        #expect(state.scheduleEntry == "holidays")
        #expect(state.isClosed)
        #expect(state.blockedBy == nil)
        #expect(state.limits == base)
        #expect(state.nextTransition == (try utc("2026-12-26T23:00:00Z")))

        // A maximum wait shorter than the closure fails at once: the clock does not move.
        do {
            _ = try await gate.acquire(openai, maxWait: opening - .seconds(1))
            Issue.record("admitted while closed")
        } catch let error as PolicyError {
            #expect(error.code == .rateLimited)
            #expect(error.closedBy == "holidays")
            #expect(error.limit == nil)
            #expect(error.message.contains("closed by schedule 'holidays'"), "\(error.message)")
            #expect(error.retryAfter == opening)
        }
        #expect(clock.now.offset == .zero)
        #expect(gate.currentState(for: openai).queued == 0)

        // Enough maximum wait: admitted when the gate opens, by the clock alone.
        let (box, task) = startWaiter(gate, openai, tokens: 0, maxWait: opening + .seconds(60))
        await eventually("queued") { gate.currentState(for: openai).queued == 1 }
        clock.advance(by: opening)
        await eventually("admitted") { box.isDone }
        await task.value
        let admitted = box.hasPermit
        #expect(admitted)
        #expect(recorder.acquires.last?.waited == opening)
        box.release()

        let open = gate.currentState(for: openai)
        #expect(open.scheduleEntry == "night-batch")
        #expect(!open.isClosed)
        #expect(open.limits == nightLimits)
        _ = try gate.tryAcquire(openai)
    }

    // MARK: Daylight saving

    @Test("on the fall-back night a closed '* 2 * * *' entry lasts two real hours")
    func fallBackNight() async throws {
        // 2026-10-25 in Berlin: at 03:00 CEST (01:00Z) clocks go back to 02:00 CET, so local
        // 02:00-02:59 happens twice, from 00:00Z to 02:00Z.
        let configuration = PolicyConfiguration(
            limits: ["openai": PolicyLimits(requestsPerMinute: 100)],
            schedules: ["openai": try berlin("maintenance", "* 2 * * *", closed: true)])
        let gate = try gate(configuration, at: "2026-10-24T23:59:00Z")  // 01:59 CEST
        _ = try gate.tryAcquire(openai)
        #expect(gate.currentState(for: openai).nextTransition == (try utc("2026-10-25T00:00:00Z")))

        clock.advance(by: .seconds(60))  // 02:00 CEST
        let first = try #require(throws: PolicyError.self) { _ = try gate.tryAcquire(openai) }
        #expect(first.closedBy == "maintenance")
        #expect(first.retryAfter == .seconds(2 * 3_600))
        #expect(gate.currentState(for: openai).nextTransition == (try utc("2026-10-25T02:00:00Z")))

        clock.advance(by: .seconds(3_600))  // 02:00 CET, the second time
        let second = try #require(throws: PolicyError.self) { _ = try gate.tryAcquire(openai) }
        #expect(second.closedBy == "maintenance")
        #expect(second.retryAfter == .seconds(3_600))
        #expect(gate.currentDate == (try utc("2026-10-25T01:00:00Z")))

        let (box, task) = startWaiter(gate, openai, tokens: 0)
        await eventually("queued") { gate.currentState(for: openai).queued == 1 }
        clock.advance(by: .seconds(3_600))  // 03:00 CET
        await eventually("admitted") { box.isDone }
        await task.value
        let admitted = box.hasPermit
        #expect(admitted)
        #expect(clock.now.offset == .seconds(60 + 2 * 3_600))
        box.release()

        let night = try gate.transitions(
            for: "openai", from: utc("2026-10-24T22:00:00Z"), to: utc("2026-10-25T23:00:00Z"))
        #expect(night.map(\.date) == [try utc("2026-10-25T00:00:00Z"), try utc("2026-10-25T02:00:00Z")])
        #expect(night.map(\.resolution.entry) == ["maintenance", nil])
        #expect(night.map(\.resolution.isClosed) == [true, false])
    }

    // MARK: Precedence

    @Test("the first entry that applies wins, even over a tighter or a closed one listed later")
    func firstMatchWins() throws {
        // Friday 2026-12-25 10:00 in Berlin: a holiday during peak hours.
        let peakFirst = try gate(try issueConfiguration(), at: "2026-12-25T09:00:00Z")
        _ = try peakFirst.tryAcquire(openai)
        #expect(peakFirst.currentState(for: openai).scheduleEntry == "peak")
        #expect(peakFirst.currentState(for: openai).limits == peakLimits)

        let holidaysFirst = try gate(try issueConfiguration(holidaysFirst: true), at: "2026-12-25T09:00:00Z")
        let error = try #require(throws: PolicyError.self) { _ = try holidaysFirst.tryAcquire(openai) }
        #expect(error.closedBy == "holidays")

        // Two cap entries: the wider one listed first applies, not the tighter one.
        let configuration = PolicyConfiguration(
            limits: ["openai": PolicyLimits(requestsPerMinute: 10)],
            schedules: [
                "openai": PolicySchedule(
                    timeZone: try PolicySchedule.timeZone(named: "Europe/Berlin"),
                    entries: [
                        PolicyScheduleEntry(
                            name: "weekdays", cron: try CronExpression("* * * * mon-fri"),
                            limits: PolicyLimits(requestsPerMinute: 3)),
                        PolicyScheduleEntry(
                            name: "peak", cron: try CronExpression("* 9-17 * * mon-fri"),
                            limits: PolicyLimits(requestsPerMinute: 1)),
                    ])
            ])
        let monday = try PolicyService(
            configuration: configuration, clock: ManualClock(), startDate: try utc("2026-03-02T09:00:00Z"))
        try admit(monday, 3)
        #expect(throws: PolicyError.self) { _ = try monday.tryAcquire(openai) }
        #expect(monday.currentState(for: openai).scheduleEntry == "weekdays")
    }

    // MARK: Readouts

    @Test("currentState names the applying entry, its effective limits and the next transition")
    func currentStateReadout() throws {
        let configuration = PolicyConfiguration(
            limits: [
                "openai": PolicyLimits(requestsPerMinute: 500, maxConcurrent: 8),
                "anthropic": PolicyLimits(requestsPerMinute: 50),
            ],
            schedules: ["openai": try issueSchedule()])
        // Monday 2026-03-02 10:00 in Berlin.
        let gate = try gate(configuration, at: "2026-03-02T09:00:00Z")
        let state = gate.currentState(for: openai)
        #expect(state.scheduleEntry == "peak")
        #expect(!state.isClosed)
        #expect(state.nextTransition == (try utc("2026-03-02T17:00:00Z")))  // 18:00 local
        #expect(state.limits == PolicyLimits(requestsPerMinute: 200, maxConcurrent: 8))
        #expect(state[.minute]?.requests.cap == 200)
        #expect(state.description.contains("schedule=peak"), "\(state.description)")
        #expect(gate.limits(for: "openai") == PolicyLimits(requestsPerMinute: 500, maxConcurrent: 8))

        let plain = gate.currentState(for: PolicyKey(provider: "anthropic", scope: .user("u")))
        #expect(plain.scheduleEntry == nil)
        #expect(!plain.isClosed)
        #expect(plain.nextTransition == nil)
        #expect(plain.limits == PolicyLimits(requestsPerMinute: 50))

        // 18:00 local: base limits, until the night batch at 00:00 local.
        clock.advance(by: .seconds(8 * 3_600))
        let evening = gate.currentState(for: openai)
        #expect(evening.scheduleEntry == nil)
        #expect(evening.limits == PolicyLimits(requestsPerMinute: 500, maxConcurrent: 8))
        #expect(evening.nextTransition == (try utc("2026-03-02T23:00:00Z")))
        #expect(gate.currentDate == (try utc("2026-03-02T17:00:00Z")))
    }

    // MARK: Telemetry

    @Test("each transition is reported with cause .schedule, the entry and the next transition")
    func telemetryAtTransitions() async throws {
        let recorder = TelemetryRecorder()
        // Monday 2026-03-02 08:59:30 in Berlin.
        let gate = try gate(try issueConfiguration(), at: "2026-03-02T07:59:30Z", telemetry: recorder)
        #expect(recorder.limitChanges.isEmpty)

        clock.advance(by: .seconds(30))  // 09:00 local
        await eventually("peak reported") { recorder.limitChanges.count == 1 }
        clock.advance(to: .init(offset: .seconds(30 + 9 * 3_600)))  // 18:00 local
        await eventually("base reported") { recorder.limitChanges.count == 2 }
        clock.advance(to: .init(offset: .seconds(30 + 15 * 3_600)))  // Tuesday 00:00 local
        await eventually("night reported") { recorder.limitChanges.count == 3 }

        #expect(
            recorder.limitChanges == [
                PolicyLimitsChangeEvent(
                    provider: "openai", previous: base, current: peakLimits, cause: .schedule, scheduleEntry: "peak",
                    isClosed: false, nextTransition: try utc("2026-03-02T17:00:00Z")),
                PolicyLimitsChangeEvent(
                    provider: "openai", previous: peakLimits, current: base, cause: .schedule, scheduleEntry: nil,
                    isClosed: false, nextTransition: try utc("2026-03-02T23:00:00Z")),
                PolicyLimitsChangeEvent(
                    provider: "openai", previous: base, current: nightLimits, cause: .schedule,
                    scheduleEntry: "night-batch", isClosed: false, nextTransition: try utc("2026-03-03T05:00:00Z")),
            ])
        // The readout agrees (and keeps the gate alive to here: its timer ends with it).
        #expect(gate.currentState(for: openai).scheduleEntry == "night-batch")
    }

    @Test("a closed day is reported as closed, and so is its opening")
    func telemetryOfClosedDay() async throws {
        let recorder = TelemetryRecorder()
        // Thursday 2026-12-24 23:59 in Berlin: the holiday starts in a minute.
        let gate = try gate(try issueConfiguration(), at: "2026-12-24T22:59:00Z", telemetry: recorder)
        clock.advance(by: .seconds(60))
        // 00:00 on the holiday: the night batch comes first in the list.
        await eventually("night reported") { recorder.limitChanges.count == 1 }
        clock.advance(to: .init(offset: .seconds(60 + 6 * 3_600)))  // 06:00 local
        await eventually("holidays reported") { recorder.limitChanges.count == 2 }
        let closed = try #require(recorder.limitChanges.dropFirst().first)
        #expect(closed.scheduleEntry == "holidays")
        #expect(closed.isClosed)
        #expect(closed.current == base)
        #expect(closed.cause == .schedule)
        #expect(closed.nextTransition == (try utc("2026-12-25T08:00:00Z")))  // peak, 09:00 local
        #expect(gate.currentState(for: openai).isClosed)
    }

    @Test("applying a configuration with a schedule reports cause .configuration and arms its transitions")
    func applyReportsConfiguration() async throws {
        let recorder = TelemetryRecorder()
        // Monday 2026-03-02 17:59 in Berlin, without a schedule yet.
        let gate = try gate(PolicyConfiguration(limits: ["openai": base]), at: "2026-03-02T16:59:00Z", telemetry: recorder)
        #expect(gate.currentState(for: openai).nextTransition == nil)

        try await gate.apply(try issueConfiguration())
        #expect(
            recorder.limitChanges == [
                PolicyLimitsChangeEvent(
                    provider: "anthropic", previous: .unlimited, current: PolicyLimits(requestsPerMinute: 50)),
                PolicyLimitsChangeEvent(
                    provider: "openai", previous: base, current: peakLimits, cause: .configuration,
                    scheduleEntry: "peak", isClosed: false, nextTransition: try utc("2026-03-02T17:00:00Z")),
            ])
        #expect(gate.configuration == (try issueConfiguration()))

        clock.advance(by: .seconds(60))  // 18:00 local: the schedule applied takes over on time
        await eventually("transition reported") { recorder.limitChanges.count == 3 }
        #expect(recorder.limitChanges.last?.cause == .schedule)
        #expect(recorder.limitChanges.last?.scheduleEntry == nil)
        #expect(recorder.limitChanges.last?.current == base)

        // Applying the same configuration again changes nothing and reports nothing.
        try await gate.apply(try issueConfiguration())
        #expect(recorder.limitChanges.count == 3)
    }

    // MARK: Queries

    @Test("effectiveLimits and transitions agree between the service and its configuration")
    func effectiveLimitsAndTransitions() throws {
        let configuration = try issueConfiguration()
        let gate = try gate(configuration, at: "2026-03-02T07:59:30Z")
        let mondayMorning = try utc("2026-03-02T09:00:00Z")  // 10:00 local
        let expected = PolicySchedule.Resolution(
            limits: peakLimits, entry: "peak", isClosed: false, validUntil: try utc("2026-03-02T17:00:00Z"))
        #expect(gate.effectiveLimits(for: "openai", at: mondayMorning) == expected)
        #expect(configuration.effectiveLimits(for: "openai", at: mondayMorning) == expected)

        let christmasEvening = try utc("2026-12-25T19:00:00Z")  // 20:00 local
        let closed = gate.effectiveLimits(for: "openai", at: christmasEvening)
        #expect(
            closed
                == PolicySchedule.Resolution(
                    limits: base, entry: "holidays", isClosed: true, validUntil: try utc("2026-12-25T23:00:00Z")))
        #expect(closed.description == "closed by schedule holidays")

        // Without a schedule: the base limits for ever; not gated: no limits at all.
        #expect(
            gate.effectiveLimits(for: "anthropic", at: mondayMorning)
                == PolicySchedule.Resolution(
                    limits: PolicyLimits(requestsPerMinute: 50), entry: nil, isClosed: false, validUntil: nil))
        #expect(
            gate.effectiveLimits(for: "mistral", at: mondayMorning)
                == PolicySchedule.Resolution(
                    limits: .unlimited, entry: nil, isClosed: false, validUntil: nil))

        // Monday in Berlin, 00:00 to 24:00 local: a change at the start is listed, the one at the
        // end is not.
        let monday = try gate.transitions(
            for: "openai", from: utc("2026-03-01T23:00:00Z"), to: utc("2026-03-02T23:00:00Z"))
        #expect(
            monday.map(\.description) == [
                "2026-03-01T23:00:00Z night-batch: \(nightLimits)",
                "2026-03-02T05:00:00Z base: \(base)",
                "2026-03-02T08:00:00Z peak: \(peakLimits)",
                "2026-03-02T17:00:00Z base: \(base)",
            ])
        #expect(
            try configuration.transitions(
                for: "openai", from: utc("2026-03-01T23:00:00Z"), to: utc("2026-03-02T23:00:00Z")) == monday)
        #expect(
            try gate.transitions(
                for: "anthropic", from: utc("2026-03-01T23:00:00Z"), to: utc("2026-03-02T23:00:00Z")
            ).isEmpty)
        #expect(gate.currentDate == (try utc("2026-03-02T07:59:30Z")))
    }

    // MARK: Long quiet periods

    @Test("a schedule that changes nothing for longer than its search horizon keeps admitting waiters")
    func horizonWithoutChange() async throws {
        // The only entry is a leap day almost two years away: the schedule's search stops at its
        // horizon (366 days) and re-resolves then, to the same limits.
        let configuration = PolicyConfiguration(
            limits: ["openai": PolicyLimits(maxConcurrent: 1)],
            schedules: [
                "openai": PolicySchedule(
                    timeZone: try PolicySchedule.timeZone(named: "Europe/Berlin"),
                    entries: [PolicyScheduleEntry(name: "leap-day", dates: [try LocalDate("2028-02-29")], isClosed: true)])
            ])
        let start = try utc("2026-03-02T09:00:00Z")
        let gate = try PolicyService(configuration: configuration, clock: clock, startDate: start)
        let horizon = start.addingTimeInterval(PolicySchedule.searchHorizon)
        #expect(gate.currentState(for: openai).nextTransition == horizon)

        let held = try gate.tryAcquire(openai)
        clock.advance(by: .seconds(Int64(PolicySchedule.searchHorizon) + 3_600))
        let (box, task) = startWaiter(gate, openai, tokens: 0)
        await eventually("queued") { gate.currentState(for: openai).queued == 1 }
        // Re-resolved past the horizon: the leap day is within reach now.
        #expect(gate.currentState(for: openai).nextTransition == (try utc("2028-02-28T23:00:00Z")))

        _ = consume held  // frees the only slot: the waiter takes it
        await eventually("admitted") { box.isDone }
        task.cancel()
        await task.value
        let admitted = box.hasPermit
        #expect(admitted)
        box.release()
    }
}
