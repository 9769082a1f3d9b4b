import Foundation
import PolicyGate
import PolicyGateFakeProvider
import PolicyGateProviders
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The README's one-line form, compiled and run against a fake provider on loopback.
@Suite("README one call", .timeLimit(.minutes(5)))
struct ReadmeOneCallTests {
    @Test("the README's one-line form compiles, runs, and commits the reported usage")
    func oneLine() async throws {
        let provider = try FakeProvider { _ in
            .json(#"{"type": "message", "content": [], "usage": {"input_tokens": 20, "output_tokens": 7}}"#)
        }
        defer { provider.stop() }
        let gate = try PolicyService(limits: [
            "anthropic": PolicyLimits(requestsPerMinute: 50, tokensPerMinute: 40_000, maxConcurrent: 4)
        ])
        let key = PolicyKey(provider: "anthropic", scope: .user("u-42"))
        var request = URLRequest(url: provider.baseURL.appendingPathComponent("v1/messages"))
        request.httpMethod = "POST"
        request.httpBody = Data(#"{"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}]}"#.utf8)
        // --- README example begins ---
        let client = PolicyGateHTTPClient(gate: gate)
        let reply = try await client.send(request, api: .anthropicMessages, key: key, maxWait: .seconds(30))
        // --- README example ends ---
        #expect(reply.status == 200 && reply.usage == ProviderUsage(input: 20, output: 7))
        #expect(gate.currentState(for: key)[.minute]?.tokens.used == 27)
        #expect(gate.currentState(for: key).inFlight == 0)
    }
}
