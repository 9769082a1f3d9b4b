import Foundation

/// What a provider said about its own limits in one response: how much is left of each
/// quantity and when it resets, and how long to wait after a refusal (429).
///
/// Read from the response's headers, with no HTTP library: names are matched without regard to
/// case, and every value is checked before it is believed. A value that cannot be read, is
/// negative, inconsistent or absurd (a reset more than a day away) is left out and listed in
/// ``ignored``; nothing in a header can make the gate crash or loosen a configured cap.
///
/// Understood:
/// - OpenAI: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` and the `-project-tokens`
///   variants (resets as Go durations: `1s`, `6m0s`, `12ms`, `1h2m3.5s`); where both token
///   headers are present, the one with less remaining counts.
/// - Anthropic: `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`
///   (resets as RFC 3339 instants). Anthropic rounds remaining tokens to the nearest thousand,
///   so 500 fewer are believed.
/// - `retry-after` (seconds or an HTTP date), `retry-after-ms`, and Azure's `x-ms-retry-after-ms`;
///   where several are present, the longest wait counts.
public struct PolicyProviderFeedback: Sendable, Hashable {
    /// A quantity the provider reports on.
    public enum Quantity: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
        /// Requests.
        case requests
        /// Tokens, input and output together.
        case tokens
        /// Input (prompt) tokens.
        case inputTokens
        /// Output (completion) tokens.
        case outputTokens

        /// The quantity's name, such as `inputTokens`.
        public var description: String { rawValue }
    }

    /// One quantity's state at the provider when it answered.
    public struct Quota: Sendable, Hashable {
        /// The provider's cap for the quantity, if it said.
        public var limit: Int?
        /// What is left of it, if it said (as believed: see ``PolicyProviderFeedback``).
        public var remaining: Int?
        /// How long after the response the quantity is available again in full, if it said.
        public var resetIn: Duration?

        /// A quota; every part optional.
        public init(limit: Int? = nil, remaining: Int? = nil, resetIn: Duration? = nil) {
            self.limit = limit
            self.remaining = remaining
            self.resetIn = resetIn
        }
    }

    /// A header value that was not believed, and why.
    public struct Ignored: Sendable, Hashable, CustomStringConvertible {
        /// The header's name, lowercased.
        public let name: String
        /// Its value, as received (at most 100 characters).
        public let value: String
        /// Why it was left out.
        public let reason: String

        /// `name: value (reason)`.
        public var description: String { "\(name): \(value) (\(reason))" }
    }

    /// What the provider said per quantity.
    public var quotas: [Quantity: Quota]
    /// How long the provider asked callers to wait (after a 429, usually), if it said.
    public var retryAfter: Duration?
    /// Values that were present but not believed.
    public var ignored: [Ignored]

    /// Feedback given directly, such as from a provider's response body.
    public init(quotas: [Quantity: Quota] = [:], retryAfter: Duration? = nil) {
        self.quotas = quotas
        self.retryAfter = retryAfter
        self.ignored = []
    }

    /// Reads a response's headers.
    /// - Parameters:
    ///   - headers: Names and values; names in any case.
    ///   - receivedAt: When the response arrived, for headers that name an instant (Anthropic's
    ///     resets, an HTTP-date `retry-after`).
    public init<S: Sequence>(headers: S, receivedAt: Date = Date()) where S.Element == (String, String) {
        self.init()
        let received = Int64((receivedAt.timeIntervalSince1970 * 1e9).rounded())
        var openAITokens: [String: Quota] = [:]  // "tokens" and "project-tokens"
        var retryAfters: [Int64] = []

        for (rawName, rawValue) in headers {
            let name = rawName.lowercased()
            let value = rawValue
            func ignore(_ reason: String) {
                ignored.append(Ignored(name: name, value: String(value.prefix(100)), reason: reason))
            }
            func count() -> Int? {
                guard let n = HeaderValues.count(value) else {
                    ignore("not a whole number in 0...\(HeaderValues.largestCount)")
                    return nil
                }
                return Int(n)
            }
            func delay(_ nanos: Int64?, _ format: String) -> Duration? {
                guard let nanos else {
                    ignore("not \(format)")
                    return nil
                }
                guard nanos <= HeaderValues.longestDelay else {
                    ignore("more than a day away")
                    return nil
                }
                return .nanoseconds(max(0, nanos))
            }
            func until(_ instant: Int64?, _ format: String) -> Duration? {
                delay(instant.map { $0 - received }, format)
            }

            if name.hasPrefix("x-ratelimit-") {
                let rest = name.dropFirst("x-ratelimit-".count)
                for field in ["requests", "tokens", "project-tokens"] {
                    for part in ["limit", "remaining", "reset"] where rest == "\(part)-\(field)" {
                        let believed = part == "reset" ? nil : count()
                        let reset = part == "reset" ? delay(HeaderValues.goDuration(value), "a duration such as 6m0s") : nil
                        if field == "requests" {
                            update(.requests, part, count: believed, reset: reset)
                        } else {
                            Self.set(&openAITokens[field, default: Quota()], part, count: believed, reset: reset)
                        }
                    }
                }
            } else if name.hasPrefix("anthropic-ratelimit-") {
                let rest = name.dropFirst("anthropic-ratelimit-".count)
                let fields: [(String, Quantity)] = [
                    ("requests", .requests), ("tokens", .tokens), ("input-tokens", .inputTokens), ("output-tokens", .outputTokens),
                ]
                for (field, quantity) in fields {
                    for part in ["limit", "remaining", "reset"] where rest == "\(field)-\(part)" {
                        var believed = part == "reset" ? nil : count()
                        if part == "remaining", quantity != .requests, let n = believed { believed = max(0, n - 500) }
                        let reset = part == "reset" ? until(HeaderValues.rfc3339(value), "an RFC 3339 date-time") : nil
                        update(quantity, part, count: believed, reset: reset)
                    }
                }
            } else if name == "retry-after" {
                let trimmed = String(value.trimmingSpaces)
                let nanos = HeaderValues.count(trimmed).map { $0.multipliedReportingOverflow(by: 1_000_000_000) }
                let wait =
                    nanos.map { $0.overflow ? nil : $0.partialValue }
                    .map { delay($0, "seconds") } ?? until(HeaderValues.httpDate(trimmed), "seconds or an HTTP date")
                if let wait { retryAfters.append(wait.nanosecondsSaturating) }
            } else if name == "retry-after-ms" || name == "x-ms-retry-after-ms" {
                if let wait = delay(HeaderValues.decimal(value, unit: 1_000_000), "milliseconds") {
                    retryAfters.append(wait.nanosecondsSaturating)
                }
            }
        }
        // OpenAI's token headers: the one with less remaining binds.
        let tokenQuotas = openAITokens.values.filter { $0 != Quota() }
        if let binding = tokenQuotas.min(by: { ($0.remaining ?? .max) < ($1.remaining ?? .max) }) {
            quotas[.tokens] = binding
        }
        if let longest = retryAfters.max() { retryAfter = .nanoseconds(longest) }
        // A remaining count above the limit is not believed.
        for (quantity, quota) in quotas {
            if let limit = quota.limit, let remaining = quota.remaining, remaining > limit {
                ignored.append(Ignored(name: "\(quantity)", value: "\(remaining) of \(limit)", reason: "more remaining than the limit"))
                quotas[quantity]?.remaining = nil
            }
        }
    }

    /// Reads a response's headers given as a dictionary (see ``init(headers:receivedAt:)``).
    public init(headers: [String: String], receivedAt: Date = Date()) {
        self.init(headers: headers.map { ($0.key, $0.value) }, receivedAt: receivedAt)
    }

    /// Whether nothing was understood.
    public var isEmpty: Bool { quotas.isEmpty && retryAfter == nil }

    private mutating func update(_ quantity: Quantity, _ part: String, count: Int?, reset: Duration?) {
        Self.set(&quotas[quantity, default: Quota()], part, count: count, reset: reset)
        if quotas[quantity] == Quota() { quotas[quantity] = nil }
    }

    private static func set(_ quota: inout Quota, _ part: String, count: Int?, reset: Duration?) {
        switch part {
        case "limit": quota.limit = count
        case "remaining": quota.remaining = count
        default: quota.resetIn = reset
        }
    }
}
