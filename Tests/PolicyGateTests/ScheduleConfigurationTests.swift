import Foundation
import PolicyGate
import PolicyGateTestKit
import Testing

/// Schedules in configuration files: the `timezone` key and `[[limits.<provider>.schedule]]`
/// entries, in TOML and JSON, encoded and decoded, and every mistake reported at once where it
/// was written.
@Suite("Schedules in a configuration", .timeLimit(.minutes(5)))
struct ScheduleConfigurationTests {
    /// The issue's example: peak hours, a night batch and closed holidays over the base caps.
    static let example = """
        [limits.openai]
        requests_per_minute = 500
        tokens_per_day = 5_000_000
        timezone = "Europe/Berlin"

        [[limits.openai.schedule]]
        name = "peak"
        cron = "* 9-17 * * mon-fri"
        requests_per_minute = 200

        [[limits.openai.schedule]]
        name = "night-batch"
        cron = "* 0-5 * * *"
        requests_per_minute = 1_000

        [[limits.openai.schedule]]
        name = "holidays"
        dates = ["2026-12-25", "2026-12-26", "2027-01-01"]
        closed = true
        """

    static func expected() throws -> PolicyConfiguration {
        PolicyConfiguration(
            limits: ["openai": PolicyLimits(requestsPerMinute: 500, tokensPerDay: 5_000_000)],
            schedules: [
                "openai": PolicySchedule(
                    timeZone: try PolicySchedule.timeZone(named: "Europe/Berlin"),
                    entries: [
                        PolicyScheduleEntry(
                            name: "peak", cron: try CronExpression("* 9-17 * * mon-fri"),
                            limits: PolicyLimits(requestsPerMinute: 200)),
                        PolicyScheduleEntry(
                            name: "night-batch", cron: try CronExpression("* 0-5 * * *"),
                            limits: PolicyLimits(requestsPerMinute: 1_000)),
                        PolicyScheduleEntry(
                            name: "holidays",
                            dates: try ["2026-12-25", "2026-12-26", "2027-01-01"].map { try LocalDate($0) },
                            isClosed: true),
                    ])
            ])
    }

    // MARK: Reading

    @Test("the issue's TOML example reads as written, in order, without warnings")
    func issueExample() throws {
        let configuration = try PolicyConfiguration(toml: Self.example)
        #expect(configuration == (try Self.expected()))
        #expect(configuration.warnings.isEmpty)
        let schedule = try #require(configuration.schedules["openai"])
        #expect(schedule.timeZone.identifier == "Europe/Berlin")
        #expect(schedule.entries.map(\.name) == ["peak", "night-batch", "holidays"])
        #expect(schedule.entries.map(\.isClosed) == [false, false, true])
        #expect(schedule.entries[0].cron?.description == "* 9-17 * * mon-fri")
        #expect(schedule.entries[2].cron == nil)
        #expect(schedule.entries[2].limits == .unlimited)
    }

    @Test("dates may be TOML local dates, unquoted, or a mix of both forms")
    func tomlLocalDates() throws {
        let quoted = #"dates = ["2026-12-25", "2026-12-26", "2027-01-01"]"#
        for dates in [
            "dates = [2026-12-25, 2026-12-26, 2027-01-01]",
            #"dates = [2026-12-25, "2026-12-26", 2027-01-01]"#,
            "dates = [\n  2026-12-25,\n  2026-12-26,\n  2027-01-01,\n]",
        ] {
            let text = Self.example.replacingOccurrences(of: quoted, with: dates)
            #expect(text != Self.example)
            let configuration = try PolicyConfiguration(toml: text)
            #expect(configuration == (try Self.expected()), "\(dates)")
        }
        let single = try PolicyConfiguration(
            toml: """
                [limits.p]
                max_concurrent = 1

                [[limits.p.schedule]]
                name = "christmas"
                dates = [2026-12-25]
                closed = true
                """)
        #expect(single.schedules["p"]?.entries.first?.dates == [try LocalDate("2026-12-25")])
        #expect(single.schedules["p"]?.timeZone == .gmt)  // no timezone key: UTC
    }

    @Test("JSON uses the same keys and reads to the same configuration")
    func json() throws {
        let text = """
            {"limits": {"openai": {
              "requests_per_minute": 500, "tokens_per_day": 5000000, "timezone": "Europe/Berlin",
              "schedule": [
                {"name": "peak", "cron": "* 9-17 * * mon-fri", "requests_per_minute": 200},
                {"name": "night-batch", "cron": "* 0-5 * * *", "requests_per_minute": 1000},
                {"name": "holidays", "dates": ["2026-12-25", "2026-12-26", "2027-01-01"], "closed": true}
              ]
            }}}
            """
        let configuration = try PolicyConfiguration(json: Data(text.utf8))
        #expect(configuration == (try Self.expected()))
        #expect(configuration.warnings.isEmpty)

        // Errors carry key paths, without line and column.
        let bad = text.replacingOccurrences(of: "* 0-5 * * *", with: "* 0-5 * *")
        let error = try #require(throws: PolicyConfigurationError.self) { try PolicyConfiguration(json: Data(bad.utf8)) }
        #expect(
            error.diagnostics.map(\.description) == [
                #"error: limits.openai.schedule[1].cron: invalid cron expression "* 0-5 * *": "#
                    + "column 10: expected 5 fields (minute hour day-of-month month day-of-week), found 4"
            ])
    }

    @Test("encoding and decoding give back the same configuration, in JSON")
    func roundTrip() throws {
        let fromTOML = try PolicyConfiguration(toml: Self.example)
        let encoded = try JSONEncoder().encode(fromTOML)
        #expect(try JSONDecoder().decode(PolicyConfiguration.self, from: encoded) == fromTOML)
        #expect(try PolicyConfiguration(json: encoded) == fromTOML)

        // The encoded form is the documented one: the zone by name, dates as strings,
        // `closed` only where set.
        let object = try #require(try JSONSerialization.jsonObject(with: encoded) as? [String: Any])
        let openai = try #require((object["limits"] as? [String: Any])?["openai"] as? [String: Any])
        #expect(openai["timezone"] as? String == "Europe/Berlin")
        #expect(openai["requests_per_minute"] as? Int == 500)
        let entries = try #require(openai["schedule"] as? [[String: Any]])
        #expect(entries.map { $0["name"] as? String } == ["peak", "night-batch", "holidays"])
        #expect(entries[0]["closed"] == nil)
        #expect(entries[2]["closed"] as? Bool == true)
        #expect(entries[2]["dates"] as? [String] == ["2026-12-25", "2026-12-26", "2027-01-01"])

        // Built in code: UTC by default, an entry with both cron and dates, a provider whose
        // only gating is its schedule.
        let built = PolicyConfiguration(
            limits: ["a": PolicyLimits(maxConcurrent: 3)],
            schedules: [
                "a": PolicySchedule(entries: [
                    PolicyScheduleEntry(
                        name: "new-year-morning", cron: try CronExpression("*/15 0-11 * * *"),
                        dates: [try LocalDate("2027-01-01")],
                        limits: PolicyLimits(requestsPerHour: 10, tokensPerMinute: 1_000))
                ]),
                "b": PolicySchedule(
                    timeZone: try PolicySchedule.timeZone(named: "America/New_York"),
                    entries: [PolicyScheduleEntry(name: "weekend", cron: try CronExpression("* * * * sat,sun"), isClosed: true)]),
            ])
        #expect(built.validate().isEmpty)
        let decoded = try JSONDecoder().decode(PolicyConfiguration.self, from: try JSONEncoder().encode(built))
        #expect(decoded == built)
        #expect(decoded.schedules["a"]?.timeZone == .gmt)
    }

    @Test("a provider gated only by its schedule reads, runs and reports back as the same configuration")
    func scheduleOnlyProvider() async throws {
        let configuration = try PolicyConfiguration(
            toml: """
                [limits.local]
                timezone = "Europe/Berlin"

                [[limits.local.schedule]]
                name = "office-hours"
                cron = "* 9-17 * * mon-fri"
                max_concurrent = 1
                """)
        #expect(configuration.warnings.isEmpty)
        #expect(configuration.limits["local"] == nil)
        #expect(configuration.schedules["local"]?.entries.map(\.name) == ["office-hours"])
        #expect(try PolicyConfiguration(json: JSONEncoder().encode(configuration)) == configuration)

        // Monday 2026-03-02 10:00 in Berlin: gated by the entry's cap alone.
        let gate = try PolicyService(
            configuration: configuration, clock: ManualClock(),
            startDate: try Date("2026-03-02T09:00:00Z", strategy: .iso8601))
        #expect(gate.configuration == configuration)
        let key = PolicyKey(provider: "local", scope: .global)
        let held = try gate.tryAcquire(key)
        let error = try #require(throws: PolicyError.self) { _ = try gate.tryAcquire(key) }
        #expect(error.limit == .concurrency)
        _ = consume held

        try await gate.apply(configuration)
        #expect(gate.configuration == configuration)
    }

    // MARK: Mistakes

    @Test("every schedule mistake is reported at once, each at its key's line and column")
    func locatedErrors() throws {
        // Entry keys are indented by two spaces, so their column is 3; headers start at column 1.
        let text = """
            [limits.openai]
            requests_per_minute = 500
            timezone = "europe/berlin"

            [[limits.openai.schedule]]
              name = "peak"
              cron = "* 25 * * *"
              requests_per_minute = 200

            [[limits.openai.schedule]]
              name = "holidays"
              dates = ["2026-12-25", "2026-02-30"]
              close = true

            [[limits.openai.schedule]]
              cron = "* 0-5 * * *"
              requests_per_minute = 1_000

            [limits.anthropic]
            requests_per_minute = 50
            schedule = "peak"

            [limits.mistral]
            requests_per_minute = 50

            [[limits.mistral.schedule]]
              name = "peak"
              cron = "* 9-17 * * mon-fri"
              requests_per_minute = 20

            [[limits.mistral.schedule]]
              name = "peak"
              cron = "* 0-5 * * *"
              requests_per_minute = 100
            """
        let error = try #require(throws: PolicyConfigurationError.self) { try PolicyConfiguration(toml: text) }
        #expect(error.diagnostics.allSatisfy { $0.severity == .error })
        #expect(
            error.diagnostics.map(\.description) == [
                "3:1: error: limits.openai.timezone: unknown time zone 'europe/berlin'; did you mean 'Europe/Berlin'?",
                #"7:3: error: limits.openai.schedule[0].cron: invalid cron expression "* 25 * * *": "#
                    + "column 3: hour 25 is out of range 0-23",
                #"12:3: error: limits.openai.schedule[1].dates[1]: invalid date "2026-02-30": "#
                    + "column 9: day 30 is out of range 1-28 for 2026-02",
                "13:3: error: limits.openai.schedule[1].close: unknown key; did you mean 'closed'?",
                #"15:1: error: limits.openai.schedule[2]: needs a name (name = "peak"), "#
                    + #"shown in readouts and in "closed by schedule" errors"#,
                "21:1: error: limits.anthropic.schedule: must be an array of tables: "
                    + "write each entry as [[limits.anthropic.schedule]]",
                "31:1: error: limits.mistral.schedule[1]: schedule entry name 'peak' is used by entries 1 and 2",
            ])
        let unknown = try #require(error.diagnostics.first { $0.keyPath == "limits.openai.schedule[1].close" })
        #expect(unknown.suggestion == "closed")
        #expect(unknown.message == "unknown key")
        #expect(error.errors.count == 7)
    }

    @Test("bad values of each schedule key say what was expected")
    func wrongTypes() throws {
        let text = """
            [limits.p]
            requests_per_minute = 10
            timezone = 1

            [[limits.p.schedule]]
            name = 7
            cron = ["* * * * *"]
            dates = "2026-12-25"
            closed = "yes"

            [[limits.p.schedule]]
            name = "dates"
            dates = ["2026-1-05", 2026-12-24T10:00:00, "2026-13-01"]
            """
        let error = try #require(throws: PolicyConfigurationError.self) { try PolicyConfiguration(toml: text) }
        #expect(
            error.diagnostics.map(\.description) == [
                "3:1: error: limits.p.timezone: must be an IANA time zone name such as 'Europe/Berlin'",
                // A name of the wrong type is reported once, as the wrong type.
                "6:1: error: limits.p.schedule[0].name: must be a string",
                #"7:1: error: limits.p.schedule[0].cron: must be a 5-field cron expression such as "* 9-17 * * mon-fri""#,
                #"8:1: error: limits.p.schedule[0].dates: must be an array of dates such as ["2026-12-25"]"#,
                "9:1: error: limits.p.schedule[0].closed: must be true or false",
                #"13:1: error: limits.p.schedule[1].dates[0]: invalid date "2026-1-05": "#
                    + "column 7: expected a date as yyyy-mm-dd, got '2026-1-05'",
                #"13:1: error: limits.p.schedule[1].dates[1]: must be a date such as "2026-12-25""#,
                #"13:1: error: limits.p.schedule[1].dates[2]: invalid date "2026-13-01": "#
                    + "column 6: month 13 is out of range 1-12",
            ])
    }

    @Test("entries the schedule's own rules reject, and warnings that do not stop loading")
    func scheduleRulesAndWarnings() throws {
        let neither = try #require(throws: PolicyConfigurationError.self) {
            try PolicyConfiguration(
                toml: """
                    [limits.p]
                    requests_per_minute = 10

                    [[limits.p.schedule]]
                    name = "always"
                    requests_per_minute = 5
                    """)
        }
        #expect(
            neither.diagnostics.map(\.description) == [
                "4:1: error: limits.p.schedule[0]: schedule entry 'always' needs cron or dates (or both)"
            ])

        let never = try #require(throws: PolicyConfigurationError.self) {
            try PolicyConfiguration(
                toml: """
                    [limits.p]
                    requests_per_minute = 10

                    [[limits.p.schedule]]
                    name = "feb-30"
                    cron = "* * 30 2 *"
                    closed = true
                    """)
        }
        #expect(
            never.diagnostics.map(\.message) == [
                "cron '* * 30 2 *' of schedule entry 'feb-30' never matches: "
                    + "none of its days of the month exists in its months"
            ])

        let warned = try PolicyConfiguration(
            toml: """
                [limits.p]
                requests_per_minute = 10
                timezone = "UTC"

                [limits.q]
                requests_per_minute = 10

                [[limits.q.schedule]]
                name = "nothing"
                cron = "* 9-17 * * *"

                [[limits.q.schedule]]
                name = "later"
                cron = "* 12 * * *"
                requests_per_minute = 1
                """)
        #expect(
            warned.warnings.map(\.description) == [
                "3:1: warning: limits.p.timezone: has no effect without [[limits.p.schedule]] entries",
                "8:1: warning: limits.q.schedule[0]: sets no caps and is not closed: "
                    + "while it applies the base limits hold and later entries are skipped",
            ])
        #expect(warned.schedules["p"] == nil)
        #expect(warned.schedules["q"]?.entries.count == 2)
    }

    @Test("a configuration built in code is checked as a decoded one would be")
    func validateBuiltInCode() async throws {
        let duplicate = PolicyConfiguration(
            limits: ["p": PolicyLimits(requestsPerMinute: 10)],
            schedules: [
                "p": PolicySchedule(entries: [
                    PolicyScheduleEntry(name: "a", cron: try CronExpression("* 9 * * *"), limits: PolicyLimits(requestsPerMinute: 0)),
                    PolicyScheduleEntry(name: "a", cron: try CronExpression("* 10 * * *"), isClosed: true),
                ])
            ])
        #expect(
            duplicate.validate().map(\.description) == [
                "error: limits.p.schedule[0].requests_per_minute: must be positive, got 0; leave the key out for no cap",
                "error: limits.p.schedule[1]: schedule entry name 'a' is used by entries 1 and 2",
            ])
        #expect(throws: PolicyError.self) { _ = try PolicyService(configuration: duplicate, clock: ManualClock()) }

        // A good configuration leaves a running gate as it is when a bad one is applied.
        let good = PolicyConfiguration(
            limits: ["p": PolicyLimits(requestsPerMinute: 10)],
            schedules: [
                "p": PolicySchedule(entries: [
                    PolicyScheduleEntry(name: "a", cron: try CronExpression("* 9 * * *"), isClosed: true)
                ])
            ])
        let gate = try PolicyService(configuration: good, clock: ManualClock())
        let error = try await #require(throws: PolicyError.self) { try await gate.apply(duplicate) }
        #expect(error.code == .invalidLimits)
        #expect(gate.configuration == good)
    }
}
