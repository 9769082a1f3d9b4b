import Foundation
import PolicyGate
import PolicyGateTestKit
import Testing

@Suite("Reading a configuration (TOML and JSON)")
struct ConfigurationFileTests {
    /// The example of the README's configuration reference.
    static let example = """
        # policy.toml
        [limits.openai]
        requests_per_minute = 500
        tokens_per_minute   = 200_000
        tokens_per_day      = 5_000_000
        max_concurrent      = 16

        [limits.anthropic]
        requests_per_minute = 50
        tokens_per_minute   = 40_000

        [limits."azure-openai"]      # quoted provider names work
        max_concurrent = 4
        """

    static let exampleLimits: [String: PolicyLimits] = [
        "openai": PolicyLimits(requestsPerMinute: 500, tokensPerMinute: 200_000, tokensPerDay: 5_000_000, maxConcurrent: 16),
        "anthropic": PolicyLimits(requestsPerMinute: 50, tokensPerMinute: 40_000),
        "azure-openai": PolicyLimits(maxConcurrent: 4),
    ]

    @Test("JSON with the same keys decodes through Codable, and encoding round-trips")
    func json() throws {
        let json = Data(
            """
            {"limits": {"openai": {"requests_per_minute": 500, "tokens_per_minute": 200000,
                                   "tokens_per_day": 5000000, "max_concurrent": 16},
                        "anthropic": {"requests_per_minute": 50, "tokens_per_minute": 40000},
                        "azure-openai": {"max_concurrent": 4}}}
            """.utf8)
        let decoded = try JSONDecoder().decode(PolicyConfiguration.self, from: json)
        #expect(decoded.limits == Self.exampleLimits)
        #expect(decoded.warnings.isEmpty)
        #expect(try PolicyConfiguration(json: json) == decoded)
        let encoded = try JSONEncoder().encode(decoded)
        #expect(try JSONDecoder().decode(PolicyConfiguration.self, from: encoded) == decoded)
        // Unset caps are left out rather than written as null.
        #expect(!String(decoding: encoded, as: UTF8.self).contains("null"))
    }

    @Test("JSON problems are all reported, with key paths")
    func jsonProblems() throws {
        let json = Data(
            """
            {"limits": {"openai": {"tokensPerMinute": 10, "requests_per_minute": "many", "max_concurrent": 0},
                        "local": 3},
             "limit": {}}
            """.utf8)
        let error = try #require(throws: PolicyConfigurationError.self) {
            try JSONDecoder().decode(PolicyConfiguration.self, from: json)
        }
        let found = Set(error.diagnostics.map { "\($0.severity) \($0.keyPath) \($0.suggestion ?? "-")" })
        #expect(
            found == [
                "error limits.openai.tokensPerMinute tokens_per_minute",
                "error limits.openai.requests_per_minute -",
                "error limits.openai.max_concurrent -",
                "error limits.local -",
                "error limit limits",
            ])
        #expect(error.diagnostics.allSatisfy { $0.line == nil })
    }

    @Test("unknown keys get the key that was probably meant")
    func suggestions() throws {
        let cases: [(String, String?)] = [
            ("tokens_pre_minute", "tokens_per_minute"), ("TokensPerMinute", "tokens_per_minute"),
            ("rpm", "requests_per_minute"), ("max-concurrent", "max_concurrent"), ("concurrency", "max_concurrent"),
            ("requests_per_mniute", "requests_per_minute"), ("colour", nil),
        ]
        for (key, expected) in cases {
            let json = Data(#"{"limits": {"p": {"\#(key)": 1}}}"#.utf8)
            let error = try #require(throws: PolicyConfigurationError.self) {
                try JSONDecoder().decode(PolicyConfiguration.self, from: json)
            }
            let unknown = error.errors.first { $0.message == "unknown key" }
            #expect(unknown?.suggestion == expected, "\(key)")
        }
    }

    @Test("caps that can never be reached are warnings the caller can read; the configuration still loads")
    func contradictionsAreWarnings() throws {
        let json = Data(
            #"{"limits": {"p": {"requests_per_minute": 100, "requests_per_hour": 60, "tokens_per_hour": 10, "tokens_per_day": 5}, "q": {}}}"#
                .utf8)
        let configuration = try JSONDecoder().decode(PolicyConfiguration.self, from: json)
        #expect(
            configuration.limits["p"]
                == PolicyLimits(
                    requestsPerMinute: 100, requestsPerHour: 60, tokensPerHour: 10, tokensPerDay: 5))
        #expect(
            Set(configuration.warnings.map(\.description)) == [
                "warning: limits.p.requests_per_minute: requests_per_minute = 100 can never be reached: requests_per_hour = 60 is lower",
                "warning: limits.p.tokens_per_hour: tokens_per_hour = 10 can never be reached: tokens_per_day = 5 is lower",
                "warning: limits.q: has no caps, so 'q' is not gated",
            ])
        #expect(configuration.warnings.allSatisfy { $0.severity == .warning })
    }

    @Test("a file that cannot be read is an error naming it")
    func missingFile() throws {
        let error = try #require(throws: PolicyConfigurationError.self) {
            try PolicyConfiguration(contentsOfFile: "no-such-dir/policy.toml")
        }
        #expect(error.file == "no-such-dir/policy.toml")
        #expect(error.description == "no-such-dir/policy.toml: error: cannot read the file: No such file or directory")
    }
}
