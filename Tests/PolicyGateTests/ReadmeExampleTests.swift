// swift-format-ignore-file
// (The README's first example as the README shows it, aligned comments included: the README
// and the articles are checked against it line for line, so the formatter must not reflow it.)
import PolicyGate
import Testing

/// The README's first example, compiled and run against a stand-in provider client.
@Suite("README example")
struct ReadmeExampleTests {
    struct Usage { let totalTokens: Int }
    struct Reply { let usage: Usage }
    struct Client { func chat(_ request: String) async throws -> Reply { Reply(usage: Usage(totalTokens: 1_150)) } }

    @Test("the README's example compiles and runs")
    func readmeExample() async throws {
        let client = Client()
        let request = "Hello"
        // --- README example begins ---
        let gate = try PolicyService(limits: [
            "openai": PolicyLimits(requestsPerMinute: 500, tokensPerMinute: 200_000, tokensPerDay: 5_000_000, maxConcurrent: 16),
        ])
        let key = PolicyKey(provider: "openai", scope: .user("u-42"))

        var permit = try await gate.acquire(key, estimatedTokens: 1_200)  // waits for a slot, then for quota
        let reply = try await client.chat(request)                        // the real provider call
        try permit.commitTokens(reply.usage.totalTokens)                  // the actual count replaces the estimate
        // permit leaves scope -> its concurrency slot is released (deinit)
        // --- README example ends ---
        #expect(gate.currentState(for: key)[.minute]?.tokens.used == 1_150)
        #expect(gate.currentState(for: key).inFlight == 1)
        _ = consume permit
        #expect(gate.currentState(for: key).inFlight == 0)
    }
}
