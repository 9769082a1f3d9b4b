import Foundation
import PolicyGate
import PolicyGateCLI
import Testing

@Suite("Simulation: trace reading")
struct SimulationTraceTests {
    @Test("Every field, seconds and ISO 8601 instants, blank lines and unknown fields")
    func reads() throws {
        let text = """
            {"at": 0, "provider": "openai", "scope": "user:ada", "estimated_tokens": 1200, "actual_tokens": 950, "duration": 3.25}

            {"at": 1.5, "provider": "openai", "estimated_tokens": 10, "actual_tokens": 12, "duration": 0, "max_wait": 30, "cancel_after": null, "id": "c-2", "meta": {"model": ["x", 1]}}
            {"provider": "anth\\u00e9ropic", "at": 2e1, "scope": "tenant:acme", "estimated_tokens": 0, "actual_tokens": 0, "duration": 1, "cancel_after": 0.5}
            """
        let calls = try TraceReader.read(text)
        #expect(
            calls == [
                SimulatedCall(
                    at: .zero, provider: "openai", scope: .user("ada"), estimatedTokens: 1_200, actualTokens: 950,
                    duration: .milliseconds(3_250)),
                SimulatedCall(
                    at: .milliseconds(1_500), provider: "openai", scope: .global, estimatedTokens: 10, actualTokens: 12,
                    duration: .zero, maxWait: .seconds(30)),
                SimulatedCall(
                    at: .seconds(20), provider: "anthéropic", scope: .custom(kind: "tenant", id: "acme"), estimatedTokens: 0,
                    actualTokens: 0, duration: .seconds(1), cancelAfter: .milliseconds(500)),
            ])
    }

    @Test("ISO 8601 instants count from the earliest one, or from the start date given")
    func instants() throws {
        let text = """
            {"at": "2026-01-05T09:00:10Z", "provider": "p", "estimated_tokens": 1, "actual_tokens": 1, "duration": 1}
            {"at": "2026-01-05T10:00:00.5+01:00", "provider": "p", "estimated_tokens": 1, "actual_tokens": 1, "duration": 1}
            {"at": 30, "provider": "p", "estimated_tokens": 1, "actual_tokens": 1, "duration": 1}
            """
        let trace = try TraceReader.readTrace(text)
        #expect(trace.startDate == Values.parseInstant("2026-01-05T09:00:00.5Z"))
        #expect(trace.calls.map(\.at) == [.milliseconds(9_500), .zero, .seconds(30)])
        let start = try #require(Values.parseInstant("2026-01-05T09:00:00Z"))
        let pinned = try TraceReader.readTrace(text, startDate: start)
        #expect(pinned.startDate == start)
        #expect(pinned.calls.map(\.at) == [.seconds(10), .milliseconds(500), .seconds(30)])
        #expect(try TraceReader.readTrace("").startDate == nil)
    }

    @Test(
        "Errors name the line and the field",
        arguments: [
            (
                "{\"at\": 0, \"provider\": \"p\", \"estimated_tokens\": 1, \"actual_tokens\": 1}",
                "line 2: duration: missing (each line needs at, provider, estimated_tokens, actual_tokens, duration)"
            ),
            (
                "{\"at\": 0, \"provider\": \"p\", \"estimated_tokens\": 1.5, \"actual_tokens\": 1, \"duration\": 1}",
                "line 2: estimated_tokens: expected a whole number in 0...281474976710656, got 1.5"
            ),
            (
                "{\"at\": 0, \"provider\": \"p\", \"estimated_tokens\": 1, \"actual_tokens\": -3, \"duration\": 1}",
                "line 2: actual_tokens: expected a whole number in 0...281474976710656, got -3"
            ),
            (
                "{\"at\": 0, \"provider\": \"p\", \"estimated_tokens\": \"7\", \"actual_tokens\": 1, \"duration\": 1}",
                "line 2: estimated_tokens: expected a whole number of tokens, got the string \"7\""
            ),
            (
                "{\"at\": -1, \"provider\": \"p\", \"estimated_tokens\": 1, \"actual_tokens\": 1, \"duration\": 1}",
                "line 2: at: expected seconds in 0...1000000000, got -1"
            ),
            (
                "{\"at\": \"yesterday\", \"provider\": \"p\", \"estimated_tokens\": 1, \"actual_tokens\": 1, \"duration\": 1}",
                "line 2: at: expected seconds from the start or an ISO 8601 instant with its offset (2026-01-05T09:00:00Z), got 'yesterday'"
            ),
            (
                "{\"at\": 0, \"provider\": \"\", \"estimated_tokens\": 1, \"actual_tokens\": 1, \"duration\": 1}",
                "line 2: provider: expected a provider name, got an empty string"
            ),
            (
                "{\"at\": 0, \"provider\": \"p\", \"scope\": \"ada\", \"estimated_tokens\": 1, \"actual_tokens\": 1, \"duration\": 1}",
                "line 2: scope: expected 'global', '<kind>:<id>' (user:…, org:…, project:…) or a path such as 'org:acme/user:ada', got 'ada'"
            ),
            (
                "{\"at\": 0, \"provider\": \"p\", \"estimated_tokens\": 1, \"actual_tokens\": 1, \"duration\": 1, \"max_wiat\": 5}",
                "line 2: unknown field 'max_wiat'; did you mean 'max_wait'?"
            ),
            (
                "{\"at\": 0, \"provider\": \"p\", \"estimatedTokens\": 1, \"actual_tokens\": 1, \"duration\": 1}",
                "line 2: unknown field 'estimatedTokens'; did you mean 'estimated_tokens'?"
            ),
            (
                "{\"at\": 0, \"at\": 1, \"provider\": \"p\", \"estimated_tokens\": 1, \"actual_tokens\": 1, \"duration\": 1}",
                "line 2: at: appears twice (column 11)"
            ),
            (
                "{\"at\": 0, \"provider\": \"p\", \"estimated_tokens\": 1, \"actual_tokens\": 1, \"duration\": 1, \"max_wait\": true}",
                "line 2: max_wait: expected a number of seconds, got a boolean"
            ),
            ("{\"at\": 0 \"provider\": \"p\"}", "line 2: invalid JSON at column 10: expected ',' or '}', found '\"'"),
            ("{\"at\": 0, \"provider\": \"p\"", "line 2: invalid JSON at column 26: expected ',' or '}', found the end of the line"),
            ("[1, 2]", "line 2: invalid JSON at column 1: expected '{' (each line holds one JSON object), found '['"),
            ("{\"at\": 01}", "line 2: invalid JSON at column 9: a number may not start with 0, found '1'"),
            ("{\"at\": 0} {}", "line 2: invalid JSON at column 11: expected the end of the line after the object, found '{'"),
            ("{\"a\\q\": 0}", "line 2: invalid JSON at column 4: invalid escape '\\q' in a string"),
        ])
    func errors(line: String, message: String) throws {
        let first = "{\"at\": 0, \"provider\": \"p\", \"estimated_tokens\": 1, \"actual_tokens\": 1, \"duration\": 1}"
        #expect(throws: Never.self) { try TraceReader.read(first) }
        do {
            _ = try TraceReader.read(first + "\n" + line + "\n" + first)
            Issue.record("no error for \(line)")
        } catch {
            #expect(error.description == message)
            #expect(error.line == 2)
        }
    }

    @Test("Input and output parts: the totals may be left out, and given must be the sums")
    func parts() throws {
        let text = """
            {"at": 0, "provider": "p", "estimated_input_tokens": 1200, "estimated_output_tokens": 400, "actual_input_tokens": 900, "actual_output_tokens": 350, "actual_cache_read_tokens": 250, "duration": 1}
            {"at": 1, "provider": "p", "estimated_tokens": 1600, "estimated_input_tokens": 1200, "estimated_output_tokens": 400, "actual_tokens": 1250, "actual_input_tokens": 900, "actual_output_tokens": 350, "duration": 1}
            {"at": 2, "provider": "p", "estimated_tokens": 800, "actual_input_tokens": 500, "actual_output_tokens": 100, "duration": 1}
            {"at": 3, "provider": "p", "estimated_input_tokens": 10, "estimated_output_tokens": 0, "actual_tokens": 7, "duration": 1}
            """
        let calls = try TraceReader.read(text)
        func call(_ at: Int64, _ estimated: SimulatedTokenParts?, _ actual: SimulatedTokenParts?, total: (Int, Int) = (0, 0))
            -> SimulatedCall
        {
            SimulatedCall(at: .seconds(at), provider: "p", estimatedTokens: total.0, actualTokens: total.1, duration: .seconds(1))
                .withParts(estimated: estimated, actual: actual)
        }
        #expect(
            calls == [
                call(0, SimulatedTokenParts(input: 1_200, output: 400), SimulatedTokenParts(input: 900, output: 350, cacheReads: 250)),
                call(1, SimulatedTokenParts(input: 1_200, output: 400), SimulatedTokenParts(input: 900, output: 350)),
                call(2, nil, SimulatedTokenParts(input: 500, output: 100), total: (800, 0)),
                call(3, SimulatedTokenParts(input: 10, output: 0), nil, total: (0, 7)),
            ])
        #expect(calls[0].estimatedTokens == 1_600 && calls[0].actualTokens == 1_500)
        #expect(calls[2].estimatedParts == nil && calls[3].actualParts == nil)
    }

    @Test(
        "Errors in the parts name the line and the field",
        arguments: [
            (
                "{\"at\": 0, \"provider\": \"p\", \"actual_tokens\": 1, \"duration\": 1}",
                "line 2: estimated_tokens: missing (each line needs at, provider, estimated_tokens, actual_tokens, duration)"
            ),
            (
                "{\"at\": 0, \"provider\": \"p\", \"estimated_input_tokens\": 5, \"actual_tokens\": 1, \"duration\": 1}",
                "line 2: estimated_output_tokens: missing (estimated_input_tokens and estimated_output_tokens come together)"
            ),
            (
                "{\"at\": 0, \"provider\": \"p\", \"estimated_tokens\": 9, \"actual_output_tokens\": 5, \"duration\": 1}",
                "line 2: actual_input_tokens: missing (actual_input_tokens and actual_output_tokens come together)"
            ),
            (
                "{\"at\": 0, \"provider\": \"p\", \"estimated_tokens\": 9, \"estimated_input_tokens\": 5, \"estimated_output_tokens\": 5, \"actual_tokens\": 1, \"duration\": 1}",
                "line 2: estimated_tokens: 9 is not estimated_input_tokens + estimated_output_tokens (10); leave it out or make it the sum"
            ),
            (
                "{\"at\": 0, \"provider\": \"p\", \"estimated_tokens\": 9, \"actual_tokens\": 8, \"actual_input_tokens\": 5, \"actual_output_tokens\": 2, \"actual_cache_read_tokens\": 3, \"duration\": 1}",
                "line 2: actual_tokens: 8 is not actual_input_tokens + actual_output_tokens + actual_cache_read_tokens (10); leave it out or make it the sum"
            ),
            (
                "{\"at\": 0, \"provider\": \"p\", \"estimated_tokens\": 9, \"actual_tokens\": 8, \"actual_cache_read_tokens\": 3, \"duration\": 1}",
                "line 2: actual_cache_read_tokens: needs actual_input_tokens and actual_output_tokens beside it"
            ),
            (
                "{\"at\": 0, \"provider\": \"p\", \"estimated_input_tokens\": -1, \"estimated_output_tokens\": 5, \"actual_tokens\": 1, \"duration\": 1}",
                "line 2: estimated_input_tokens: expected a whole number in 0...281474976710656, got -1"
            ),
            (
                "{\"at\": 0, \"provider\": \"p\", \"estimated_input_tokens\": 5, \"estimated_output_tokens\": null, \"actual_tokens\": 1, \"duration\": 1}",
                "line 2: estimated_output_tokens: expected a whole number of tokens, got null"
            ),
            (
                "{\"at\": 0, \"provider\": \"p\", \"estimated_tokens\": 9, \"actual_tokens\": 1, \"estimatedInputTokens\": 5, \"duration\": 1}",
                "line 2: unknown field 'estimatedInputTokens'; did you mean 'estimated_input_tokens'?"
            ),
            (
                "{\"at\": 0, \"provider\": \"p\", \"estimated_tokens\": 9, \"actual_tokens\": 1, \"actual_output_token\": 5, \"duration\": 1}",
                "line 2: unknown field 'actual_output_token'; did you mean 'actual_output_tokens'?"
            ),
            (
                "{\"at\": 0, \"provider\": \"p\", \"estimated_tokens\": 9, \"actual_tokens\": 1, \"cache_read_input_tokens\": 5, \"duration\": 1}",
                "line 2: unknown field 'cache_read_input_tokens'; did you mean 'actual_cache_read_tokens'?"
            ),
        ])
    func partErrors(line: String, message: String) throws {
        try errors(line: line, message: message)
    }

    @Test("An instant before the given start date is an error on its line")
    func beforeStart() throws {
        let text = """
            {"at": 5, "provider": "p", "estimated_tokens": 1, "actual_tokens": 1, "duration": 1}
            {"at": "2026-01-05T08:59:00Z", "provider": "p", "estimated_tokens": 1, "actual_tokens": 1, "duration": 1}
            """
        let start = try #require(Values.parseInstant("2026-01-05T09:00:00Z"))
        #expect(
            throws: SimulationError(
                line: 2, field: "at",
                "2026-01-05T08:59:00Z is 60 s before the simulation's start (2026-01-05T09:00:00Z)")
        ) {
            try TraceReader.read(text, startDate: start)
        }
    }

    @Test("A scope path names a chain for nested limits, and replays through them")
    func scopePaths() throws {
        let text = """
            {"at": 0, "provider": "openai", "scope": "org:acme/user:u1", "estimated_tokens": 600, "actual_tokens": 600, "duration": 1}
            {"at": 0.1, "provider": "openai", "scope": "org:acme/user:u2", "estimated_tokens": 600, "actual_tokens": 600, "duration": 1}
            {"at": 0.2, "provider": "openai", "scope": "org:globex/user:u1", "estimated_tokens": 600, "actual_tokens": 600, "duration": 1}
            """
        let calls = try TraceReader.read(text)
        #expect(
            calls.map(\.key) == [
                PolicyKey(provider: "openai", scope: .user("u1"), within: [.org("acme")]),
                PolicyKey(provider: "openai", scope: .user("u2"), within: [.org("acme")]),
                PolicyKey(provider: "openai", scope: .user("u1"), within: [.org("globex")]),
            ])
        #expect(throws: SimulationError.self) {
            _ = try TraceReader.read(
                #"{"at": 0, "provider": "p", "scope": "org:acme//user:u1", "estimated_tokens": 1, "actual_tokens": 1, "duration": 1}"#)
        }
        // Each org may use 1 000 tokens a minute: acme's second call waits a minute, globex's does not.
        let configuration = try PolicyConfiguration(
            toml: """
                [limits.openai]
                tokens_per_minute = 10_000
                [limits.openai.per.org]
                tokens_per_minute = 1_000
                """)
        let report = try Simulation(configuration: configuration).run(calls)
        let openai = try #require(report.providers.first)
        #expect(openai.admitted == 3 && openai.admittedAtOnce == 2, "\(openai)")
    }

    @Test("Examples/calls.jsonl reads, and replays through Examples/policy.toml")
    func example() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let text = try String(contentsOf: root.appendingPathComponent("Examples/calls.jsonl"), encoding: .utf8)
        let trace = try TraceReader.readTrace(text)
        #expect(trace.calls.count >= 20)
        #expect(trace.startDate == Values.parseInstant("2026-01-05T08:00:00Z"))
        let configuration = try PolicyConfiguration(contentsOfFile: root.appendingPathComponent("Examples/policy.toml").path)
        let report = try Simulation(configuration: configuration).run(trace.calls)
        #expect(report.calls == trace.calls.count)
        #expect(report.providers.allSatisfy { $0.isGated })
    }
}
