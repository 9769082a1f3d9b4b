// One gated provider call in one line, against a fake provider on loopback (no network):
//
//   swift run gated-call-example
//
// The fake provider answers like Anthropic's messages API: the first call gets a 429 with a
// `retry-after`, the next ones a reply with usage and rate-limit headers; one call is streamed.
import Foundation
import PolicyGate
import PolicyGateFakeProvider
import PolicyGateProviders
import Synchronization
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

let calls = Mutex(0)
let provider = try FakeProvider { request in
    let n = calls.withLock { $0 += 1; return $0 }
    if n == 1 {
        return .json(#"{"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}"#, status: 429, headers: [("retry-after", "1")])
    }
    if String(decoding: request.body, as: UTF8.self).contains(#""stream": true"#) {
        return .events([
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":31,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" there.\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":4}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        ])
    }
    return .json(
        #"{"type": "message", "content": [{"type": "text", "text": "Hello!"}], "usage": {"input_tokens": 24, "cache_read_input_tokens": 0, "output_tokens": 9}}"#,
        headers: [("anthropic-ratelimit-input-tokens-limit", "40000"), ("anthropic-ratelimit-input-tokens-remaining", "39000")])
}
defer { provider.stop() }

let gate = try PolicyService(limits: [
    "anthropic": PolicyLimits(requestsPerMinute: 50, inputTokensPerMinute: 40_000, outputTokensPerMinute: 8_000, maxConcurrent: 4, countsCacheReads: false),
])
let key = PolicyKey(provider: "anthropic", scope: .user("u-42"))
let client = PolicyGateHTTPClient(gate: gate)

var request = URLRequest(url: provider.baseURL.appendingPathComponent("v1/messages"))
request.httpMethod = "POST"
request.httpBody = Data(#"{"model": "claude-sonnet-4-5", "max_tokens": 256, "messages": [{"role": "user", "content": "Say hello in five words or fewer."}]}"#.utf8)

// The one line: estimate from the body, wait for the gate, send, commit the usage, feed back headers and 429s.
let reply = try await client.send(request, api: .anthropicMessages, key: key, maxWait: .seconds(5))

print("status \(reply.status) after \(reply.attempts) attempt(s) (the first was a 429 with retry-after: 1)")
print("estimated in \(reply.estimate.input) out \(reply.estimate.output); provider reported \(reply.usage.map(String.init(describing:)) ?? "nothing")")
print("gate:", gate.currentState(for: key))

// Streamed: passed through as it arrives, committed at the end.
request.httpBody = Data(#"{"model": "claude-sonnet-4-5", "max_tokens": 256, "stream": true, "messages": [{"role": "user", "content": "Say hello in five words or fewer."}]}"#.utf8)
let stream = try await client.stream(request, api: .anthropicMessages, key: key, maxWait: .seconds(5))
var bytes = 0
for try await chunk in stream { bytes += chunk.count }
print("streamed \(bytes) bytes; committed \(stream.committed.map(String.init(describing:)) ?? "nothing yet")")
if let accuracy = client.estimator.accuracy(api: .anthropicMessages, model: "claude-sonnet-4-5") {
    print("estimator: \(accuracy.samples) calls compared, mean error \(Int(accuracy.meanRelativeError * 100))%, correction ×\(String(format: "%.2f", accuracy.correction))")
}
print("gate:", gate.currentState(for: key))
