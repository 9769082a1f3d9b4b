import Foundation
import PolicyGate

/// A pre-flight estimate of one call, in the parts `PolicyService.acquire(_:estimatedInputTokens:estimatedOutputTokens:maxWait:)` takes.
public struct TokenEstimate: Sendable, Hashable {
    /// The API the request is for.
    public var api: ProviderAPI
    /// The request's model, if named.
    public var model: String?
    /// Estimated input tokens (the whole prompt, cache reads included).
    public var input: Int
    /// The output cap: the request's `max_tokens` (or its equivalent), else the estimator's default.
    public var output: Int
    /// The input estimate before calibration: prompt bytes over bytes-per-token, plus overhead.
    public var uncalibratedInput: Int
}

/// How far an estimator's input estimates were from the counts the provider reported.
public struct EstimateAccuracy: Sendable, Hashable {
    /// Calls compared.
    public var samples: Int
    /// Mean of |actual − estimate| / actual over the last calls (exponentially weighted, α = 0.2):
    /// the estimator's current relative error.
    public var meanRelativeError: Double
    /// Actual / estimate of the last call compared.
    public var lastRatio: Double
    /// The factor estimates are multiplied by now (1 until calibrated).
    public var correction: Double
}

/// Estimates a request's tokens from its body, and learns from what the provider reports.
///
/// **Heuristic.** Input ≈ prompt bytes ÷ bytes-per-token + a per-message overhead, where the
/// prompt bytes are the UTF-8 bytes of every string in the messages, system prompt and tools
/// (``ProviderAPI/summarize(request:)``). English text runs ≈ 4 bytes per token with OpenAI's
/// and Anthropic's tokenizers; the defaults are 4.0 for OpenAI and 3.5 for Anthropic (whose
/// tokenizer splits finer), 4 tokens of overhead per message and 8 per request. Output is the
/// request's `max_tokens` / `max_completion_tokens` / `max_output_tokens` — the most the call
/// can use, so the gate never under-reserves it — or ``defaultOutputTokens`` when unset.
///
/// **Calibration.** ``calibrate(_:actual:)`` with the usage the provider reported moves a
/// correction factor per API and model (an exponentially weighted mean of actual ÷ uncalibrated
/// estimate, α = 0.2, kept within 0.25…4) so the error shrinks as traffic flows; ``accuracy(api:model:)``
/// reports it. Only the input side is calibrated: the output cap stays an upper bound.
public final class TokenEstimator: Sendable {
    /// Output tokens assumed when a request sets no cap.
    public let defaultOutputTokens: Int
    private let bytesPerToken: [ProviderAPI: Double]
    private let state = Locked<[Group: Calibration]>([:])
    /// The smoothing of the correction and of the error (weight of the newest call).
    static let alpha = 0.2
    /// Overhead per message and per request, in tokens (role markers, separators).
    static let perMessage = 4, perRequest = 8

    struct Group: Hashable { let api: ProviderAPI; let model: String }
    struct Calibration {
        var samples = 0
        var correction = 1.0
        var error = 0.0
        var lastRatio = 1.0
    }

    /// Creates an estimator.
    /// - Parameters:
    ///   - bytesPerToken: Per API, the bytes of prompt text per token before calibration;
    ///     APIs not named use 4.0 (OpenAI) or 3.5 (Anthropic).
    ///   - defaultOutputTokens: Output assumed when a request sets no cap.
    public init(bytesPerToken: [ProviderAPI: Double] = [:], defaultOutputTokens: Int = 4_096) {
        var table: [ProviderAPI: Double] = [.openAIChatCompletions: 4.0, .openAIResponses: 4.0, .anthropicMessages: 3.5]
        for (api, value) in bytesPerToken where value.isFinite && value > 0 { table[api] = value }
        self.bytesPerToken = table
        self.defaultOutputTokens = max(1, defaultOutputTokens)
    }

    /// Estimates a request body for `api`.
    /// - Throws: ``ProviderWireError`` if the body cannot be read.
    public func estimate(_ api: ProviderAPI, request body: Data) throws(ProviderWireError) -> TokenEstimate {
        estimate(api, summary: try api.summarize(request: body))
    }

    /// Estimates a request already summarized.
    public func estimate(_ api: ProviderAPI, summary: ProviderRequestSummary) -> TokenEstimate {
        let perToken = bytesPerToken[api] ?? 4.0
        let raw = Int((Double(summary.promptBytes) / perToken).rounded(.up)) + Self.perRequest + Self.perMessage * summary.messageCount
        let group = Group(api: api, model: summary.model ?? "")
        let correction = state.withLock { $0[group]?.correction ?? 1.0 }
        let input = max(1, Int((Double(raw) * correction).rounded(.up)))
        let output = max(1, summary.maxOutputTokens ?? defaultOutputTokens)
        return TokenEstimate(api: api, model: summary.model, input: input, output: output, uncalibratedInput: raw)
    }

    /// Learns from what the provider reported for a call estimated as `estimate`: compares the
    /// actual prompt (input plus cache reads) with the estimate and moves the correction.
    /// - Returns: Actual ÷ estimate for this call.
    @discardableResult
    public func calibrate(_ estimate: TokenEstimate, actual: ProviderUsage) -> Double {
        let prompt = Double(actual.prompt)
        guard prompt > 0, estimate.input > 0, estimate.uncalibratedInput > 0 else { return 1 }
        let ratio = prompt / Double(estimate.input)
        let rawRatio = min(4, max(0.25, prompt / Double(estimate.uncalibratedInput)))
        let relativeError = abs(prompt - Double(estimate.input)) / prompt
        let group = Group(api: estimate.api, model: estimate.model ?? "")
        state.withLock { table in
            var c = table[group] ?? Calibration()
            if c.samples == 0 {
                c.correction = rawRatio
                c.error = relativeError
            } else {
                c.correction += Self.alpha * (rawRatio - c.correction)
                c.error += Self.alpha * (relativeError - c.error)
            }
            c.samples += 1
            c.lastRatio = ratio
            table[group] = c
        }
        return ratio
    }

    /// The estimates' accuracy for `api` and `model` so far, or `nil` before any call was compared.
    public func accuracy(api: ProviderAPI, model: String?) -> EstimateAccuracy? {
        state.withLock { table in
            table[Group(api: api, model: model ?? "")].map {
                EstimateAccuracy(samples: $0.samples, meanRelativeError: $0.error, lastRatio: $0.lastRatio, correction: $0.correction)
            }
        }
    }
}
