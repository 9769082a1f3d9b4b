import Foundation

/// The caps configured for one provider. Every cap is optional; a provider whose caps are all
/// `nil` is not gated at all (acquiring is a no-op).
///
/// Request and token caps apply over *sliding* windows of one minute, one hour and one day that
/// end at the moment of the call. `maxConcurrent` caps how many permits may be held at once.
/// Caps apply to each ``PolicyKey`` of the provider separately.
///
/// Token caps count input plus output tokens. Providers that cap input and output tokens
/// apart (Anthropic) are mirrored by the input and output caps, which apply next to the
/// total-token caps; see ``PolicyService/acquire(_:estimatedInputTokens:estimatedOutputTokens:model:maxWait:priority:)``
/// and ``PolicyPermit/commitTokens(input:output:cacheReads:)``.
public struct PolicyLimits: Hashable, Sendable, CustomStringConvertible {
    /// The most requests admitted in any 60 s.
    public var requestsPerMinute: Int?
    /// The most requests admitted in any hour.
    public var requestsPerHour: Int?
    /// The most requests admitted in any 24 h.
    public var requestsPerDay: Int?
    /// The most tokens (estimates, replaced by committed counts) in any 60 s.
    public var tokensPerMinute: Int?
    /// The most tokens in any hour.
    public var tokensPerHour: Int?
    /// The most tokens in any 24 h.
    public var tokensPerDay: Int?
    /// The most input (prompt) tokens in any 60 s.
    public var inputTokensPerMinute: Int?
    /// The most input tokens in any hour.
    public var inputTokensPerHour: Int?
    /// The most input tokens in any 24 h.
    public var inputTokensPerDay: Int?
    /// The most output (completion) tokens in any 60 s.
    public var outputTokensPerMinute: Int?
    /// The most output tokens in any hour.
    public var outputTokensPerHour: Int?
    /// The most output tokens in any 24 h.
    public var outputTokensPerDay: Int?
    /// The most permits held at once.
    public var maxConcurrent: Int?
    /// Whether input read from the provider's prompt cache counts as input tokens (against the
    /// input and total caps) when a commit reports it apart
    /// (``PolicyPermit/commitTokens(input:output:cacheReads:)``). `true` by default, the
    /// conservative choice and OpenAI's rule; Anthropic leaves cache reads out of its input
    /// limits for most models (set `count_cache_reads = false`). Not a cap: a provider whose
    /// caps are all unset is unlimited whatever this says.
    public var countsCacheReads: Bool = true
    /// The share of every cap (each window's requests, tokens, input and output tokens, and
    /// `maxConcurrent`) that batch calls (``PolicyPriority/batch``) cannot take, in `0..<1`;
    /// `nil` reserves nothing. A batch call sees `cap × (1 − share)`, rounded down, so the
    /// reserve is never smaller than asked (the share is kept in thousandths, rounded up).
    /// It applies to the caps in force (after a schedule and adaptive mode), not to what the
    /// provider's own headers say is left. Not a cap: it gates nothing on its own.
    public var reservedForInteractive: Double? = nil
    /// How long a batch call waits before it is promoted: ordered among interactive calls by
    /// its arrival time and allowed into ``reservedForInteractive``. `nil`:
    /// ``defaultBatchAging``. Each waiter keeps the aging in force when it arrived.
    public var batchAging: Duration? = nil

    /// The most a key may spend in any hour (a sliding window, as the token caps'), counted
    /// at ``prices``: each call reserves its estimated cost when admitted and settles its
    /// actual cost when committed. Spend caps are not changed by schedules or adaptive mode.
    public var costPerHour: PolicyMoney? = nil
    /// The most a key may spend in any 24 h (sliding).
    public var costPerDay: PolicyMoney? = nil
    /// The most a key may spend in a calendar month of ``costTimeZone``: the month's spend
    /// starts at 0 at its first instant, the way invoices are.
    public var costPerMonth: PolicyMoney? = nil
    /// Prices per million tokens by model name or `*` pattern (`"gpt-4o*"`): an exact name
    /// wins, then the most specific pattern. A `"*"` entry prices every other model, and calls
    /// that name no model. With spend caps set, a call whose model has no price is refused
    /// (``PolicyError/Code/unpriced``): it is never admitted uncounted. Read at the provider's
    /// own level only (nested levels use the provider's prices).
    public var prices: [String: PolicyModelPrice] = [:]
    /// The time zone whose calendar months ``costPerMonth`` counts; `nil`: the provider's
    /// schedule's zone if it has a schedule, otherwise UTC.
    public var costTimeZone: TimeZone? = nil

    /// The aging of batch calls when ``batchAging`` is not set: 30 s.
    public static let defaultBatchAging: Duration = .seconds(30)

    /// The longest ``batchAging`` accepted: one day, the longest window.
    public static let maximumBatchAging: Duration = .seconds(86_400)

    /// The largest request cap accepted: request counts are kept in 32-bit buckets so that a
    /// key's windows stay small (and `UInt32.max` itself stands for "no cap" inside the gate).
    public static let maximumRequestCap = Int(UInt32.max) - 1

    /// The largest token count a call may estimate or commit (2^48, far beyond any model's
    /// context): bounding it keeps every sum of counts free of overflow.
    public static let maximumTokenCount = 1 << 48

    /// Creates limits; omitted caps are unlimited.
    public init(
        requestsPerMinute: Int? = nil,
        requestsPerHour: Int? = nil,
        requestsPerDay: Int? = nil,
        tokensPerMinute: Int? = nil,
        tokensPerHour: Int? = nil,
        tokensPerDay: Int? = nil,
        inputTokensPerMinute: Int? = nil,
        inputTokensPerHour: Int? = nil,
        inputTokensPerDay: Int? = nil,
        outputTokensPerMinute: Int? = nil,
        outputTokensPerHour: Int? = nil,
        outputTokensPerDay: Int? = nil,
        maxConcurrent: Int? = nil,
        countsCacheReads: Bool = true,
        reservedForInteractive: Double? = nil,
        batchAging: Duration? = nil,
        costPerHour: PolicyMoney? = nil,
        costPerDay: PolicyMoney? = nil,
        costPerMonth: PolicyMoney? = nil,
        prices: [String: PolicyModelPrice] = [:],
        costTimeZone: TimeZone? = nil
    ) {
        self.costPerHour = costPerHour
        self.costPerDay = costPerDay
        self.costPerMonth = costPerMonth
        self.prices = prices
        self.costTimeZone = costTimeZone
        self.requestsPerMinute = requestsPerMinute
        self.requestsPerHour = requestsPerHour
        self.requestsPerDay = requestsPerDay
        self.tokensPerMinute = tokensPerMinute
        self.tokensPerHour = tokensPerHour
        self.tokensPerDay = tokensPerDay
        self.inputTokensPerMinute = inputTokensPerMinute
        self.inputTokensPerHour = inputTokensPerHour
        self.inputTokensPerDay = inputTokensPerDay
        self.outputTokensPerMinute = outputTokensPerMinute
        self.outputTokensPerHour = outputTokensPerHour
        self.outputTokensPerDay = outputTokensPerDay
        self.maxConcurrent = maxConcurrent
        self.countsCacheReads = countsCacheReads
        self.reservedForInteractive = reservedForInteractive
        self.batchAging = batchAging
    }

    /// No caps at all: the gate lets every call through at the cost of a lookup.
    public static var unlimited: PolicyLimits { PolicyLimits() }

    /// Whether no cap is set.
    public var isUnlimited: Bool {
        PolicyLimitKind.allCases.allSatisfy { self[$0] == nil } && !hasCostCaps
    }

    /// Whether a spend cap (``costPerHour``, ``costPerDay``, ``costPerMonth``) is set.
    public var hasCostCaps: Bool { costPerHour != nil || costPerDay != nil || costPerMonth != nil }

    /// The spend cap of one window, or `nil` when it is not set.
    public subscript(cost cap: PolicyCostCap) -> PolicyMoney? {
        get {
            switch cap {
            case .costPerHour: costPerHour
            case .costPerDay: costPerDay
            case .costPerMonth: costPerMonth
            }
        }
        set {
            switch cap {
            case .costPerHour: costPerHour = newValue
            case .costPerDay: costPerDay = newValue
            case .costPerMonth: costPerMonth = newValue
            }
        }
    }

    /// The cap for one kind of limit, or `nil` when it is not set.
    public subscript(kind: PolicyLimitKind) -> Int? {
        get {
            switch kind {
            case .requestsPerMinute: requestsPerMinute
            case .requestsPerHour: requestsPerHour
            case .requestsPerDay: requestsPerDay
            case .tokensPerMinute: tokensPerMinute
            case .tokensPerHour: tokensPerHour
            case .tokensPerDay: tokensPerDay
            case .inputTokensPerMinute: inputTokensPerMinute
            case .inputTokensPerHour: inputTokensPerHour
            case .inputTokensPerDay: inputTokensPerDay
            case .outputTokensPerMinute: outputTokensPerMinute
            case .outputTokensPerHour: outputTokensPerHour
            case .outputTokensPerDay: outputTokensPerDay
            case .concurrency: maxConcurrent
            }
        }
        set {
            switch kind {
            case .requestsPerMinute: requestsPerMinute = newValue
            case .requestsPerHour: requestsPerHour = newValue
            case .requestsPerDay: requestsPerDay = newValue
            case .tokensPerMinute: tokensPerMinute = newValue
            case .tokensPerHour: tokensPerHour = newValue
            case .tokensPerDay: tokensPerDay = newValue
            case .inputTokensPerMinute: inputTokensPerMinute = newValue
            case .inputTokensPerHour: inputTokensPerHour = newValue
            case .inputTokensPerDay: inputTokensPerDay = newValue
            case .outputTokensPerMinute: outputTokensPerMinute = newValue
            case .outputTokensPerHour: outputTokensPerHour = newValue
            case .outputTokensPerDay: outputTokensPerDay = newValue
            case .concurrency: maxConcurrent = newValue
            }
        }
    }

    /// Checks that every set cap is positive (and request caps at most ``maximumRequestCap``),
    /// ``reservedForInteractive`` is in `0..<1` and ``batchAging`` positive and at most a day.
    /// - Parameter provider: Named in the error, if any.
    /// - Throws: ``PolicyError`` with code ``PolicyError/Code/invalidLimits`` naming the first bad cap.
    public func validate(provider: String = "") throws(PolicyError) {
        for kind in PolicyLimitKind.allCases {
            guard let cap = self[kind] else { continue }
            if cap <= 0 {
                throw PolicyError(
                    .invalidLimits, limit: kind,
                    message: "\(kind) for provider '\(provider)' must be positive, got \(cap)")
            }
            if kind.isRequestCap, cap > Self.maximumRequestCap {
                throw PolicyError(
                    .invalidLimits, limit: kind,
                    message: "\(kind) for provider '\(provider)' is \(cap); the largest supported is \(Self.maximumRequestCap)")
            }
        }
        try validatePriority(provider: provider)
        try validateCosts(provider: provider)
    }

    /// Checks the spend caps (positive, at most ``PolicyMoney/maximum``) and the prices (0 or
    /// more, at most ``PolicyMoney/maximum``).
    func validateCosts(provider: String) throws(PolicyError) {
        for cap in PolicyCostCap.allCases {
            guard let amount = self[cost: cap] else { continue }
            if amount.microUnits <= 0 || amount > PolicyMoney.maximum {
                throw PolicyError(
                    .invalidLimits, costCap: cap,
                    message: "\(cap) for provider '\(provider)' must be positive and at most \(PolicyMoney.maximum), got \(amount)")
            }
        }
        for (model, price) in prices {
            for (part, amount) in [("input", price.input), ("output", price.output), ("cacheRead", price.cacheRead ?? .zero)]
            where amount.microUnits < 0 || amount > PolicyMoney.maximum {
                throw PolicyError(
                    .invalidLimits,
                    message:
                        "the \(part) price of '\(model)' for provider '\(provider)' must be 0 or more and at most \(PolicyMoney.maximum), got \(amount)"
                )
            }
        }
    }

    /// Checks ``reservedForInteractive`` (in `0..<1`) and ``batchAging`` (positive, at most
    /// ``maximumBatchAging``).
    func validatePriority(provider: String) throws(PolicyError) {
        if let share = reservedForInteractive, !(share >= 0 && share < 1) {
            throw PolicyError(
                .invalidLimits,
                message: "reservedForInteractive for provider '\(provider)' must be at least 0 and below 1, got \(share)")
        }
        if let aging = batchAging, aging <= .zero || aging > Self.maximumBatchAging {
            throw PolicyError(
                .invalidLimits,
                message: "batchAging for provider '\(provider)' must be positive and at most \(Self.maximumBatchAging), got \(aging)")
        }
    }

    /// ``reservedForInteractive`` in thousandths, rounded up (so the reserve is never smaller
    /// than asked); 0 when not set.
    var reservePermille: Int {
        guard let share = reservedForInteractive, share > 0 else { return 0 }
        // Less a hair, so that a share written in thousandths (0.3 is 299.999… × 10⁻³ in binary)
        // is not rounded up past itself.
        return min(1_000, max(1, Int((share * 1_000 - 1e-9).rounded(.up))))
    }

    /// ``batchAging`` or its default, in nanoseconds.
    var batchAgingNanoseconds: Int64 { (batchAging ?? Self.defaultBatchAging).nanosecondsSaturating }

    /// Whether an input or output cap is set.
    public var hasInputOutputCaps: Bool {
        PolicyLimitKind.allCases.contains { ($0.isInputTokenCap || $0.isOutputTokenCap) && self[$0] != nil }
    }

    /// The caps that are set, as `name=value` pairs (and `countsCacheReads=false` when so).
    public var description: String {
        var set = PolicyLimitKind.allCases.compactMap { kind in self[kind].map { "\(kind)=\($0)" } }
        if set.isEmpty && !hasCostCaps { return "unlimited" }
        if !countsCacheReads { set.append("countsCacheReads=false") }
        if let share = reservedForInteractive { set.append("reservedForInteractive=\(share)") }
        if let aging = batchAging { set.append("batchAging=\(aging)") }
        for cap in PolicyCostCap.allCases { if let amount = self[cost: cap] { set.append("\(cap)=\(amount)") } }
        return set.joined(separator: " ")
    }
}

/// Which cap a rejection, a wait or a readout is about.
public enum PolicyLimitKind: String, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    /// ``PolicyLimits/requestsPerMinute``.
    case requestsPerMinute
    /// ``PolicyLimits/requestsPerHour``.
    case requestsPerHour
    /// ``PolicyLimits/requestsPerDay``.
    case requestsPerDay
    /// ``PolicyLimits/tokensPerMinute``.
    case tokensPerMinute
    /// ``PolicyLimits/tokensPerHour``.
    case tokensPerHour
    /// ``PolicyLimits/tokensPerDay``.
    case tokensPerDay
    /// ``PolicyLimits/inputTokensPerMinute``.
    case inputTokensPerMinute
    /// ``PolicyLimits/inputTokensPerHour``.
    case inputTokensPerHour
    /// ``PolicyLimits/inputTokensPerDay``.
    case inputTokensPerDay
    /// ``PolicyLimits/outputTokensPerMinute``.
    case outputTokensPerMinute
    /// ``PolicyLimits/outputTokensPerHour``.
    case outputTokensPerHour
    /// ``PolicyLimits/outputTokensPerDay``.
    case outputTokensPerDay
    /// ``PolicyLimits/maxConcurrent``.
    case concurrency

    /// The kind's name, such as `tokensPerMinute`.
    public var description: String { rawValue }

    /// The window a request or token cap is measured over; `nil` for ``concurrency``.
    public var window: PolicyWindow? {
        switch self {
        case .requestsPerMinute, .tokensPerMinute, .inputTokensPerMinute, .outputTokensPerMinute: .minute
        case .requestsPerHour, .tokensPerHour, .inputTokensPerHour, .outputTokensPerHour: .hour
        case .requestsPerDay, .tokensPerDay, .inputTokensPerDay, .outputTokensPerDay: .day
        case .concurrency: nil
        }
    }

    /// Whether this caps a number of requests.
    public var isRequestCap: Bool {
        self == .requestsPerMinute || self == .requestsPerHour || self == .requestsPerDay
    }

    /// Whether this caps a number of tokens, input plus output.
    public var isTokenCap: Bool {
        self == .tokensPerMinute || self == .tokensPerHour || self == .tokensPerDay
    }

    /// Whether this caps input tokens.
    public var isInputTokenCap: Bool {
        self == .inputTokensPerMinute || self == .inputTokensPerHour || self == .inputTokensPerDay
    }

    /// Whether this caps output tokens.
    public var isOutputTokenCap: Bool {
        self == .outputTokensPerMinute || self == .outputTokensPerHour || self == .outputTokensPerDay
    }

    static func requests(_ window: PolicyWindow) -> PolicyLimitKind {
        switch window {
        case .minute: .requestsPerMinute
        case .hour: .requestsPerHour
        case .day: .requestsPerDay
        }
    }

    static func tokens(_ window: PolicyWindow) -> PolicyLimitKind {
        switch window {
        case .minute: .tokensPerMinute
        case .hour: .tokensPerHour
        case .day: .tokensPerDay
        }
    }

    static func inputTokens(_ window: PolicyWindow) -> PolicyLimitKind {
        switch window {
        case .minute: .inputTokensPerMinute
        case .hour: .inputTokensPerHour
        case .day: .inputTokensPerDay
        }
    }

    static func outputTokens(_ window: PolicyWindow) -> PolicyLimitKind {
        switch window {
        case .minute: .outputTokensPerMinute
        case .hour: .outputTokensPerHour
        case .day: .outputTokensPerDay
        }
    }
}

/// The length of a sliding window.
public enum PolicyWindow: Int, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    /// The 60 s ending now.
    case minute = 0
    /// The hour ending now.
    case hour = 1
    /// The 24 h ending now.
    case day = 2

    /// The window's length.
    public var duration: Duration {
        switch self {
        case .minute: .seconds(60)
        case .hour: .seconds(3_600)
        case .day: .seconds(86_400)
        }
    }

    /// `minute`, `hour` or `day`.
    public var description: String {
        switch self {
        case .minute: "minute"
        case .hour: "hour"
        case .day: "day"
        }
    }

    var nanoseconds: Int64 { Int64(duration.components.seconds) * 1_000_000_000 }
}
