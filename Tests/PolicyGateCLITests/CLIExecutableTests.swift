import Foundation
import PolicyGateTestKit
import Testing

/// The built `policy-gate` executable, run as a separate process: its exit statuses and streams,
/// which the in-process tests cannot see (`main.swift`, `exit`, writes to the real descriptors).
@Suite("CLI executable")
struct CLIExecutableTests {
    /// The built `policy-gate`, next to the test bundle.
    static func executable() -> URL? { builtExecutable(named: "policy-gate") }

    /// Runs the executable, returning its exit status and both streams.
    static func run(_ arguments: [String]) throws -> ToolRun {
        guard let executable = executable() else {
            let bundle = CommandLine.arguments.first ?? "?"
            Issue.record(
                Comment(
                    rawValue: "the policy-gate executable was not found next to the test bundle (\(bundle)); "
                        + "'swift build' (or 'swift test', which builds every product) should have built it"))
            return ToolRun(status: -1, stdout: "", stderr: "")
        }
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        let output = Pipe()
        let error = Pipe()
        process.standardOutput = output
        process.standardError = error
        try process.run()
        // Read before waiting: a full pipe would otherwise block the child forever.
        let outData = output.fileHandleForReading.readDataToEndOfFile()
        let errData = error.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return ToolRun(
            status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
            stderr: String(decoding: errData, as: UTF8.self))
    }

    @Test("check: exit 0 and JSON on stdout for a good file; 1 and located errors for a bad one")
    func check() throws {
        let directory = try TemporaryDirectory()
        let good = try directory.write("good.toml", "[limits.openai]\nrequests_per_minute = 5\n")
        let ok = try Self.run(["check", good, "--json", "--from", "2026-01-01T00:00:00Z"])
        #expect(ok.status == 0, "\(ok.stderr)")
        let json = try #require(parseJSON(ok.stdout), "not JSON: \(ok.stdout)")
        #expect(json["valid"] as? Bool == true)

        let bad = try directory.write("bad.toml", "[limits.openai]\nrequests_per_minut = 5\n")
        let failed = try Self.run(["check", bad])
        #expect(failed.status == 1)
        #expect(failed.stdout == "")
        #expect(failed.stderr.hasPrefix("\(bad):2:1: error: limits.openai.requests_per_minut: unknown key"), "\(failed.stderr)")
    }

    @Test("a bad command line: exit 2 and one line on stderr, no stack trace")
    func usage() throws {
        let run = try Self.run(["simulate", "--nope"])
        #expect(run.status == 2)
        #expect(run.stderr == "error: unknown option '--nope' for 'policy-gate simulate'; see 'policy-gate simulate --help'\n")
        let help = try Self.run(["--help"])
        #expect(help.status == 0)
        #expect(help.stdout.hasPrefix("OVERVIEW: "))
    }

    @Test("simulate: the report as JSON on stdout, plain progress lines on stderr (not a terminal)")
    func simulate() throws {
        let directory = try TemporaryDirectory()
        let config = try directory.write("policy.toml", CLISimulateTests.burstConfig)
        let trace = try directory.write("calls.jsonl", CLISimulateTests.burstTrace)
        let run = try Self.run(["simulate", "--config", config, "--trace", trace, "--json"])
        #expect(run.status == 0, "\(run.stderr)")
        let json = try #require(parseJSON(run.stdout), "not JSON: \(run.stdout)")
        let api = try #require((json["providers"] as? [[String: Any]])?.first)
        #expect(api["admitted_at_once"] as? Int == 5)
        #expect(api["admitted"] as? Int == 10)
        #expect(run.stderr.hasSuffix("simulating: 100%\n"), "\(run.stderr)")
    }
}
