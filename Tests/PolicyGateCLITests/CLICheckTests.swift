import Foundation
import Testing

/// `policy-gate check`: validation, the limits table, transitions, JSON.
@Suite("CLI check")
struct CLICheckTests {
    /// An office-hours schedule in Berlin; worked by hand around the 2026 spring change
    /// (Sunday 29 March, 02:00 CET becomes 03:00 CEST, i.e. at 01:00 UTC): 09:00 and 18:00 local
    /// are 08:00Z and 17:00Z on Saturday the 28th (+01:00), 07:00Z and 16:00Z on Sunday (+02:00).
    static let berlin = """
        [limits.api]
        requests_per_minute = 100
        timezone = "Europe/Berlin"

        [[limits.api.schedule]]
        name = "office"
        cron = "* 9-17 * * *"
        requests_per_minute = 10
        """

    @Test("a valid file: exit 0, every provider's caps in an aligned table")
    func validFileTable() throws {
        let directory = try TemporaryDirectory()
        let path = try directory.write(
            "small.toml",
            """
            [limits.openai]
            requests_per_minute = 500
            tokens_per_minute = 200_000
            max_concurrent = 16

            [limits.anthropic]
            requests_per_minute = 50
            """)
        let run = runTool(["check", path, "--from", "2026-12-24T09:00:00Z"])
        #expect(run.status == 0)
        #expect(run.stderr == "")
        #expect(
            run.stdout == """
                \(path): valid, 2 providers, no warnings

                Limits in force at Thu 2026-12-24 09:00 UTC:

                  provider   req/min  tok/min  concurrent  in force
                  anthropic       50        -           -  base
                  openai         500  200,000          16  base
                  (- no cap)

                """)
    }

    @Test("transitions are listed in the provider's zone, with the offset changing at DST")
    func transitionsText() throws {
        let directory = try TemporaryDirectory()
        let path = try directory.write("berlin.toml", Self.berlin)
        let run = runTool(["check", path, "--from", "2026-03-28T00:00:00Z", "--days", "2"])
        #expect(run.status == 0)
        let expected = """
              provider  req/min  in force
              api           100  base

            Transitions from Sat 2026-03-28 00:00 UTC for 2 days:

              api (Europe/Berlin), 4 changes:
                from                         entry   req/min
                Sat 2026-03-28 09:00 +01:00  office       10
                Sat 2026-03-28 18:00 +01:00  base        100
                Sun 2026-03-29 09:00 +02:00  office       10
                Sun 2026-03-29 18:00 +02:00  base        100

            """
        #expect(run.stdout.hasSuffix(expected), "\(run.stdout)")
    }

    @Test("input and output caps get their own columns; count_cache_reads = false is said in text and JSON")
    func inputOutputCaps() throws {
        let directory = try TemporaryDirectory()
        let path = try directory.write(
            "anthropic.toml",
            """
            [limits.anthropic]
            tokens_per_minute        = 45_000
            input_tokens_per_minute  = 40_000
            output_tokens_per_minute = 8_000
            count_cache_reads        = false
            """)
        let run = runTool(["check", path, "--from", "2026-03-28T10:00:00Z"])
        #expect(run.status == 0)
        #expect(run.stdout.contains("provider   tok/min  in/min  out/min  in force"), "\(run.stdout)")
        #expect(run.stdout.contains("anthropic   45,000  40,000    8,000  base"), "\(run.stdout)")
        #expect(run.stdout.contains("anthropic: cache reads do not count as input tokens"), "\(run.stdout)")
        let json = try #require(parseJSON(runTool(["check", path, "--json"]).stdout))
        let provider = try #require((json["providers"] as? [[String: Any]])?.first)
        #expect(
            provider["base"] as? [String: Int]
                == ["tokens_per_minute": 45_000, "input_tokens_per_minute": 40_000, "output_tokens_per_minute": 8_000])
        #expect(provider["count_cache_reads"] as? Bool == false)
    }

    @Test("reserved_for_interactive and batch_aging_seconds are said in text and JSON")
    func priorityClasses() throws {
        let directory = try TemporaryDirectory()
        let path = try directory.write(
            "openai.toml",
            """
            [limits.openai]
            requests_per_minute      = 500
            reserved_for_interactive = 0.2
            batch_aging_seconds      = 45
            """)
        let run = runTool(["check", path, "--from", "2026-03-28T10:00:00Z"])
        #expect(run.status == 0)
        #expect(
            run.stdout.contains(
                "openai: batch calls see every cap less reserved_for_interactive = 0.2 of it, until promoted after 45.0s of waiting"),
            "\(run.stdout)")
        let json = try #require(parseJSON(runTool(["check", path, "--json"]).stdout))
        let provider = try #require((json["providers"] as? [[String: Any]])?.first)
        #expect(provider["reserved_for_interactive"] as? Double == 0.2)
        #expect(provider["batch_aging_seconds"] as? Double == 45)
    }

    @Test("spend caps and prices are shown as exact decimals, in text and JSON")
    func spendBudgets() throws {
        let directory = try TemporaryDirectory()
        let path = try directory.write(
            "openai.toml",
            """
            [limits.openai]
            cost_per_day   = 40
            cost_per_month = 1_000.5
            timezone       = "Asia/Tokyo"

            [limits.openai.prices."gpt-4o*"]
            input      = 2.50
            output     = 10.00
            cache_read = 1.25
            """)
        let run = runTool(["check", path, "--from", "2026-03-28T10:00:00Z"])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(
            run.stdout.contains("openai: spend caps cost_per_day = 40, cost_per_month = 1000.5 (calendar months of Asia/Tokyo)"),
            "\(run.stdout)")
        #expect(run.stdout.contains("gpt-4o*    2.5      10        1.25"), "\(run.stdout)")
        #expect(run.stdout.contains("a call naming no model, is refused: unpriced"))
        let json = try #require(parseJSON(runTool(["check", path, "--json"]).stdout))
        let provider = try #require((json["providers"] as? [[String: Any]])?.first)
        #expect(provider["costs"] as? [String: String] == ["cost_per_day": "40", "cost_per_month": "1000.5"])
        #expect(provider["cost_timezone"] as? String == "Asia/Tokyo")
        #expect((provider["prices"] as? [String: [String: String]])?["gpt-4o*"] == ["input": "2.5", "output": "10", "cache_read": "1.25"])
    }

    @Test("--json: effective caps at --from and every transition with time, entry and caps")
    func transitionsJSON() throws {
        let directory = try TemporaryDirectory()
        let path = try directory.write("berlin.toml", Self.berlin)
        let run = runTool(["check", path, "--from", "2026-03-28T10:00:00+01:00", "--days", "2", "--json"])
        #expect(run.status == 0)
        let json = try #require(parseJSON(run.stdout), "not JSON: \(run.stdout)")
        #expect(json["valid"] as? Bool == true)
        #expect(json["schema_version"] as? Int == 1)
        #expect(json["from"] as? String == "2026-03-28T09:00:00Z")
        #expect(json["to"] as? String == "2026-03-30T09:00:00Z")
        let providers = try #require(json["providers"] as? [[String: Any]])
        #expect(providers.count == 1)
        let api = providers[0]
        #expect(api["name"] as? String == "api")
        #expect(api["timezone"] as? String == "Europe/Berlin")
        #expect(api["base"] as? [String: Int] == ["requests_per_minute": 100])
        // 10:00 Berlin on Saturday is office hours, until 18:00.
        let effective = try #require(api["effective"] as? [String: Any])
        #expect(effective["entry"] as? String == "office")
        #expect(effective["closed"] as? Bool == false)
        #expect(effective["limits"] as? [String: Int] == ["requests_per_minute": 10])
        #expect(effective["until"] as? String == "2026-03-28T18:00:00+01:00")

        let transitions = try #require(api["transitions"] as? [[String: Any]])
        let summary = transitions.map { transition in
            [
                transition["time"] as? String ?? "?",
                transition["entry"] is NSNull ? "base" : transition["entry"] as? String ?? "?",
                "\((transition["limits"] as? [String: Int])?["requests_per_minute"] ?? 0)",
            ]
        }
        // The window ends at Monday 09:00Z = 11:00 CEST, so Monday's office hours start inside it.
        #expect(
            summary == [
                ["2026-03-28T18:00:00+01:00", "base", "100"],
                ["2026-03-29T09:00:00+02:00", "office", "10"],
                ["2026-03-29T18:00:00+02:00", "base", "100"],
                ["2026-03-30T09:00:00+02:00", "office", "10"],
            ])
        // The times are instants a script can parse: Sunday 09:00 CEST is 07:00 UTC.
        let formatter = ISO8601DateFormatter()
        #expect(formatter.date(from: summary[1][0]) == formatter.date(from: "2026-03-29T07:00:00Z"))
        #expect(transitions.allSatisfy { $0["closed"] as? Bool == false })
    }

    @Test("a change exactly at --from is listed, and 'until' is the next one")
    func transitionAtFrom() throws {
        let directory = try TemporaryDirectory()
        let path = try directory.write("berlin.toml", Self.berlin)
        // Saturday 09:00 Berlin (+01:00) is 08:00Z: office hours begin at that very instant.
        let run = runTool(["check", path, "--from", "2026-03-28T08:00:00Z", "--days", "1", "--json"])
        let api = try #require((parseJSON(run.stdout)?["providers"] as? [[String: Any]])?.first)
        let effective = try #require(api["effective"] as? [String: Any])
        #expect(effective["entry"] as? String == "office")
        #expect(effective["until"] as? String == "2026-03-28T18:00:00+01:00")
        // The day ends at Sunday 08:00Z, which is after Sunday 09:00 CEST (07:00Z).
        let times = (api["transitions"] as? [[String: Any]])?.map { $0["time"] as? String }
        #expect(times == ["2026-03-28T09:00:00+01:00", "2026-03-28T18:00:00+01:00", "2026-03-29T09:00:00+02:00"])
    }

    @Test("a closed entry shows as closed, its caps left blank")
    func closedEntry() throws {
        let directory = try TemporaryDirectory()
        let path = try directory.write(
            "closed.toml",
            """
            [limits.api]
            max_concurrent = 2

            [[limits.api.schedule]]
            name = "christmas"
            dates = ["2026-12-25"]
            closed = true
            """)
        let run = runTool(["check", path, "--from", "2026-12-24T12:00:00Z", "--days", "3"])
        #expect(run.status == 0)
        #expect(run.stdout.contains("  api (UTC), 2 changes:\n"), "\(run.stdout)")
        #expect(run.stdout.contains("    Fri 2026-12-25 00:00 UTC  closed (christmas)\n"), "\(run.stdout)")
        #expect(run.stdout.contains("    Sat 2026-12-26 00:00 UTC  base                         2\n"), "\(run.stdout)")
        let json = try #require(parseJSON(runTool(["check", path, "--from", "2026-12-24T12:00:00Z", "--json"]).stdout))
        let transitions = try #require((json["providers"] as? [[String: Any]])?.first?["transitions"] as? [[String: Any]])
        #expect(transitions.first?["closed"] as? Bool == true)
        #expect(transitions.first?["entry"] as? String == "christmas")
    }

    @Test("an invalid file: every error with line:column on stderr, exit 1, nothing on stdout")
    func invalidFile() throws {
        let directory = try TemporaryDirectory()
        let path = try directory.write(
            "bad.toml",
            """
            [limits.openai]
            requests_per_minute = 0
            tokens_pre_minute = 5

            [limits.b]
            max_concurrent = "x"
            """)
        let run = runTool(["check", path])
        #expect(run.status == 1)
        #expect(run.stdout == "")
        let lines = run.stderr.split(separator: "\n").map(String.init)
        #expect(lines.count == 4, "\(run.stderr)")
        #expect(lines[0].hasPrefix("\(path):2:1: error: limits.openai.requests_per_minute: must be positive"))
        #expect(
            lines[1] == "\(path):3:1: error: limits.openai.tokens_pre_minute: unknown key; did you mean 'tokens_per_minute'?")
        #expect(lines[2].hasPrefix("\(path):6:1: error: limits.b.max_concurrent: "))
        #expect(lines[3] == "error: \(path) is not a valid configuration (3 errors)")

        // The same as JSON, for scripts.
        let json = runTool(["check", path, "--json"])
        #expect(json.status == 1)
        let object = try #require(parseJSON(json.stdout))
        #expect(object["valid"] as? Bool == false)
        let errors = try #require(object["errors"] as? [[String: Any]])
        #expect(errors.map { $0["line"] as? Int } == [2, 3, 6])
        #expect(errors.map { $0["column"] as? Int } == [1, 1, 1])
        #expect(errors[1]["suggestion"] as? String == "tokens_per_minute")
    }

    @Test("a syntax error is reported with its position")
    func syntaxError() throws {
        let directory = try TemporaryDirectory()
        let path = try directory.write("syntax.toml", "[limits.openai\nx = 1\n")
        let run = runTool(["check", path])
        #expect(run.status == 1)
        #expect(run.stderr.hasPrefix("\(path):1:15: error: "), "\(run.stderr)")
    }

    @Test("warnings are printed on stderr, and the file still passes")
    func warnings() throws {
        let directory = try TemporaryDirectory()
        let path = try directory.write(
            "warn.toml",
            """
            [limits.openai]
            requests_per_minute = 100
            requests_per_hour = 50
            """)
        let run = runTool(["check", path, "--from", "2026-01-01T00:00:00Z"])
        #expect(run.status == 0)
        #expect(run.stdout.hasPrefix("\(path): valid, 1 provider, 1 warning (on standard error)\n"))
        #expect(run.stderr.hasPrefix("\(path):2:1: warning: limits.openai.requests_per_minute: "), "\(run.stderr)")
        let json = try #require(parseJSON(runTool(["check", path, "--json"]).stdout))
        #expect((json["warnings"] as? [[String: Any]])?.first?["line"] as? Int == 2)
    }

    @Test("a file that is not there: a one-line message and exit 1")
    func missingFile() throws {
        let directory = try TemporaryDirectory()
        let path = directory.path("absent.toml")
        let run = runTool(["check", path])
        #expect(run.status == 1)
        #expect(run.stderr == "error: cannot read '\(path)': No such file or directory\n")
    }

    @Test("a JSON configuration is read by its extension")
    func jsonConfiguration() throws {
        let directory = try TemporaryDirectory()
        let path = try directory.write("policy.json", #"{"limits": {"openai": {"requests_per_minute": 5}}}"#)
        let run = runTool(["check", path, "--from", "2026-01-01T00:00:00Z"])
        #expect(run.status == 0)
        #expect(run.stdout.contains("  openai          5  base\n"), "\(run.stdout)")
    }

    @Test("nested levels and the permit hold warning are shown, in text and JSON")
    func levelsAndHoldWarning() throws {
        let directory = try TemporaryDirectory()
        let path = try directory.write(
            "teams.toml",
            """
            [gate]
            permit_hold_warning = "10m"

            [limits.openai]
            requests_per_minute = 500

            [limits.openai.per.user]
            requests_per_minute = 20
            """)
        let run = runTool(["check", path, "--from", "2026-12-24T09:00:00Z"])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stdout.contains("    per user       20  each user, inside openai\n"), "\(run.stdout)")
        #expect(run.stdout.contains("Permits held longer than 10m 00s are reported (permit_hold_warning)."), "\(run.stdout)")
        let json = runTool(["check", "--json", path, "--from", "2026-12-24T09:00:00Z"])
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        #expect(object["permit_hold_warning_seconds"] as? Double == 600)
        let providers = try #require(object["providers"] as? [[String: Any]])
        let per = try #require(providers.first?["per"] as? [String: [String: Int]])
        #expect(per == ["user": ["requests_per_minute": 20]])
    }

    @Test("model groups are shown, and --model says which group a model counts in, in text and JSON")
    func modelGroups() throws {
        let directory = try TemporaryDirectory()
        let path = try directory.write(
            "models.toml",
            """
            [limits.anthropic]
            requests_per_minute = 500

            [limits.anthropic.models.sonnet]
            match               = ["claude-sonnet-4*", "claude-3-7-sonnet*"]
            requests_per_minute = 50

            [limits.anthropic.models.sonnet45]
            match               = "claude-sonnet-4-5"
            requests_per_minute = 20

            [limits.openai]
            requests_per_minute = 100
            """)
        let run = runTool(["check", path, "--from", "2026-12-24T09:00:00Z", "--model", "claude-sonnet-4-0"])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(
            run.stdout.contains("    model sonnet         50  claude-sonnet-4*, claude-3-7-sonnet*, inside each key's caps\n"),
            "\(run.stdout)")
        #expect(run.stdout.contains("Model 'claude-sonnet-4-0' of anthropic: in model group 'sonnet'"), "\(run.stdout)")
        // The exact name is more specific than the pattern; an unknown model is in no group.
        let exact = runTool(["check", path, "--from", "2026-12-24T09:00:00Z", "--model", "claude-sonnet-4-5"])
        #expect(exact.stdout.contains("Model 'claude-sonnet-4-5' of anthropic: in model group 'sonnet45'"), "\(exact.stdout)")
        let none = runTool(["check", path, "--from", "2026-12-24T09:00:00Z", "--model", "claude-opus-4-1"])
        #expect(
            none.stdout.contains("Model 'claude-opus-4-1' of anthropic: in no model group (the provider's caps only)"), "\(none.stdout)")
        let json = runTool(["check", "--json", path, "--from", "2026-12-24T09:00:00Z", "--model", "claude-3-7-sonnet-latest"])
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        let providers = try #require(object["providers"] as? [[String: Any]])
        let anthropic = try #require(providers.first { $0["name"] as? String == "anthropic" })
        let models = try #require(anthropic["models"] as? [String: [String: Any]])
        #expect(models["sonnet"]?["match"] as? [String] == ["claude-sonnet-4*", "claude-3-7-sonnet*"])
        #expect(models["sonnet"]?["limits"] as? [String: Int] == ["requests_per_minute": 50])
        #expect(anthropic["model_group"] as? String == "sonnet")
        let openai = try #require(providers.first { $0["name"] as? String == "openai" })
        #expect(openai["model_group"] is NSNull, "\(openai)")
        let plain = runTool(["check", "--json", path, "--from", "2026-12-24T09:00:00Z"])
        let plainObject = try #require(try JSONSerialization.jsonObject(with: Data(plain.stdout.utf8)) as? [String: Any])
        #expect((plainObject["providers"] as? [[String: Any]])?.first?["model_group"] == nil)
    }

    @Test("the example configuration in Examples/ is valid")
    func exampleConfiguration() throws {
        let example = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Examples/policy.toml").path
        let run = runTool(["check", example, "--from", "2026-12-23T10:00:00Z", "--days", "3"])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stderr == "")
        #expect(run.stdout.contains("Fri 2026-12-25 00:00 +01:00  closed (holidays)"), "\(run.stdout)")
    }
}
