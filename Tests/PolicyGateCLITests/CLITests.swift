import Foundation
import PolicyGateCLI
import Testing

/// The command line itself: help, parsing, usage errors, and the values options take.
@Suite("CLI arguments and help")
struct CLITests {
    @Test("--help and no arguments list the commands; exit 0")
    func topLevelHelp() {
        for arguments in [[], ["--help"], ["-h"], ["help"]] {
            let run = runTool(arguments)
            #expect(run.status == 0)
            #expect(run.stderr == "")
            #expect(run.stdout.hasPrefix("OVERVIEW: "))
            #expect(run.stdout.contains("\n  check     Validate a policy file"))
            #expect(run.stdout.contains("\n  simulate  Replay traffic"))
            #expect(run.stdout.contains("\n  migrate   Apply the shared store's schema migrations"))
        }
    }

    @Test("per-command help lists exactly the options the table accepts", arguments: ["check", "simulate", "migrate"])
    func commandHelp(command: String) throws {
        let run = runTool([command, "--help"])
        #expect(run.status == 0)
        #expect(run.stdout.hasPrefix("OVERVIEW: "))
        #expect(run.stdout.contains("USAGE: policy-gate \(command)"))
        #expect(runTool(["help", command]).stdout == run.stdout)
        let spec = try #require([CheckCommand.spec, SimulateCommand.spec, MigrateCommand.spec].first { $0.name == command })
        for option in spec.options {
            let spelling = option.valueName.map { "\(option.name) <\($0)>" } ?? option.name
            #expect(run.stdout.contains("\n  \(spelling)  "), "help lacks \(spelling)")
        }
        #expect(run.stdout.contains("\n  -h, --help"))
        // Every line fits 80 columns.
        #expect(run.stdout.split(separator: "\n").allSatisfy { $0.count <= 80 }, "\(run.stdout)")
    }

    @Test(
        "migrate refuses a bad command line before connecting",
        arguments: [
            (["migrate", "--tls", "allow"], "error: --tls 'allow' is not one of disable, prefer, require, verify-ca, verify-full"),
            (["migrate", "--url", "postgres://owner:hunter2@db/app"], "error: --url must not carry a password"),
            (["migrate", "--lock-timeout-ms", "0"], "error: --lock-timeout-ms '0' is not a whole number"),
        ])
    func migrateUsage(arguments: [String], message: String) {
        let run = runTool(arguments)
        #expect(run.status == 2)
        #expect(run.stderr.hasPrefix(message), "\(run.stderr)")
        #expect(!run.stderr.contains("hunter2"))
    }

    #if !Postgres
    @Test("migrate without the Postgres trait says how to get it")
    func migrateWithoutTrait() {
        let run = runTool(["migrate", "--url", "postgres://owner@db/app"])
        #expect(run.status == 1)
        #expect(run.stderr.contains("--traits Postgres"))
    }
    #endif

    @Test("an unknown option: one clear line, exit 2")
    func unknownOption() {
        let run = runTool(["check", "policy.toml", "--x"])
        #expect(run.status == 2)
        #expect(run.stdout == "")
        #expect(run.stderr == "error: unknown option '--x' for 'policy-gate check'; see 'policy-gate check --help'\n")
        let simulate = runTool(["simulate", "--verbose=1"])
        #expect(simulate.status == 2)
        #expect(simulate.stderr.hasPrefix("error: unknown option '--verbose' for 'policy-gate simulate'"))
    }

    @Test(
        "usage errors exit 2 with a message naming the problem",
        arguments: [
            (["frob"], "error: unknown command 'frob'; see 'policy-gate --help'"),
            (["--version"], "error: unknown option '--version'; see 'policy-gate --help'"),
            (["check"], "error: 'policy-gate check' needs <file>; see 'policy-gate check --help'"),
            (["check", "a", "b"], "error: unexpected argument 'b' for 'policy-gate check'"),
            (["check", "a", "--from"], "error: option '--from' needs a value: --from <date>"),
            (["check", "a", "--from", "--json"], "error: option '--from' needs a value"),
            (["check", "a", "--json=yes"], "error: option '--json' takes no value"),
            (["check", "a", "--days", "1", "--days", "2"], "error: option '--days' is given more than once"),
            (["check", "a", "--days", "0"], "error: --days '0' is not a whole number from 1 to 366"),
            (["check", "a", "--from", "2026-12-24"], "error: --from '2026-12-24' is not an ISO 8601 date and time"),
            (["simulate", "--duration", "soon"], "error: --duration 'soon' is not a duration"),
            (["simulate", "--seed", "-1"], "error: --seed '-1' is not a whole number"),
        ])
    func usageErrors(arguments: [String], message: String) {
        let run = runTool(arguments)
        #expect(run.status == 2, "\(arguments)")
        #expect(run.stdout == "")
        #expect(run.stderr.hasPrefix(message), "\(run.stderr)")
        #expect(run.stderr.hasSuffix("--help'\n"))
    }

    @Test("--name=value, --name value and -- are all accepted")
    func optionSpellings() throws {
        let parsed = try CheckCommand.spec.parse(["--from=2026-01-01T00:00:00Z", "--days", "3", "--", "--odd-name.toml"])
        #expect(parsed.value("--from") == "2026-01-01T00:00:00Z")
        #expect(parsed.value("--days") == "3")
        #expect(parsed.arguments == ["--odd-name.toml"])
        #expect(!parsed.flag("--json"))
    }

    @Test("instants: ISO 8601 with Z or an offset, optional seconds and fractions")
    func instants() {
        let expected = Date(timeIntervalSince1970: 1_798_102_800)  // 2026-12-24T09:00:00Z
        #expect(Values.parseInstant("2026-12-24T09:00:00Z") == expected)
        #expect(Values.parseInstant("2026-12-24T10:00:00+01:00") == expected)
        #expect(Values.parseInstant("2026-12-24T04:00-0500") == expected)
        #expect(Values.parseInstant("2026-12-24 09:00:00z") == expected)
        #expect(Values.parseInstant("2026-12-24T09:00:00.250Z") == expected.addingTimeInterval(0.25))
        #expect(Values.parseInstant("now", now: expected) == expected)
        for bad in ["2026-12-24", "2026-12-24T09:00:00", "2026-02-29T00:00Z", "2026-13-01T00:00Z", "2026-12-24T24:00Z", "x"] {
            #expect(Values.parseInstant(bad) == nil, "\(bad)")
        }
        #expect(Values.iso8601(expected) == "2026-12-24T09:00:00Z")
        #expect(Values.iso8601(expected, in: TimeZone(identifier: "America/New_York")!) == "2026-12-24T04:00:00-05:00")
        #expect(Values.readable(expected) == "Thu 2026-12-24 09:00 UTC")
    }

    @Test("durations: read as 90s, 15m, 1h30m, 500ms; shown for people")
    func durations() {
        #expect(Values.parseDuration("90s") == .seconds(90))
        #expect(Values.parseDuration("90") == .seconds(90))
        #expect(Values.parseDuration("1h30m") == .seconds(5_400))
        #expect(Values.parseDuration("500ms") == .milliseconds(500))
        #expect(Values.parseDuration("2d") == .seconds(172_800))
        for bad in ["", "0s", "1x", "h", "-5s", "1.5h"] { #expect(Values.parseDuration(bad) == nil, "\(bad)") }
        #expect(Values.readable(Duration.zero) == "0s")
        #expect(Values.readable(Duration.milliseconds(250)) == "250ms")
        #expect(Values.readable(Duration.milliseconds(59_940)) == "59.9s")
        #expect(Values.readable(Duration.seconds(60)) == "1m 00s")
        #expect(Values.readable(Duration.seconds(3_725)) == "1h 02m")
        #expect(Values.count(5_000_000) == "5,000,000")
        #expect(Values.count(999) == "999")
    }
}
