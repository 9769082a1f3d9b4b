import Foundation
import PolicyGate
import PolicyGateTestKit
import Testing

@Suite("Reading a TOML configuration")
struct ConfigurationTOMLTests {
    @Test("the README's example reads as written, quoted provider names included")
    func example() throws {
        let configuration = try PolicyConfiguration(toml: ConfigurationFileTests.example)
        #expect(configuration.limits == ConfigurationFileTests.exampleLimits)
        #expect(configuration.warnings.isEmpty)
    }

    @Test("no [limits], an empty file, or a provider without caps: a no-op gate")
    func emptyConfigurations() async throws {
        for text in ["", "# nothing yet\n", "[limits]\n", "[limits.openai]\n"] {
            let configuration = try PolicyConfiguration(toml: text)
            let gate = try PolicyService(configuration: configuration, clock: ManualClock())
            let key = PolicyKey(provider: "openai", scope: .user("u"))
            for _ in 0..<100 { _ = try gate.tryAcquire(key, estimatedTokens: 1_000) }
            #expect(gate.storedKeyCount == 0, "\(text)")
        }
        let warned = try PolicyConfiguration(toml: "[limits.openai]\n")
        #expect(warned.warnings.map(\.description) == ["1:1: warning: limits.openai: has no caps, so 'openai' is not gated"])
    }

    @Test("every problem is reported at once, in document order, with line, column and key path")
    func everyProblemAtOnce() throws {
        let text = """
            [limits.openai]
            requests_per_minute = 500
            tokens_pre_minute = 200_000
            max_concurrent = "16"

            [limits.anthropic]
            requests_per_minute = 0
            tokens_per_minute = -5
            requests_per_hour = 5_000_000_000

            [limits.azure-openai]
            max_concurrent = 4.0

            [limit.local]
            requests_per_minute = 1
            """
        let error = try #require(throws: PolicyConfigurationError.self) { try PolicyConfiguration(toml: text) }
        let summary = error.diagnostics.map { "\($0.line ?? 0):\($0.column ?? 0) \($0.keyPath) \($0.suggestion ?? "")" }
        #expect(
            summary == [
                "3:1 limits.openai.tokens_pre_minute tokens_per_minute",
                "4:1 limits.openai.max_concurrent ",
                "7:1 limits.anthropic.requests_per_minute ",
                "8:1 limits.anthropic.tokens_per_minute ",
                "9:1 limits.anthropic.requests_per_hour ",
                "12:1 limits.azure-openai.max_concurrent ",
                "\(error.diagnostics.last?.line ?? 0):\(error.diagnostics.last?.column ?? 0) limit limits",
            ])
        #expect(error.diagnostics.last?.line == 14)
        #expect(error.diagnostics.allSatisfy { $0.severity == .error })
        #expect(
            error.diagnostics[0].description
                == "3:1: error: limits.openai.tokens_pre_minute: unknown key; did you mean 'tokens_per_minute'?")
        #expect(error.diagnostics[2].message == "must be positive, got 0; leave the key out for no cap")
        #expect(error.diagnostics[4].message.contains("4294967294"))
    }

    @Test("warnings point at the key, and the configuration still loads")
    func warningsHavePositions() throws {
        let configuration = try PolicyConfiguration(
            toml: """
                [limits.p]
                tokens_per_day = 1_000
                tokens_per_minute = 5_000
                """)
        #expect(configuration.limits["p"] == PolicyLimits(tokensPerMinute: 5_000, tokensPerDay: 1_000))
        #expect(
            configuration.warnings.map(\.description) == [
                "3:1: warning: limits.p.tokens_per_minute: tokens_per_minute = 5000 can never be reached: tokens_per_day = 1000 is lower"
            ])
    }

    @Test("a syntax error comes alone, with its line, column and key path")
    func syntaxError() throws {
        let error = try #require(throws: PolicyConfigurationError.self) {
            try PolicyConfiguration(toml: "[limits.openai]\nrequests_per_minute = 99999999999999999999\n")
        }
        #expect(error.diagnostics.count == 1)
        let diagnostic = try #require(error.diagnostics.first)
        #expect(diagnostic.line == 2)
        #expect(diagnostic.column == 23)
        #expect(diagnostic.keyPath == "limits.openai.requests_per_minute")
    }

    @Test("a file: read by path, TOML or JSON by extension; its errors name it; a bad reload changes nothing")
    func files() async throws {
        let directory = FileManager.default.temporaryDirectory.appending(path: "policygate-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let toml = directory.appending(path: "policy.toml").path
        let json = directory.appending(path: "policy.json").path
        try ConfigurationFileTests.example.write(toFile: toml, atomically: true, encoding: .utf8)
        try #"{"limits": {"openai": {"max_concurrent": 2}}}"#.write(toFile: json, atomically: true, encoding: .utf8)

        let recorder = TelemetryRecorder()
        let gate = try PolicyService(
            configuration: PolicyConfiguration(contentsOfFile: toml), clock: ManualClock(), telemetry: recorder)
        #expect(gate.configuration.limits == ConfigurationFileTests.exampleLimits)
        try await gate.apply(PolicyConfiguration(contentsOfFile: json))
        #expect(gate.configuration.limits == ["openai": PolicyLimits(maxConcurrent: 2)])
        #expect(recorder.limitChanges.count == 3)

        try "[limits.openai]\nmax_concurrent = 8\nrpm = 1\n".write(toFile: toml, atomically: true, encoding: .utf8)
        let error = try #require(throws: PolicyConfigurationError.self) { try PolicyConfiguration(contentsOfFile: toml) }
        #expect(error.file == toml)
        #expect(error.description == "\(toml):3:1: error: limits.openai.rpm: unknown key; did you mean 'requests_per_minute'?")
        #expect(gate.configuration.limits == ["openai": PolicyLimits(maxConcurrent: 2)])
    }
}
