/// A provider's hidden capacity, for ``ProviderModel``: what the provider really grants, often
/// less than the gate is configured for (a shared account, a lowered tier).
package struct ProviderCapacity: Codable, Sendable, Hashable {
    /// Requests per sliding minute, 429s included (as OpenAI counts them: "unsuccessful
    /// requests contribute to your per-minute limit").
    package var requestsPerMinute: Int?
    /// Tokens (the calls' estimates, as the provider sees them when a request arrives) per
    /// sliding minute, of the requests it accepted.
    package var tokensPerMinute: Int?

    /// A capacity; at least one part should be set.
    package init(requestsPerMinute: Int? = nil, tokensPerMinute: Int? = nil) {
        self.requestsPerMinute = requestsPerMinute
        self.tokensPerMinute = tokensPerMinute
    }

    /// `300 requests/min`, `300 requests/min, 150,000 tokens/min`.
    package var description: String {
        [requestsPerMinute.map { "\(Values.count($0)) requests/min" }, tokensPerMinute.map { "\(Values.count($0)) tokens/min" }]
            .compactMap { $0 }.joined(separator: ", ")
    }
}

/// The provider itself, in a simulation: it answers each call the gate admitted, at the instant
/// it was admitted, with a 429 when the call does not fit its hidden capacity over the last
/// 60 s (an exact sliding log), and says in `retry-after` (whole seconds, at least 1) when
/// room frees. Deterministic: the same calls, the same answers.
struct ProviderModel {
    /// How long a 429 takes to come back: refusals are quick, but not instant, so a burst the
    /// gate lets through at once is refused before the first refusal reaches it.
    static let refusalLatency: Int64 = 200_000_000
    static let window: Int64 = 60_000_000_000

    let capacity: ProviderCapacity
    /// Requests in the window (accepted or not), oldest first, from `requestHead` on.
    private var requests: [Int64] = []
    private var requestHead = 0
    /// Accepted requests' tokens in the window, oldest first, from `tokenHead` on.
    private var tokens: [(at: Int64, tokens: Int)] = []
    private var tokenHead = 0
    private var tokenTotal = 0

    init(capacity: ProviderCapacity) {
        self.capacity = capacity
    }

    private mutating func expire(_ now: Int64) {
        while requestHead < requests.count, requests[requestHead] <= now - Self.window { requestHead += 1 }
        while tokenHead < tokens.count, tokens[tokenHead].at <= now - Self.window {
            tokenTotal -= tokens[tokenHead].tokens
            tokenHead += 1
        }
        if requestHead > 4_096 && requestHead * 2 > requests.count {
            requests.removeFirst(requestHead)
            requestHead = 0
        }
        if tokenHead > 4_096 && tokenHead * 2 > tokens.count {
            tokens.removeFirst(tokenHead)
            tokenHead = 0
        }
    }

    /// Answers a request of `tokens` arriving at `now`: `true` accepted, `false` a 429.
    mutating func answer(at now: Int64, tokens estimate: Int) -> Bool {
        expire(now)
        let requestsFit = capacity.requestsPerMinute.map { requests.count - requestHead < $0 } ?? true
        let tokensFit = capacity.tokensPerMinute.map { tokenTotal + estimate <= $0 } ?? true
        requests.append(now)
        guard requestsFit && tokensFit else { return false }
        tokens.append((now, estimate))
        tokenTotal += estimate
        return true
    }

    /// The `retry-after` the provider sends at `now`: until the oldest request in its window
    /// leaves it, in whole seconds, at least 1.
    mutating func retryAfter(at now: Int64) -> Duration {
        expire(now)
        let oldest = min(
            requestHead < requests.count ? requests[requestHead] : .max,
            tokenHead < tokens.count ? tokens[tokenHead].at : .max)
        let wait = oldest == .max ? 0 : oldest + Self.window - now
        let seconds = max(1, (wait + 999_999_999) / 1_000_000_000)
        return .seconds(seconds)
    }
}

/// What the provider model answered one provider's calls.
package struct ProviderModelReport: Codable, Sendable, Hashable {
    /// The hidden capacity.
    package var capacity: ProviderCapacity
    /// Whether the gate ran the provider in adaptive mode.
    package var adaptive: Bool
    /// Calls the provider refused with a 429 (the gate had admitted them).
    package var throttled: Int
    /// Calls that completed: admitted by the gate, accepted by the provider, not cut short.
    package var goodput: Int
}

/// One provider's figures under the provider model with adaptive caps off and on.
package struct AdaptiveComparison: Codable, Sendable, Hashable {
    /// The provider.
    package var provider: String
    /// Its hidden capacity.
    package var capacity: ProviderCapacity
    /// With adaptive caps off.
    package var off: ProviderModelReport
    /// With adaptive caps on.
    package var on: ProviderModelReport
}
