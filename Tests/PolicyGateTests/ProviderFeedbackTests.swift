import Foundation
import PolicyGateTestKit
import Testing

@testable import PolicyGate

/// Reading providers' rate-limit headers, from header sets written after the providers'
/// documentation, and refusing what cannot be believed.
@Suite("Provider feedback from response headers")
struct ProviderFeedbackTests {
    let received = Date(timeIntervalSince1970: 1_780_000_000)  // 2026-05-28T20:26:40Z

    @Test("OpenAI: limits, remaining and Go-duration resets of requests and tokens")
    func openAI() {
        // The example in OpenAI's rate-limit guide.
        let feedback = PolicyProviderFeedback(
            headers: [
                "x-ratelimit-limit-requests": "60",
                "x-ratelimit-limit-tokens": "150000",
                "x-ratelimit-remaining-requests": "59",
                "x-ratelimit-remaining-tokens": "149984",
                "x-ratelimit-reset-requests": "1s",
                "x-ratelimit-reset-tokens": "6m0s",
            ], receivedAt: received)
        #expect(feedback.quotas[.requests] == .init(limit: 60, remaining: 59, resetIn: .seconds(1)))
        #expect(feedback.quotas[.tokens] == .init(limit: 150_000, remaining: 149_984, resetIn: .seconds(360)))
        #expect(feedback.retryAfter == nil && feedback.ignored.isEmpty)
    }

    @Test("OpenAI: names in any case; of the tokens and project-tokens headers, less remaining binds")
    func openAIProjectTokens() {
        let feedback = PolicyProviderFeedback(
            headers: [
                ("X-RateLimit-Limit-Tokens", "150000"), ("X-RateLimit-Remaining-Tokens", "120000"),
                ("X-RateLimit-Reset-Tokens", "12ms"),
                ("x-ratelimit-limit-project-tokens", "40000"), ("x-ratelimit-remaining-project-tokens", "1500"),
                ("x-ratelimit-reset-project-tokens", "1h2m3.5s"),
            ], receivedAt: received)
        #expect(feedback.quotas[.tokens] == .init(limit: 40_000, remaining: 1_500, resetIn: .milliseconds(3_723_500)))
    }

    @Test(
        "Go durations",
        arguments: [
            ("1s", 1_000_000_000 as Int64), ("6m0s", 360_000_000_000), ("12ms", 12_000_000), ("1h2m3.5s", 3_723_500_000_000),
            ("0", 0), ("0s", 0), ("250us", 250_000), ("1.5m", 90_000_000_000), ("2h", 7_200_000_000_000),
        ])
    func goDurations(text: String, nanos: Int64) {
        #expect(HeaderValues.goDuration(text) == nanos)
    }

    @Test("malformed Go durations are refused", arguments: ["", "s", "1", "-1s", "1x", "1.s.", "1..5s", "1h-2m", " ", "9999999999999999h"])
    func badGoDurations(text: String) {
        #expect(HeaderValues.goDuration(text) == nil)
    }

    @Test("Anthropic: requests, tokens, input and output tokens with RFC 3339 resets; remaining tokens are rounded")
    func anthropic() {
        // The header set of Anthropic's rate-limit documentation, resets 30 s and 1 min ahead.
        let feedback = PolicyProviderFeedback(
            headers: [
                "anthropic-ratelimit-requests-limit": "50",
                "anthropic-ratelimit-requests-remaining": "49",
                "anthropic-ratelimit-requests-reset": "2026-05-28T20:27:10Z",
                "anthropic-ratelimit-tokens-limit": "80000",
                "anthropic-ratelimit-tokens-remaining": "72000",
                "anthropic-ratelimit-tokens-reset": "2026-05-28T20:27:40Z",
                "anthropic-ratelimit-input-tokens-limit": "40000",
                "anthropic-ratelimit-input-tokens-remaining": "38000",
                "anthropic-ratelimit-input-tokens-reset": "2026-05-28T20:27:40.250Z",
                "anthropic-ratelimit-output-tokens-limit": "8000",
                "anthropic-ratelimit-output-tokens-remaining": "0",
                "anthropic-ratelimit-output-tokens-reset": "2026-05-28T21:27:40+01:00",
            ], receivedAt: received)
        #expect(feedback.quotas[.requests] == .init(limit: 50, remaining: 49, resetIn: .seconds(30)))
        // Rounded to the thousand by the provider: 500 fewer are believed.
        #expect(feedback.quotas[.tokens] == .init(limit: 80_000, remaining: 71_500, resetIn: .seconds(60)))
        #expect(feedback.quotas[.inputTokens] == .init(limit: 40_000, remaining: 37_500, resetIn: .milliseconds(60_250)))
        #expect(feedback.quotas[.outputTokens] == .init(limit: 8_000, remaining: 0, resetIn: .seconds(60)))
        #expect(feedback.ignored.isEmpty)
    }

    @Test("a reset already past means available now")
    func pastReset() {
        let feedback = PolicyProviderFeedback(
            headers: ["anthropic-ratelimit-requests-reset": "2026-05-28T20:26:00Z"], receivedAt: received)
        #expect(feedback.quotas[.requests]?.resetIn == .zero)
    }

    @Test("retry-after in seconds, as an HTTP date, in milliseconds and Azure's; the longest counts")
    func retryAfter() {
        #expect(PolicyProviderFeedback(headers: ["Retry-After": "20"], receivedAt: received).retryAfter == .seconds(20))
        #expect(
            PolicyProviderFeedback(headers: ["retry-after": "Thu, 28 May 2026 20:27:10 GMT"], receivedAt: received)
                .retryAfter == .seconds(30))
        #expect(
            PolicyProviderFeedback(headers: ["retry-after-ms": "1500.5"], receivedAt: received).retryAfter
                == .nanoseconds(1_500_500_000))
        #expect(PolicyProviderFeedback(headers: ["x-ms-retry-after-ms": "250"], receivedAt: received).retryAfter == .milliseconds(250))
        let both = PolicyProviderFeedback(headers: ["retry-after": "1", "retry-after-ms": "1800"], receivedAt: received)
        #expect(both.retryAfter == .milliseconds(1_800))
    }

    @Test("malformed, negative, inconsistent and absurd values are ignored and listed, never trusted")
    func refused() {
        let feedback = PolicyProviderFeedback(
            headers: [
                "x-ratelimit-remaining-requests": "-1",
                "x-ratelimit-limit-tokens": "1e6",
                "x-ratelimit-reset-requests": "soon",
                "x-ratelimit-reset-tokens": "48h",
                "anthropic-ratelimit-requests-reset": "2026-02-30T00:00:00Z",
                "anthropic-ratelimit-tokens-limit": "99999999999999999999",
                "retry-after": "Sunday",
                "retry-after-ms": "-5",
                "anthropic-ratelimit-input-tokens-limit": "1000",
                "anthropic-ratelimit-input-tokens-remaining": "5000",
                "x-unrelated": "whatever",
            ], receivedAt: received)
        #expect(feedback.retryAfter == nil)
        #expect(feedback.quotas[.requests] == nil && feedback.quotas[.tokens] == nil)
        // 5000 remaining (4500 believed) of a limit of 1000 is inconsistent: the limit stays, the remaining does not.
        #expect(feedback.quotas[.inputTokens] == .init(limit: 1_000))
        let names = Set(feedback.ignored.map(\.name))
        #expect(
            names == [
                "x-ratelimit-remaining-requests", "x-ratelimit-limit-tokens", "x-ratelimit-reset-requests",
                "x-ratelimit-reset-tokens", "anthropic-ratelimit-requests-reset", "anthropic-ratelimit-tokens-limit",
                "retry-after", "retry-after-ms", "inputTokens",
            ], "\(feedback.ignored)")
        #expect(feedback.ignored.first { $0.name == "x-ratelimit-reset-tokens" }?.reason == "more than a day away")
    }

    @Test("RFC 3339 and HTTP dates")
    func dates() {
        #expect(HeaderValues.rfc3339("1970-01-01T00:00:00Z") == 0)
        #expect(HeaderValues.rfc3339("1970-01-01T01:00:00+01:00") == 0)
        #expect(HeaderValues.rfc3339("1970-01-01t00:00:01.5z") == 1_500_000_000)
        #expect(HeaderValues.rfc3339("2024-02-29T12:00:00Z") == 1_709_208_000_000_000_000)
        for bad in [
            "2023-02-29T12:00:00Z", "2024-01-01T24:00:00Z", "2024-01-01T00:00:00", "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00+0100", "not a date at all, no", "2024-01-01T00:00:00Z trailing",
        ] {
            #expect(HeaderValues.rfc3339(bad) == nil, "\(bad)")
        }
        #expect(HeaderValues.httpDate("Sun, 06 Nov 1994 08:49:37 GMT") == 784_111_777_000_000_000)
        for bad in [
            "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994", "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 31 Feb 1994 08:49:37 GMT", "Sun, 6 Nov 1994 08:49:37 GMT",
        ] {
            #expect(HeaderValues.httpDate(bad) == nil, "\(bad)")
        }
    }
}

/// Random header values never crash the reader, and whatever it believes is within bounds.
@Suite("Provider feedback from random headers")
struct ProviderFeedbackFuzzTests {
    @Test("random values (20 000; a million with POLICYGATE_SOAK=1): no crash, every believed value in range")
    func random() {
        var rng = SeededRandomNumberGenerator(seed: 7)
        let pieces = [
            "0", "1", "9", "12", "-", "+", ".", "e", "h", "m", "s", "ms", "us", "µs", "ns", " ", "\t", ":", "T", "Z",
            "2026-", "05-28", "20:27:10", "+01:00", "Sun, ", "06 Nov 1994 ", "08:49:37 GMT", "99999999999999999999",
            "\u{0}", "é", "∞", "NaN", "0x10", ",",
        ]
        let names = [
            "x-ratelimit-limit-requests", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-requests",
            "x-ratelimit-reset-project-tokens", "anthropic-ratelimit-tokens-reset", "anthropic-ratelimit-input-tokens-remaining",
            "retry-after", "retry-after-ms", "x-ms-retry-after-ms", "Retry-After",
        ]
        let received = Date(timeIntervalSince1970: 1_780_000_000)
        var believed = 0
        let count = Environment.soak ? 1_000_000 : 20_000
        for _ in 0..<count {
            let value = (0..<Int.random(in: 0...6, using: &rng)).map { _ in pieces.randomElement(using: &rng)! }.joined()
            let name = names.randomElement(using: &rng)!
            let feedback = PolicyProviderFeedback(headers: [(name, value)], receivedAt: received)
            for quota in feedback.quotas.values {
                for count in [quota.limit, quota.remaining].compactMap({ $0 }) {
                    #expect(count >= 0 && count <= PolicyLimits.maximumTokenCount, "\(name): \(value)")
                }
                if let reset = quota.resetIn { #expect(reset >= .zero && reset <= .seconds(86_400), "\(name): \(value)") }
                believed += 1
            }
            if let wait = feedback.retryAfter {
                #expect(wait >= .zero && wait <= .seconds(86_400), "\(name): \(value)")
                believed += 1
            }
        }
        #expect(believed > count / 100, "only \(believed) values believed: the generator is too narrow to test acceptance")
    }
}
