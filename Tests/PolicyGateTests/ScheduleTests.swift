import Foundation
import PolicyGate
import Testing

/// An instant written in ISO 8601 with `Z`.
private func utc(_ text: String) throws -> Date {
    try Date(text, strategy: .iso8601)
}

@Suite("Schedule: resolving calendar-aware limits")
struct ScheduleTests {
    let base = PolicyLimits(requestsPerMinute: 500, tokensPerDay: 5_000_000)

    /// The schedule of the issue: peak hours on weekdays, a night batch, closed holidays.
    func issueSchedule(holidaysFirst: Bool = false) throws -> PolicySchedule {
        var entries = [
            PolicyScheduleEntry(
                name: "peak", cron: try CronExpression("* 9-17 * * mon-fri"),
                limits: PolicyLimits(requestsPerMinute: 200)),
            PolicyScheduleEntry(
                name: "night-batch", cron: try CronExpression("* 0-5 * * *"),
                limits: PolicyLimits(requestsPerMinute: 1_000)),
            PolicyScheduleEntry(
                name: "holidays", dates: try ["2026-12-25", "2026-12-26", "2027-01-01"].map { try LocalDate($0) },
                isClosed: true),
        ]
        if holidaysFirst { entries.insert(entries.removeLast(), at: 0) }
        return PolicySchedule(timeZone: try PolicySchedule.timeZone(named: "Europe/Berlin"), entries: entries)
    }

    func schedule(_ zone: String, _ entries: [(String, String)]) throws -> PolicySchedule {
        PolicySchedule(
            timeZone: try PolicySchedule.timeZone(named: zone),
            entries: try entries.map { PolicyScheduleEntry(name: $0.0, cron: try CronExpression($0.1)) })
    }

    /// Transitions as `(ISO instant, entry name or "base")`, for comparing with a written list.
    func changes(_ schedule: PolicySchedule, from: String, to: String) throws -> [String] {
        try schedule.transitions(base: base, from: utc(from), to: utc(to)).map {
            "\($0.date.formatted(.iso8601)) \($0.resolution.entry ?? "base")"
        }
    }

    @Test("weekday peak hours versus the weekend")
    func weekdayVersusWeekend() throws {
        let schedule = try schedule("Europe/Berlin", [("peak", "* 9-17 * * mon-fri")])
        var withCaps = schedule
        withCaps.entries[0].limits = PolicyLimits(requestsPerMinute: 200)

        let monday = withCaps.resolve(base: base, at: try utc("2026-03-02T09:00:00Z"))  // 10:00 local
        #expect(monday.entry == "peak")
        #expect(monday.limits == PolicyLimits(requestsPerMinute: 200, tokensPerDay: 5_000_000))
        #expect(!monday.isClosed)
        #expect(monday.validUntil == (try utc("2026-03-02T17:00:00Z")))  // 18:00 local

        let fridayLastMinute = withCaps.resolve(base: base, at: try utc("2026-03-06T16:59:59.5Z"))
        #expect(fridayLastMinute.entry == "peak")
        #expect(fridayLastMinute.validUntil == (try utc("2026-03-06T17:00:00Z")))

        let saturday = withCaps.resolve(base: base, at: try utc("2026-03-07T09:00:00Z"))
        #expect(saturday.entry == nil)
        #expect(saturday.limits == base)
        #expect(saturday.validUntil == (try utc("2026-03-09T08:00:00Z")))  // Monday 09:00 local
    }

    @Test("an overnight range spans midnight")
    func overnight() throws {
        let schedule = try schedule("UTC", [("night", "* 22-23,0-5 * * *")])
        let before = schedule.resolve(base: base, at: try utc("2026-03-04T21:59:30Z"))
        #expect(before.entry == nil)
        #expect(before.validUntil == (try utc("2026-03-04T22:00:00Z")))
        for instant in ["2026-03-04T22:00:00Z", "2026-03-04T23:59:59Z", "2026-03-05T00:00:00Z", "2026-03-05T05:59:00Z"] {
            let night = schedule.resolve(base: base, at: try utc(instant))
            #expect(night.entry == "night", "\(instant)")
            #expect(night.validUntil == (try utc("2026-03-05T06:00:00Z")), "\(instant)")
        }
        #expect(
            try changes(schedule, from: "2026-03-04T12:00:00Z", to: "2026-03-06T12:00:00Z") == [
                "2026-03-04T22:00:00Z night", "2026-03-05T06:00:00Z base",
                "2026-03-05T22:00:00Z night", "2026-03-06T06:00:00Z base",
            ])
    }

    @Test("Europe/Berlin springs forward: 02:xx does not exist, 9-17 stays 9-17 local")
    func berlinSpringForward() throws {
        let schedule = try schedule("Europe/Berlin", [("two", "* 2 * * *"), ("day", "* 9-17 * * *")])
        #expect(
            try changes(schedule, from: "2026-03-28T00:00:00Z", to: "2026-03-31T00:00:00Z") == [
                "2026-03-28T01:00:00Z two", "2026-03-28T02:00:00Z base",  // CET, +01:00
                "2026-03-28T08:00:00Z day", "2026-03-28T17:00:00Z base",
                // 2026-03-29 01:00Z: 02:00 CET becomes 03:00 CEST; "two" does not apply that day.
                "2026-03-29T07:00:00Z day", "2026-03-29T16:00:00Z base",  // CEST, +02:00
                "2026-03-30T00:00:00Z two", "2026-03-30T01:00:00Z base",
                "2026-03-30T07:00:00Z day", "2026-03-30T16:00:00Z base",
            ])
        let beforeSwitch = schedule.resolve(base: base, at: try utc("2026-03-29T00:30:00Z"))  // 01:30 CET
        #expect(beforeSwitch.entry == nil)
        #expect(beforeSwitch.validUntil == (try utc("2026-03-29T07:00:00Z")))
    }

    @Test("Europe/Berlin falls back: 02:xx happens twice and '* 2 * * *' lasts two hours")
    func berlinFallBack() throws {
        let schedule = try schedule("Europe/Berlin", [("two", "* 2 * * *"), ("day", "* 9-17 * * *")])
        #expect(
            try changes(schedule, from: "2026-10-24T00:00:00Z", to: "2026-10-27T00:00:00Z") == [
                "2026-10-24T00:00:00Z two", "2026-10-24T01:00:00Z base",  // CEST, +02:00
                "2026-10-24T07:00:00Z day", "2026-10-24T16:00:00Z base",
                // 2026-10-25 01:00Z: 03:00 CEST becomes 02:00 CET, and 02:xx runs again.
                "2026-10-25T00:00:00Z two", "2026-10-25T02:00:00Z base",
                "2026-10-25T08:00:00Z day", "2026-10-25T17:00:00Z base",  // CET, +01:00
                "2026-10-26T01:00:00Z two", "2026-10-26T02:00:00Z base",
                "2026-10-26T08:00:00Z day", "2026-10-26T17:00:00Z base",
            ])
        for instant in ["2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z"] {  // 02:30 CEST, 02:30 CET
            let repeated = schedule.resolve(base: base, at: try utc(instant))
            #expect(repeated.entry == "two", "\(instant)")
            #expect(repeated.validUntil == (try utc("2026-10-25T02:00:00Z")), "\(instant)")
        }
    }

    @Test("America/New_York springs forward and falls back")
    func newYork() throws {
        let schedule = try schedule("America/New_York", [("early", "* 1-2 * * *"), ("work", "* 9-17 * * mon-fri")])
        #expect(
            try changes(schedule, from: "2026-03-06T05:00:00Z", to: "2026-03-10T04:00:00Z") == [
                "2026-03-06T06:00:00Z early", "2026-03-06T08:00:00Z base",  // EST, -05:00
                "2026-03-06T14:00:00Z work", "2026-03-06T23:00:00Z base",
                "2026-03-07T06:00:00Z early", "2026-03-07T08:00:00Z base",
                // 2026-03-08 07:00Z: 02:00 EST becomes 03:00 EDT, so "early" is one hour long.
                "2026-03-08T06:00:00Z early", "2026-03-08T07:00:00Z base",
                "2026-03-09T05:00:00Z early", "2026-03-09T07:00:00Z base",  // EDT, -04:00
                "2026-03-09T13:00:00Z work", "2026-03-09T22:00:00Z base",
            ])
        #expect(
            try changes(schedule, from: "2026-10-30T04:00:00Z", to: "2026-11-03T05:00:00Z") == [
                "2026-10-30T05:00:00Z early", "2026-10-30T07:00:00Z base",  // EDT
                "2026-10-30T13:00:00Z work", "2026-10-30T22:00:00Z base",
                "2026-10-31T05:00:00Z early", "2026-10-31T07:00:00Z base",
                // 2026-11-01 06:00Z: 02:00 EDT becomes 01:00 EST; 01:00-02:59 local lasts three hours.
                "2026-11-01T05:00:00Z early", "2026-11-01T08:00:00Z base",
                "2026-11-02T06:00:00Z early", "2026-11-02T08:00:00Z base",  // EST
                "2026-11-02T14:00:00Z work", "2026-11-02T23:00:00Z base",
            ])
    }

    @Test("closed holidays, under the entries listed before them")
    func holidays() throws {
        let schedule = try issueSchedule()
        // Friday 2026-12-25: "peak" comes first, so peak hours stay open.
        let peak = schedule.resolve(base: base, at: try utc("2026-12-25T09:00:00Z"))
        #expect(peak.entry == "peak" && !peak.isClosed)
        let evening = schedule.resolve(base: base, at: try utc("2026-12-25T19:00:00Z"))  // 20:00 local
        #expect(evening.isClosed)
        #expect(evening.entry == "holidays")
        #expect(evening.limits == base)
        #expect(evening.description == "closed by schedule holidays")
        #expect(evening.validUntil == (try utc("2026-12-25T23:00:00Z")))  // night-batch from 00:00
        #expect(schedule.nextOpening(from: try utc("2026-12-25T19:00:00Z")) == (try utc("2026-12-25T23:00:00Z")))
        // Saturday 2026-12-26 06:00-23:59 local is closed; Sunday's night batch opens it.
        let saturday = schedule.resolve(base: base, at: try utc("2026-12-26T05:00:00Z"))
        #expect(saturday.isClosed)
        #expect(saturday.validUntil == (try utc("2026-12-26T23:00:00Z")))
        #expect(schedule.nextOpening(from: try utc("2026-12-26T12:00:00Z")) == (try utc("2026-12-26T23:00:00Z")))
        // Open instants are their own opening.
        #expect(schedule.nextOpening(from: try utc("2026-12-24T12:00:00Z")) == (try utc("2026-12-24T12:00:00Z")))
    }

    @Test("first match wins; an entry overrides only the caps it names")
    func precedence() throws {
        let wide = PolicyScheduleEntry(
            name: "wide", cron: try CronExpression("* 9-17 * * *"), limits: PolicyLimits(requestsPerMinute: 100))
        let narrow = PolicyScheduleEntry(
            name: "narrow", cron: try CronExpression("* 12-13 * * *"),
            limits: PolicyLimits(requestsPerMinute: 50, tokensPerMinute: 1_000))
        let noon = try utc("2026-03-04T12:30:00Z")

        let wideFirst = PolicySchedule(entries: [wide, narrow]).resolve(base: base, at: noon)
        #expect(wideFirst.entry == "wide")
        #expect(wideFirst.limits == PolicyLimits(requestsPerMinute: 100, tokensPerDay: 5_000_000))
        #expect(wideFirst.validUntil == (try utc("2026-03-04T18:00:00Z")))  // "narrow" is shadowed

        let narrowFirst = PolicySchedule(entries: [narrow, wide])
        let atNoon = narrowFirst.resolve(base: base, at: noon)
        #expect(atNoon.entry == "narrow")
        #expect(atNoon.limits == PolicyLimits(requestsPerMinute: 50, tokensPerMinute: 1_000, tokensPerDay: 5_000_000))
        #expect(atNoon.validUntil == (try utc("2026-03-04T14:00:00Z")))
        let morning = narrowFirst.resolve(base: base, at: try utc("2026-03-04T10:00:00Z"))
        #expect(morning.entry == "wide")
        #expect(morning.validUntil == (try utc("2026-03-04T12:00:00Z")))  // "narrow" takes over
        #expect(
            try changes(narrowFirst, from: "2026-03-04T00:00:00Z", to: "2026-03-05T00:00:00Z") == [
                "2026-03-04T09:00:00Z wide", "2026-03-04T12:00:00Z narrow",
                "2026-03-04T14:00:00Z wide", "2026-03-04T18:00:00Z base",
            ])
    }

    @Test("a week of transitions of the issue's schedule")
    func week() throws {
        let schedule = try issueSchedule()
        // Monday 2026-03-02 00:00 to Monday 2026-03-09 00:00, Berlin (+01:00): the change at the
        // start is listed, the one at the end is not.
        let transitions = schedule.transitions(
            base: base, from: try utc("2026-03-01T23:00:00Z"), to: try utc("2026-03-08T23:00:00Z"))
        var expected: [String] = []
        for day in 2...8 {
            let previous = day - 1, pad = { (d: Int) in d < 10 ? "0\(d)" : "\(d)" }
            expected += ["2026-03-\(pad(previous))T23:00:00Z night-batch", "2026-03-\(pad(day))T05:00:00Z base"]
            if day <= 6 {
                expected += ["2026-03-\(pad(day))T08:00:00Z peak", "2026-03-\(pad(day))T17:00:00Z base"]
            }
        }
        #expect(transitions.map { "\($0.date.formatted(.iso8601)) \($0.resolution.entry ?? "base")" } == expected)
        #expect(transitions.count == 24)
        let peak = try #require(transitions.first { $0.resolution.entry == "peak" })
        #expect(peak.resolution.limits == PolicyLimits(requestsPerMinute: 200, tokensPerDay: 5_000_000))
        #expect(peak.resolution.validUntil == (try utc("2026-03-02T17:00:00Z")))
        let night = try #require(transitions.first)
        #expect(night.resolution.limits.requestsPerMinute == 1_000)
        #expect(night.description == "2026-03-01T23:00:00Z night-batch: requestsPerMinute=1000 tokensPerDay=5000000")
        // Starting a second later drops the change at the start; an empty interval has none.
        let later = schedule.transitions(
            base: base, from: try utc("2026-03-01T23:00:00.5Z"), to: try utc("2026-03-08T23:00:00Z"))
        #expect(later == Array(transitions.dropFirst()))
        #expect(schedule.transitions(base: base, from: try utc("2026-03-02T00:00:00Z"), to: try utc("2026-03-02T00:00:00Z")).isEmpty)
    }

    @Test("entries that never match, match always, or match a year away")
    func farAndNever() throws {
        let never = PolicyScheduleEntry(name: "never", cron: try CronExpression("* * 30 2 *"), isClosed: true)
        let now = try utc("2026-03-04T12:00:00Z")

        let onlyNever = PolicySchedule(entries: [never]).resolve(base: base, at: now)
        #expect(onlyNever.entry == nil && onlyNever.validUntil == nil && onlyNever.limits == base)
        #expect(PolicySchedule(entries: []).resolve(base: base, at: now).validUntil == nil)
        let always = PolicySchedule(entries: [PolicyScheduleEntry(name: "always", cron: try CronExpression("* * * * *"))])
        #expect(always.resolve(base: base, at: now).entry == "always")
        #expect(always.resolve(base: base, at: now).validUntil == nil)
        #expect(always.nextOpening(from: now) == now)
        #expect(PolicySchedule(entries: [never, always.entries[0]]).resolve(base: base, at: now).validUntil == nil)

        let past = PolicyScheduleEntry(name: "past", dates: [try LocalDate("2020-01-01")])
        #expect(PolicySchedule(entries: [past]).resolve(base: base, at: now).validUntil == nil)
        let christmas = PolicyScheduleEntry(name: "christmas", dates: [try LocalDate("2026-12-25")], isClosed: true)
        #expect(
            PolicySchedule(entries: [never, past, christmas]).resolve(base: base, at: now).validUntil
                == (try utc("2026-12-25T00:00:00Z")))
        let closedForever = PolicySchedule(entries: [
            PolicyScheduleEntry(name: "shut", cron: try CronExpression("* * * * *"), isClosed: true)
        ])
        #expect(closedForever.nextOpening(from: now) == nil)

        // February 29 is 725 days after 2026-03-04: beyond the horizon, validUntil is the horizon.
        let leap = PolicySchedule(entries: [PolicyScheduleEntry(name: "leap", cron: try CronExpression("* * 29 2 *"))])
        #expect(leap.resolve(base: base, at: now).validUntil == now.addingTimeInterval(PolicySchedule.searchHorizon))
        #expect(leap.resolve(base: base, at: try utc("2027-03-04T12:00:00Z")).validUntil == (try utc("2028-02-29T00:00:00Z")))
        #expect(leap.resolve(base: base, at: try utc("2028-02-29T12:00:00Z")).validUntil == (try utc("2028-03-01T00:00:00Z")))
    }

    @Test("dates and cron together: both must hold")
    func datesAndCron() throws {
        let schedule = PolicySchedule(
            timeZone: try PolicySchedule.timeZone(named: "Europe/Berlin"),
            entries: [
                PolicyScheduleEntry(
                    name: "sale", cron: try CronExpression("* 9-11 * * *"),
                    dates: [try LocalDate("2026-11-27"), try LocalDate("2026-11-30")],
                    limits: PolicyLimits(requestsPerMinute: 50))
            ])
        #expect(
            try changes(schedule, from: "2026-11-26T00:00:00Z", to: "2026-12-01T00:00:00Z") == [
                "2026-11-27T08:00:00Z sale", "2026-11-27T11:00:00Z base",
                "2026-11-30T08:00:00Z sale", "2026-11-30T11:00:00Z base",
            ])
    }

    @Test("mutating the entries takes effect; equality ignores derived state")
    func mutation() throws {
        var schedule = PolicySchedule()
        let now = try utc("2026-03-04T12:00:00Z")
        #expect(schedule.resolve(base: base, at: now).entry == nil)
        schedule.entries.append(PolicyScheduleEntry(name: "noon", cron: try CronExpression("* 12 * * *")))
        #expect(schedule.resolve(base: base, at: now).entry == "noon")
        #expect(schedule == PolicySchedule(entries: schedule.entries))
        #expect(schedule != PolicySchedule(timeZone: try PolicySchedule.timeZone(named: "Asia/Tokyo"), entries: schedule.entries))
        #expect(Set([schedule, PolicySchedule(entries: schedule.entries)]).count == 1)
    }

    @Test("unknown zones and inconsistent entries are rejected")
    func validation() throws {
        let unknown = try #require(throws: ScheduleError.self) { try PolicySchedule.timeZone(named: "Europe/Berln") }
        #expect(unknown.message == "unknown time zone 'Europe/Berln'; use an IANA name such as 'Europe/Berlin' or 'UTC'")
        let casing = try #require(throws: ScheduleError.self) { try PolicySchedule.timeZone(named: "europe/berlin") }
        #expect(casing.message.hasSuffix("did you mean 'Europe/Berlin'?"))
        #expect(try PolicySchedule.timeZone(named: "UTC").secondsFromGMT() == 0)

        let cron = try CronExpression("* 9-17 * * *")
        let cases: [([PolicyScheduleEntry], Int, String)] = [
            ([PolicyScheduleEntry(name: "", cron: cron)], 0, "a schedule entry needs a name"),
            (
                [PolicyScheduleEntry(name: "a", cron: cron), PolicyScheduleEntry(name: "a", dates: [try LocalDate("2026-01-01")])],
                1, "schedule entry name 'a' is used by entries 1 and 2"
            ),
            ([PolicyScheduleEntry(name: "a", cron: cron), PolicyScheduleEntry(name: "b")], 1, "needs cron or dates"),
            ([PolicyScheduleEntry(name: "a", dates: [])], 0, "has an empty dates list"),
            ([PolicyScheduleEntry(name: "a", cron: try CronExpression("* * 31 apr,jun *"))], 0, "never matches"),
        ]
        for (entries, index, message) in cases {
            let error = try #require(throws: ScheduleError.self) { try PolicySchedule(entries: entries).validate() }
            #expect(error.entryIndex == index, "\(error)")
            #expect(error.message.contains(message), "\(error)")
            #expect(error.description.hasPrefix("schedule entry \(index + 1): "))
        }
        try issueSchedule().validate()
        try PolicySchedule(entries: [PolicyScheduleEntry(name: "leap", cron: try CronExpression("* * 29 2 *"))]).validate()
    }
}
