// The one-call wrapper's own cost, without the HTTP exchange:
//
//   swift run -c release --package-path Benchmarks ProviderOverhead [--repetitions N]
//
// "bare" is a gated call's bookkeeping alone: acquire with input and output estimates, commit
// in parts, release. "wrapper" adds what PolicyGateHTTPClient.send does around the exchange:
// estimate from the request body, feed the response headers back, read the usage from the
// body, commit (clamping), calibrate the estimator. The difference is the wrapper's overhead.
// Components are timed alone too. Every case: medians of N repetitions (default 7) of ≥ 0.25 s.

import BenchmarkFixtures
import Foundation
import PolicyGate
import PolicyGateProviders

let requestBody = Data(
    #"""
    {"model": "claude-sonnet-4-5", "max_tokens": 1024, "system": "You are a helpful assistant. Answer briefly.",
     "messages": [{"role": "user", "content": "What is the capital of France? Please answer in one sentence."},
                  {"role": "assistant", "content": "The capital of France is Paris."},
                  {"role": "user", "content": "And of Germany?"}]}
    """#.utf8)
let longPrompt = String(repeating: "The quick brown fox jumps over the lazy dog. ", count: 450)  // ≈ 20 KB
let longBody = Data(
    #"{"model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": [{"role": "user", "content": "\#(longPrompt)"}]}"#.utf8)
let responseBody = Data(
    #"""
    {"id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
     "content": [{"type": "text", "text": "The capital of Germany is Berlin."}], "stop_reason": "end_turn", "stop_sequence": null,
     "usage": {"input_tokens": 52, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 9}}
    """#.utf8)
// Headers of a reply that say nothing about limits (so the loop never tightens the gate)…
let plainHeaders: [(String, String)] = [
    ("content-type", "application/json"), ("date", "Thu, 03 Dec 2026 14:00:00 GMT"), ("request-id", "req_018EeWyXxfu5pfWkrYcMdjWG"),
    ("anthropic-organization-id", "00000000-0000-0000-0000-000000000000"), ("via", "1.1 google"), ("cf-ray", "8e9f0a1b2c3d4e5f-FRA"),
    ("server", "cloudflare"), ("x-robots-tag", "none"),
]
// …and a full set of Anthropic rate-limit headers (timed alone: in the loop they would tighten it).
let resetAt = ISO8601DateFormatter().string(from: Date().addingTimeInterval(50))
let limitHeaders: [(String, String)] =
    plainHeaders
    + ["requests", "tokens", "input-tokens", "output-tokens"].flatMap { kind in
        [
            ("anthropic-ratelimit-\(kind)-limit", "4000000"), ("anthropic-ratelimit-\(kind)-remaining", "3999000"),
            ("anthropic-ratelimit-\(kind)-reset", resetAt),
        ]
    }
let stream = Data(
    [
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":52,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"The capital of Germany\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" is Berlin.\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":9}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    ].joined().utf8)

nonisolated(nonsending) func measure(_ name: String, repetitions: Int, _ body: (Int) async throws -> Void) async rethrows -> Double {
    let clock = ContinuousClock()
    var n = 100
    while true {  // calibrate (and warm up) to ≈ 0.25 s per repetition
        let start = clock.now
        try await body(n)
        let ns = Double((clock.now - start).components.attoseconds) / 1e9 + Double((clock.now - start).components.seconds) * 1e9
        if ns >= 20_000_000 { n = Int(Double(n) * 260_000_000 / ns); break }
        n *= 4
    }
    var samples: [Double] = []
    for _ in 0..<repetitions {
        let start = clock.now
        try await body(n)
        let elapsed = clock.now - start
        samples.append((Double(elapsed.components.seconds) * 1e9 + Double(elapsed.components.attoseconds) / 1e9) / Double(n))
    }
    samples.sort()
    let median = samples[samples.count / 2]
    print(
        "  \(name.padding(toLength: 58, withPad: " ", startingAt: 0)) \(String(format: "%8.1f", median)) ns  (min \(String(format: "%.1f", samples.first!)), max \(String(format: "%.1f", samples.last!)), \(n) ops/rep)"
    )
    return median
}

@main
struct ProviderOverhead {
    static func main() async throws {
        let arguments = CommandLine.arguments
        let repetitions = arguments.firstIndex(of: "--repetitions").flatMap { Int(arguments[$0 + 1]) } ?? 7
        let gate = try PolicyService(limits: ["anthropic": typicalSplitLimits(maxConcurrent: 64)])
        let key = PolicyKey(provider: "anthropic", scope: .user("u-42"))
        let estimator = TokenEstimator()
        let api = ProviderAPI.anthropicMessages
        print("ProviderOverhead: \(repetitions) repetitions, medians per call (release build)")
        let bare = try await measure("bare: acquire(in, out) + commit(parts) + release", repetitions: repetitions) { n in
            for _ in 0..<n {
                var permit = try await gate.acquire(key, estimatedInputTokens: 60, estimatedOutputTokens: 1_024)
                try permit.commitTokens(input: 52, output: 9, cacheReads: 0)
                permit.release()
            }
        }
        let wrapper = try await measure("wrapper: estimate + bare + observe + usage + calibrate", repetitions: repetitions) { n in
            for _ in 0..<n {
                let estimate = try estimator.estimate(api, request: requestBody)
                var permit = try await gate.acquire(key, estimatedInputTokens: estimate.input, estimatedOutputTokens: estimate.output)
                permit.observe(headers: plainHeaders)
                let usage = try api.usage(fromResponse: responseBody)
                permit.commitTokensClamping(input: usage.input, output: usage.output, cacheReads: usage.cacheReads)
                permit.release()
                estimator.calibrate(estimate, actual: usage)
            }
        }
        print(
            "  wrapper overhead: \(String(format: "%.0f", wrapper - bare)) ns per call (\(String(format: "%.1f", wrapper / bare))× the bare cycle)"
        )
        print("components:")
        _ = try await measure("estimate, 390-byte request", repetitions: repetitions) { n in
            for _ in 0..<n { _ = try estimator.estimate(api, request: requestBody) }
        }
        _ = try await measure("estimate, \(longBody.count / 1_000) KB request", repetitions: repetitions) { n in
            for _ in 0..<n { _ = try estimator.estimate(api, request: longBody) }
        }
        _ = try await measure("usage from a complete response", repetitions: repetitions) { n in
            for _ in 0..<n { _ = try api.usage(fromResponse: responseBody) }
        }
        _ = await measure("usage from a 7-event stream (\(stream.count) bytes)", repetitions: repetitions) { n in
            for _ in 0..<n {
                var parser = StreamUsageParser(api: api)
                parser.consume(stream)
                parser.finish()
                precondition(parser.usage != nil)
            }
        }
        _ = await measure("observe 8 plain headers (gate-wide)", repetitions: repetitions) { n in
            for _ in 0..<n { gate.observe(headers: plainHeaders, for: key) }
        }
        let other = PolicyKey(provider: "anthropic", scope: .user("observer"))
        _ = await measure("observe 8 plain + 12 Anthropic rate-limit headers", repetitions: repetitions) { n in
            for _ in 0..<n { gate.observe(headers: limitHeaders, for: other) }
        }
    }
}
