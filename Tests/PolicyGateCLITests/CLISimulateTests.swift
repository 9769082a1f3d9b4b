import Foundation
import Testing

/// `policy-gate simulate`: wiring of configuration, trace and options to the engine, and its
/// output, on small cases whose answers are worked out by hand.
@Suite("CLI simulate")
struct CLISimulateTests {
    /// 10 calls arrive at once under 5 requests per minute: 5 are admitted at t = 0, the other 5
    /// wait until the first 5 leave the sliding minute. The gate counts a minute in 1 s buckets
    /// and drops a bucket whole, between 60 and 61 s after the calls in it (never early): calls
    /// at the very start of bucket 0 leave at 61 s. So 5 waits of 0 and 5 of 61 s: p50 (the 6th
    /// shortest) 61 s, mean 30.5 s; each call runs 1 s, so the last ends at 62 s.
    static let burstConfig = "[limits.api]\nrequests_per_minute = 5\n"
    static let burstTrace = String(
        repeating: #"{"at": 0, "provider": "api", "estimated_tokens": 10, "actual_tokens": 8, "duration": 1}"# + "\n",
        count: 10)

    struct Burst {
        let directory: TemporaryDirectory
        let config: String
        let trace: String

        init() throws {
            directory = try TemporaryDirectory()
            config = try directory.write("policy.toml", CLISimulateTests.burstConfig)
            trace = try directory.write("calls.jsonl", CLISimulateTests.burstTrace)
        }
    }

    @Test("10 calls at t=0 under 5/min: 5 at once, 5 after about 60 s (summary)")
    func burstSummary() throws {
        let burst = try Burst()
        let run = runTool(["simulate", "--config", burst.config, "--trace", burst.trace, "--from", "2026-01-05T09:00:00Z"])
        #expect(run.status == 0, "\(run.stderr)")
        let lines = run.stdout.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        #expect(
            lines.first == "Simulated 1m 02s of traffic from Mon 2026-01-05 09:00 UTC: 10 calls (trace \(burst.trace)).")
        #expect(lines.count > 1 && lines[1].hasPrefix("Replayed in "))  // wall time varies
        #expect(
            Array(lines.dropFirst(2)) == [
                "",
                "api: 10 calls, 1 key",
                "  admitted     10 (5 at once, 5 after waiting)",
                "  had to wait  5: requests_per_minute 5",
                "  refused      0",
                "  queue wait   p50 1m 01s  p95 1m 01s  p99 1m 01s  max 1m 01s  mean 30.5s",
                "  peaks        5 in flight (at +0s), 5 queued (at +0s)",
                "  caps hit     requests_per_minute at +0s",
                "  tokens       100 estimated, 80 committed",
                "",
                "  limit                cap  peak used        at   first hit  calls held",
                "  requests_per_minute    5          5  100%  +0s  +0s                 5",
                "",
            ])
    }

    @Test("Input and output parts: the tokens line and the JSON give them")
    func parts() throws {
        let directory = try TemporaryDirectory()
        let config = try directory.write("policy.toml", "[limits.api]\ninput_tokens_per_minute = 1000\noutput_tokens_per_minute = 500\n")
        let trace = try directory.write(
            "calls.jsonl",
            """
            {"at": 0, "provider": "api", "estimated_input_tokens": 300, "estimated_output_tokens": 200, "actual_input_tokens": 250, "actual_output_tokens": 120, "actual_cache_read_tokens": 30, "duration": 1}
            {"at": 1, "provider": "api", "estimated_tokens": 100, "actual_tokens": 90, "duration": 1}

            """)
        let run = runTool(["simulate", "--config", config, "--trace", trace, "--from", "2026-01-05T09:00:00Z"])
        #expect(run.status == 0, "\(run.stderr)")
        // 300 + 100 in and 200 + 100 out estimated (a total counts as both); 250 + 30 cache reads
        // + 90 in, 120 + 90 out committed, 400 + 90 in all.
        let tokens = run.stdout.split(separator: "\n").first { $0.hasPrefix("  tokens ") }
        #expect(tokens?.hasSuffix(" 600 estimated (400 in, 300 out), 490 committed (370 in, 210 out)") == true, "\(run.stdout)")
        let json = runTool(["simulate", "--config", config, "--trace", trace, "--json"])
        let api = try #require((parseJSON(json.stdout)?["providers"] as? [[String: Any]])?.first)
        #expect(api["estimated_tokens"] as? Int == 600 && api["committed_tokens"] as? Int == 490)
        #expect(api["estimated_input_tokens"] as? Int == 400 && api["estimated_output_tokens"] as? Int == 300)
        #expect(api["committed_input_tokens"] as? Int == 370 && api["committed_output_tokens"] as? Int == 210)
    }

    @Test("--json: the same answer, readable by scripts")
    func burstJSON() throws {
        let burst = try Burst()
        let run = runTool(["simulate", "--config", burst.config, "--trace", burst.trace, "--json"])
        #expect(run.status == 0, "\(run.stderr)")
        let json = try #require(parseJSON(run.stdout), "not JSON: \(run.stdout)")
        #expect(json["calls"] as? Int == 10)
        let providers = try #require(json["providers"] as? [[String: Any]])
        let api = try #require(providers.first { $0["provider"] as? String == "api" })
        #expect(api["admitted"] as? Int == 10)
        #expect(api["admitted_at_once"] as? Int == 5)
        #expect(api["delayed"] as? [String: Int] == ["requests_per_minute": 5])
        #expect(api["rejected"] as? [String: Int] == [:])
        #expect(api["peak_in_flight"] as? Int == 5)
        #expect(api["peak_queued"] as? Int == 5)
        #expect(api["estimated_input_tokens"] == nil)  // no call gave parts
        let wait = try #require(api["wait"] as? [String: Double])
        #expect(wait == ["p50": 61, "p95": 61, "p99": 61, "max": 61, "mean": 30.5])
        #expect(json["simulated_seconds"] as? Double == 62)
        let limits = try #require(api["limits"] as? [[String: Any]])
        let rpm = try #require(limits.first { $0["limit"] as? String == "requests_per_minute" })
        #expect(rpm["cap"] as? Int == 5)
        #expect(rpm["peak_used"] as? Int == 5)
        #expect(rpm["first_hit_at"] as? Double == 0)
        #expect(rpm["hits"] as? Int == 5)
        // Nothing but the JSON on stdout, so `| jq` works; progress went to stderr.
        #expect(run.stdout.hasPrefix("{"))
    }

    @Test("--chart writes an SVG file")
    func chart() throws {
        let burst = try Burst()
        let chart = burst.directory.path("out.svg")
        let run = runTool(["simulate", "--config", burst.config, "--trace", burst.trace, "--chart", chart, "--quiet"])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stderr == "")
        #expect(run.stdout.hasSuffix("\nChart written to \(chart).\n"))
        let svg = try String(contentsOfFile: chart, encoding: .utf8)
        #expect(svg.contains("<svg"))
        #expect(svg.contains("</svg>"))
    }

    @Test("a chart that cannot be written: a clear message, exit 1")
    func chartUnwritable() throws {
        let burst = try Burst()
        let chart = burst.directory.path("no-such-dir/out.svg")
        let run = runTool(["simulate", "--config", burst.config, "--trace", burst.trace, "--chart", chart, "--quiet"])
        #expect(run.status == 1)
        #expect(run.stderr == "error: cannot write the chart to '\(chart)': No such file or directory\n")
    }

    @Test("progress: plain lines when not a terminal, a redrawn bar on one, nothing with --quiet")
    func progress() throws {
        let burst = try Burst()
        let arguments = ["simulate", "--config", burst.config, "--trace", burst.trace, "--json"]
        let plain = runTool(arguments)
        #expect(plain.stderr.hasSuffix("simulating: 100%\n"), "\(plain.stderr)")
        #expect(!plain.stderr.contains("\r"))
        let terminal = runTool(arguments, terminal: true)
        #expect(terminal.stderr.contains("\rsimulating [##############################] 100%"), "\(terminal.stderr)")
        #expect(terminal.stderr.hasSuffix("\r\u{1B}[2K"))  // the bar is cleared before the summary
        let quiet = runTool(arguments + ["--quiet"])
        #expect(quiet.stderr == "")
        #expect(quiet.stdout == plain.stdout.replacingWallTime(from: quiet.stdout))
    }

    @Test("--from sets the date schedules are read against")
    func fromDate() throws {
        let directory = try TemporaryDirectory()
        let config = try directory.write(
            "closed.toml",
            """
            [limits.api]
            requests_per_minute = 5

            [[limits.api.schedule]]
            name = "christmas"
            dates = ["2026-12-25"]
            closed = true
            """)
        // One call that waits at most a minute: refused on Christmas Day (closed for 14 more
        // hours), admitted at once the day before.
        let trace = try directory.write(
            "one.jsonl", #"{"at": 0, "provider": "api", "estimated_tokens": 1, "actual_tokens": 1, "duration": 1, "max_wait": 60}"#)
        func outcome(_ from: String) throws -> [String: Any] {
            let run = runTool(["simulate", "--config", config, "--trace", trace, "--from", from, "--json", "--quiet"])
            #expect(run.status == 0, "\(run.stderr)")
            return try #require((parseJSON(run.stdout)?["providers"] as? [[String: Any]])?.first)
        }
        let christmas = try outcome("2026-12-25T10:00:00Z")
        #expect(christmas["admitted"] as? Int == 0)
        #expect(christmas["rejected"] as? [String: Int] == ["closed": 1])
        let eve = try outcome("2026-12-24T10:00:00Z")
        #expect(eve["admitted_at_once"] as? Int == 1)
    }

    @Test("a provider the configuration does not know: a warning, its calls let through")
    func unknownProvider() throws {
        let burst = try Burst()
        let trace = try burst.directory.write(
            "typo.jsonl", #"{"at": 0, "provider": "apj", "estimated_tokens": 1, "actual_tokens": 1, "duration": 1}"#)
        let run = runTool(["simulate", "--config", burst.config, "--trace", trace, "--quiet"])
        #expect(run.status == 0)
        #expect(run.stderr == "warning: the configuration has no limits for provider 'apj': its calls are not gated\n")
        #expect(run.stdout.contains("\napj: 1 call, 1 key, not gated (no caps): all admitted at once\n"), "\(run.stdout)")
    }

    @Test("the example trace replays through the example configuration, every provider known")
    func examples() throws {
        let examples = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Examples")
        let run = runTool([
            "simulate", "--config", examples.appendingPathComponent("policy.toml").path,
            "--trace", examples.appendingPathComponent("calls.jsonl").path, "--quiet",
        ])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stderr == "")  // no warning: the trace's providers all have limits
        #expect(run.stdout.contains("\nopenai: "), "\(run.stdout)")
    }

    @Test("a bad trace line: file:line, the field and the problem; exit 1")
    func badTrace() throws {
        let burst = try Burst()
        let trace = try burst.directory.write(
            "bad.jsonl",
            #"{"at": 0, "provider": "api", "estimated_tokens": 10, "actual_tokens": 8, "duration": 1}"# + "\n"
                + #"{"at": 1, "provider": "api", "estimated_tokens": 1.5, "actual_tokens": 8, "duration": 1}"# + "\n")
        let run = runTool(["simulate", "--config", burst.config, "--trace", trace])
        #expect(run.status == 1)
        #expect(run.stdout == "")
        #expect(run.stderr.hasPrefix("\(trace):2: error: estimated_tokens: "), "\(run.stderr)")
        #expect(run.stderr.split(separator: "\n").count == 1)
    }

    @Test("a bad configuration or a missing file: the problems, exit 1; an empty trace: a warning")
    func badInputs() throws {
        let burst = try Burst()
        let config = try burst.directory.write("bad.toml", "[limits.api]\nrequests_per_minut = 5\n")
        let run = runTool(["simulate", "--config", config, "--trace", burst.trace])
        #expect(run.status == 1)
        #expect(run.stderr.hasPrefix("\(config):2:1: error: limits.api.requests_per_minut: unknown key"), "\(run.stderr)")
        #expect(run.stderr.hasSuffix("error: \(config) is not a valid configuration (1 error)\n"))

        let empty = try burst.directory.write("empty.jsonl", "\n")
        let nothing = runTool(["simulate", "--config", burst.config, "--trace", empty, "--quiet"])
        #expect(nothing.status == 0)
        #expect(nothing.stderr == "warning: \(empty) holds no calls\n")
        #expect(nothing.stdout.hasSuffix("No calls: nothing to report.\n"), "\(nothing.stdout)")

        let missing = burst.directory.path("missing.jsonl")
        let absent = runTool(["simulate", "--config", burst.config, "--trace", missing])
        #expect(absent.status == 1)
        #expect(absent.stderr == "error: cannot read '\(missing)': No such file or directory\n")
    }

    @Test("--seed and --duration belong to the synthetic workload")
    func syntheticOnlyOptions() throws {
        let burst = try Burst()
        let run = runTool(["simulate", "--trace", burst.trace, "--seed", "3"])
        #expect(run.status == 2)
        #expect(run.stderr.hasPrefix("error: --seed shapes the synthetic workload; it does not apply with --trace"))
    }

    @Test("with no files: the built-in example and synthetic workload, the same for the same seed")
    func builtInExample() throws {
        let first = runTool(["simulate", "--duration", "5m", "--seed", "7", "--from", "2026-01-05T09:00:00Z", "--json", "--quiet"])
        #expect(first.status == 0, "\(first.stderr)")
        let json = try #require(parseJSON(first.stdout))
        #expect((json["calls"] as? Int ?? 0) > 0)
        #expect((json["providers"] as? [[String: Any]])?.isEmpty == false)
        let again = runTool(["simulate", "--duration", "5m", "--seed", "7", "--from", "2026-01-05T09:00:00Z", "--json", "--quiet"])
        #expect(again.stdout.replacingWallTime(from: first.stdout) == first.stdout)

        let text = runTool(["simulate", "--duration", "5m", "--quiet"])
        #expect(text.status == 0)
        #expect(text.stdout.contains("(synthetic workload, 5m 00s, seed 1)"), "\(text.stdout)")
    }
}

extension String {
    /// This output with the lines that depend on the machine's speed (wall time, calls per
    /// second) taken from `other`, so two runs can be compared.
    func replacingWallTime(from other: String) -> String {
        let machineDependent = ["Replayed in ", "\"wall_seconds\"", "\"calls_per_second\""]
        let mine = split(separator: "\n", omittingEmptySubsequences: false)
        let theirs = other.split(separator: "\n", omittingEmptySubsequences: false)
        guard mine.count == theirs.count else { return self }
        return zip(mine, theirs).map { line, their in
            machineDependent.contains { line.contains($0) } ? their : line
        }.joined(separator: "\n")
    }
}
