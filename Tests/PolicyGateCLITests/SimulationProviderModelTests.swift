import Foundation
import PolicyGate
import PolicyGateCLI
import Testing

/// `simulate --capacity`: a provider model that answers 429 above a hidden capacity, the
/// client reporting each 429 to the gate, and the same calls replayed with adaptive caps off
/// and on. The simulation runs on a virtual clock, so its figures are exact for a seed.
@Suite("Simulation: provider model and adaptive caps")
struct SimulationProviderModelTests {
    @Test("the report shows the model's 429s and goodput; adaptive caps reduce the 429s and raise the goodput")
    func adaptiveReducesThrottling() throws {
        let run = runTool(["simulate", "--duration", "2h", "--seed", "1", "--capacity", "openai=200rpm", "--json", "--quiet"])
        #expect(run.status == 0, "\(run.stderr)")
        // The JSON's keys are snake_case (dictionary keys, limit names, come back camelCased:
        // unread here).
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        let report = try decoder.decode(SimulationReport.self, from: Data(run.stdout.utf8))
        let model = try #require(report[provider: "openai"]?.providerModel)
        #expect(model.capacity == ProviderCapacity(requestsPerMinute: 200) && !model.adaptive)
        let comparison = try #require(report.adaptiveComparison?.first)
        #expect(comparison.provider == "openai" && comparison.off == model && comparison.on.adaptive)
        #expect(comparison.off.throttled > 500, "\(comparison)")
        #expect(comparison.on.throttled * 2 < comparison.off.throttled, "\(comparison)")
        #expect(comparison.on.goodput > comparison.off.goodput, "\(comparison)")
        // Providers without a model have no such figures.
        #expect(report[provider: "anthropic"]?.providerModel == nil)

        let text = runTool(["simulate", "--duration", "2h", "--seed", "1", "--capacity", "openai=200rpm", "--quiet"])
        #expect(text.status == 0)
        #expect(
            text.stdout.contains("  provider     \(Values.count(model.throttled)) answered 429 (capacity 200 requests/min)"),
            "\(text.stdout)")
        #expect(text.stdout.contains("Adaptive caps against the provider model"))
        #expect(text.stdout.contains("had to wait") && text.stdout.contains("provider "))
    }

    @Test("the model: an exact sliding minute of requests (429s included), retry-after to the oldest's exit")
    func model() throws {
        let calls = (0..<5).map { i in
            SimulatedCall(
                at: .seconds(i), key: PolicyKey(provider: "p", scope: .global), estimatedTokens: 1, actualTokens: 1,
                duration: .milliseconds(1))
        }
        var configuration = PolicyConfiguration(limits: ["p": PolicyLimits(requestsPerMinute: 100)])
        var options = SimulationOptions()
        options.capacities = ["p": ProviderCapacity(requestsPerMinute: 2)]
        let (report, outcomes) = try Simulation(configuration: configuration, options: options).runWithOutcomes(calls)
        // Two accepted; the third is refused (429) and pauses the gate until the first request
        // leaves the provider's minute (retry-after 58 s, whole seconds). The 429 itself counts
        // in the provider's minute, so the calls let through after the pause find it full again.
        #expect(outcomes.prefix(3).map(\.kind) == [.completed, .completed, .throttled], "\(outcomes)")
        #expect(outcomes[3].admittedAt.map { $0 > .seconds(60) } == true, "\(outcomes)")
        #expect(report[provider: "p"]?.providerModel?.throttled == outcomes.filter { $0.kind == .throttled }.count)
        configuration.adaptive = ["p"]
        let adaptive = try Simulation(configuration: configuration, options: options).run(calls)
        #expect(adaptive[provider: "p"]?.providerModel?.adaptive == true)
    }

    @Test("--capacity is checked")
    func badCapacity() {
        for bad in ["openai", "openai=", "=5rpm", "openai=5", "openai=0rpm", "openai=5rpm,6rpm", "openai=5kpm"] {
            let run = runTool(["simulate", "--duration", "90s", "--capacity", bad, "--quiet"])
            #expect(run.status == 2 && run.stderr.contains("--capacity"), "\(bad): \(run.stderr)")
        }
    }
}

/// `check` shows which providers adapt their caps.
@Suite("CLI check: adaptive caps")
struct CLICheckAdaptiveTests {
    @Test("named under the limits table, and in the JSON")
    func adaptive() throws {
        let directory = try TemporaryDirectory()
        let file = try directory.write(
            "policy.toml", "[limits.openai]\nrequests_per_minute = 500\nadaptive = true\n\n[limits.b]\nmax_concurrent = 2\n")
        let run = runTool(["check", file, "--from", "2026-12-24T09:00:00Z"])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(
            run.stdout.contains("  Adaptive caps (openai): after a 429, 0.7 of these; back by 5 % of them every 5 s without one."),
            "\(run.stdout)")
        let json = runTool(["check", file, "--from", "2026-12-24T09:00:00Z", "--json"])
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        let providers = try #require(object["providers"] as? [[String: Any]])
        #expect(providers.map { $0["adaptive"] as? Bool } == [false, true])
    }
}
