import Foundation
import PolicyGate
import PolicyGateFakeProvider
import PolicyGateProviders
import PolicyGateTestKit
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// One gated call over real HTTP on loopback, against a fake provider started by each test:
/// JSON and streamed replies, 429s with each provider's headers, a reply cut mid-stream, a
/// consumer that stops early, and a provider that is not there. Real time (short pauses).
@Suite("One call over URLSession", .timeLimit(.minutes(5)))
struct HTTPClientTests {
    let openAI = PolicyKey(provider: "openai", scope: .user("u"))
    let anthropic = PolicyKey(provider: "anthropic", scope: .user("u"))

    func makeGate(_ telemetry: TelemetryRecorder? = nil) throws -> PolicyService {
        try PolicyService(
            limits: [
                "openai": PolicyLimits(requestsPerMinute: 1_000, tokensPerMinute: 1_000_000, maxConcurrent: 4),
                "anthropic": PolicyLimits(
                    requestsPerMinute: 1_000, tokensPerMinute: 1_000_000, inputTokensPerMinute: 500_000, maxConcurrent: 4,
                    countsCacheReads: false),
            ], telemetry: telemetry)
    }

    func request(_ server: FakeProvider, _ path: String, _ body: String) -> URLRequest {
        var request = URLRequest(url: server.baseURL.appendingPathComponent(path))
        request.httpMethod = "POST"
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        request.httpBody = Data(body.utf8)
        return request
    }

    func tokensUsed(_ gate: PolicyService, _ key: PolicyKey) -> Int? { gate.currentState(for: key)[.minute]?.tokens.used }

    /// Waits (real time, at most 5 s) until `condition` holds.
    func eventually(_ condition: () -> Bool) async throws {
        for _ in 0..<500 where !condition() { try await Task.sleep(for: .milliseconds(10)) }
    }

    @Test("a JSON reply: estimate sent, usage committed in parts, headers fed back, estimator calibrated")
    func jsonReply() async throws {
        let server = try FakeProvider { _ in
            .json(
                #"{"id": "chatcmpl-1", "choices": [], "usage": {"prompt_tokens": 60, "completion_tokens": 25, "prompt_tokens_details": {"cached_tokens": 10}}}"#,
                headers: [
                    ("x-ratelimit-limit-tokens", "30000"), ("x-ratelimit-remaining-tokens", "29000"), ("x-ratelimit-reset-tokens", "6m0s"),
                ])
        }
        defer { server.stop() }
        let telemetry = TelemetryRecorder()
        let gate = try makeGate(telemetry)
        let client = PolicyGateHTTPClient(gate: gate)
        let body =
            #"{"model": "gpt-4o", "max_completion_tokens": 200, "messages": [{"role": "user", "content": "Say hello to the world, politely."}]}"#
        let reply = try await client.send(request(server, "/v1/chat/completions", body), api: .openAIChatCompletions, key: openAI)
        #expect(reply.status == 200 && reply.attempts == 1)
        #expect(reply.usage == ProviderUsage(input: 50, output: 25, cacheReads: 10))
        #expect(reply.estimate.output == 200)
        #expect(server.requests.count == 1 && server.requests.first?.body == Data(body.utf8))
        #expect(server.requests.first?.path == "/v1/chat/completions")
        // OpenAI counts cached tokens as input here (countsCacheReads defaults to true).
        #expect(tokensUsed(gate, openAI) == 85)
        #expect(gate.currentState(for: openAI).inFlight == 0)
        #expect(telemetry.acquires.first?.estimatedTokens == reply.estimate.input + 200)
        #expect(gate.currentState(for: openAI).providerFeedback?.tokensRemaining == 29_000)
        let accuracy = try #require(client.estimator.accuracy(api: .openAIChatCompletions, model: "gpt-4o"))
        #expect(accuracy.samples == 1)
    }

    @Test("the request's model names its model group: the call counts in the group's caps too")
    func modelGroup() async throws {
        let server = try FakeProvider { _ in
            .json(#"{"id": "chatcmpl-1", "choices": [], "usage": {"prompt_tokens": 60, "completion_tokens": 25}}"#)
        }
        defer { server.stop() }
        let gate = try PolicyService(
            limits: ["openai": PolicyLimits(requestsPerMinute: 1_000, tokensPerMinute: 1_000_000)],
            modelGroups: ["openai": ["4o": PolicyModelGroup(match: ["gpt-4o*"], limits: PolicyLimits(requestsPerMinute: 1))]],
            clock: ContinuousClock())
        let client = PolicyGateHTTPClient(gate: gate)
        let body = #"{"model": "gpt-4o-mini", "max_completion_tokens": 20, "messages": [{"role": "user", "content": "Hi"}]}"#
        let reply = try await client.send(request(server, "/v1/chat/completions", body), api: .openAIChatCompletions, key: openAI)
        #expect(reply.status == 200)
        let group = gate.currentState(for: openAI, model: "gpt-4o-mini").levels.first
        #expect(group?.key.scope == .custom(kind: "model", id: "4o"), "\(String(describing: group))")
        #expect(group?.windows.first?.requests.used == 1 && group?.windows.first?.tokens.used == 85)
        // The group's one request a minute is spent: the next call for one of its models waits
        // (here: is refused, its maximum wait being zero) while another model goes through.
        let refused = await #expect(throws: PolicyError.self) {
            _ = try await client.send(
                request(server, "/v1/chat/completions", body), api: .openAIChatCompletions, key: openAI, maxWait: .zero)
        }
        #expect(refused?.limit == .requestsPerMinute && refused?.level?.scope == .custom(kind: "model", id: "4o"))
        let other = #"{"model": "o3", "max_completion_tokens": 20, "messages": [{"role": "user", "content": "Hi"}]}"#
        #expect(
            try await client.send(request(server, "/v1/chat/completions", other), api: .openAIChatCompletions, key: openAI).status == 200)
    }

    @Test("Anthropic 429 with retry-after: the provider is paused, the call retried after the hint and committed once")
    func anthropicThrottledThenRetried() async throws {
        let calls = Locked(0)
        let server = try FakeProvider { _ in
            let n = calls.withLock {
                $0 += 1; return $0
            }
            if n == 1 {
                return .json(
                    #"{"type": "error", "error": {"type": "rate_limit_error", "message": "Number of request tokens has exceeded your per-minute rate limit"}}"#,
                    status: 429,
                    headers: [("retry-after", "1"), ("anthropic-ratelimit-requests-limit", "50"), ("request-id", "req_1")])
            }
            return .json(
                #"{"type": "message", "content": [], "usage": {"input_tokens": 30, "cache_read_input_tokens": 500, "output_tokens": 12}}"#)
        }
        defer { server.stop() }
        let gate = try makeGate()
        let client = PolicyGateHTTPClient(gate: gate)
        let started = ContinuousClock.now
        // A maximum wait far beyond the test's time limit: on a starved machine the first round
        // trip alone can take many seconds, and a retry that would start past the wait is
        // (rightly) not attempted. The test of a hint beyond the wait is the next one.
        let reply = try await client.send(
            request(server, "/v1/messages", WireFormatTests.anthropicRequest), api: .anthropicMessages, key: anthropic,
            maxWait: .seconds(600))
        let elapsed = ContinuousClock.now - started
        #expect(reply.status == 200 && reply.attempts == 2)
        #expect(elapsed >= .milliseconds(950), "retried after \(elapsed)")
        // The 429 committed 0; the success its usage, cache reads left out of Anthropic's input.
        #expect(tokensUsed(gate, anthropic) == 42)
        #expect(gate.currentState(for: anthropic)[.minute]?.requests.used == 2)
        #expect(gate.currentState(for: anthropic).inFlight == 0)
    }

    @Test("OpenAI 429 whose retry hint exceeds the caller's wait: returned, not retried, 0 committed, provider paused")
    func openAIThrottledBeyondMaxWait() async throws {
        let server = try FakeProvider { _ in
            .json(
                #"{"error": {"message": "Rate limit reached for gpt-4o", "type": "tokens", "code": "rate_limit_exceeded"}}"#, status: 429,
                // Ten minutes: a starved machine cannot see the pause end while the test runs.
                headers: [("retry-after-ms", "600000"), ("x-ratelimit-remaining-requests", "0"), ("x-ratelimit-reset-requests", "600s")])
        }
        defer { server.stop() }
        let gate = try makeGate()
        let client = PolicyGateHTTPClient(gate: gate)
        let reply = try await client.send(
            request(server, "/v1/chat/completions", #"{"model": "gpt-4o", "max_tokens": 50, "messages": []}"#),
            api: .openAIChatCompletions, key: openAI, maxWait: .seconds(2))
        #expect(reply.status == 429 && reply.attempts == 1 && reply.usage == nil)
        #expect(server.requests.count == 1)
        #expect(tokensUsed(gate, openAI) == 0)
        let pause = try #require(gate.currentState(for: openAI).providerFeedback?.pausedFor)
        #expect(pause > .seconds(500))
        // The next call waits for the pause; with a short maxWait it is refused without sending.
        await #expect(throws: PolicyError.self) {
            _ = try await client.send(
                request(server, "/v1/chat/completions", #"{"max_tokens": 50, "messages": []}"#), api: .openAIChatCompletions, key: openAI,
                maxWait: .milliseconds(100))
        }
        #expect(server.requests.count == 1)
    }

    @Test("a streamed Anthropic reply is passed through as it arrives and committed at its end")
    func anthropicStream() async throws {
        let server = try FakeProvider { _ in .events(WireFormatTests.anthropicStream) }
        defer { server.stop() }
        let gate = try makeGate()
        let client = PolicyGateHTTPClient(gate: gate)
        let body = WireFormatTests.anthropicRequest.replacingOccurrences(of: #""max_tokens""#, with: #""stream": true, "max_tokens""#)
        let stream = try await client.stream(request(server, "/v1/messages", body), api: .anthropicMessages, key: anthropic)
        #expect(stream.status == 200)
        var received = Data()
        var chunks = 0
        for try await chunk in stream {
            received += chunk
            chunks += 1
        }
        #expect(String(decoding: received, as: UTF8.self) == WireFormatTests.anthropicStream.joined())
        #expect(chunks > 1)
        try await eventually { gate.currentState(for: anthropic).inFlight == 0 }
        #expect(stream.isComplete && stream.committed == ProviderUsage(input: 25, output: 15, cacheReads: 2_000))
        #expect(tokensUsed(gate, anthropic) == 40)
        #expect(gate.currentState(for: anthropic).inFlight == 0)
    }

    @Test("an OpenAI stream with include_usage commits its final usage chunk")
    func openAIStream() async throws {
        let server = try FakeProvider { _ in .events(WireFormatTests.openAIStream, pause: .milliseconds(1)) }
        defer { server.stop() }
        let gate = try makeGate()
        let client = PolicyGateHTTPClient(gate: gate)
        let body = WireFormatTests.openAIChatRequest
        let stream = try await client.stream(request(server, "/v1/chat/completions", body), api: .openAIChatCompletions, key: openAI)
        for try await _ in stream {}
        try await eventually { gate.currentState(for: openAI).inFlight == 0 }
        #expect(stream.committed == ProviderUsage(input: 20, output: 9, cacheReads: 100))
        #expect(tokensUsed(gate, openAI) == 129)
    }

    /// A provider that sends the final usage chunk only when the request asked for it, as OpenAI does.
    static func usageOnRequest() throws -> FakeProvider {
        try FakeProvider { request in
            let asked = request.body.range(of: Data(#""include_usage":true"#.utf8)) != nil
            return .events(WireFormatTests.openAIStream.filter { asked || !$0.contains(#""usage":{"#) }, pause: .milliseconds(1))
        }
    }

    @Test("a streamed OpenAI chat request without stream_options is sent asking for its usage, which is committed")
    func openAIStreamUsageRequested() async throws {
        let server = try Self.usageOnRequest()
        defer { server.stop() }
        let gate = try makeGate()
        let client = PolicyGateHTTPClient(gate: gate)
        #expect(client.requestsStreamUsage)
        let body = #"{"model": "gpt-4o", "max_tokens": 300, "stream": true, "messages": [{"role": "user", "content": "Hi"}]}"#
        let stream = try await client.stream(request(server, "/v1/chat/completions", body), api: .openAIChatCompletions, key: openAI)
        for try await _ in stream {}
        try await eventually { gate.currentState(for: openAI).inFlight == 0 }
        #expect(server.requests.first?.body == Data(#"{"stream_options":{"include_usage":true},"#.utf8) + Data(body.utf8).dropFirst())
        #expect(stream.isComplete && stream.committed == ProviderUsage(input: 20, output: 9, cacheReads: 100))
        #expect(tokensUsed(gate, openAI) == 129)
        #expect(client.estimator.accuracy(api: .openAIChatCompletions, model: "gpt-4o")?.samples == 1)
    }

    @Test("with requestsStreamUsage off the request is sent as given, and the stream commits its fallback")
    func openAIStreamUsageNotRequested() async throws {
        let server = try Self.usageOnRequest()
        defer { server.stop() }
        let gate = try makeGate()
        let client = PolicyGateHTTPClient(gate: gate, requestsStreamUsage: false)
        let body = #"{"model": "gpt-4o", "max_tokens": 300, "stream": true, "messages": [{"role": "user", "content": "Hi"}]}"#
        let stream = try await client.stream(request(server, "/v1/chat/completions", body), api: .openAIChatCompletions, key: openAI)
        for try await _ in stream {}
        try await eventually { gate.currentState(for: openAI).inFlight == 0 }
        #expect(server.requests.first?.body == Data(body.utf8))
        // Complete, but without usage: the input estimate and the output cap.
        let estimate = try client.estimator.estimate(.openAIChatCompletions, request: Data(body.utf8))
        #expect(stream.isComplete && stream.usage == nil)
        #expect(stream.committed == ProviderUsage(input: estimate.input, output: 300))
        #expect(tokensUsed(gate, openAI) == estimate.input + 300)
    }

    @Test("a reply cut mid-stream: the consumer sees the error; the input seen and the output cap are committed")
    func cutMidStream() async throws {
        let server = try FakeProvider { _ in .events(WireFormatTests.anthropicStream, cutAfter: 3) }
        defer { server.stop() }
        let gate = try makeGate()
        let client = PolicyGateHTTPClient(gate: gate)
        let stream = try await client.stream(
            request(server, "/v1/messages", WireFormatTests.anthropicRequest), api: .anthropicMessages, key: anthropic)
        var threw = false
        do { for try await _ in stream {} } catch { threw = true }
        #expect(threw)
        try await eventually { gate.currentState(for: anthropic).inFlight == 0 }
        #expect(!stream.isComplete)
        #expect(stream.committed == ProviderUsage(input: 25, output: 1_024, cacheReads: 2_000))
        #expect(tokensUsed(gate, anthropic) == 25 + 1_024)
    }

    @Test("a consumer that stops early: the request is cancelled and the call committed and released")
    func consumerStopsEarly() async throws {
        // The provider writes an event every 5 s: the stream cannot end on its own before the
        // consumer has read its first chunk, however slowly the test runs (ThreadSanitizer, a
        // loaded machine); the consumer's stop ends it.
        let events =
            WireFormatTests.anthropicStream.prefix(1) + Array(repeating: WireFormatTests.anthropicStream[3], count: 200)
            + WireFormatTests.anthropicStream.suffix(2)
        let server = try FakeProvider { _ in .events(Array(events), pause: .seconds(5)) }
        defer { server.stop() }
        let gate = try makeGate()
        let client = PolicyGateHTTPClient(gate: gate)
        do {
            let stream = try await client.stream(
                request(server, "/v1/messages", WireFormatTests.anthropicRequest), api: .anthropicMessages, key: anthropic)
            for try await _ in stream {
                #expect(gate.currentState(for: anthropic).inFlight == 1)
                break
            }
        }
        try await eventually { gate.currentState(for: anthropic).inFlight == 0 }
        #expect(gate.currentState(for: anthropic).inFlight == 0)
        #expect(tokensUsed(gate, anthropic) == 25 + 1_024)
    }

    @Test("a provider that is not there: the transport error is thrown and the call counts 0")
    func transportFailure() async throws {
        let server = try FakeProvider { _ in .json("{}") }
        server.stop()
        let gate = try makeGate()
        let client = PolicyGateHTTPClient(gate: gate)
        await #expect(throws: (any Error).self) {
            _ = try await client.send(
                request(server, "/v1/messages", WireFormatTests.anthropicRequest), api: .anthropicMessages, key: anthropic)
        }
        #expect(tokensUsed(gate, anthropic) == 0)
        #expect(gate.currentState(for: anthropic)[.minute]?.requests.used == 1)
        #expect(gate.currentState(for: anthropic).inFlight == 0)
    }
}
