import Foundation
import PolicyGate
import PolicyGateTestKit
import Testing

/// Input and output token caps through the public API: estimates and commits in parts, a total
/// counted against both, cache reads per provider, refusals naming the cap, readouts,
/// telemetry, and the configuration file.
@Suite("Input and output token caps", .timeLimit(.minutes(5)))
struct InputOutputTokenTests {
    let key = PolicyKey(provider: "anthropic", scope: .user("u"))
    let caps = PolicyLimits(tokensPerMinute: 10_000, inputTokensPerMinute: 4_000, outputTokensPerMinute: 1_000)

    @Test("each part counts against its own cap and their sum against the total cap")
    func partsAgainstTheirCaps() throws {
        let clock = ManualClock()
        let gate = try PolicyService(limits: ["anthropic": caps], clock: clock)
        let a = try gate.tryAcquire(key, estimatedInputTokens: 3_000, estimatedOutputTokens: 500)
        #expect(a.estimatedTokens == 3_500 && a.countedInputTokens == 3_000 && a.countedOutputTokens == 500)
        // 1 000 more input tokens would fit the total cap (4 500 + …) but not the input cap.
        #expect(throws: PolicyError.self) { _ = try gate.tryAcquire(key, estimatedInputTokens: 1_001, estimatedOutputTokens: 10) }
        do {
            _ = try gate.tryAcquire(key, estimatedInputTokens: 1_001, estimatedOutputTokens: 10)
        } catch {
            #expect(error.code == .rateLimited && error.limit == .inputTokensPerMinute)
            #expect(error.retryAfter.map { $0 > .seconds(59) && $0 <= .seconds(61) } == true, "\(String(describing: error.retryAfter))")
        }
        // Output: 500 used, 501 more does not fit 1 000.
        do {
            _ = try gate.tryAcquire(key, estimatedInputTokens: 10, estimatedOutputTokens: 501)
            Issue.record("over the output cap")
        } catch {
            #expect(error.limit == .outputTokensPerMinute)
        }
        let b = try gate.tryAcquire(key, estimatedInputTokens: 1_000, estimatedOutputTokens: 500)
        let window = try #require(gate.currentState(for: key).windows.first)
        #expect(window.tokens.used == 5_000)
        #expect(window.inputTokens?.used == 4_000 && window.inputTokens?.cap == 4_000 && window.inputTokens?.remaining == 0)
        #expect(window.outputTokens?.used == 1_000 && window.outputTokens?.cap == 1_000)
        _ = consume a
        _ = consume b
        clock.advance(by: .seconds(61))
        #expect(gate.currentState(for: key).windows.first?.inputTokens?.used == 0)
    }

    @Test("an estimate given only as a total counts in full as input and as output")
    func totalCountsAsBoth() throws {
        let gate = try PolicyService(limits: ["anthropic": caps], clock: ManualClock())
        let permit = try gate.tryAcquire(key, estimatedTokens: 800)
        #expect(permit.countedInputTokens == 800 && permit.countedOutputTokens == 800)
        let window = try #require(gate.currentState(for: key).windows.first)
        #expect(window.tokens.used == 800 && window.inputTokens?.used == 800 && window.outputTokens?.used == 800)
        // 201 more output tokens do not fit: 800 + 201 > 1 000.
        do {
            _ = try gate.tryAcquire(key, estimatedTokens: 201)
            Issue.record("admitted over the output cap")
        } catch {
            #expect(error.limit == .outputTokensPerMinute)
        }
        _ = consume permit
    }

    @Test("a commit in parts replaces each part; cache reads count as input only where the provider says so")
    func commitInParts() throws {
        let limits = [
            "anthropic": PolicyLimits(
                tokensPerMinute: 100_000, inputTokensPerMinute: 50_000, outputTokensPerMinute: 8_000, countsCacheReads: false),
            "openai": PolicyLimits(tokensPerMinute: 100_000, inputTokensPerMinute: 50_000),
        ]
        let recorder = TelemetryRecorder()
        let gate = try PolicyService(limits: limits, clock: ManualClock(), telemetry: recorder)
        var permit = try gate.tryAcquire(key, estimatedInputTokens: 2_000, estimatedOutputTokens: 1_000)
        try permit.commitTokens(input: 1_500, output: 300, cacheReads: 10_000)
        #expect(permit.committedTokens == 1_800 && permit.countedInputTokens == 1_500 && permit.countedOutputTokens == 300)
        var window = try #require(gate.currentState(for: key).windows.first)
        #expect(window.tokens.used == 1_800 && window.inputTokens?.used == 1_500 && window.outputTokens?.used == 300)

        let openai = PolicyKey(provider: "openai", scope: .user("u"))
        var other = try gate.tryAcquire(openai, estimatedInputTokens: 2_000, estimatedOutputTokens: 1_000)
        try other.commitTokens(input: 1_500, output: 300, cacheReads: 10_000)
        #expect(other.committedTokens == 11_800 && other.countedInputTokens == 11_500)
        window = try #require(gate.currentState(for: openai).windows.first)
        #expect(window.tokens.used == 11_800 && window.inputTokens?.used == 11_500 && window.outputTokens == nil)

        // A later commit of a total only counts it as both parts again.
        try permit.commitTokens(900)
        window = try #require(gate.currentState(for: key).windows.first)
        #expect(window.tokens.used == 900 && window.inputTokens?.used == 900 && window.outputTokens?.used == 900)

        #expect(recorder.acquires.first?.estimatedInputTokens == 2_000 && recorder.acquires.first?.estimatedOutputTokens == 1_000)
        #expect(recorder.acquires.first?.estimatedTokens == 3_000)
        let commit = try #require(recorder.commits.first)
        #expect(
            commit.inputTokens == 1_500 && commit.outputTokens == 300 && commit.cacheReadTokens == 10_000 && commit.actualTokens == 1_800)
        #expect(recorder.commits.last?.inputTokens == nil && recorder.commits.last?.actualTokens == 900)
        _ = consume permit
        _ = consume other
    }

    @Test("a waiter blocked by the output cap is admitted when a commit lowers the output count")
    func commitWakesWaiter() async throws {
        let gate = try PolicyService(limits: ["anthropic": caps], clock: ManualClock())
        let holder = PermitBox()
        holder.store(try gate.tryAcquire(key, estimatedInputTokens: 100, estimatedOutputTokens: 900))
        let box = PermitBox()
        let task = Task {
            do {
                box.store(try await gate.acquire(key, estimatedInputTokens: 100, estimatedOutputTokens: 500))
            } catch {
                box.fail(error)
            }
        }
        await eventually("queued") { gate.currentState(for: key).queued == 1 }
        #expect(gate.currentState(for: key).waitingForCapacity == 1)
        // The reply used 150 output tokens, not 900: 150 + 500 fits 1 000.
        try holder.commit(input: 100, output: 150)
        await eventually("admitted") { box.isDone }
        #expect(box.hasPermit)
        #expect(gate.currentState(for: key).windows.first?.outputTokens?.used == 650)
        box.release()
        holder.release()
        await task.value
    }

    @Test("an estimate above an input or output cap is oversized; a part of 0 under its cap is refused")
    func oversizedAndZero() throws {
        let gate = try PolicyService(limits: ["anthropic": caps], clock: ManualClock())
        for (input, output, limit) in [(4_001, 1, PolicyLimitKind.inputTokensPerMinute), (1, 1_001, .outputTokensPerMinute)] {
            do {
                _ = try gate.tryAcquire(key, estimatedInputTokens: input, estimatedOutputTokens: output)
                Issue.record("admitted \(input)/\(output)")
            } catch {
                #expect(error.code == .oversized && error.limit == limit, "\(error)")
            }
        }
        do {
            _ = try gate.tryAcquire(key, estimatedInputTokens: 100, estimatedOutputTokens: 0)
            Issue.record("admitted 0 output tokens under an output cap")
        } catch {
            #expect(error.code == .invalidTokenCount)
        }
        #expect(throws: PolicyError.self) { _ = try gate.tryAcquire(key, estimatedInputTokens: -1, estimatedOutputTokens: 10) }
        // Nothing was recorded by the refusals.
        #expect(gate.currentState(for: key).windows.first?.tokens.used ?? 0 == 0)
    }

    @Test("lowering an input cap below a waiter's estimate fails the waiter as oversized")
    func limitChangeUnderWaiter() async throws {
        let gate = try PolicyService(limits: ["anthropic": caps], clock: ManualClock())
        let holder = PermitBox()
        holder.store(try gate.tryAcquire(key, estimatedInputTokens: 3_500, estimatedOutputTokens: 10))
        let big = PermitBox()
        let task = Task {
            do {
                big.store(try await gate.acquire(key, estimatedInputTokens: 2_000, estimatedOutputTokens: 10))
            } catch {
                big.fail(error)
            }
        }
        await eventually("queued") { gate.currentState(for: key).queued == 1 }
        var lowered = caps
        lowered.inputTokensPerMinute = 1_500
        try await gate.setLimits(lowered, for: "anthropic")
        await eventually("refused") { big.isDone }
        #expect((big.error as? PolicyError)?.code == .oversized)
        #expect((big.error as? PolicyError)?.limit == .inputTokensPerMinute)
        await task.value
        holder.release()
    }

    @Test("the configuration file reads the caps and count_cache_reads, with did-you-mean and typed errors")
    func configuration() throws {
        let configuration = try PolicyConfiguration(
            toml: """
                [limits.anthropic]
                input_tokens_per_minute  = 40_000
                output_tokens_per_minute = 8_000
                output_tokens_per_day    = 1_000_000
                count_cache_reads        = false
                """)
        let limits = try #require(configuration.limits["anthropic"])
        #expect(limits.inputTokensPerMinute == 40_000 && limits.outputTokensPerMinute == 8_000 && limits.outputTokensPerDay == 1_000_000)
        #expect(!limits.countsCacheReads && limits.hasInputOutputCaps)
        // What is encoded decodes to the same.
        #expect(try JSONDecoder().decode(PolicyLimits.self, from: JSONEncoder().encode(limits)) == limits)

        do {
            _ = try PolicyConfiguration(
                toml: """
                    [limits.anthropic]
                    input_token_per_minute = 40_000
                    count_cache_reads = "no"
                    output_tokens_per_hour = 0
                    """)
            Issue.record("accepted a bad file")
        } catch {
            let text = error.diagnostics.map(\.description).joined(separator: "\n")
            #expect(text.contains("did you mean 'input_tokens_per_minute'"), "\(text)")
            #expect(text.contains("count_cache_reads: must be true or false"), "\(text)")
            #expect(text.contains("output_tokens_per_hour: must be positive"), "\(text)")
            #expect(error.diagnostics.allSatisfy { $0.line != nil }, "\(text)")
        }
    }

    @Test("a provider in the shared store cannot set input or output caps yet: a clear error, nothing changed")
    func sharedStoreRefusesSplitCaps() async throws {
        do {
            _ = try PolicyConfiguration(
                toml: """
                    [limits.anthropic]
                    store = "postgres"
                    input_tokens_per_minute = 40_000
                    """)
            Issue.record("accepted input caps on a shared provider")
        } catch {
            let text = error.diagnostics.map(\.description).joined(separator: "\n")
            #expect(text.contains("limits.anthropic.input_tokens_per_minute") && text.contains("shared store"), "\(text)")
        }
        let store = FakeQuotaStore(clock: ManualClock())
        let configuration = try PolicyConfiguration(
            toml: """
                [limits.anthropic]
                store = "postgres"
                tokens_per_minute = 40_000
                """)
        let gate = try PolicyService(configuration: configuration, store: store, clock: ManualClock())
        do {
            try await gate.setLimits(PolicyLimits(outputTokensPerMinute: 10), for: "anthropic")
            Issue.record("accepted output caps on a shared provider")
        } catch {
            #expect(error.code == .invalidLimits && error.limit == .outputTokensPerMinute)
        }
        #expect(gate.limits(for: "anthropic") == PolicyLimits(tokensPerMinute: 40_000))
    }
}
