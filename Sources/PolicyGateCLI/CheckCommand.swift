import Foundation
import PolicyGate

/// `policy-gate check <file>`: validates a configuration and shows what it means over time.
package enum CheckCommand {
    /// The command's arguments and options.
    package static let spec = CommandSpec(
        name: "check",
        summary: "Validate a policy file; show each provider's limits and the schedule's transitions.",
        arguments: [("file", "The configuration: TOML, or JSON when the name ends in .json.")],
        discussion: [
            "Reports every problem of the file, each with its line and column, and exits with status 1 "
                + "if there is an error (warnings alone do not fail). A valid file is shown as a table of "
                + "each provider's limits in force at --from, then, for providers with a schedule, every "
                + "change of their limits in the --days that follow, in the provider's time zone."
        ],
        options: [
            OptionSpec(
                "--from", value: "date",
                "The instant to show limits at and to list transitions from: ISO 8601 with an offset "
                    + "(2026-12-24T09:00:00Z, 2026-12-24T10:00+01:00) or 'now' (the default)."),
            OptionSpec("--days", value: "n", "How many days of transitions to list, 1 to 366 (default 7)."),
            OptionSpec(
                "--model", value: "name",
                "Also say which model group of each provider a call for this model counts in (or none)."),
            OptionSpec(
                "--scope", value: "scope",
                "Also show the caps of this scope (global, org:acme, user:u-1, <kind>:<id>) under each provider at "
                    + "--from: its override's if it has one, else its tier's (--tier), else the provider's."),
            OptionSpec("--tier", value: "name", "With --scope: the tier the scope is in, as a key or the tier resolver names it."),
            OptionSpec(
                "--json",
                "Print the result as JSON on standard output (also for an invalid file: 'valid' is false "
                    + "and 'errors' lists the problems)."),
        ])

    static func run(_ parsed: CommandSpec.Parsed, _ context: PolicyGateTool.Context) -> Int32 {
        let from: Date
        let days: Int
        let scope: CheckReport.ScopeQuery?
        do throws(UsageError) {
            from = try instantOption(parsed.value("--from"), name: "--from", command: spec)
            days = try integerOption(parsed.value("--days"), name: "--days", in: 1...366, default: 7, command: spec)
            scope = try scopeOption(scope: parsed.value("--scope"), tier: parsed.value("--tier"))
        } catch {
            context.stderr.line(error.description)
            return PolicyGateTool.ExitStatus.usage
        }
        let path = parsed.arguments[0]
        // A file that cannot be read is not a configuration with errors: say so plainly.
        if let reason = unreadable(path) {
            context.error("cannot read '\(path)': \(reason)")
            return PolicyGateTool.ExitStatus.failure
        }
        let report: CheckReport
        do {
            let configuration = try PolicyConfiguration(contentsOfFile: path)
            report = CheckReport(
                file: path, configuration: configuration, from: from, days: days, model: parsed.value("--model"), scope: scope)
        } catch {
            report = CheckReport(file: path, error: error, from: from, days: days)
        }

        if !report.diagnostics.isEmpty {
            context.stderr.line(PolicyConfigurationError(diagnostics: report.diagnostics, file: path).description)
        }
        if parsed.flag("--json") {
            context.stdout.write(report.json())
        } else if report.valid {
            context.stdout.write(report.text())
        }
        if !report.valid {
            let errors = report.diagnostics.filter { $0.severity == .error }.count
            context.error("\(path) is not a valid configuration (\(plural(errors, "error")))")
            return PolicyGateTool.ExitStatus.failure
        }
        return PolicyGateTool.ExitStatus.success
    }

    /// Reads `--scope` and `--tier`: a scope as the configuration's `scopes` tables name it, and
    /// a tier only beside one (a tier alone says nothing about whose caps to show).
    static func scopeOption(scope text: String?, tier: String?) throws(UsageError) -> CheckReport.ScopeQuery? {
        guard let text else {
            if tier != nil { throw UsageError("--tier needs --scope (the scope whose caps to show)", command: spec) }
            return nil
        }
        guard let scope = PolicyScope(text) else {
            throw UsageError(
                "--scope '\(text)' is not a scope: expected 'global' or '<kind>:<id>', such as org:acme or user:u-1", command: spec)
        }
        if tier?.isEmpty == true { throw UsageError("--tier needs a tier name", command: spec) }
        return CheckReport.ScopeQuery(scope: scope, tier: tier)
    }
}

/// What `check` found: the problems, and for a valid file each provider's limits and transitions.
struct CheckReport {
    struct Provider {
        var name: String
        var base: PolicyLimits
        var schedule: PolicySchedule?
        var now: PolicySchedule.Resolution
        var transitions: [PolicySchedule.Transition]
        /// Whether its caps adapt to 429s (`adaptive = true`).
        var adaptive = false
        /// Nested limits per scope kind (`[limits.<provider>.per.<kind>]`).
        var levels: [String: PolicyLimits] = [:]
        /// Model groups by name (`[limits.<provider>.models.<group>]`).
        var groups: [String: PolicyModelGroup] = [:]
        /// With `--model`: the group that model counts in (`nil`: none).
        var modelGroup: String?
        /// Tiers by name (`[limits.<provider>.tiers.<name>]`): the caps each sets.
        var tiers: [String: PolicyLimits] = [:]
        /// Scopes with caps of their own (`[limits.<provider>.scopes."<scope>"]`): the caps each sets.
        var overrides: [PolicyScope: PolicyLimits] = [:]
        /// With `--scope`: that scope's caps at `from`.
        var scoped: ScopedCaps?

        /// Whether the gate looks at a key's tier for this provider: it has tiers or overrides.
        var isTiered: Bool { !tiers.isEmpty || !overrides.isEmpty }

        /// The caps in force at `from` with `caps` over them, cap by cap, as the gate applies a
        /// tier or an override.
        func over(_ caps: PolicyLimits) -> PolicySchedule.Resolution {
            var resolution = now
            for kind in PolicyLimitKind.allCases {
                if let cap = caps[kind] { resolution.limits[kind] = cap }
            }
            return resolution
        }
    }

    /// `--scope` and `--tier`.
    struct ScopeQuery {
        var scope: PolicyScope
        var tier: String?
    }

    /// Where a scope's caps come from under one provider.
    enum CapsSource: Equatable {
        /// The scope's own caps (`[limits.<provider>.scopes."<scope>"]`), whatever its tier.
        case override
        /// The tier's, over the provider's.
        case tier(String)
        /// The provider's own.
        case provider
        /// The tier is not one of the provider's, and the scope has no override: the gate
        /// refuses a call naming it.
        case unknownTier
    }

    /// A scope's caps under one provider (`--scope`).
    struct ScopedCaps {
        var source: CapsSource
        /// The caps in force at `from`; `nil` for an unknown tier.
        var resolution: PolicySchedule.Resolution?
        /// Why the caps are what they are, when it needs saying (a tier unknown or ignored).
        var note: String?
    }

    /// `--model`, if given.
    var model: String?
    /// `--scope` and `--tier`, if given.
    var scope: ScopeQuery?

    var file: String
    var valid: Bool
    /// Errors (for an invalid file) or warnings, in document order.
    var diagnostics: [PolicyConfiguration.Diagnostic]
    var from: Date
    var days: Int
    var providers: [Provider] = []
    /// `[gate] permit_hold_warning`, if set.
    var permitHoldWarning: Duration?

    var to: Date { from.addingTimeInterval(Double(days) * 86_400) }

    init(file: String, configuration: PolicyConfiguration, from: Date, days: Int, model: String? = nil, scope: ScopeQuery? = nil) {
        self.file = file
        self.model = model
        self.scope = scope
        self.valid = true
        self.diagnostics = configuration.warnings
        self.from = from
        self.days = days
        self.permitHoldWarning = configuration.permitHoldWarning
        let to = from.addingTimeInterval(Double(days) * 86_400)
        providers = Set(configuration.limits.keys).union(configuration.schedules.keys).sorted().map { name in
            Provider(
                name: name, base: configuration.limits[name] ?? .unlimited, schedule: configuration.schedules[name],
                now: configuration.effectiveLimits(for: name, at: from),
                transitions: configuration.transitions(for: name, from: from, to: to),
                adaptive: configuration.adaptive.contains(name), levels: configuration.scopeLimits[name] ?? [:],
                groups: configuration.modelGroups[name] ?? [:],
                modelGroup: model.flatMap { configuration.modelGroup(for: $0, provider: name) },
                tiers: configuration.tiers[name] ?? [:], overrides: configuration.scopeOverrides[name] ?? [:])
        }
        if let scope {
            for index in providers.indices {
                providers[index].scoped = Self.scoped(providers[index], scope, configuration: configuration, at: from)
            }
        }
    }

    /// The caps of the `--scope` under `provider`, as the gate resolves a key of it: the
    /// override's, else the tier's, else the provider's. A provider without tiers or
    /// overrides ignores the tier (the gate does too); one with them refuses an unknown tier.
    private static func scoped(
        _ provider: Provider, _ query: ScopeQuery, configuration: PolicyConfiguration, at date: Date
    ) -> ScopedCaps {
        let resolution = configuration.effectiveLimits(
            for: provider.name, scope: query.scope, tier: provider.isTiered ? query.tier : nil, at: date)
        if provider.overrides[query.scope] != nil {
            return ScopedCaps(source: .override, resolution: resolution)
        }
        guard let tier = query.tier else { return ScopedCaps(source: .provider, resolution: resolution) }
        guard provider.isTiered else {
            return ScopedCaps(
                source: .provider, resolution: resolution,
                note: "no tiers, so a key naming tier '\(tier)' gets the provider's caps")
        }
        guard provider.tiers[tier] != nil, let resolution else {
            let known = provider.tiers.keys.sorted()
            let list = known.isEmpty ? "it has none" : known.joined(separator: ", ")
            return ScopedCaps(
                source: .unknownTier, resolution: nil,
                note: "tier '\(tier)' is not one of its tiers (\(list)): the gate refuses a call naming it")
        }
        return ScopedCaps(source: .tier(tier), resolution: resolution)
    }

    init(file: String, error: PolicyConfigurationError, from: Date, days: Int) {
        self.file = file
        self.valid = false
        self.diagnostics = error.diagnostics
        self.from = from
        self.days = days
    }

    var warnings: [PolicyConfiguration.Diagnostic] { diagnostics.filter { $0.severity == .warning } }

    // MARK: Text

    /// The cap columns shown: only kinds some provider (or schedule entry) sets, so that a file
    /// with request caps only is not padded with empty token columns.
    private var shownKinds: [PolicyLimitKind] {
        PolicyLimitKind.allCases.filter { kind in
            providers.contains { provider in
                provider.base[kind] != nil || provider.schedule?.entries.contains { $0.limits[kind] != nil } == true
                    || provider.levels.values.contains { $0[kind] != nil }
                    || provider.groups.values.contains { $0.limits[kind] != nil }
                    || provider.tiers.values.contains { $0[kind] != nil } || provider.overrides.values.contains { $0[kind] != nil }
            }
        }
    }

    func text() -> String {
        var lines: [String] = []
        let scheduled = providers.filter { $0.schedule != nil }
        var headline = "\(file): valid, \(plural(providers.count, "provider"))"
        if !scheduled.isEmpty { headline += " (\(scheduled.count) with a schedule)" }
        headline += warnings.isEmpty ? ", no warnings" : ", \(plural(warnings.count, "warning")) (on standard error)"
        lines.append(headline)
        if providers.isEmpty {
            lines.append("")
            lines.append("No provider is gated: every call is let through.")
            return lines.joined(separator: "\n") + "\n"
        }
        let kinds = shownKinds
        lines.append("")
        lines.append("Limits in force at \(Values.readable(from)):")
        lines.append("")
        var table = TextTable([("provider", .left)] + kinds.map { (Self.title($0), .right) } + [("in force", .left)])
        for provider in providers {
            table.append([provider.name] + Self.caps(provider.now, kinds) + [Self.describe(provider.now)])
            // Nested levels under their account, each scope of the kind counted on its own.
            for (kind, caps) in provider.levels.sorted(by: { $0.key < $1.key }) {
                table.append(
                    ["  per \(kind)"] + kinds.map { caps[$0].map(Values.count) ?? "-" } + ["each \(kind), inside \(provider.name)"])
            }
            // Model groups, counted where the provider's caps are: per key, or for the account.
            let owner = provider.levels.isEmpty ? "each key's" : "the account's"
            for (name, group) in provider.groups.sorted(by: { $0.key < $1.key }) {
                table.append(
                    ["  model \(name)"] + kinds.map { group.limits[$0].map(Values.count) ?? "-" }
                        + ["\(group.match.joined(separator: ", ")), inside \(owner) caps"])
            }
            // Tiers and overrides with the provider's caps in force under them: what a scope gets.
            for (name, caps) in provider.tiers.sorted(by: { $0.key < $1.key }) {
                table.append(["  tier \(name)"] + Self.caps(provider.over(caps), kinds) + ["scopes in tier \(name)"])
            }
            for (scope, caps) in provider.overrides.sorted(by: { $0.key.description < $1.key.description }) {
                table.append(["  scope \(scope)"] + Self.caps(provider.over(caps), kinds) + ["\(scope)'s own, over any tier"])
            }
        }
        lines += table.render(indent: 2)
        if table.rows.joined().contains("-") { lines.append("  (- no cap)") }
        if providers.contains(where: \.isTiered) {
            lines.append("  (a tier or a scope's caps: the ones it sets, the provider's in force for the rest)")
        }
        for provider in providers where !provider.base.countsCacheReads {
            lines.append("  \(provider.name): cache reads do not count as input tokens (count_cache_reads = false)")
        }
        for provider in providers where provider.base.reservedForInteractive ?? 0 > 0 || provider.base.batchAging != nil {
            let share = provider.base.reservedForInteractive ?? 0
            let aging = provider.base.batchAging ?? PolicyLimits.defaultBatchAging
            lines.append(
                "  \(provider.name): batch calls see every cap less reserved_for_interactive = \(share) of it, "
                    + "until promoted after \(Values.readable(aging)) of waiting (batch_aging_seconds)")
        }
        for provider in providers where provider.base.hasCostCaps || !provider.base.prices.isEmpty {
            lines += Self.spendLines(provider)
        }
        let adaptive = providers.filter(\.adaptive).map(\.name)
        if !adaptive.isEmpty {
            lines.append(
                "  Adaptive caps (\(adaptive.joined(separator: ", "))): after a 429, 0.7 of these; back by 5 % of them "
                    + "every 5 s without one.")
        }
        if let model {
            for provider in providers where !provider.groups.isEmpty {
                lines.append(
                    "  Model '\(model)' of \(provider.name): "
                        + (provider.modelGroup.map { "in model group '\($0)'" } ?? "in no model group (the provider's caps only)"))
            }
            if !providers.contains(where: { !$0.groups.isEmpty }) {
                lines.append("  Model '\(model)': no provider has model groups; every call counts under its provider's caps only.")
            }
        }
        if let scope {
            lines += scopeLines(scope, kinds)
        }
        if let permitHoldWarning {
            lines.append("  Permits held longer than \(Values.readable(permitHoldWarning)) are reported (permit_hold_warning).")
        }
        guard !scheduled.isEmpty else { return lines.joined(separator: "\n") + "\n" }

        lines.append("")
        lines.append("Transitions from \(Values.readable(from)) for \(plural(days, "day")):")
        for provider in scheduled {
            let zone = provider.schedule?.timeZone ?? .gmt
            let zoneName = zone.identifier == "GMT" ? "UTC" : zone.identifier
            lines.append("")
            if provider.transitions.isEmpty {
                lines.append("  \(provider.name) (\(zoneName)): no change, \(Self.describe(provider.now)) throughout")
                continue
            }
            lines.append("  \(provider.name) (\(zoneName)), \(plural(provider.transitions.count, "change")):")
            var changes = TextTable([("from", .left), ("entry", .left)] + kinds.map { (Self.title($0), .right) })
            for transition in provider.transitions {
                let resolution = transition.resolution
                let when = Values.readable(transition.date, in: zone)
                changes.append([when, Self.describe(resolution)] + Self.caps(resolution, kinds))
            }
            lines += changes.render(indent: 4)
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// `--scope`: that scope's caps under each provider, and where they come from.
    private func scopeLines(_ query: ScopeQuery, _ kinds: [PolicyLimitKind]) -> [String] {
        var lines = [""]
        let tier = query.tier.map { " in tier \($0)" } ?? ""
        lines.append("Caps of \(query.scope)\(tier) at \(Values.readable(from)):")
        lines.append("")
        var table = TextTable([("provider", .left)] + kinds.map { (Self.title($0), .right) } + [("from", .left), ("in force", .left)])
        var notes: [String] = []
        for provider in providers {
            guard let scoped = provider.scoped else { continue }
            if let note = scoped.note { notes.append("  \(provider.name): \(note)") }
            guard let resolution = scoped.resolution else {
                table.append([provider.name] + kinds.map { _ in "" } + [Self.describe(scoped.source), "refused"])
                continue
            }
            table.append([provider.name] + Self.caps(resolution, kinds) + [Self.describe(scoped.source), Self.describe(resolution)])
        }
        lines += table.render(indent: 2)
        return lines + notes
    }

    /// `override`, `tier pro`, `provider`, `unknown tier`.
    private static func describe(_ source: CapsSource) -> String {
        switch source {
        case .override: "override"
        case .tier(let name): "tier \(name)"
        case .provider: "provider"
        case .unknownTier: "unknown tier"
        }
    }

    /// A provider's spend caps and prices, amounts as written (exact decimals).
    private static func spendLines(_ provider: Provider) -> [String] {
        var lines: [String] = []
        let caps = PolicyCostCap.allCases.compactMap { cap in provider.base[cost: cap].map { "\(cap.configurationKey) = \($0)" } }
        if !caps.isEmpty {
            let zone = provider.base.costTimeZone ?? provider.schedule?.timeZone ?? .gmt
            let zoneName = zone.identifier == "GMT" ? "UTC" : zone.identifier
            let months = provider.base.costPerMonth != nil ? " (calendar months of \(zoneName))" : ""
            lines.append("  \(provider.name): spend caps \(caps.joined(separator: ", "))\(months)")
        }
        if provider.base.prices.isEmpty {
            lines.append("  \(provider.name): no prices: every call is refused (unpriced) while spend caps are set")
        } else {
            lines.append(
                "  \(provider.name): prices per million tokens (exact name first, then the most specific pattern; * for the rest):")
            var table = TextTable([("model", .left), ("input", .right), ("output", .right), ("cache_read", .right)])
            for (model, price) in provider.base.prices.sorted(by: { $0.key < $1.key }) {
                table.append([model, "\(price.input)", "\(price.output)", "\((price.cacheRead ?? price.input))"])
            }
            lines += table.render(indent: 4)
            if provider.base.prices["*"] == nil && provider.base.hasCostCaps {
                lines.append("    (a model matching none of these, or a call naming no model, is refused: unpriced)")
            }
        }
        return lines
    }

    /// Short column titles: the configuration keys are too wide for a table.
    private static func title(_ kind: PolicyLimitKind) -> String {
        switch kind {
        case .requestsPerMinute: "req/min"
        case .requestsPerHour: "req/hour"
        case .requestsPerDay: "req/day"
        case .tokensPerMinute: "tok/min"
        case .tokensPerHour: "tok/hour"
        case .tokensPerDay: "tok/day"
        case .inputTokensPerMinute: "in/min"
        case .inputTokensPerHour: "in/hour"
        case .inputTokensPerDay: "in/day"
        case .outputTokensPerMinute: "out/min"
        case .outputTokensPerHour: "out/hour"
        case .outputTokensPerDay: "out/day"
        case .concurrency: "concurrent"
        }
    }

    private static func caps(_ resolution: PolicySchedule.Resolution, _ kinds: [PolicyLimitKind]) -> [String] {
        // A closed gate admits nothing whatever its caps say; showing them would mislead.
        if resolution.isClosed { return kinds.map { _ in "" } }
        return kinds.map { resolution.limits[$0].map(Values.count) ?? "-" }
    }

    /// `base`, `peak` (an entry) or `closed (holidays)`.
    private static func describe(_ resolution: PolicySchedule.Resolution) -> String {
        guard let entry = resolution.entry else { return "base" }
        return resolution.isClosed ? "closed (\(entry))" : entry
    }

    // MARK: JSON

    private struct JSONReport: Encodable {
        var schemaVersion = jsonSchemaVersion
        var file: String
        var valid: Bool
        var from: String
        var to: String
        var days: Int
        var errors: [JSONDiagnostic]
        var warnings: [JSONDiagnostic]
        var providers: [JSONProvider]
        /// `[gate] permit_hold_warning` in seconds, when set.
        var permitHoldWarningSeconds: Double?
        /// `--scope` and `--tier`, when given (`tier` is `null` without `--tier`).
        var scope: String?
        var tier: String??
    }

    private struct JSONDiagnostic: Encodable {
        var line: Int?
        var column: Int?
        var key: String
        var message: String
        var suggestion: String?
    }

    private struct JSONProvider: Encodable {
        var name: String
        var timezone: String?
        var base: [String: Int]
        /// ``PolicyLimits/countsCacheReads``, under its configuration key.
        var countCacheReads: Bool
        /// Whether its caps adapt to 429s.
        var adaptive: Bool
        /// Nested limits per scope kind, as in the file's `per` tables.
        var per: [String: [String: Int]]
        /// Model groups: their patterns and caps, as in the file's `models` tables.
        var models: [String: JSONModelGroup]
        /// With `--model`: the group it counts in (`null`: none); absent without `--model`.
        var modelGroup: String??
        /// Tiers and per-scope overrides: the caps each sets, as in the file's `tiers` and
        /// `scopes` tables.
        var tiers: [String: [String: Int]]
        var scopes: [String: [String: Int]]
        /// With `--scope`: that scope's caps at `--from`; absent without `--scope`.
        var scopeCaps: JSONScopeCaps?
        /// ``PolicyLimits/reservedForInteractive`` (0 when not set) and the batch aging in
        /// seconds, under their configuration keys.
        var reservedForInteractive: Double
        var batchAgingSeconds: Double
        /// Spend caps under their configuration keys, as exact decimal text.
        var costs: [String: String]
        /// The zone of the calendar months of `cost_per_month`, when set.
        var costTimezone: String?
        /// Prices per million tokens by model or pattern, as exact decimal text.
        var prices: [String: [String: String]]
        var effective: JSONState
        var transitions: [JSONState]

        enum CodingKeys: String, CodingKey {
            case name, timezone, base, adaptive, per, models, effective, transitions
            case modelGroup = "model_group"
            case tiers, scopes
            case scopeCaps = "scope_caps"
            case countCacheReads = "count_cache_reads"
            case reservedForInteractive = "reserved_for_interactive"
            case batchAgingSeconds = "batch_aging_seconds"
            case costs, prices
            case costTimezone = "cost_timezone"
        }
    }

    /// A scope's caps under one provider: `source` is `override`, `tier` (then `tier` names
    /// it), `provider`, or `unknown_tier` (then `limits` is `null`: the gate refuses the call).
    private struct JSONScopeCaps: Encodable {
        var source: String
        var tier: String?
        var entry: String?
        var closed: Bool
        var limits: [String: Int]?
        var note: String?

        enum CodingKeys: CodingKey { case source, tier, entry, closed, limits, note }

        // `tier`, `entry` and `limits` are written as null rather than left out, as in `effective`.
        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(source, forKey: .source)
            try container.encode(tier, forKey: .tier)
            try container.encode(entry, forKey: .entry)
            try container.encode(closed, forKey: .closed)
            try container.encode(limits, forKey: .limits)
            try container.encodeIfPresent(note, forKey: .note)
        }

        init(_ scoped: ScopedCaps) {
            switch scoped.source {
            case .override: source = "override"
            case .tier(let name):
                source = "tier"
                tier = name
            case .provider: source = "provider"
            case .unknownTier: source = "unknown_tier"
            }
            entry = scoped.resolution?.entry
            closed = scoped.resolution?.isClosed ?? false
            limits = scoped.resolution.map { CheckReport.keyed($0.limits) }
            note = scoped.note
        }
    }

    private struct JSONModelGroup: Encodable {
        var match: [String]
        var limits: [String: Int]
    }

    /// A state: at `--from` (`effective`, with `until`: the next transition in the interval, if
    /// any) or from a transition's `time` on.
    private struct JSONState: Encodable {
        var time: String?
        var entry: String?
        var closed: Bool
        var limits: [String: Int]
        var until: String?

        enum CodingKeys: CodingKey { case time, entry, closed, limits, until }

        // `entry` is written as null for the base limits (rather than left out), so scripts can
        // read it unconditionally; `time` and `until` only where they apply.
        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encodeIfPresent(time, forKey: .time)
            try container.encode(entry, forKey: .entry)
            try container.encode(closed, forKey: .closed)
            try container.encode(limits, forKey: .limits)
            try container.encodeIfPresent(until, forKey: .until)
        }
    }

    private static func keyed(_ limits: PolicyLimits) -> [String: Int] {
        var caps: [String: Int] = [:]
        for kind in PolicyLimitKind.allCases { caps[kind.configurationKey] = limits[kind] }
        return caps
    }

    func json() -> String {
        func diagnostics(_ severity: PolicyConfiguration.Diagnostic.Severity) -> [JSONDiagnostic] {
            self.diagnostics.filter { $0.severity == severity }.map {
                JSONDiagnostic(
                    line: $0.line, column: $0.column, key: $0.keyPath, message: $0.message, suggestion: $0.suggestion)
            }
        }
        func provider(_ provider: Provider) -> JSONProvider {
            let zone = provider.schedule?.timeZone ?? .gmt
            let now = provider.now
            return JSONProvider(
                name: provider.name, timezone: provider.schedule?.timeZone.identifier, base: Self.keyed(provider.base),
                countCacheReads: provider.base.countsCacheReads,
                adaptive: provider.adaptive, per: provider.levels.mapValues(Self.keyed),
                models: provider.groups.mapValues { JSONModelGroup(match: $0.match, limits: Self.keyed($0.limits)) },
                modelGroup: model == nil ? nil : .some(provider.modelGroup),
                tiers: provider.tiers.mapValues(Self.keyed),
                scopes: Dictionary(uniqueKeysWithValues: provider.overrides.map { ($0.key.description, Self.keyed($0.value)) }),
                scopeCaps: provider.scoped.map(JSONScopeCaps.init),
                reservedForInteractive: provider.base.reservedForInteractive ?? 0,
                batchAgingSeconds: Values.seconds(provider.base.batchAging ?? PolicyLimits.defaultBatchAging),
                costs: Dictionary(
                    uniqueKeysWithValues: PolicyCostCap.allCases.compactMap { cap in
                        provider.base[cost: cap].map { (cap.configurationKey, $0.description) }
                    }),
                costTimezone: provider.base.costPerMonth == nil
                    ? nil : (provider.base.costTimeZone ?? provider.schedule?.timeZone ?? .gmt).identifier,
                prices: provider.base.prices.mapValues { price in
                    [
                        "input": price.input.description, "output": price.output.description,
                        "cache_read": (price.cacheRead ?? price.input).description,
                    ]
                },
                effective: JSONState(
                    entry: now.entry, closed: now.isClosed, limits: Self.keyed(now.limits),
                    // A change exactly at --from is listed as a transition, but is what holds now.
                    until: provider.transitions.first { $0.date > from }.map { Values.iso8601($0.date, in: zone) }),
                transitions: provider.transitions.map { transition in
                    JSONState(
                        time: Values.iso8601(transition.date, in: zone), entry: transition.resolution.entry,
                        closed: transition.resolution.isClosed, limits: Self.keyed(transition.resolution.limits))
                })
        }
        return encodeJSON(
            JSONReport(
                file: file, valid: valid, from: Values.iso8601(from), to: Values.iso8601(to), days: days,
                errors: diagnostics(.error), warnings: diagnostics(.warning), providers: providers.map(provider),
                permitHoldWarningSeconds: permitHoldWarning.map(Values.seconds), scope: scope?.scope.description,
                tier: scope.map(\.tier)))
    }
}
