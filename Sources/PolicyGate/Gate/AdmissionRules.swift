/// Why a call cannot be admitted now, and when it could be if nothing else arrives.
struct Rejection: Error, Hashable {
    /// The cap; `nil` when a schedule entry closes the gate.
    let kind: PolicyLimitKind?
    /// When the call would fit; `nil` when that depends on a release (concurrency), or never
    /// comes (an oversized estimate).
    let retryAt: Int64?
    /// For an estimate above a token cap: that cap. No wait can help such a call.
    var exceededCap: Int64? = nil
    /// What refused it besides a cap, if anything: the provider's own feedback
    /// (``ProviderFeedbackState``), or a batch call's caps (the caps less the provider's
    /// reserve for interactive calls). One optional for both, so that the rejection stays as
    /// small as it was: it travels in a `Result` on the hot path, where a byte more cost ≈ 40
    /// instructions a call.
    var cause: Cause? = nil

    enum Cause: Hashable {
        /// What the provider said; `kind` is `nil` then.
        case provider(ProviderRefusal)
        /// The caps less ``PolicyLimits/reservedForInteractive`` refused a batch call.
        case batchCaps
        /// A spend cap (``SpendWindows``); `kind` is `nil` then.
        case cost(PolicyCostCap)
    }

    /// A spend cap's refusal: when the call's cost fits (`nil` with `exceededCap`: never).
    init(cost cap: PolicyCostCap, retryAt: Int64?, exceededCap: Int64? = nil) {
        kind = nil
        self.retryAt = retryAt
        self.exceededCap = exceededCap
        cause = .cost(cap)
    }

    /// The spend cap that refused the call, if one did.
    var costCap: PolicyCostCap? {
        if case .cost(let cap)? = cause { return cap }
        return nil
    }

    init(kind: PolicyLimitKind?, retryAt: Int64?, exceededCap: Int64? = nil, provider: ProviderRefusal? = nil, forBatch: Bool = false) {
        self.kind = kind
        self.retryAt = retryAt
        self.exceededCap = exceededCap
        cause = provider.map { .provider($0) } ?? (forBatch ? .batchCaps : nil)
    }

    /// When the provider's own feedback refuses the call: what it said. (A trivial value, as
    /// the whole rejection is: a string would cost reference counting on the hot path.)
    var provider: ProviderRefusal? {
        if case .provider(let refusal)? = cause { return refusal }
        return nil
    }

    /// Whether the caps that refused it were a batch call's.
    var forBatch: Bool { cause == .batchCaps }

    /// A full concurrency cap: only a release can help.
    static let concurrency = Rejection(kind: .concurrency, retryAt: nil)
}

/// What the provider said that refuses a call.
enum ProviderRefusal: Hashable {
    /// A 429 or a `retry-after` paused the gate.
    case paused
    /// No requests left until the reset.
    case noRequests
    /// Fewer tokens left than the call's estimate.
    case tokens(left: Int64)

    /// As in "the provider …".
    var description: String {
        switch self {
        case .paused: "paused the gate"
        case .noRequests: "has no requests left"
        case .tokens(let left): "has \(max(0, left)) tokens left"
        }
    }
}

/// The admission rules that the in-process machine (``GateStateMachine``) and the shared
/// store's shell (``SharedGate``) both apply, each in one place: a fix here is a fix to both.
///
/// Pure functions of limits, counts and instants (the service's nanoseconds): they never lock,
/// read a clock or call out.
enum AdmissionRules {
    // MARK: Token counts

    /// Whether `count` is a token count the gate can record (`0...PolicyLimits.maximumTokenCount`).
    @inline(__always)
    static func isRecordable(_ count: Int) -> Bool {
        count >= 0 && count <= PolicyLimits.maximumTokenCount
    }

    /// The error for a token count outside `0...PolicyLimits.maximumTokenCount`; `what` names it
    /// ("estimated tokens", "committed tokens").
    static func unrecordable(_ count: Int, _ what: String, key: PolicyKey?) -> PolicyError {
        PolicyError(
            .invalidTokenCount, key: key, message: "\(what) must be in 0...\(PolicyLimits.maximumTokenCount), got \(count)")
    }

    /// Checks a pre-flight estimate against `limits`: recordable, positive when a token cap is
    /// set (0 would bypass it), and within every token cap.
    /// - Returns: The estimate as the machine counts it.
    @inline(__always)
    static func checkedEstimate(_ estimate: Int, limits: CompiledLimits, key: PolicyKey) throws(PolicyError) -> TokenCounts {
        guard estimate > 0, estimate <= PolicyLimits.maximumTokenCount else {
            if estimate == 0 && !limits.hasTokenCaps && !limits.hasSplitCaps { return .zero }
            if estimate == 0 {
                throw PolicyError(
                    .invalidTokenCount, key: key,
                    message: "an estimate of 0 tokens would bypass the token caps; pass the expected count")
            }
            throw unrecordable(estimate, "estimated tokens", key: key)
        }
        let tokens = TokenCounts(total: Int64(estimate))
        if let oversized = oversized(tokens, limits: limits) {
            throw oversizedError(oversized, tokens: tokens).with(key: key)
        }
        return tokens
    }

    /// Checks a pre-flight estimate given as input and output: each recordable, each positive
    /// when a cap counting it is set, and within every cap.
    /// - Returns: The estimate as the machine counts it.
    static func checkedEstimate(input: Int, output: Int, limits: CompiledLimits, key: PolicyKey) throws(PolicyError) -> TokenCounts {
        guard isRecordable(input) else { throw unrecordable(input, "estimated input tokens", key: key) }
        guard isRecordable(output) else { throw unrecordable(output, "estimated output tokens", key: key) }
        if input == 0 && (limits.hasInputCaps || (output == 0 && limits.hasTokenCaps)) {
            throw PolicyError(
                .invalidTokenCount, key: key,
                message: "an estimate of 0 input tokens would bypass the input token caps; pass the expected count")
        }
        if output == 0 && limits.hasOutputCaps {
            throw PolicyError(
                .invalidTokenCount, key: key,
                message: "an estimate of 0 output tokens would bypass the output token caps; pass the request's max_tokens")
        }
        let tokens = TokenCounts(input: Int64(input), output: Int64(output))
        if let oversized = oversized(tokens, limits: limits) {
            throw oversizedError(oversized, tokens: tokens).with(key: key)
        }
        return tokens
    }

    // MARK: Caps

    /// The token cap an estimate of `tokens` exceeds, so that no wait can admit it under these
    /// limits; `nil` if it is within every cap. Checked where admission is decided, against the
    /// limits in force there: limits may have been lowered since the caller's own check.
    @inline(__always)
    static func oversized(_ tokens: TokenCounts, limits: CompiledLimits) -> Rejection? {
        guard let (kind, cap) = limits.oversized(tokens) else { return nil }
        return Rejection(kind: kind, retryAt: nil, exceededCap: cap)
    }

    /// The error for an estimate of `tokens` refused by ``oversized(_:limits:)``.
    static func oversizedError(_ rejection: Rejection, tokens: TokenCounts) -> PolicyError {
        let what: String
        if rejection.kind?.isInputTokenCap == true {
            what = "estimate of \(tokens.input) input tokens"
        } else if rejection.kind?.isOutputTokenCap == true {
            what = "estimate of \(tokens.output) output tokens"
        } else {
            what = "estimate of \(tokens.total) tokens"
        }
        return error(.oversized, rejection, now: 0, what)
    }

    /// When a schedule entry closes the gate at `now`: a rejection naming the opening (`.max`
    /// when beyond the schedule's horizon); `nil` when open.
    @inline(__always)
    static func closed(_ limits: CompiledLimits, now: Int64) -> Rejection? {
        limits.isClosed(at: now) ? Rejection(kind: nil, retryAt: limits.closedUntil) : nil
    }

    /// The binding window cap for a call of `tokens` over `windows` (advanced to `now`) and
    /// when it frees (the latest of all windows' earliest fits, so that retrying then
    /// succeeds); nil if it fits, or if it can never fit (see ``oversized(_:limits:)``).
    /// The shared-store path calls it over windows rebuilt from a store's buckets.
    static func capsRejection(in windows: WindowSlots, limits: CompiledLimits, tokens: TokenCounts, now: Int64) -> Rejection? {
        var worst: Rejection?
        for w in 0..<3 {
            guard let window = windows[w] else { continue }
            let requestCap = limits.requestCap(w)
            let tokenCap = limits.tokenCaps[w]
            if let at = window.earliestFit(requests: 1, tokens: 0, requestCap: requestCap, tokenCap: .max, now: now),
                at > now, at > (worst?.retryAt ?? now)
            {
                worst = Rejection(kind: .requests(PolicyWindow.at(w)), retryAt: at)
            }
            // An estimate above an adapted token cap (within the configured one: see
            // `oversized`) fits no window until the caps grow back, when these limits expire.
            let tokensAt =
                tokens.total > tokenCap
                ? limits.validUntil
                : window.earliestFit(requests: 0, tokens: tokens.total, requestCap: .max, tokenCap: tokenCap, now: now)
            if let at = tokensAt, at > now, at > (worst?.retryAt ?? now) {
                worst = Rejection(kind: .tokens(PolicyWindow.at(w)), retryAt: at)
            }
            if limits.hasSplitCaps, let (at, isInput) = splitFit(window, w, limits: limits, tokens: tokens, now: now),
                at > now, at > (worst?.retryAt ?? now)
            {
                let window = PolicyWindow.at(w)
                worst = Rejection(kind: isInput ? .inputTokens(window) : .outputTokens(window), retryAt: at)
            }
        }
        return worst
    }

    /// When the input and output of `tokens` fit window `w`, and whether input binds then; `nil`
    /// if they fit now. A part above an adapted cap (within the configured one) fits when the
    /// limits expire and the caps grow back.
    private static func splitFit(
        _ window: SlidingWindow, _ w: Int, limits: CompiledLimits, tokens: TokenCounts, now: Int64
    ) -> (at: Int64, input: Bool)? {
        if tokens.input > limits.inputCaps[w] { return (limits.validUntil, true) }
        if tokens.output > limits.outputCaps[w] { return (limits.validUntil, false) }
        return window.earliestSplitFit(
            input: tokens.input, output: tokens.output, inputCap: limits.inputCaps[w], outputCap: limits.outputCaps[w], now: now)
    }

    /// Why a call of `tokens` does not fit `windows` (advanced to `now`) under `limits`: an
    /// oversized estimate, a closed schedule (reported until the later of its opening and
    /// the windows' room), or the binding cap.
    static func windowRefusal(in windows: WindowSlots, limits: CompiledLimits, tokens: TokenCounts, now: Int64) -> Rejection {
        if let oversized = oversized(tokens, limits: limits) { return oversized }
        let caps = capsRejection(in: windows, limits: limits, tokens: tokens, now: now)
        if let closed = closed(limits, now: now) {
            return Rejection(kind: nil, retryAt: max(closed.retryAt ?? .max, caps?.retryAt ?? .min))
        }
        // `nil` only if it fits, which the caller found it does not; the machine's `fits` and
        // `earliestFit` use the same arithmetic, so this is not reached. Look again at once
        // rather than trap or promise a time.
        return caps ?? Rejection(kind: .concurrency, retryAt: nil)
    }

    // MARK: Waiting

    /// Whether a caller refused with `rejection` at `now` should stop waiting: its deadline has
    /// come, or the refusal names a definite time (a window, a closed schedule) after it. A
    /// full concurrency cap names no definite time (a release usually comes first), so such a
    /// caller waits out its deadline. An oversized estimate never fits.
    @inline(__always)
    static func isHopeless(_ rejection: Rejection, now: Int64, deadline: Int64) -> Bool {
        if rejection.exceededCap != nil || deadline <= now { return true }
        guard rejection.kind != .concurrency, let at = rejection.retryAt else { return false }
        return at > deadline
    }

    /// The error for a refused call: `code` (``PolicyError/Code/rateLimited`` when it fails at
    /// once, ``PolicyError/Code/timedOut`` after waiting), naming the cap and `retryAfter`;
    /// ``PolicyError/Code/oversized`` whatever `code` for an estimate above a token cap.
    static func error(_ code: PolicyError.Code, _ rejection: Rejection, now: Int64, _ what: String) -> PolicyError {
        if let cap = rejection.costCap { return costError(code, cap, rejection, now: now, what) }
        if let cap = rejection.exceededCap, let kind = rejection.kind {
            return PolicyError(.oversized, limit: kind, message: "\(what) exceeds \(kind) (\(cap)) and can never be admitted")
        }
        // `.max`: closed beyond the schedule's horizon, so no honest retry time exists.
        let retryAfter = rejection.retryAt.flatMap { $0 == .max ? nil : Duration.nanoseconds(max(0, $0 - now)) }
        if let cause = rejection.provider?.description {
            return PolicyError(code, retryAfter: retryAfter, providerCause: cause, message: "\(what): the provider \(cause)")
        }
        guard let kind = rejection.kind else {
            return PolicyError(code, retryAfter: retryAfter, closedBy: "", message: "\(what): closed by schedule")
        }
        if rejection.forBatch {
            return PolicyError(
                code, limit: kind, retryAfter: retryAfter,
                message: "\(what): \(kind) is exhausted for batch calls (its reserved_for_interactive share is kept for interactive calls)")
        }
        return PolicyError(code, limit: kind, retryAfter: retryAfter, message: "\(what): \(kind) is exhausted")
    }

    /// ``error(_:_:now:_:)`` for a spend cap: amounts in the currency's units.
    @inline(never)
    private static func costError(
        _ code: PolicyError.Code, _ cap: PolicyCostCap, _ rejection: Rejection, now: Int64, _ what: String
    ) -> PolicyError {
        if let amount = rejection.exceededCap {
            return PolicyError(
                .oversized, costCap: cap,
                message: "\(what): its estimated cost exceeds \(cap) (\(PolicyMoney(microUnits: amount))) and can never be admitted")
        }
        let retryAfter = rejection.retryAt.flatMap { $0 == .max ? nil : Duration.nanoseconds(max(0, $0 - now)) }
        return PolicyError(code, retryAfter: retryAfter, costCap: cap, message: "\(what): \(cap) is spent")
    }

    /// The error for a call refused at once (it never waited) or after waiting.
    static func refusal(_ rejection: Rejection, now: Int64, waited: Bool) -> PolicyError {
        waited
            ? error(.timedOut, rejection, now: now, "not admitted within its maximum wait")
            : error(.rateLimited, rejection, now: now, "cannot be admitted within its maximum wait")
    }
}

extension PolicyWindow {
    /// The window of index `index` (0 minute, 1 hour, anything else day): total, so that no
    /// index can trap.
    @inline(__always)
    static func at(_ index: Int) -> PolicyWindow {
        switch index {
        case 0: .minute
        case 1: .hour
        default: .day
        }
    }
}
