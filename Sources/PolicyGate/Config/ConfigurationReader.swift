import Foundation
internal import PolicyGateTOML

/// Reads a configuration from any `Decoder`, collecting every problem instead of stopping at
/// the first, so one run of `policy-gate check` (or one failed reload) shows them all.
///
/// It walks the keys the document actually has (through a dynamic coding key) rather than the
/// keys it expects, which is how unknown keys are found with any format.
struct ConfigurationReader {
    private(set) var diagnostics: [PolicyConfiguration.Diagnostic] = []
    var hasErrors: Bool { diagnostics.contains { $0.severity == .error } }

    mutating func readConfiguration(from decoder: any Decoder) -> PolicyConfiguration {
        var configuration = PolicyConfiguration()
        guard let root = container(decoder, path: [], what: "the configuration") else { return configuration }
        for key in root.allKeys {
            switch key.stringValue {
            case "limits":
                readLimitsTable(root, key, into: &configuration)
            case "store":
                readStoreTable(root, key, into: &configuration)
            case "gate":
                readGateTable(root, key, into: &configuration)
            default:
                unknownKey(key.stringValue, path: [.key(key.stringValue)], known: PolicyConfiguration.topLevelKeys)
            }
        }
        configuration.feedbackScope = feedbackScopes
        for provider in adaptiveProviders.keys.sorted() {
            guard configuration.limits[provider] != nil || configuration.schedules[provider] != nil else { continue }
            if feedbackScopes[provider] == .key {
                error(
                    adaptiveProviders[provider] ?? [],
                    "needs feedback_scope = \"provider\": adaptive caps are shared by all keys of a provider, and one account's 429 must not lower another's"
                )
            } else {
                configuration.adaptive.insert(provider)
            }
        }
        // A provider's own store or failure policy over the defaults of [store].
        for (provider, choice) in storageChoices {
            configuration.storage[provider] = PolicyStorage(
                store: choice.store ?? configuration.defaultStorage.store,
                failurePolicy: choice.failurePolicy ?? configuration.defaultStorage.failurePolicy)
        }
        for (provider, groups) in modelGroups where !groups.isEmpty {
            configuration.modelGroups[provider] = groups
            let path: [TOMLPathComponent] = [.key("limits"), .key(provider), .key("models")]
            if configuration.limits[provider]?.reservePermille ?? 0 > 0 {
                error([.key("limits"), .key(provider), .key(PolicyLimits.reservedForInteractiveKey)], PolicyService.reserveNotGrouped)
            }
            if feedbackScopes[provider] == .key {
                error([.key("limits"), .key(provider), .key("feedback_scope")], PolicyService.groupsNotPerKeyFeedback)
            }
            var owners: [String: String] = [:]
            for (name, group) in groups.sorted(by: { $0.key < $1.key }) {
                for pattern in Set(group.match).sorted() {
                    if let other = owners[pattern] {
                        error(
                            path + [.key(name), .key("match")],
                            "'\(pattern)' is also in model group '\(other)'; a model counts in one group")
                    }
                    owners[pattern] = name
                }
            }
            if configuration.limits[provider] == nil, configuration.schedules[provider] == nil {
                configuration.limits[provider] = PolicyLimits()
            }
        }
        for (provider, named) in tiers where !named.isEmpty {
            configuration.tiers[provider] = named
            if configuration.limits[provider] == nil, configuration.schedules[provider] == nil {
                configuration.limits[provider] = PolicyLimits()
            }
        }
        for (provider, scopes) in overrides where !scopes.isEmpty {
            configuration.scopeOverrides[provider] = scopes
            if configuration.limits[provider] == nil, configuration.schedules[provider] == nil {
                configuration.limits[provider] = PolicyLimits()
            }
        }
        for (provider, kinds) in levels where !kinds.isEmpty {
            configuration.scopeLimits[provider] = kinds
            if configuration.limits[provider]?.reservePermille ?? 0 > 0 || kinds.values.contains(where: { $0.reservePermille > 0 }) {
                error([.key("limits"), .key(provider), .key(PolicyLimits.reservedForInteractiveKey)], PolicyService.reserveNotNested)
            }
            if configuration.limits[provider] == nil, configuration.schedules[provider] == nil {
                configuration.limits[provider] = PolicyLimits()
            }
        }
        for provider in Set(configuration.limits.keys).union(configuration.schedules.keys).sorted()
        where configuration.storage(for: provider).store != .memory {
            // Nested limits are shared too (the store admits a chain at once), but its schema
            // counts one token total per call, at every level.
            for (kind, caps) in (configuration.scopeLimits[provider] ?? [:]).sorted(by: { $0.key < $1.key }) {
                if let split = PolicyService.splitCap(caps, nil) {
                    error(
                        [.key("limits"), .key(provider), .key("per"), .key(kind), .key(split.configurationKey)],
                        PolicyService.splitCapsNotShared)
                }
            }
            if configuration.modelGroups[provider] != nil {
                error([.key("limits"), .key(provider), .key("models")], PolicyService.groupsNotShared)
            }
            if let kind = PolicyService.splitCap(configuration.limits[provider], configuration.schedules[provider]) {
                error([.key("limits"), .key(provider), .key(kind.configurationKey)], PolicyService.splitCapsNotShared)
            }
            if configuration.limits[provider]?.reservePermille ?? 0 > 0 {
                error([.key("limits"), .key(provider), .key(PolicyLimits.reservedForInteractiveKey)], PolicyService.reserveNotShared)
            }
            for cap in PolicyCostCap.allCases where configuration.limits[provider]?[cost: cap] != nil {
                error([.key("limits"), .key(provider), .key(cap.configurationKey)], PolicyService.costsNotShared)
            }
        }
        checkTierComposition(configuration)
        return configuration
    }

    /// `store` and `on_store_failure` as written in provider tables, resolved once `[store]`
    /// (which may come later in the document) has been read.
    private var storageChoices: [String: (store: PolicyStorage.Store?, failurePolicy: PolicyStorage.FailurePolicy?)] = [:]
    /// `feedback_scope` as written in provider tables.
    private var feedbackScopes: [String: PolicyFeedbackScope] = [:]
    /// Providers whose table says `adaptive = true`, with where it says so.
    private var adaptiveProviders: [String: [TOMLPathComponent]] = [:]

    static let storeKeys = ["default", "on_failure", "postgres"]
    static let postgresKeys = PolicyPostgresSettings.CodingKeys.allCases.map(\.rawValue)

    /// Reads `[store]`: the default store and failure policy, and `[store.postgres]`.
    private mutating func readStoreTable(
        _ root: KeyedDecodingContainer<AnyKey>, _ key: AnyKey, into configuration: inout PolicyConfiguration
    ) {
        let path: [TOMLPathComponent] = [.key("store")]
        guard let table = nested(root, key, path: path, what: "a table, such as [store] with default = \"postgres\"")
        else { return }
        for key in table.allKeys {
            let keyPath = path + [.key(key.stringValue)]
            switch key.stringValue {
            case "default":
                if let store = readStoreName(table, key, path: keyPath) { configuration.defaultStorage.store = store }
            case "on_failure":
                if let policy = readFailurePolicy(table, key, path: keyPath) { configuration.defaultStorage.failurePolicy = policy }
            case "postgres":
                guard let settings = nested(table, key, path: keyPath, what: "a table of connection settings") else { continue }
                configuration.postgres = readPostgres(settings, path: keyPath)
            default:
                unknownKey(key.stringValue, path: keyPath, known: Self.storeKeys)
            }
        }
    }

    static let gateKeys = ["permit_hold_warning"]

    /// Reads `[gate]`: settings of the whole service rather than of a provider.
    private mutating func readGateTable(
        _ root: KeyedDecodingContainer<AnyKey>, _ key: AnyKey, into configuration: inout PolicyConfiguration
    ) {
        let path: [TOMLPathComponent] = [.key("gate")]
        guard let table = nested(root, key, path: path, what: "a table, such as [gate] with permit_hold_warning = \"10m\"")
        else { return }
        for key in table.allKeys {
            let keyPath = path + [.key(key.stringValue)]
            switch key.stringValue {
            case "permit_hold_warning":
                configuration.permitHoldWarning = readDuration(table, key, path: keyPath, unset: "no warning")
            default:
                unknownKey(key.stringValue, path: keyPath, known: Self.gateKeys)
            }
        }
    }

    /// A positive duration written as a string with units: `"10m"`, `"90s"`, `"1h30m"`, `"500ms"`.
    private mutating func readDuration(
        _ table: KeyedDecodingContainer<AnyKey>, _ key: AnyKey, path: [TOMLPathComponent], unset: String
    ) -> Duration? {
        let form = "a duration such as \"10m\", \"90s\" or \"1h30m\" (units h, m, s, ms)"
        guard let text = try? table.decode(String.self, forKey: key) else {
            if let number = try? table.decode(Int.self, forKey: key) {
                error(path, "must be \(form): write \"\(number)s\" for \(number) seconds")
            } else {
                error(path, "must be \(form)")
            }
            return nil
        }
        guard let nanos = HeaderValues.goDuration(text) else {
            error(path, "must be \(form), got \"\(text)\"")
            return nil
        }
        guard nanos > 0 else {
            error(path, "must be positive, got \"\(text)\"; leave the key out for \(unset)")
            return nil
        }
        return .nanoseconds(nanos)
    }

    private mutating func readStoreName(
        _ table: KeyedDecodingContainer<AnyKey>, _ key: AnyKey, path: [TOMLPathComponent]
    ) -> PolicyStorage.Store? {
        guard let name = readString(table, key, path: path, what: "\"memory\" or \"postgres\"") else { return nil }
        guard name == PolicyStorage.Store.memory.name || name == PolicyStorage.Store.postgres.name else {
            error(path, "must be \"memory\" or \"postgres\", got \"\(name)\"")
            return nil
        }
        return PolicyStorage.Store(name)
    }

    private mutating func readFailurePolicy(
        _ table: KeyedDecodingContainer<AnyKey>, _ key: AnyKey, path: [TOMLPathComponent]
    ) -> PolicyStorage.FailurePolicy? {
        guard let name = readString(table, key, path: path, what: "\"fail_open\" or \"fail_closed\"") else { return nil }
        guard let policy = PolicyStorage.FailurePolicy(rawValue: name) else {
            error(path, "must be \"fail_open\" or \"fail_closed\", got \"\(name)\"")
            return nil
        }
        return policy
    }

    /// Reads `[store.postgres]`. A password never belongs in the file: it is read from the
    /// environment variable that `password_env` names.
    private mutating func readPostgres(_ table: KeyedDecodingContainer<AnyKey>, path: [TOMLPathComponent]) -> PolicyPostgresSettings {
        var settings = PolicyPostgresSettings()
        for key in table.allKeys {
            let keyPath = path + [.key(key.stringValue)]
            func positive(_ what: String) -> Int? {
                do {
                    let value = try table.decode(Int.self, forKey: key)
                    if value > 0 { return value }
                    error(keyPath, "must be a positive \(what), got \(value)")
                } catch {
                    self.error(keyPath, "must be a positive \(what)")
                }
                return nil
            }
            switch key.stringValue {
            case "url":
                settings.url = readString(table, key, path: keyPath, what: "a URL such as \"postgres://gate@db:5432/app\"")
                if let url = settings.url, PolicyPostgresSettings.urlHasPassword(url) {
                    error(
                        keyPath,
                        "must be a postgres:// URL without a password: name an environment variable that holds it with password_env")
                    settings.url = nil
                }
            case "host": settings.host = readString(table, key, path: keyPath, what: "a host name")
            case "port": settings.port = positive("port number")
            case "user": settings.user = readString(table, key, path: keyPath, what: "a user name")
            case "database": settings.database = readString(table, key, path: keyPath, what: "a database name")
            case "password_env":
                settings.passwordEnvironmentVariable = readString(table, key, path: keyPath, what: "an environment variable's name")
            case "lease_seconds": settings.leaseSeconds = positive("number of seconds")
            case "timeout_ms": settings.timeoutMilliseconds = positive("number of milliseconds")
            case "retry_seconds": settings.retrySeconds = positive("number of seconds")
            case "max_connections": settings.maxConnections = positive("number")
            case "tls":
                let modes = PolicyPostgresSettings.TLSMode.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", ")
                if let name = readString(table, key, path: keyPath, what: "one of \(modes)") {
                    settings.tls = PolicyPostgresSettings.TLSMode(rawValue: name)
                    if settings.tls == nil { error(keyPath, "must be one of \(modes), got \"\(name)\"") }
                }
            case "tls_root_cert":
                settings.tlsRootCertificate = readString(table, key, path: keyPath, what: "the path of a PEM file")
            case "password":
                error(
                    keyPath,
                    "a password must not be written in the configuration: put it in an environment variable and name it with password_env")
            default:
                unknownKey(key.stringValue, path: keyPath, known: Self.postgresKeys)
            }
        }
        return settings
    }

    private mutating func readLimitsTable(
        _ root: KeyedDecodingContainer<AnyKey>, _ key: AnyKey, into configuration: inout PolicyConfiguration
    ) {
        let path: [TOMLPathComponent] = [.key("limits")]
        guard let table = nested(root, key, path: path, what: "a table of providers, such as [limits.openai]")
        else { return }
        for provider in table.allKeys {
            let name = provider.stringValue
            let providerPath = path + [.key(name)]
            guard let caps = nested(table, provider, path: providerPath, what: "a table of caps") else { continue }
            if name.isEmpty {
                error(providerPath, "a provider name must not be empty")
                continue
            }
            let (limits, schedule) = readProvider(caps, name: name, path: providerPath)
            // A provider gated only by its schedule has no base limits, as in the configuration
            // a gate reports and as built in code: decoding what was encoded gives it back.
            if !limits.isUnlimited || schedule == nil { configuration.limits[name] = limits }
            if let schedule { configuration.schedules[name] = schedule }
        }
    }

    /// Reads one provider's table: its caps, and its time zone and schedule if any.
    private mutating func readProvider(
        _ table: KeyedDecodingContainer<AnyKey>, name: String, path: [TOMLPathComponent]
    ) -> (PolicyLimits, PolicySchedule?) {
        entryTierPaths = [:]
        var limits = PolicyLimits()
        var timeZone: TimeZone?
        var entries: [PolicyScheduleEntry]?
        var scheduleOK = true
        for key in table.allKeys {
            let keyPath = path + [.key(key.stringValue)]
            switch key.stringValue {
            case "timezone":
                guard let name = readString(table, key, path: keyPath, what: "an IANA time zone name such as 'Europe/Berlin'")
                else { scheduleOK = false; continue }
                do {
                    timeZone = try PolicySchedule.timeZone(named: name)
                } catch {
                    self.error(keyPath, error.message)
                    scheduleOK = false
                }
            case "schedule":
                entries = readSchedule(table, key, path: keyPath, ok: &scheduleOK)
            case "store":
                if let store = readStoreName(table, key, path: keyPath) { storageChoices[name, default: (nil, nil)].store = store }
            case "on_store_failure":
                if let policy = readFailurePolicy(table, key, path: keyPath) {
                    storageChoices[name, default: (nil, nil)].failurePolicy = policy
                }
            case "feedback_scope":
                let choices = PolicyFeedbackScope.allCases.map(\.rawValue)
                guard let text = readString(table, key, path: keyPath, what: "\"provider\" or \"key\"") else { continue }
                if let scope = PolicyFeedbackScope(rawValue: text) {
                    feedbackScopes[name] = scope
                } else {
                    diagnostics.append(
                        .init(
                            .error, path: keyPath, message: "must be \"provider\" or \"key\", got \"\(text)\"",
                            suggestion: Self.suggestion(for: text, among: choices)))
                }
            case "adaptive":
                do {
                    if try table.decode(Bool.self, forKey: key) { adaptiveProviders[name] = keyPath }
                } catch {
                    self.error(keyPath, "must be true or false")
                }
            case "per":
                readLevels(table, key, provider: name, path: keyPath)
            case "models":
                readModelGroups(table, key, provider: name, path: keyPath)
            case "tiers":
                readTiers(table, key, provider: name, path: keyPath)
            case "scopes":
                readOverrides(table, key, provider: name, path: keyPath)
            default:
                readCap(table, key, path: keyPath, into: &limits, known: Self.providerKeys)
            }
        }
        if limits.hasCostCaps, let timeZone { limits.costTimeZone = timeZone }
        check(limits, provider: name, path: path, reportEmpty: table.allKeys.isEmpty)
        guard let entries, !entries.isEmpty else {
            if timeZone != nil, entries == nil, limits.costPerMonth == nil {
                warning(path + [.key("timezone")], "has no effect without [[\((path + [.key("schedule")]).dottedKey)]] entries")
            }
            return (limits, nil)
        }
        let schedule = PolicySchedule(timeZone: timeZone ?? .gmt, entries: entries)
        if scheduleOK { checkRules(of: schedule, path: path) }
        for (tier, paths) in entryTierPaths.sorted(by: { $0.key < $1.key }) where tiers[name]?[tier] == nil {
            for tierPath in paths { error(tierPath, "names tier '\(tier)', which [\((path + [.key("tiers")]).dottedKey)] does not define") }
        }
        entryTierPaths = [:]
        return (limits, schedule)
    }

    /// Reads `[limits.<provider>.per.<kind>]` tables: caps for every scope of a kind, nested in
    /// the provider's account caps.
    private mutating func readLevels(
        _ table: KeyedDecodingContainer<AnyKey>, _ key: AnyKey, provider: String, path: [TOMLPathComponent]
    ) {
        guard let kinds = nested(table, key, path: path, what: "a table of scope kinds, such as [limits.\(provider).per.user]")
        else { return }
        for kind in kinds.allKeys {
            let name = kind.stringValue
            let kindPath = path + [.key(name)]
            guard let caps = nested(kinds, kind, path: kindPath, what: "a table of caps") else { continue }
            guard !name.isEmpty, name != "global" else {
                error(kindPath, "must name a kind of scope (user, org, project or your own); the account's caps go in [limits.\(provider)]")
                continue
            }
            guard name != PolicyModelGroup.scopeKind else {
                error(kindPath, "'model' names model groups' levels; caps per model family go in [limits.\(provider).models.<group>]")
                continue
            }
            var limits = PolicyLimits()
            for capKey in caps.allKeys {
                readCap(caps, capKey, path: kindPath + [.key(capKey.stringValue)], into: &limits, known: Self.levelKeys)
            }
            check(limits, provider: "\(provider).per.\(name)", path: kindPath, reportEmpty: true)
            levels[provider, default: [:]][name] = limits
        }
    }

    /// Reads the tables of caps under `key` (`[<path>.<name>]`, caps only): each one's name,
    /// place and caps, or `nil` when `key` is not a table.
    private mutating func readCapTables(
        _ table: KeyedDecodingContainer<AnyKey>, _ key: AnyKey, path: [TOMLPathComponent], what: String
    ) -> [(name: String, path: [TOMLPathComponent], limits: PolicyLimits)]? {
        guard let names = nested(table, key, path: path, what: what) else { return nil }
        var result: [(name: String, path: [TOMLPathComponent], limits: PolicyLimits)] = []
        for nameKey in names.allKeys {
            let tablePath = path + [.key(nameKey.stringValue)]
            guard let caps = nested(names, nameKey, path: tablePath, what: "a table of caps") else { continue }
            var limits = PolicyLimits()
            for capKey in caps.allKeys {
                readCap(caps, capKey, path: tablePath + [.key(capKey.stringValue)], into: &limits, known: Self.tierKeys)
            }
            result.append((nameKey.stringValue, tablePath, limits))
        }
        return result
    }

    /// Reads `[limits.<provider>.tiers.<name>]` tables: named cap sets.
    private mutating func readTiers(
        _ table: KeyedDecodingContainer<AnyKey>, _ key: AnyKey, provider: String, path: [TOMLPathComponent]
    ) {
        let what = "a table of tiers, such as [limits.\(provider).tiers.free]"
        for (name, tierPath, limits) in readCapTables(table, key, path: path, what: what) ?? [] {
            guard !name.isEmpty else {
                error(tierPath, "a tier needs a name")
                continue
            }
            check(tier: limits, provider: provider, path: tierPath)
            tiers[provider, default: [:]][name] = limits
        }
    }

    /// Reads `[limits.<provider>.scopes."<scope>"]` tables: the caps of one scope.
    private mutating func readOverrides(
        _ table: KeyedDecodingContainer<AnyKey>, _ key: AnyKey, provider: String, path: [TOMLPathComponent]
    ) {
        let what = "a table of scopes, such as [limits.\(provider).scopes.\"org:acme\"]"
        for (text, scopePath, limits) in readCapTables(table, key, path: path, what: what) ?? [] {
            guard let scope = PolicyScope(text) else {
                error(scopePath, "must name a scope as kind:id, such as \"org:acme\" or \"user:u-42\" (or \"global\")")
                continue
            }
            check(tier: limits, provider: provider, path: scopePath)
            overrides[provider, default: [:]][scope] = limits
        }
    }

    /// Where the schedule entries of the provider being read name tiers, by tier.
    private var entryTierPaths: [String: [[TOMLPathComponent]]] = [:]

    /// `[limits.<provider>.tiers.<name>]` caps as read.
    private(set) var tiers: [String: [String: PolicyLimits]] = [:]
    /// `[limits.<provider>.scopes."<scope>"]` caps as read.
    private(set) var overrides: [String: [PolicyScope: PolicyLimits]] = [:]

    /// The keys of a tier's or an override's table: caps only.
    static let tierKeys = PolicyLimits.configurationKeyNames

    /// The caps of a tier or of one scope's override.
    mutating func check(tier limits: PolicyLimits, provider: String, path: [TOMLPathComponent]) {
        check(limits, provider: provider, path: path, reportEmpty: false)
        if limits.isUnlimited {
            warning(path, "sets no cap, so its scopes get the provider's caps")
        }
    }

    /// Tiers and overrides where the gate cannot apply them yet: with nested limits, model
    /// groups, or input and output caps in a shared store.
    mutating func checkTierComposition(_ configuration: PolicyConfiguration) {
        for provider in Set(configuration.tiers.keys).union(configuration.scopeOverrides.keys).sorted() {
            let hasTiers = !(configuration.tiers[provider] ?? [:]).isEmpty
            let hasOverrides = !(configuration.scopeOverrides[provider] ?? [:]).isEmpty
            guard hasTiers || hasOverrides else { continue }
            let path: [TOMLPathComponent] = [.key("limits"), .key(provider), .key(hasTiers ? "tiers" : "scopes")]
            if !(configuration.scopeLimits[provider] ?? [:]).isEmpty,
                configuration.schedules[provider]?.entries.contains(where: { !$0.tierLimits.isEmpty }) == true
            {
                error(
                    [.key("limits"), .key(provider), .key("schedule")],
                    "sets tiers' caps, but a nested provider's schedule sets its account's caps only")
            }
            if let problem = PolicyService.tierProblem(
                nested: !(configuration.scopeLimits[provider] ?? [:]).isEmpty,
                grouped: !(configuration.modelGroups[provider] ?? [:]).isEmpty,
                shared: configuration.storage(for: provider).store != .memory,
                splitCaps: configuration.providerTiers[provider]?.hasSplitCaps ?? false)
            {
                error(path, problem)
            }
        }
    }

    /// `[limits.<provider>.per.<kind>]` caps as read.
    private(set) var levels: [String: [String: PolicyLimits]] = [:]

    /// Reads `[limits.<provider>.models.<group>]` tables: `match` (a pattern or a list of them)
    /// and the group's caps.
    private mutating func readModelGroups(
        _ table: KeyedDecodingContainer<AnyKey>, _ key: AnyKey, provider: String, path: [TOMLPathComponent]
    ) {
        guard let groups = nested(table, key, path: path, what: "a table of model groups, such as [limits.\(provider).models.sonnet]")
        else { return }
        for groupKey in groups.allKeys {
            let name = groupKey.stringValue
            let groupPath = path + [.key(name)]
            guard let caps = nested(groups, groupKey, path: groupPath, what: "a table with match and caps") else { continue }
            if name.isEmpty {
                error(groupPath, "a model group needs a name")
                continue
            }
            var group = PolicyModelGroup(match: [], limits: PolicyLimits())
            var hasMatch = false
            for capKey in caps.allKeys {
                let capPath = groupPath + [.key(capKey.stringValue)]
                guard capKey.stringValue == "match" else {
                    readCap(caps, capKey, path: capPath, into: &group.limits, known: Self.modelGroupKeys)
                    continue
                }
                hasMatch = true
                let what = "a model name or pattern such as \"claude-sonnet-4*\", or a list of them"
                if let one = try? caps.decode(String.self, forKey: capKey) {
                    group.match = [one]
                } else if let many = try? caps.decode([String].self, forKey: capKey) {
                    group.match = many
                } else {
                    error(capPath, "must be \(what)")
                }
            }
            if !hasMatch {
                error(groupPath, "needs match = \"pattern\" (or a list): the models whose calls count in this group")
            }
            check(group, provider: provider, name: name, path: groupPath)
            modelGroups[provider, default: [:]][name] = group
        }
    }

    /// `[limits.<provider>.models.<group>]` groups as read.
    private(set) var modelGroups: [String: [String: PolicyModelGroup]] = [:]

    static let modelGroupKeys = PolicyLimits.configurationKeyNames + ["match"]

    /// The patterns and caps of one model group.
    mutating func check(_ group: PolicyModelGroup, provider: String, name: String, path: [TOMLPathComponent]? = nil) {
        let path = path ?? [.key("limits"), .key(provider), .key("models"), .key(name)]
        var seen: Set<String> = []
        for pattern in group.match {
            if ModelPattern(pattern) == nil {
                error(path + [.key("match")], "'\(pattern)' is not a model name or pattern: it needs a character other than *")
            } else if !seen.insert(pattern).inserted {
                error(path + [.key("match")], "lists '\(pattern)' twice")
            }
        }
        check(group.limits, provider: "\(provider).models.\(name)", path: path, reportEmpty: true)
    }

    /// The schedule's own rules (names, cron or dates present, …), reported at the entry.
    private mutating func checkRules(of schedule: PolicySchedule, path: [TOMLPathComponent]) {
        do {
            try schedule.validate()
        } catch {
            var where_ = path + [.key("schedule")]
            if let index = error.entryIndex { where_.append(.index(index)) }
            self.error(where_, error.message)
        }
    }

    /// Reads `[[limits.<provider>.schedule]]`: an array of entries, in precedence order.
    private mutating func readSchedule(
        _ table: KeyedDecodingContainer<AnyKey>, _ key: AnyKey, path: [TOMLPathComponent], ok: inout Bool
    ) -> [PolicyScheduleEntry]? {
        guard var list = try? table.nestedUnkeyedContainer(forKey: key) else {
            error(path, "must be an array of tables: write each entry as [[\(path.dottedKey)]]")
            ok = false
            return nil
        }
        var entries: [PolicyScheduleEntry] = []
        var index = 0
        while !list.isAtEnd {
            let entryPath = path + [.index(index)]
            index += 1
            guard let entryTable = try? list.nestedContainer(keyedBy: AnyKey.self) else {
                _ = try? list.decode(Skip.self)  // step over the element all the same
                error(entryPath, "must be a table with name, cron and/or dates, and caps")
                ok = false
                continue
            }
            if let entry = readEntry(entryTable, path: entryPath) { entries.append(entry) } else { ok = false }
        }
        return entries
    }

    private mutating func readEntry(_ table: KeyedDecodingContainer<AnyKey>, path: [TOMLPathComponent]) -> PolicyScheduleEntry? {
        var entry = PolicyScheduleEntry(name: "")
        var valid = true
        var hasName = false
        for key in table.allKeys {
            let keyPath = path + [.key(key.stringValue)]
            switch key.stringValue {
            case "name":
                hasName = true  // a name of the wrong type is reported once, as that
                if let name = readString(table, key, path: keyPath, what: "a string") {
                    entry.name = name
                } else {
                    valid = false
                }
            case "cron":
                guard let text = readString(table, key, path: keyPath, what: "a 5-field cron expression such as \"* 9-17 * * mon-fri\"")
                else { valid = false; continue }
                do {
                    entry.cron = try CronExpression(text)
                } catch {
                    self.error(keyPath, "invalid cron expression \"\(text)\": \(error)")
                    valid = false
                }
            case "dates":
                if let dates = readDates(table, key, path: keyPath) { entry.dates = dates } else { valid = false }
            case "closed":
                do {
                    entry.isClosed = try table.decode(Bool.self, forKey: key)
                } catch {
                    self.error(keyPath, "must be true or false")
                    valid = false
                }
            case "tiers":
                let what = "a table of tiers' caps, such as [limits.<provider>.schedule.tiers.free]"
                guard let tables = readCapTables(table, key, path: keyPath, what: what) else {
                    valid = false
                    continue
                }
                for (name, tierPath, limits) in tables {
                    check(tier: limits, provider: entry.name, path: tierPath)
                    entry.tierLimits[name] = limits
                    entryTierPaths[name, default: []].append(tierPath)
                }
            default:
                readCap(table, key, path: keyPath, into: &entry.limits, known: Self.entryKeys)
            }
        }
        if !hasName {
            error(path, "needs a name (name = \"peak\"), shown in readouts and in \"closed by schedule\" errors")
            valid = false
        }
        check(entry.limits, provider: entry.name, path: path, reportEmpty: false)
        if !entry.isClosed, entry.limits.isUnlimited, valid {
            warning(path, "sets no caps and is not closed: while it applies the base limits hold and later entries are skipped")
        }
        return valid ? entry : nil
    }

    /// `dates = ["2026-12-25", …]`, as strings or as TOML local dates (`2026-12-25` unquoted).
    private mutating func readDates(
        _ table: KeyedDecodingContainer<AnyKey>, _ key: AnyKey, path: [TOMLPathComponent]
    ) -> [LocalDate]? {
        guard var list = try? table.nestedUnkeyedContainer(forKey: key) else {
            error(path, "must be an array of dates such as [\"2026-12-25\"]")
            return nil
        }
        var dates: [LocalDate] = []
        var valid = true
        var index = 0
        while !list.isAtEnd {
            let datePath = path + [.index(index)]
            index += 1
            if let text = try? list.decode(String.self) {
                do {
                    dates.append(try LocalDate(text))
                } catch {
                    self.error(datePath, "invalid date \"\(text)\": \(error)")
                    valid = false
                }
            } else if let date = try? list.decode(TOMLLocalDate.self) {
                do {
                    dates.append(try LocalDate(year: date.year, month: date.month, day: date.day))
                } catch {
                    self.error(datePath, "invalid date \(date): \(error)")
                    valid = false
                }
            } else {
                _ = try? list.decode(Skip.self)
                error(datePath, "must be a date such as \"2026-12-25\"")
                valid = false
            }
        }
        return valid ? dates : nil
    }

    /// Reads one provider's caps. Used by `PolicyLimits(from:)`.
    mutating func readLimits(_ caps: KeyedDecodingContainer<AnyKey>, path: [TOMLPathComponent]) -> PolicyLimits {
        var limits = PolicyLimits()
        for key in caps.allKeys {
            readCap(
                caps, key, path: path + [.key(key.stringValue)], into: &limits,
                known: PolicyLimits.configurationKeyNames + PolicyLimits.providerSettingKeys + PolicyLimits.costKeyNames
                    + [PolicyLimits.pricesKey])
        }
        check(limits, provider: "", path: path, reportEmpty: false)
        return limits
    }

    /// One cap key, or an unknown key reported with the closest of `known`.
    private mutating func readCap(
        _ table: KeyedDecodingContainer<AnyKey>, _ key: AnyKey, path: [TOMLPathComponent],
        into limits: inout PolicyLimits, known: [String]
    ) {
        if key.stringValue == PolicyLimits.countCacheReadsKey, known.contains(PolicyLimits.countCacheReadsKey) {
            do {
                limits.countsCacheReads = try table.decode(Bool.self, forKey: key)
            } catch {
                self.error(path, "must be true or false")
            }
            return
        }
        if key.stringValue == PolicyLimits.reservedForInteractiveKey, known.contains(PolicyLimits.reservedForInteractiveKey) {
            let what = "a share of every cap in 0 ..< 1, such as 0.2"
            if let share = readNumber(table, key) {
                if share >= 0 && share < 1 { limits.reservedForInteractive = share } else { error(path, "must be \(what), got \(share)") }
            } else {
                error(path, "must be \(what)")
            }
            return
        }
        if key.stringValue == PolicyLimits.batchAgingKey, known.contains(PolicyLimits.batchAgingKey) {
            let most = Int(PolicyLimits.maximumBatchAging.components.seconds)
            let what = "a positive number of seconds, at most \(most)"
            if let seconds = readNumber(table, key) {
                if seconds > 0 && seconds <= Double(most) {
                    limits.batchAging = .nanoseconds(Int64((seconds * 1e9).rounded()))
                } else {
                    error(path, "must be \(what), got \(seconds)")
                }
            } else {
                error(path, "must be \(what)")
            }
            return
        }
        if let cap = PolicyCostCap.allCases.first(where: { $0.configurationKey == key.stringValue }), known.contains(key.stringValue) {
            if let amount = readAmount(table, key, path: path, positive: true) { limits[cost: cap] = amount }
            return
        }
        if key.stringValue == PolicyLimits.pricesKey, known.contains(PolicyLimits.pricesKey) {
            limits.prices = readPrices(table, key, path: path)
            return
        }
        guard let kind = PolicyLimits.configurationKeys[key.stringValue] else {
            unknownKey(key.stringValue, path: path, known: known)
            return
        }
        do {
            limits[kind] = try table.decode(Int.self, forKey: key)
        } catch let decoding as DecodingError {
            error(path, "must be a positive whole number (\(Self.reason(decoding)))")
        } catch {
            self.error(path, "must be a positive whole number (\(error))")
        }
    }

    /// An amount of money, exactly: a whole number, a float of at most six decimals (checked
    /// on the value read back: any literal of at most 15 significant digits is read exactly),
    /// or a string such as `"2.50"`. Anything it cannot count exactly in micro-units is an error.
    private mutating func readAmount(
        _ table: KeyedDecodingContainer<AnyKey>, _ key: AnyKey, path: [TOMLPathComponent], positive: Bool
    ) -> PolicyMoney? {
        let form = "an amount such as 2.50 (at most 6 decimals, at most \(PolicyMoney.maximum))"
        var amount: PolicyMoney?
        if let whole = try? table.decode(Int.self, forKey: key) {
            if whole < 0 {
                error(path, "must be \(positive ? "positive" : "0 or more"), got \(whole)")
                return nil
            }
            if whole <= PolicyMoney.maximum.microUnits / 1_000_000 { amount = PolicyMoney(units: whole) }
        } else if let text = try? table.decode(String.self, forKey: key) {
            guard let micro = PolicyMoney.microUnits(exactly: text) else {
                error(path, "must be \(form): \(PolicyMoney.problem(with: text))")
                return nil
            }
            amount = PolicyMoney(microUnits: micro)
        } else if let number = try? table.decode(Double.self, forKey: key) {
            if number < 0 {
                error(path, "must be \(positive ? "positive" : "0 or more"), got \(number)")
                return nil
            }
            guard let micro = PolicyMoney.microUnits(exactly: number) else {
                error(
                    path,
                    "\(number) cannot be counted exactly: write \(form), or the amount as a string such as \"0.0000025\" (amounts are kept in micro-units, millionths)"
                )
                return nil
            }
            amount = PolicyMoney(microUnits: micro)
        } else {
            error(path, "must be \(form)")
            return nil
        }
        guard let amount, amount <= PolicyMoney.maximum else {
            error(path, "must be at most \(PolicyMoney.maximum)")
            return nil
        }
        if positive && amount.microUnits == 0 {
            error(path, "must be positive, got 0; leave the key out for no cap")
            return nil
        }
        return amount
    }

    static let priceKeys = ["input", "output", "cache_read"]

    /// Reads `[limits.<provider>.prices."<model or pattern>"]` tables: `input`, `output` and
    /// optionally `cache_read`, per million tokens.
    private mutating func readPrices(
        _ table: KeyedDecodingContainer<AnyKey>, _ key: AnyKey, path: [TOMLPathComponent]
    ) -> [String: PolicyModelPrice] {
        guard let models = nested(table, key, path: path, what: "a table of models, such as [limits.openai.prices.\"gpt-4o*\"]")
        else { return [:] }
        var prices: [String: PolicyModelPrice] = [:]
        for model in models.allKeys {
            let name = model.stringValue
            let modelPath = path + [.key(name)]
            guard let parts = nested(models, model, path: modelPath, what: "a table with input and output prices per million tokens")
            else { continue }
            if name.isEmpty {
                error(modelPath, "must name a model or a pattern such as \"gpt-4o*\" (\"*\" prices every other model)")
                continue
            }
            var input: PolicyMoney?, output: PolicyMoney?, cacheRead: PolicyMoney?
            var valid = true
            for part in parts.allKeys {
                let partPath = modelPath + [.key(part.stringValue)]
                switch part.stringValue {
                case "input": input = readAmount(parts, part, path: partPath, positive: false); valid = valid && input != nil
                case "output": output = readAmount(parts, part, path: partPath, positive: false); valid = valid && output != nil
                case "cache_read": cacheRead = readAmount(parts, part, path: partPath, positive: false); valid = valid && cacheRead != nil
                default:
                    unknownKey(part.stringValue, path: partPath, known: Self.priceKeys)
                    valid = false
                }
            }
            for (part, value) in [("input", input), ("output", output)] where value == nil && valid {
                error(modelPath + [.key(part)], "is missing: a price needs input and output per million tokens")
                valid = false
            }
            if valid, let input, let output { prices[name] = PolicyModelPrice(input: input, output: output, cacheRead: cacheRead) }
        }
        return prices
    }

    /// A number written as an integer or a float; `nil` for anything else, or a non-finite float.
    private func readNumber(_ table: KeyedDecodingContainer<AnyKey>, _ key: AnyKey) -> Double? {
        if let whole = try? table.decode(Int.self, forKey: key) { return Double(whole) }
        guard let number = try? table.decode(Double.self, forKey: key), number.isFinite else { return nil }
        return number
    }

    private mutating func readString(
        _ table: KeyedDecodingContainer<AnyKey>, _ key: AnyKey, path: [TOMLPathComponent], what: String
    ) -> String? {
        do {
            return try table.decode(String.self, forKey: key)
        } catch {
            self.error(path, "must be \(what)")
            return nil
        }
    }

    static let providerKeys =
        PolicyLimits.configurationKeyNames + PolicyLimits.providerSettingKeys + PolicyLimits.costKeyNames
        + [
            PolicyLimits.pricesKey, "timezone", "schedule", "store", "on_store_failure", "feedback_scope", "adaptive", "per", "models",
            "tiers", "scopes",
        ]
    static let levelKeys = PolicyLimits.configurationKeyNames + [PolicyLimits.countCacheReadsKey] + PolicyLimits.costKeyNames
    static let entryKeys = ["name", "cron", "dates", "closed", "tiers"] + PolicyLimits.configurationKeyNames

    /// Ranges and contradictions of one provider's caps.
    mutating func check(_ limits: PolicyLimits, provider: String, path: [TOMLPathComponent], reportEmpty: Bool) {
        for kind in PolicyLimitKind.allCases {
            guard let cap = limits[kind] else { continue }
            let capPath = path + [.key(kind.configurationKey)]
            if cap <= 0 {
                error(capPath, "must be positive, got \(cap); leave the key out for no cap")
            } else if kind.isRequestCap, cap > PolicyLimits.maximumRequestCap {
                error(capPath, "is \(cap); the largest request cap supported is \(PolicyLimits.maximumRequestCap)")
            }
        }
        if reportEmpty, limits.isUnlimited {
            warning(path, "has no caps, so '\(provider)' is not gated")
        }
        let permille = Int64(limits.reservePermille)
        if permille > 0 {
            // A cap so small that its reserve takes all of it: batch calls get none of it until
            // promoted. Legal (the reserve is never rounded down), but worth knowing.
            for kind in PolicyLimitKind.allCases {
                guard let cap = limits[kind].map(Int64.init), cap > 0, cap - (cap * permille + 999) / 1_000 <= 0 else { continue }
                warning(
                    path + [.key(PolicyLimits.reservedForInteractiveKey)],
                    "leaves batch calls none of \(kind.configurationKey) = \(cap): they are admitted only once promoted by batch_aging_seconds"
                )
            }
        }
        // A shorter window's cap above a longer one's can never be reached: the longer cap
        // binds first. Legal, but almost always a typo or a unit mix-up.
        for resource in [\PolicyLimitKind.isRequestCap, \PolicyLimitKind.isTokenCap] {
            let kinds = PolicyLimitKind.allCases.filter { $0[keyPath: resource] }  // minute, hour, day
            for (index, shorter) in kinds.enumerated() {
                for longer in kinds[(index + 1)...] {
                    guard let small = limits[shorter], let large = limits[longer], small > 0, large > 0,
                        small > large
                    else { continue }
                    warning(
                        path + [.key(shorter.configurationKey)],
                        "\(shorter.configurationKey) = \(small) can never be reached: \(longer.configurationKey) = \(large) is lower")
                }
            }
        }
    }

    // MARK: Containers

    private mutating func container(
        _ decoder: any Decoder, path: [TOMLPathComponent], what: String
    ) -> KeyedDecodingContainer<AnyKey>? {
        do {
            return try decoder.container(keyedBy: AnyKey.self)
        } catch {
            self.error(path, "must be \(what)")
            return nil
        }
    }

    private mutating func nested(
        _ parent: KeyedDecodingContainer<AnyKey>, _ key: AnyKey, path: [TOMLPathComponent], what: String
    ) -> KeyedDecodingContainer<AnyKey>? {
        do {
            return try parent.nestedContainer(keyedBy: AnyKey.self, forKey: key)
        } catch {
            self.error(path, "must be \(what)")
            return nil
        }
    }

    // MARK: Reporting

    private mutating func error(_ path: [TOMLPathComponent], _ message: String) {
        diagnostics.append(.init(.error, path: path, message: message))
    }

    private mutating func warning(_ path: [TOMLPathComponent], _ message: String) {
        diagnostics.append(.init(.warning, path: path, message: message))
    }

    private mutating func unknownKey(_ key: String, path: [TOMLPathComponent], known: [String]) {
        diagnostics.append(
            .init(
                .error, path: path, message: "unknown key", suggestion: Self.suggestion(for: key, among: known)))
    }

    /// What a decoding error says, without the coding path the diagnostic already shows.
    private static func reason(_ error: DecodingError) -> String {
        switch error {
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context),
            .keyNotFound(_, let context):
            context.debugDescription
        @unknown default:
            "\(error)"
        }
    }

    /// The known key a user most likely meant: the same words in another case or separator
    /// style, a common abbreviation, or the closest spelling within a few edits.
    static func suggestion(for key: String, among known: [String]) -> String? {
        let normalized = key.lowercased().filter { $0.isLetter || $0.isNumber }
        if let match = known.first(where: { $0.lowercased().filter { $0.isLetter || $0.isNumber } == normalized }) {
            return match
        }
        if let alias = aliases[normalized], known.contains(alias) { return alias }
        let scored = known.map { ($0, editDistance(key.lowercased(), $0)) }.min { $0.1 < $1.1 }
        guard let (best, distance) = scored, distance <= max(2, best.count / 3) else { return nil }
        return best
    }

    private static let aliases: [String: String] = [
        "rpm": "requests_per_minute", "rph": "requests_per_hour", "rpd": "requests_per_day",
        "tpm": "tokens_per_minute", "tph": "tokens_per_hour", "tpd": "tokens_per_day",
        "itpm": "input_tokens_per_minute", "otpm": "output_tokens_per_minute",
        "concurrency": "max_concurrent", "maxconcurrency": "max_concurrent", "concurrent": "max_concurrent",
        "budget": "cost_per_month", "monthlybudget": "cost_per_month", "costpermonth": "cost_per_month",
        "dailybudget": "cost_per_day", "price": "prices", "cacheread": "cache_read", "cached": "cache_read",
        "limit": "limits",
        "holdwarning": "permit_hold_warning", "permithold": "permit_hold_warning", "holdtimeout": "permit_hold_warning",
    ]

    /// Levenshtein distance over Unicode scalars.
    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a.unicodeScalars), b = Array(b.unicodeScalars)
        guard !a.isEmpty else { return b.count }
        guard !b.isEmpty else { return a.count }
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            swap(&previous, &current)
        }
        return previous[b.count]
    }
}

/// Any string key: lets the reader see every key a document has.
struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

/// Decodes anything and keeps nothing: steps an unkeyed container over a bad element.
private struct Skip: Decodable {
    init(from decoder: any Decoder) throws {}
}

extension ConfigurationReader {
    /// Checks a hold warning set in code, as decoding would have: positive.
    mutating func check(permitHoldWarning: Duration?) {
        guard let threshold = permitHoldWarning, threshold <= .zero else { return }
        diagnostics.append(
            .init(
                .error, path: [.key("gate"), .key("permit_hold_warning")],
                message: "must be positive, got \(threshold); leave it nil for no warning"))
    }

    /// Checks a provider built in code, as decoding would have: caps, schedule entries' caps,
    /// and the schedule's own rules.
    mutating func check(_ limits: PolicyLimits, schedule: PolicySchedule?, provider: String) {
        let path: [TOMLPathComponent] = [.key("limits"), .key(provider)]
        if provider.isEmpty { diagnostics.append(.init(.error, path: path, message: "a provider name must not be empty")) }
        check(limits, provider: provider, path: path, reportEmpty: schedule == nil)
        guard let schedule else { return }
        for (index, entry) in schedule.entries.enumerated() {
            check(entry.limits, provider: entry.name, path: path + [.key("schedule"), .index(index)], reportEmpty: false)
        }
        checkRules(of: schedule, path: path)
    }
}
