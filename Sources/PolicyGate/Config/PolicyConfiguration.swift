import Foundation
internal import PolicyGateTOML

/// The gate's configuration: limits per provider, as read from a TOML (or JSON) file.
///
/// ```toml
/// [limits.openai]
/// requests_per_minute = 500
/// tokens_per_minute   = 200_000
/// max_concurrent      = 16
///
/// [limits."azure-openai"]
/// max_concurrent = 4
/// ```
///
/// ```swift
/// let configuration = try PolicyConfiguration(contentsOfFile: "policy.toml")
/// let gate = try PolicyService(configuration: configuration)
/// // later, on SIGHUP or a file change:
/// try await gate.apply(PolicyConfiguration(contentsOfFile: "policy.toml"))
/// ```
///
/// Decoding checks everything and reports **all** problems at once as a
/// ``PolicyConfigurationError``; a configuration that decoded is complete and valid. Problems
/// that cannot break the gate but are surely mistakes (a per-minute cap above the per-hour cap
/// of the same kind, a provider with no caps) are kept in ``warnings``.
///
/// The type is `Codable` with the same keys in every format, so JSON works through
/// `JSONDecoder` as is (without line and column in its diagnostics).
public struct PolicyConfiguration: Sendable, Hashable, Codable {
    /// The caps per provider name. A provider that is absent, or whose caps are all `nil`, is
    /// not gated.
    public var limits: [String: PolicyLimits]

    /// Calendar schedules per provider name: caps that change with the time of day, the
    /// weekday or the date, over the provider's ``limits`` (its base caps). A provider with a
    /// schedule is gated even if its base caps are all `nil`.
    public var schedules: [String: PolicySchedule]

    /// Where a provider's counters are kept, for providers whose table says `store` or
    /// `on_store_failure`; the others use ``defaultStorage``. See ``storage(for:)``.
    public var storage: [String: PolicyStorage] = [:]

    /// The store and failure policy of providers that do not name their own (`[store]`'s
    /// `default` and `on_failure`): in this process unless the file says otherwise.
    public var defaultStorage: PolicyStorage = .memory

    /// Which keys a provider's feedback (``PolicyPermit/observe(headers:)-([String:String])``, 429s) applies to,
    /// for providers whose table says `feedback_scope`; the others share it provider-wide.
    public var feedbackScope: [String: PolicyFeedbackScope] = [:]

    /// Providers in adaptive mode (`adaptive = true` in their table): after a 429 their caps
    /// drop to 0.7 of what they were, and they grow back by 5 % of the configured caps every
    /// 5 s without one (from the end of the 429's pause), never above the configured caps (see the README's "Adaptive caps").
    /// Needs `feedback_scope = "provider"` (the default).
    public var adaptive: Set<String> = []

    /// Nested limits per provider: caps for every scope of a kind (`"org"`, `"user"`,
    /// `"project"` or a custom kind), from `[limits.<provider>.per.<kind>]` tables.
    ///
    /// A provider listed here counts its ``limits`` once for the whole account (every key of
    /// the provider shares them), and each scope a key names — its
    /// ``PolicyKey/parents``, then its own scope — as a level of its own with its kind's caps.
    /// A call is admitted only when it fits every level of its chain, and is recorded in all of
    /// them at once. A kind without caps here adds no level caps (its scopes still count, so that
    /// caps added by a reload find the usage). Providers not listed keep counting every key on
    /// its own under ``limits``.
    public var scopeLimits: [String: [String: PolicyLimits]] = [:]

    /// Model groups per provider, by group name, from `[limits.<provider>.models.<group>]`
    /// tables (`match` and caps): caps shared by a family of models, counted where the
    /// provider's own caps count (per key, or for the account with ``scopeLimits``). A call
    /// naming a model of a group is admitted only when it fits the group's caps and the
    /// provider's. See ``PolicyModelGroup``.
    public var modelGroups: [String: [String: PolicyModelGroup]] = [:]

    /// Tiers per provider, by tier name, from `[limits.<provider>.tiers.<name>]` tables: cap
    /// sets for the scopes a caller puts in the tier (``PolicyKey/tier``, or the service's
    /// resolver, ``PolicyService/setTierResolver(_:)``).
    ///
    /// A scope in a tier is counted on its own as any key is, under the provider's caps with
    /// the tier's over them, cap by cap: a cap the tier names replaces the provider's, the others
    /// stay the provider's. A scope without a tier gets the provider's caps. Only caps (the
    /// `requests_…`, `tokens_…`, `input_tokens_…`, `output_tokens_…` keys and
    /// `max_concurrent`) may be set per tier; settings such as `max_wait_ms` stay the provider's.
    public var tiers: [String: [String: PolicyLimits]] = [:]

    /// Caps of single scopes per provider (a contract), from
    /// `[limits.<provider>.scopes."<scope>"]` tables such as `[limits.openai.scopes."org:acme"]`.
    ///
    /// An override takes precedence over the scope's tier: the scope gets the provider's caps
    /// with the override's over them, cap by cap, whatever tier it is in. Change one at runtime
    /// with ``PolicyService/setScopeOverride(_:for:provider:)``.
    public var scopeOverrides: [String: [PolicyScope: PolicyLimits]] = [:]

    /// How to reach PostgreSQL (`[store.postgres]`), when some provider is kept there. Fields
    /// left out are read from the environment by the store.
    public var postgres: PolicyPostgresSettings?

    /// How long a permit may be held before telemetry hears of it, once
    /// (``PolicyService/permitHoldWarning``); `nil`, the default, for never. In TOML:
    /// `[gate]` with `permit_hold_warning = "10m"` (units `h`, `m`, `s`, `ms`).
    public var permitHoldWarning: Duration?

    /// Where `provider`'s counters are kept and what happens when that store fails.
    public func storage(for provider: String) -> PolicyStorage {
        storage[provider] ?? defaultStorage
    }

    /// Every configured provider's storage, the defaults resolved: what a gate is built with.
    var resolvedStorage: [String: PolicyStorage] {
        var resolved: [String: PolicyStorage] = [:]
        for provider in Set(limits.keys).union(schedules.keys).union(scopeLimits.keys).union(modelGroups.keys).union(tiers.keys)
            .union(scopeOverrides.keys)
        {
            resolved[provider] = storage(for: provider)
        }
        return resolved
    }

    /// Problems that do not stop the configuration from being used, found when it was
    /// decoded. Not part of equality or of the encoded form.
    public var warnings: [Diagnostic] = []

    /// Creates a configuration from limits and schedules per provider (unchecked until
    /// applied; ``validate()`` checks it).
    public init(limits: [String: PolicyLimits] = [:], schedules: [String: PolicySchedule] = [:]) {
        self.limits = limits
        self.schedules = schedules
    }

    /// The keys a configuration file may hold at its top level.
    static let topLevelKeys = ["limits", "store", "gate"]

    enum CodingKeys: String, CodingKey {
        case limits
        case store
        case gate
    }

    /// Decodes and validates a configuration from any decoder, collecting every problem.
    /// - Throws: ``PolicyConfigurationError`` listing every error (and the warnings) found.
    public init(from decoder: any Decoder) throws {
        var reader = ConfigurationReader()
        self = reader.readConfiguration(from: decoder)
        if reader.hasErrors { throw PolicyConfigurationError(diagnostics: reader.diagnostics) }
        warnings = reader.diagnostics
    }

    /// Encodes the same form it decodes: `limits.<provider>` tables with the caps that are
    /// set, and `timezone` and `schedule` entries where the provider has a schedule.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        var providers = container.nestedContainer(keyedBy: AnyKey.self, forKey: .limits)
        for provider in Set(limits.keys).union(schedules.keys).union(modelGroups.keys).union(tiers.keys).union(scopeOverrides.keys)
            .sorted()
        {
            let table = EncodedProviderTable(
                limits: limits[provider] ?? .unlimited, schedule: schedules[provider], storage: storage[provider],
                feedbackScope: feedbackScope[provider], adaptive: adaptive.contains(provider), levels: scopeLimits[provider] ?? [:],
                groups: modelGroups[provider] ?? [:], tiers: tiers[provider] ?? [:], overrides: scopeOverrides[provider] ?? [:])
            try providers.encode(table, forKey: AnyKey(stringValue: provider))
        }
        if defaultStorage != .memory || postgres != nil {
            var store = container.nestedContainer(keyedBy: AnyKey.self, forKey: .store)
            if defaultStorage.store != .memory { try store.encode(defaultStorage.store.name, forKey: AnyKey(stringValue: "default")) }
            if defaultStorage.failurePolicy != .failClosed {
                try store.encode(defaultStorage.failurePolicy.rawValue, forKey: AnyKey(stringValue: "on_failure"))
            }
            if let postgres { try store.encode(postgres, forKey: AnyKey(stringValue: "postgres")) }
        }
        if let permitHoldWarning {
            var gate = container.nestedContainer(keyedBy: AnyKey.self, forKey: .gate)
            try gate.encode(Self.durationText(permitHoldWarning), forKey: AnyKey(stringValue: "permit_hold_warning"))
        }
    }

    /// A duration as the configuration writes it: whole hours, minutes, seconds, milliseconds,
    /// microseconds or nanoseconds, the largest unit that is exact (`"10m"`, `"90s"`).
    static func durationText(_ duration: Duration) -> String {
        let nanos = duration.nanosecondsSaturating
        for (unit, name) in [(3_600_000_000_000, "h"), (60_000_000_000, "m"), (1_000_000_000, "s"), (1_000_000, "ms"), (1_000, "us")]
        where nanos % Int64(unit) == 0 {
            return "\(nanos / Int64(unit))\(name)"
        }
        return "\(nanos)ns"
    }

    /// Equal when the limits and schedules are equal; warnings are not compared.
    public static func == (lhs: PolicyConfiguration, rhs: PolicyConfiguration) -> Bool {
        lhs.limits == rhs.limits && lhs.schedules == rhs.schedules && lhs.storage == rhs.storage
            && lhs.defaultStorage == rhs.defaultStorage && lhs.postgres == rhs.postgres
            && lhs.feedbackScope == rhs.feedbackScope && lhs.adaptive == rhs.adaptive && lhs.scopeLimits == rhs.scopeLimits
            && lhs.modelGroups == rhs.modelGroups && lhs.permitHoldWarning == rhs.permitHoldWarning && lhs.tiers == rhs.tiers
            && lhs.scopeOverrides == rhs.scopeOverrides
    }

    /// Hashes the limits and schedules.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(limits)
        hasher.combine(schedules)
        hasher.combine(storage)
        hasher.combine(defaultStorage)
        hasher.combine(postgres)
        hasher.combine(feedbackScope)
        hasher.combine(adaptive)
        hasher.combine(scopeLimits)
        hasher.combine(modelGroups)
        hasher.combine(permitHoldWarning)
        hasher.combine(tiers)
        hasher.combine(scopeOverrides)
    }

    /// Checks the configuration as decoding would: every cap positive and in range, provider
    /// names not empty; contradictions and providers without caps as warnings.
    /// - Returns: Every problem found, errors first; empty when all is well.
    public func validate() -> [Diagnostic] {
        var reader = ConfigurationReader()
        for provider in Set(limits.keys).union(schedules.keys).sorted() {
            reader.check(
                limits[provider] ?? .unlimited, schedule: schedules[provider], provider: provider)
        }
        for (provider, kinds) in scopeLimits.sorted(by: { $0.key < $1.key }) {
            for (kind, caps) in kinds.sorted(by: { $0.key < $1.key }) {
                reader.check(
                    caps, provider: "\(provider).per.\(kind)", path: [.key("limits"), .key(provider), .key("per"), .key(kind)],
                    reportEmpty: true)
            }
        }
        for (provider, groups) in modelGroups.sorted(by: { $0.key < $1.key }) {
            for (name, group) in groups.sorted(by: { $0.key < $1.key }) {
                reader.check(group, provider: provider, name: name)
            }
        }
        for (provider, named) in tiers.sorted(by: { $0.key < $1.key }) {
            for (name, caps) in named.sorted(by: { $0.key < $1.key }) {
                reader.check(tier: caps, provider: provider, path: [.key("limits"), .key(provider), .key("tiers"), .key(name)])
            }
        }
        for (provider, scopes) in scopeOverrides.sorted(by: { $0.key < $1.key }) {
            for (scope, caps) in scopes.sorted(by: { $0.key.description < $1.key.description }) {
                reader.check(
                    tier: caps, provider: provider, path: [.key("limits"), .key(provider), .key("scopes"), .key(scope.description)])
            }
        }
        reader.checkTierComposition(self)
        reader.check(permitHoldWarning: permitHoldWarning)
        return reader.diagnostics.sorted { $0.severity == .error && $1.severity == .warning }
    }
}

/// One provider's table as encoded: caps, then its schedule.
private struct EncodedProviderTable: Encodable {
    let limits: PolicyLimits
    let schedule: PolicySchedule?
    let storage: PolicyStorage?
    let feedbackScope: PolicyFeedbackScope?
    let adaptive: Bool
    let levels: [String: PolicyLimits]
    let groups: [String: PolicyModelGroup]
    let tiers: [String: PolicyLimits]
    let overrides: [PolicyScope: PolicyLimits]

    func encode(to encoder: any Encoder) throws {
        try limits.encode(to: encoder)
        var container = encoder.container(keyedBy: AnyKey.self)
        if !levels.isEmpty {
            var per = container.nestedContainer(keyedBy: AnyKey.self, forKey: AnyKey(stringValue: "per"))
            for (kind, caps) in levels.sorted(by: { $0.key < $1.key }) { try per.encode(caps, forKey: AnyKey(stringValue: kind)) }
        }
        if !groups.isEmpty {
            var models = container.nestedContainer(keyedBy: AnyKey.self, forKey: AnyKey(stringValue: "models"))
            for (name, group) in groups.sorted(by: { $0.key < $1.key }) {
                try models.encode(EncodedModelGroup(group: group), forKey: AnyKey(stringValue: name))
            }
        }
        if !tiers.isEmpty {
            var named = container.nestedContainer(keyedBy: AnyKey.self, forKey: AnyKey(stringValue: "tiers"))
            for (name, caps) in tiers.sorted(by: { $0.key < $1.key }) { try named.encode(caps, forKey: AnyKey(stringValue: name)) }
        }
        if !overrides.isEmpty {
            var scopes = container.nestedContainer(keyedBy: AnyKey.self, forKey: AnyKey(stringValue: "scopes"))
            for (scope, caps) in overrides.sorted(by: { $0.key.description < $1.key.description }) {
                try scopes.encode(caps, forKey: AnyKey(stringValue: scope.description))
            }
        }
        if let feedbackScope { try container.encode(feedbackScope.rawValue, forKey: AnyKey(stringValue: "feedback_scope")) }
        if adaptive { try container.encode(true, forKey: AnyKey(stringValue: "adaptive")) }
        if let storage {
            try container.encode(storage.store.name, forKey: AnyKey(stringValue: "store"))
            try container.encode(storage.failurePolicy.rawValue, forKey: AnyKey(stringValue: "on_store_failure"))
        }
        guard let schedule else {
            if let zone = limits.costTimeZone { try container.encode(zone.identifier, forKey: AnyKey(stringValue: "timezone")) }
            return
        }
        try container.encode(schedule.timeZone.identifier, forKey: AnyKey(stringValue: "timezone"))
        var entries = container.nestedUnkeyedContainer(forKey: AnyKey(stringValue: "schedule"))
        for entry in schedule.entries {
            var table = entries.nestedContainer(keyedBy: AnyKey.self)
            try table.encode(entry.name, forKey: AnyKey(stringValue: "name"))
            if let cron = entry.cron { try table.encode(cron.description, forKey: AnyKey(stringValue: "cron")) }
            if let dates = entry.dates {
                try table.encode(dates.map(\.description), forKey: AnyKey(stringValue: "dates"))
            }
            if entry.isClosed { try table.encode(true, forKey: AnyKey(stringValue: "closed")) }
            for kind in PolicyLimitKind.allCases {
                if let cap = entry.limits[kind] { try table.encode(cap, forKey: AnyKey(stringValue: kind.configurationKey)) }
            }
            if !entry.tierLimits.isEmpty {
                var named = table.nestedContainer(keyedBy: AnyKey.self, forKey: AnyKey(stringValue: "tiers"))
                for (name, caps) in entry.tierLimits.sorted(by: { $0.key < $1.key }) {
                    try named.encode(caps, forKey: AnyKey(stringValue: name))
                }
            }
        }
    }
}

/// One model group's table as encoded: its caps, then `match`.
private struct EncodedModelGroup: Encodable {
    let group: PolicyModelGroup

    func encode(to encoder: any Encoder) throws {
        try group.limits.encode(to: encoder)
        var container = encoder.container(keyedBy: AnyKey.self)
        try container.encode(group.match, forKey: AnyKey(stringValue: "match"))
    }
}
