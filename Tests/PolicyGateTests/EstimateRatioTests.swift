import PolicyGate
import PolicyGateTestKit
import Testing

/// Every commit reports the estimate's error, actual ÷ estimate, through its telemetry event.
@Suite("Estimate error in commits", .timeLimit(.minutes(5)))
struct EstimateRatioTests {
    let clock = ManualClock()

    @Test("a commit's estimate ratio is actual ÷ estimate, in totals and in parts; nil without an estimate; 0 for a commit of 0")
    func ratios() async throws {
        let recorder = TelemetryRecorder()
        let gate = try PolicyService(
            limits: [
                "tokens": PolicyLimits(tokensPerMinute: 100_000),
                "split": PolicyLimits(inputTokensPerMinute: 100_000, outputTokensPerMinute: 100_000),
                "slots": PolicyLimits(maxConcurrent: 2),
            ], clock: clock, telemetry: recorder)
        var permit = try await gate.acquire(PolicyKey(provider: "tokens"), estimatedTokens: 200)
        try permit.commitTokens(300)
        #expect(recorder.commits.last?.estimateRatio == 1.5)
        // A second commit is judged against the same estimate.
        try permit.commitTokens(50)
        #expect(recorder.commits.last?.estimateRatio == 0.25)
        permit.commitTokensClamping(0)
        #expect(recorder.commits.last?.estimateRatio == 0)
        permit.release()

        permit = try await gate.acquire(PolicyKey(provider: "split"), estimatedInputTokens: 100, estimatedOutputTokens: 50)
        try permit.commitTokens(input: 60, output: 30)
        #expect(recorder.commits.last?.estimateRatio == 0.6)
        permit.release()

        // A provider without token caps may be acquired without an estimate: no ratio.
        permit = try await gate.acquire(PolicyKey(provider: "slots"))
        try permit.commitTokens(40)
        #expect(recorder.commits.last?.estimatedTokens == 0 && recorder.commits.last?.estimateRatio == nil)
        permit.release()
        #expect(recorder.commits.count == 5)
    }
}
