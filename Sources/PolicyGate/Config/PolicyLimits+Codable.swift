internal import PolicyGateTOML

extension PolicyLimitKind {
    /// The kind's key in a configuration file: `requests_per_minute` … `tokens_per_day`,
    /// `max_concurrent`.
    public var configurationKey: String {
        switch self {
        case .requestsPerMinute: "requests_per_minute"
        case .requestsPerHour: "requests_per_hour"
        case .requestsPerDay: "requests_per_day"
        case .tokensPerMinute: "tokens_per_minute"
        case .tokensPerHour: "tokens_per_hour"
        case .tokensPerDay: "tokens_per_day"
        case .inputTokensPerMinute: "input_tokens_per_minute"
        case .inputTokensPerHour: "input_tokens_per_hour"
        case .inputTokensPerDay: "input_tokens_per_day"
        case .outputTokensPerMinute: "output_tokens_per_minute"
        case .outputTokensPerHour: "output_tokens_per_hour"
        case .outputTokensPerDay: "output_tokens_per_day"
        case .concurrency: "max_concurrent"
        }
    }
}

extension PolicyLimits: Codable {
    /// Configuration keys to the caps they set.
    static let configurationKeys: [String: PolicyLimitKind] = Dictionary(
        uniqueKeysWithValues: PolicyLimitKind.allCases.map { ($0.configurationKey, $0) })
    /// The key of ``countsCacheReads`` in a provider's table.
    static let countCacheReadsKey = "count_cache_reads"
    /// The key of ``reservedForInteractive`` in a provider's table.
    static let reservedForInteractiveKey = "reserved_for_interactive"
    /// The key of ``batchAging`` (in seconds) in a provider's table.
    static let batchAgingKey = "batch_aging_seconds"
    /// The settings of a provider's table that are not caps (schedule entries cannot set them).
    static let providerSettingKeys = [countCacheReadsKey, reservedForInteractiveKey, batchAgingKey]
    /// The keys of the spend caps: `cost_per_hour`, `cost_per_day`, `cost_per_month`.
    static let costKeyNames = PolicyCostCap.allCases.map(\.configurationKey)
    /// The key of ``prices`` in a provider's table.
    static let pricesKey = "prices"
    /// Configuration keys, in the order the reference lists them.
    static let configurationKeyNames = PolicyLimitKind.allCases.map(\.configurationKey)

    /// Decodes caps from the keys `requests_per_minute`, `requests_per_hour`,
    /// `requests_per_day`, `tokens_per_minute`, `tokens_per_hour`, `tokens_per_day`, the
    /// `input_tokens_per_…` and `output_tokens_per_…` caps, `max_concurrent` and
    /// `count_cache_reads`, `reserved_for_interactive` and `batch_aging_seconds`, each optional.
    /// - Throws: ``PolicyConfigurationError`` listing every unknown key, wrong type and
    ///   non-positive cap.
    public init(from decoder: any Decoder) throws {
        var reader = ConfigurationReader()
        let caps = try decoder.container(keyedBy: AnyKey.self)
        self = reader.readLimits(
            caps,
            path: decoder.codingPath.map { key in
                key.intValue.map(TOMLPathComponent.index) ?? .key(key.stringValue)
            })
        if reader.hasErrors { throw PolicyConfigurationError(diagnostics: reader.diagnostics) }
    }

    /// Encodes the caps that are set under their configuration keys.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: AnyKey.self)
        for kind in PolicyLimitKind.allCases {
            if let cap = self[kind] { try container.encode(cap, forKey: AnyKey(stringValue: kind.configurationKey)) }
        }
        if !countsCacheReads { try container.encode(false, forKey: AnyKey(stringValue: Self.countCacheReadsKey)) }
        if let share = reservedForInteractive { try container.encode(share, forKey: AnyKey(stringValue: Self.reservedForInteractiveKey)) }
        for cap in PolicyCostCap.allCases {
            // As text: decoding reads it back exactly.
            if let amount = self[cost: cap] { try container.encode(amount.description, forKey: AnyKey(stringValue: cap.configurationKey)) }
        }
        if !prices.isEmpty {
            var table = container.nestedContainer(keyedBy: AnyKey.self, forKey: AnyKey(stringValue: Self.pricesKey))
            for (model, price) in prices.sorted(by: { $0.key < $1.key }) {
                var parts = table.nestedContainer(keyedBy: AnyKey.self, forKey: AnyKey(stringValue: model))
                try parts.encode(price.input.description, forKey: AnyKey(stringValue: "input"))
                try parts.encode(price.output.description, forKey: AnyKey(stringValue: "output"))
                if let cacheRead = price.cacheRead { try parts.encode(cacheRead.description, forKey: AnyKey(stringValue: "cache_read")) }
            }
        }
        if let aging = batchAging {
            let key = AnyKey(stringValue: Self.batchAgingKey)
            let (seconds, attoseconds) = aging.components
            if attoseconds == 0 {
                try container.encode(seconds, forKey: key)
            } else {
                try container.encode(Double(seconds) + Double(attoseconds) / 1e18, forKey: key)
            }
        }
    }
}
