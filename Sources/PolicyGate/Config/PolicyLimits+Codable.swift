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
    /// Configuration keys, in the order the reference lists them.
    static let configurationKeyNames = PolicyLimitKind.allCases.map(\.configurationKey)

    /// Decodes caps from the keys `requests_per_minute`, `requests_per_hour`,
    /// `requests_per_day`, `tokens_per_minute`, `tokens_per_hour`, `tokens_per_day`, the
    /// `input_tokens_per_…` and `output_tokens_per_…` caps, `max_concurrent` and
    /// `count_cache_reads`, each optional.
    /// - Throws: ``PolicyConfigurationError`` listing every unknown key, wrong type and
    ///   non-positive cap.
    public init(from decoder: any Decoder) throws {
        var reader = ConfigurationReader()
        let caps = try decoder.container(keyedBy: AnyKey.self)
        self = reader.readLimits(caps, path: decoder.codingPath.map { key in
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
    }
}
