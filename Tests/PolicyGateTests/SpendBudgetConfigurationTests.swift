import Foundation
import PolicyGate
import PolicyGateTestKit
import Testing

/// Spend budgets in a configuration file: prices and caps read exactly, every problem reported
/// with its line and column, and what cannot be counted exactly refused.
@Suite("Spend budget configuration")
struct SpendBudgetConfigurationTests {
    /// The errors of a document that must not load, as `line:column keyPath suggestion`.
    static func errors(_ text: String) throws -> (error: PolicyConfigurationError, summary: [String]) {
        let error = try #require(throws: PolicyConfigurationError.self) { try PolicyConfiguration(toml: text) }
        let summary = error.errors.map { "\($0.line ?? 0):\($0.column ?? 0) \($0.keyPath) \($0.suggestion ?? "")" }
        return (error, summary)
    }

    @Test("prices per model and the three caps are read exactly, as floats, integers or strings")
    func readsExactly() throws {
        let configuration = try PolicyConfiguration(
            toml: """
                [limits.openai]
                requests_per_minute = 500
                cost_per_hour = 2.5
                cost_per_day = 40
                cost_per_month = "1_000.000001"
                timezone = "America/New_York"

                [limits.openai.prices."gpt-4o*"]
                input = 2.50
                output = 10.00
                cache_read = 1.25

                [limits.openai.prices."*"]
                input = 0.000001
                output = 0.1
                """)
        let limits = try #require(configuration.limits["openai"])
        #expect(limits.costPerHour?.microUnits == 2_500_000)
        #expect(limits.costPerDay?.microUnits == 40_000_000)
        #expect(limits.costPerMonth?.microUnits == 1_000_000_001)
        #expect(limits.costTimeZone?.identifier == "America/New_York")
        let gpt = try #require(limits.prices["gpt-4o*"])
        #expect(gpt.input.microUnits == 2_500_000 && gpt.output.microUnits == 10_000_000 && gpt.cacheRead?.microUnits == 1_250_000)
        #expect(limits.prices["*"]?.input.microUnits == 1 && limits.prices["*"]?.output.microUnits == 100_000)
        #expect(configuration.warnings.isEmpty, "\(configuration.warnings)")
        // Encoded and read back: the same amounts, to the micro-unit.
        let encoded = try JSONEncoder().encode(configuration)
        let decoded = try PolicyConfiguration(json: encoded)
        #expect(decoded.limits["openai"] == limits)
    }

    @Test("amounts that cannot be counted exactly are errors at their line and column, all at once")
    func inexactAmounts() throws {
        let (error, summary) = try Self.errors(
            """
            [limits.openai]
            cost_per_hour = 0.0000001
            cost_per_day = -5
            cost_per_month = "12,50"

            [limits.openai.prices.gpt-4o]
            input = 1e-7
            output = "2.5000001"
            """)
        #expect(
            summary == [
                "2:1 limits.openai.cost_per_hour ", "3:1 limits.openai.cost_per_day ", "4:1 limits.openai.cost_per_month ",
                "7:1 limits.openai.prices.gpt-4o.input ", "8:1 limits.openai.prices.gpt-4o.output ",
            ])
        #expect(error.errors[0].message.contains("cannot be counted exactly"))
        #expect(error.errors[1].message.contains("positive"))
        #expect(error.errors[4].message.contains("more than 6 decimals"))
    }

    @Test("a misspelt key in a price or a cap has a did-you-mean; a price needs input and output")
    func didYouMean() throws {
        let (error, summary) = try Self.errors(
            """
            [limits.openai]
            cost_per_hours = 1
            budget = 100

            [limits.openai.prices."gpt-4o*"]
            inptu = 2.5
            output = 10
            cache_reads = 1.25

            [limits.openai.prices.o3]
            input = 2
            """)
        #expect(
            summary == [
                "2:1 limits.openai.cost_per_hours cost_per_hour", "3:1 limits.openai.budget cost_per_month",
                "6:1 limits.openai.prices.\"gpt-4o*\".inptu input", "8:1 limits.openai.prices.\"gpt-4o*\".cache_reads cache_read",
                "10:1 limits.openai.prices.o3.output ",
            ])
        #expect(error.errors.last?.message.contains("needs input and output") == true)
    }

    @Test("spend caps are refused at the key for a shared-store provider; nested levels take them, prices stay on the provider")
    func placesOfCaps() throws {
        let (error, summary) = try Self.errors(
            """
            [limits.openai]
            cost_per_day = 10
            store = "postgres"

            [limits.anthropic.per.user]
            cost_per_day = 1

            [limits.anthropic.per.user.prices.x]
            input = 1
            output = 1
            """)
        #expect(summary == ["2:1 limits.openai.cost_per_day ", "8:1 limits.anthropic.per.user.prices "])
        #expect(error.errors[0].message.contains("shared store"))
        let nested = try PolicyConfiguration(
            toml: """
                [limits.anthropic]
                cost_per_month = 100

                [limits.anthropic.per.user]
                cost_per_day = 1
                """)
        #expect(nested.scopeLimits["anthropic"]?["user"]?.costPerDay == PolicyMoney(units: 1))
    }

    @Test("a configuration's spend caps reach the gate: a call past them is refused")
    func configuredGate() throws {
        let configuration = try PolicyConfiguration(
            toml: """
                [limits.openai]
                cost_per_hour = 0.01

                [limits.openai.prices."gpt-4o*"]
                input = 2.50
                output = 10.00
                """)
        let gate = try PolicyService(configuration: configuration, clock: ManualClock())
        let key = PolicyKey(provider: "openai", scope: .user("u"))
        let permit = try gate.tryAcquire(key, estimatedInputTokens: 0, estimatedOutputTokens: 1_000, model: "gpt-4o")
        #expect(permit.countedCost.microUnits == 10_000)
        #expect(throws: PolicyError.self) {
            _ = try gate.tryAcquire(key, estimatedInputTokens: 1, estimatedOutputTokens: 0, model: "gpt-4o")
        }
        _ = consume permit
    }
}
