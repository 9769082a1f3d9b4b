#if AsyncHTTPClient
import AsyncHTTPClient
import Foundation
import NIOHTTP1
import PolicyGate
import PolicyGateAsyncHTTPClient
import PolicyGateFakeProvider
import PolicyGateProviders
import Testing

/// The AsyncHTTPClient form over real HTTP on loopback, against the fake provider.
@Suite("One call over AsyncHTTPClient", .timeLimit(.minutes(5)))
struct GatedAsyncHTTPClientTests {
    let key = PolicyKey(provider: "anthropic", scope: .user("u"))
    let requestBody = Data(
        #"{"model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": [{"role": "user", "content": "Hello, Claude"}]}"#.utf8)
    static let events = [
        "event: message_start\n"
            + #"data: {"type":"message_start","message":{"usage":{"input_tokens":25,"cache_read_input_tokens":2000,"output_tokens":1}}}"#
            + "\n\n",
        "event: content_block_delta\n" + #"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}"#
            + "\n\n",
        "event: message_delta\n" + #"data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":15}}"#
            + "\n\n",
        "event: message_stop\n" + #"data: {"type":"message_stop"}"# + "\n\n",
    ]

    func makeGate() throws -> PolicyService {
        try PolicyService(limits: [
            "anthropic": PolicyLimits(requestsPerMinute: 1_000, tokensPerMinute: 1_000_000, maxConcurrent: 4, countsCacheReads: false)
        ])
    }

    func request(_ server: FakeProvider) -> HTTPClientRequest {
        var request = HTTPClientRequest(url: server.baseURL.appendingPathComponent("v1/messages").absoluteString)
        request.method = .POST
        request.headers.add(name: "content-type", value: "application/json")
        return request
    }

    @Test("a 429 with retry-after, then a JSON reply: retried after the hint, usage committed, headers fed back")
    func throttledThenJSON() async throws {
        let calls = Locked(0)
        let server = try FakeProvider { _ in
            if calls.withLock({
                $0 += 1; return $0
            }) == 1 {
                return .json(#"{"type": "error", "error": {"type": "rate_limit_error"}}"#, status: 429, headers: [("retry-after", "1")])
            }
            return .json(
                #"{"type": "message", "usage": {"input_tokens": 30, "cache_read_input_tokens": 500, "output_tokens": 12}}"#,
                headers: [
                    ("anthropic-ratelimit-requests-limit", "50"), ("anthropic-ratelimit-requests-remaining", "49"),
                    ("anthropic-ratelimit-requests-reset", ISO8601DateFormatter().string(from: Date().addingTimeInterval(600))),
                ])
        }
        defer { server.stop() }
        let gate = try makeGate()
        let client = GatedAsyncHTTPClient(gate: gate)
        let started = ContinuousClock.now
        // A maximum wait far beyond the test's time limit, so that a starved machine's slow first
        // round trip cannot make the retry start past it (it would then rightly not be sent).
        let reply = try await client.send(request(server), body: requestBody, api: .anthropicMessages, key: key, maxWait: .seconds(600))
        #expect(ContinuousClock.now - started >= .milliseconds(950))
        #expect(reply.status == 200 && reply.attempts == 2 && reply.usage == ProviderUsage(input: 30, output: 12, cacheReads: 500))
        #expect(server.requests.last?.body == requestBody)
        #expect(gate.currentState(for: key)[.minute]?.tokens.used == 42)
        #expect(gate.currentState(for: key).providerFeedback?.requestsRemaining == 49)
        #expect(gate.currentState(for: key).inFlight == 0)
    }

    @Test("a streamed OpenAI chat request is sent asking for its usage unless told not to")
    func openAIStreamUsage() async throws {
        let events = [
            #"data: {"choices":[{"index":0,"delta":{"content":"Hi"}}],"usage":null}"# + "\n\n",
            #"data: {"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":3}}"# + "\n\n",
            "data: [DONE]\n\n",
        ]
        let server = try FakeProvider { request in
            let asked = request.body.range(of: Data(#""include_usage":true"#.utf8)) != nil
            return .events(events.filter { asked || !$0.contains(#""usage":{"#) })
        }
        defer { server.stop() }
        let gate = try PolicyService(limits: ["openai": PolicyLimits(tokensPerMinute: 1_000_000)])
        let key = PolicyKey(provider: "openai")
        let body = Data(#"{"model": "gpt-4o", "max_tokens": 100, "stream": true, "messages": []}"#.utf8)
        var request = HTTPClientRequest(url: server.baseURL.appendingPathComponent("v1/chat/completions").absoluteString)
        request.method = .POST

        let asking = try await GatedAsyncHTTPClient(gate: gate).stream(request, body: body, api: .openAIChatCompletions, key: key)
        for try await _ in asking {}
        #expect(server.requests.last?.body == Data(#"{"stream_options":{"include_usage":true},"#.utf8) + body.dropFirst())
        #expect(asking.committed == ProviderUsage(input: 12, output: 3))

        let client = GatedAsyncHTTPClient(gate: gate, requestsStreamUsage: false)
        let plain = try await client.stream(request, body: body, api: .openAIChatCompletions, key: key)
        for try await _ in plain {}
        #expect(server.requests.last?.body == body)
        let estimate = try client.estimator.estimate(.openAIChatCompletions, request: body)
        #expect(plain.committed == ProviderUsage(input: estimate.input, output: 100))
    }

    @Test("a streamed reply is passed through and committed at its end; a cut one commits the output cap")
    func streams() async throws {
        let cut = Locked(false)
        let server = try FakeProvider { _ in
            .events(Self.events, cutAfter: cut.withLock { $0 } ? 1 : nil)
        }
        defer { server.stop() }
        let gate = try makeGate()
        let client = GatedAsyncHTTPClient(gate: gate)
        let stream = try await client.stream(request(server), body: requestBody, api: .anthropicMessages, key: key)
        var received = Data()
        for try await chunk in stream { received += chunk }
        #expect(String(decoding: received, as: UTF8.self) == Self.events.joined())
        #expect(stream.committed == ProviderUsage(input: 25, output: 15, cacheReads: 2_000))
        #expect(gate.currentState(for: key).inFlight == 0)

        cut.withLock { $0 = true }
        let broken = try await client.stream(request(server), body: requestBody, api: .anthropicMessages, key: key)
        await #expect(throws: (any Error).self) { for try await _ in broken {} }
        #expect(broken.committed == ProviderUsage(input: 25, output: 1_024, cacheReads: 2_000))
        #expect(gate.currentState(for: key).inFlight == 0)
        #expect(gate.currentState(for: key)[.minute]?.tokens.used == 40 + 25 + 1_024)
    }
}
#endif
