import Foundation
import PolicyGate
import PolicyGateTestKit
import Testing

/// `[store]`, `[store.postgres]` and a provider's `store` / `on_store_failure`: where each
/// provider's counters live, and what the reader refuses.
@Suite("Reading where counters are kept ([store], [store.postgres])")
struct StoreConfigurationTests {
    static let postgres = PolicyStorage.Store.postgres
    static let memory = PolicyStorage.Store.memory

    /// Every `[store.postgres]` field, set.
    static let allPostgresFields = """
        [store.postgres]
        url = "postgres://gate@db:5432/app"
        host = "db"
        port = 5432
        user = "gate"
        database = "app"
        password_env = "GATE_PW"
        lease_seconds = 30
        timeout_ms = 2000
        retry_seconds = 60
        max_connections = 10
        tls = "verify-ca"
        tls_root_cert = "/etc/ssl/db-ca.pem"
        """

    static let allPostgresSettings = PolicyPostgresSettings(
        url: "postgres://gate@db:5432/app", host: "db", port: 5432, user: "gate", database: "app",
        passwordEnvironmentVariable: "GATE_PW", leaseSeconds: 30, timeoutMilliseconds: 2000, retrySeconds: 60,
        maxConnections: 10, tls: .verifyCA, tlsRootCertificate: "/etc/ssl/db-ca.pem")

    /// The errors of a document that must not load, as `line:column keyPath suggestion`.
    static func errors(_ text: String) throws -> (error: PolicyConfigurationError, summary: [String]) {
        let error = try #require(throws: PolicyConfigurationError.self) { try PolicyConfiguration(toml: text) }
        let summary = error.errors.map { "\($0.line ?? 0):\($0.column ?? 0) \($0.keyPath) \($0.suggestion ?? "")" }
        return (error, summary)
    }

    // MARK: Defaults and resolution

    @Test("without [store] every provider is kept in memory and fails closed")
    func defaultsWithoutStoreTable() throws {
        let configuration = try PolicyConfiguration(
            toml: """
                [limits.openai]
                requests_per_minute = 5
                """)
        #expect(configuration.storage.isEmpty)
        #expect(configuration.defaultStorage == .memory)
        #expect(configuration.defaultStorage.store == Self.memory)
        #expect(configuration.defaultStorage.failurePolicy == .failClosed)
        #expect(configuration.postgres == nil)
        #expect(configuration.storage(for: "openai") == PolicyStorage(store: Self.memory, failurePolicy: .failClosed))
        #expect(configuration.storage(for: "never-configured") == .memory)
        #expect(configuration.warnings.isEmpty)

        // An empty [store] table changes nothing; an empty [store.postgres] is present but empty.
        let empty = try PolicyConfiguration(toml: "[store]\n[limits.openai]\nrequests_per_minute = 5\n")
        #expect(empty.defaultStorage == .memory)
        #expect(empty.storage.isEmpty)
        #expect(empty.postgres == nil)
        let emptyPostgres = try PolicyConfiguration(toml: "[store.postgres]\n")
        #expect(emptyPostgres.postgres == PolicyPostgresSettings())
        #expect(emptyPostgres.defaultStorage == .memory)
    }

    /// The same document with `[store]` first and with `[store]` after the provider tables.
    static let resolutionDocuments: [String] = {
        let store = """
            [store]
            default = "postgres"
            on_failure = "fail_open"

            """
        let limits = """
            [limits.openai]
            requests_per_minute = 5
            store = "memory"
            on_store_failure = "fail_closed"

            [limits.anthropic]
            requests_per_minute = 7
            on_store_failure = "fail_closed"

            [limits.local]
            max_concurrent = 1

            """
        return [store + limits, limits + store]
    }()

    @Test(
        "[store].default and on_failure under each provider's own store and on_store_failure, in either order",
        arguments: resolutionDocuments)
    func defaultAndOverrides(text: String) throws {
        let configuration = try PolicyConfiguration(toml: text)
        #expect(configuration.defaultStorage == PolicyStorage(store: Self.postgres, failurePolicy: .failOpen))
        #expect(
            configuration.storage == [
                // Both set: the provider's own choice.
                "openai": PolicyStorage(store: Self.memory, failurePolicy: .failClosed),
                // Only the failure policy set: the store comes from [store].default.
                "anthropic": PolicyStorage(store: Self.postgres, failurePolicy: .failClosed),
            ])
        // Neither set: not listed, and resolved to the defaults.
        #expect(configuration.storage["local"] == nil)
        #expect(configuration.storage(for: "local") == PolicyStorage(store: Self.postgres, failurePolicy: .failOpen))
        #expect(configuration.storage(for: "openai") == PolicyStorage(store: Self.memory, failurePolicy: .failClosed))
        #expect(configuration.limits["openai"] == PolicyLimits(requestsPerMinute: 5))
        #expect(configuration.warnings.isEmpty)
    }

    @Test("a provider that sets only `store` takes [store].on_failure, whichever table comes first")
    func failurePolicyDefaultForStoreOnly() throws {
        let store = "[store]\non_failure = \"fail_open\"\n"
        let limits = """
            [limits.shared]
            requests_per_minute = 5
            store = "postgres"

            [limits.local]
            requests_per_minute = 5
            store = "memory"

            """
        for text in [store + limits, limits + store] {
            let configuration = try PolicyConfiguration(toml: text)
            #expect(configuration.defaultStorage == PolicyStorage(store: Self.memory, failurePolicy: .failOpen))
            #expect(configuration.storage["shared"] == PolicyStorage(store: Self.postgres, failurePolicy: .failOpen))
            #expect(configuration.storage["local"] == PolicyStorage(store: Self.memory, failurePolicy: .failOpen))
        }
        // Without [store].on_failure the default is fail_closed.
        let closed = try PolicyConfiguration(toml: limits)
        #expect(closed.storage["shared"] == PolicyStorage(store: Self.postgres, failurePolicy: .failClosed))
        #expect(closed.storage["shared"]?.description == "postgres (fail_closed)")
    }

    @Test("every [store.postgres] field is read")
    func everyPostgresField() throws {
        let configuration = try PolicyConfiguration(toml: Self.allPostgresFields)
        let settings = try #require(configuration.postgres)
        #expect(settings.url == "postgres://gate@db:5432/app")
        #expect(settings.host == "db")
        #expect(settings.port == 5432)
        #expect(settings.user == "gate")
        #expect(settings.database == "app")
        #expect(settings.passwordEnvironmentVariable == "GATE_PW")
        #expect(settings.leaseSeconds == 30)
        #expect(settings.timeoutMilliseconds == 2000)
        #expect(settings.retrySeconds == 60)
        #expect(settings.maxConnections == 10)
        #expect(settings.tls == .verifyCA)
        #expect(settings.tlsRootCertificate == "/etc/ssl/db-ca.pem")
        #expect(settings == Self.allPostgresSettings)
        #expect(configuration.warnings.isEmpty)
        // Settings alone do not move anyone to PostgreSQL.
        #expect(configuration.defaultStorage == .memory)
    }

    // MARK: Errors

    @Test("a password key in [store.postgres] is an error at its line and column, without echoing it")
    func passwordKey() throws {
        let (error, summary) = try Self.errors(
            """
            [store]
            default = "postgres"

            [store.postgres]
            host = "db"
              password = "hunter2"
            """)
        #expect(summary == ["6:3 store.postgres.password "])
        let diagnostic = try #require(error.errors.first)
        #expect(diagnostic.message.contains("password_env"))
        #expect(!error.description.contains("hunter2"))
    }

    @Test(
        "a URL with a password is an error at its line and column, without echoing it",
        arguments: [
            "postgres://gate:hunter2@db:5432/app", "postgresql://gate:hunter2@db/app", "postgres://:hunter2@db/app",
        ])
    func urlWithPassword(url: String) throws {
        let (error, summary) = try Self.errors(
            """
            [store.postgres]
            host = "db"
            url = "\(url)"
            """)
        #expect(summary == ["3:1 store.postgres.url "])
        #expect(error.errors.first?.message.contains("password") == true)
        #expect(!error.description.contains("hunter2"))
    }

    /// BUG (reader): `PolicyPostgresSettings.urlHasPassword` asks `URLComponents` only. A
    /// password in libpq's `password` query parameter passes, and so does any URL
    /// `URLComponents` cannot parse (it returns `nil`, read as "no password").
    @Test(
        "a password hidden where URLComponents does not see it is an error too",
        arguments: [
            "postgres://gate@db:5432/app?password=hunter2",
            "postgres://gate:hunter2@db:notaport/app",
            "postgres://gate:hunter2@[::1/app",
        ])
    func urlWithHiddenPassword(url: String) throws {
        let error = try #require(throws: PolicyConfigurationError.self) {
            try PolicyConfiguration(toml: "[store.postgres]\nurl = \"\(url)\"\n")
        }
        #expect(error.errors.map(\.keyPath) == ["store.postgres.url"])
    }

    @Test("an unknown store name is an error at the key, in a provider and in [store]")
    func unknownStoreName() throws {
        let (error, summary) = try Self.errors(
            """
            [limits.openai]
            requests_per_minute = 5
            store = "redis"

            [store]
                default = "redis"
            """)
        #expect(summary == ["3:1 limits.openai.store ", "6:5 store.default "])
        for diagnostic in error.errors {
            #expect(diagnostic.message.contains("\"memory\" or \"postgres\""))
            #expect(diagnostic.message.contains("redis"))
        }
    }

    @Test("a failure policy other than fail_open or fail_closed is an error at the key")
    func badFailurePolicy() throws {
        let (error, summary) = try Self.errors(
            """
            [store]
            on_failure = "open"

            [limits.openai]
            requests_per_minute = 5
              on_store_failure = "fail_soft"
            """)
        #expect(summary == ["2:1 store.on_failure ", "6:3 limits.openai.on_store_failure "])
        #expect(error.errors.allSatisfy { $0.message.contains("\"fail_open\" or \"fail_closed\"") })
        #expect(error.errors.last?.message.contains("fail_soft") == true)
    }

    @Test("timeout_ms must be a positive whole number", arguments: ["0", "-250", "2.5", "\"2000\""])
    func nonPositiveTimeout(value: String) throws {
        let (error, summary) = try Self.errors(
            """
            [store.postgres]
            host = "db"
                timeout_ms = \(value)
            """)
        #expect(summary == ["3:5 store.postgres.timeout_ms "])
        #expect(error.errors.first?.message.hasPrefix("must be a positive number of milliseconds") == true)
    }

    @Test("every count in [store.postgres] must be positive")
    func everyCountPositive() throws {
        for key in ["port", "lease_seconds", "timeout_ms", "retry_seconds", "max_connections"] {
            let (_, summary) = try Self.errors("[store.postgres]\n\(key) = 0\n")
            #expect(summary == ["2:1 store.postgres.\(key) "], "\(key)")
        }
    }

    @Test("tls must be one of libpq's sslmode names (allow is not offered)", arguments: ["allow", "verify_full", "on"])
    func tlsModeNames(_ value: String) throws {
        let (error, summary) = try Self.errors("[store.postgres]\ntls = \"\(value)\"\n")
        #expect(summary == ["2:1 store.postgres.tls "])
        #expect(error.errors.first?.message.contains("\"verify-full\"") == true)
        for mode in PolicyPostgresSettings.TLSMode.allCases {
            #expect(try PolicyConfiguration(toml: "[store.postgres]\ntls = \"\(mode.rawValue)\"\n").postgres?.tls == mode)
        }
    }

    @Test("an unknown key in [store.postgres] or [store] is an error with a did-you-mean")
    func unknownKeys() throws {
        let (error, summary) = try Self.errors(
            """
            [store]
            defualt = "postgres"

            [store.postgres]
            host = "db"
            timeout_msec = 2000
            """)
        #expect(summary == ["2:1 store.defualt default", "6:1 store.postgres.timeout_msec timeout_ms"])
        #expect(
            error.errors.last?.description
                == "6:1: error: store.postgres.timeout_msec: unknown key; did you mean 'timeout_ms'?")
    }

    @Test("`store` given as a table in a provider is an error at the key, in TOML and in JSON")
    func storeAsTable() throws {
        let header = try Self.errors(
            """
            [limits.openai]
            requests_per_minute = 5

            [limits.openai.store]
            default = "postgres"
            """)
        #expect(header.summary == ["4:1 limits.openai.store "])
        #expect(header.error.errors.first?.message.contains("\"memory\" or \"postgres\"") == true)

        let inline = try Self.errors(
            """
            [limits.openai]
            requests_per_minute = 5
              store = { name = "postgres" }
            """)
        #expect(inline.summary == ["3:3 limits.openai.store "])

        let json = try #require(throws: PolicyConfigurationError.self) {
            try PolicyConfiguration(json: Data(#"{"limits": {"openai": {"store": {"name": "postgres"}}}}"#.utf8))
        }
        #expect(json.errors.map(\.keyPath) == ["limits.openai.store"])
    }

    @Test("every store problem at once, in document order, [store] after [limits]")
    func everyProblemAtOnce() throws {
        let (error, summary) = try Self.errors(
            """
            [limits.openai]
            requests_per_minute = 5
            store = "redis"
            on_store_failure = "fail_soft"

            [store]
            default = "postgres"

            [store.postgres]
            url = "postgres://gate:hunter2@db/app"
            password = "hunter2"
            timeout_ms = 0
            """)
        #expect(
            summary == [
                "3:1 limits.openai.store ",
                "4:1 limits.openai.on_store_failure ",
                "10:1 store.postgres.url ",
                "11:1 store.postgres.password ",
                "12:1 store.postgres.timeout_ms ",
            ])
        #expect(!error.description.contains("hunter2"))
    }

    // MARK: Round trip

    @Test("a configuration encoded to JSON reads back with its storage, default and postgres settings")
    func jsonRoundTrip() throws {
        let shared = try PolicyConfiguration(
            toml: """
                [store]
                default = "postgres"
                on_failure = "fail_open"

                \(Self.allPostgresFields)

                [limits.openai]
                requests_per_minute = 5
                store = "memory"

                [limits.anthropic]
                tokens_per_minute = 1_000
                on_store_failure = "fail_closed"

                [limits.local]
                max_concurrent = 2
                """)
        // Only failure policy differs from the default, no postgres settings; and a provider
        // that names the default store explicitly (it stays listed).
        var local = PolicyConfiguration(limits: ["a": PolicyLimits(maxConcurrent: 1), "b": PolicyLimits(maxConcurrent: 1)])
        local.defaultStorage = PolicyStorage(store: Self.memory, failurePolicy: .failOpen)
        local.storage["a"] = .memory

        for original in [shared, local] {
            let data = try JSONEncoder().encode(original)
            let read = try PolicyConfiguration(json: data)
            #expect(read.storage == original.storage)
            #expect(read.defaultStorage == original.defaultStorage)
            #expect(read.postgres == original.postgres)
            #expect(read.limits == original.limits)
            #expect(read == original)
            let decoded = try JSONDecoder().decode(PolicyConfiguration.self, from: data)
            #expect(decoded == original)
        }
        #expect(shared.storage.count == 2)
        #expect(shared.postgres == Self.allPostgresSettings)
        #expect(local.storage == ["a": .memory])
    }

    @Test("JSON errors in [store.postgres] carry key paths but no line")
    func jsonErrors() throws {
        let error = try #require(throws: PolicyConfigurationError.self) {
            try PolicyConfiguration(json: Data(#"{"store": {"postgres": {"password": "hunter2", "timeout_ms": 0}}}"#.utf8))
        }
        #expect(Set(error.errors.map(\.keyPath)) == ["store.postgres.password", "store.postgres.timeout_ms"])
        #expect(error.errors.allSatisfy { $0.line == nil && $0.column == nil })
        #expect(!error.description.contains("hunter2"))
    }

    // MARK: A gate without a store

    static let sharedDocuments = [
        // The provider names PostgreSQL itself.
        "[limits.openai]\nrequests_per_minute = 5\nstore = \"postgres\"\n\n[limits.local]\nrequests_per_minute = 5\n",
        // The provider inherits it from [store].default (and `local` opts out).
        "[store]\ndefault = \"postgres\"\n\n[limits.openai]\nrequests_per_minute = 5\n\n"
            + "[limits.local]\nrequests_per_minute = 5\nstore = \"memory\"\n",
    ]

    @Test("a gate without a store refuses a shared provider with invalidArgument", arguments: sharedDocuments)
    func serviceRefusesSharedProvider(text: String) throws {
        let configuration = try PolicyConfiguration(toml: text)
        let errors = [
            #expect(throws: PolicyError.self) { try PolicyService(configuration: configuration) },
            #expect(throws: PolicyError.self) { try PolicyService(configuration: configuration, store: nil) },
            #expect(throws: PolicyError.self) { try PolicyService(configuration: configuration, clock: ManualClock()) },
            #expect(throws: PolicyError.self) {
                try PolicyService(configuration: configuration, store: nil, clock: ManualClock())
            },
        ]
        for error in errors {
            let error = try #require(error)
            #expect(error.code == .invalidArgument)
            #expect(error.message.contains("'openai'"))
            #expect(!error.message.contains("'local'"))
        }
    }

    @Test("a gate without a store accepts a configuration kept all in memory, and gates it")
    func serviceAcceptsAllMemory() throws {
        let configuration = try PolicyConfiguration(
            toml: """
                [store]
                default = "memory"
                on_failure = "fail_open"

                [store.postgres]
                host = "db"

                [limits.openai]
                requests_per_minute = 1
                store = "memory"
                on_store_failure = "fail_closed"

                [limits.local]
                requests_per_minute = 1
                """)
        for gate in [
            try PolicyService(configuration: configuration, clock: ManualClock()),
            try PolicyService(configuration: configuration, store: nil, clock: ManualClock()),
        ] {
            for provider in ["openai", "local"] {
                let key = PolicyKey(provider: provider, scope: .user("u"))
                _ = try gate.tryAcquire(key)
                let refused = #expect(throws: PolicyError.self) { _ = try gate.tryAcquire(key) }
                #expect(refused?.code == .rateLimited)
            }
        }
        _ = try PolicyService(configuration: configuration)
    }

    @Test("applying a shared provider to a gate without a store is refused")
    func applyRefusesSharedProvider() async throws {
        let gate = try PolicyService(
            configuration: PolicyConfiguration(toml: "[limits.openai]\nrequests_per_minute = 5\n"), clock: ManualClock())
        let own = await #expect(throws: PolicyError.self) {
            try await gate.apply(PolicyConfiguration(toml: Self.sharedDocuments[0]))
        }
        #expect(own?.code == .invalidArgument)
        #expect(gate.configuration.storage.isEmpty)
    }

    /// BUG (service): `apply` checks `configuration.storage` (providers that name their own
    /// store) instead of every provider's resolved `storage(for:)`, so a provider shared only
    /// through `[store].default` is accepted; the next `acquire` of it traps on
    /// `core.shared!` in `PolicyService.acquireShared`.
    @Test("applying a provider shared through [store].default to a gate without a store is refused")
    func applyRefusesDefaultSharedProvider() async throws {
        let gate = try PolicyService(
            configuration: PolicyConfiguration(toml: "[limits.openai]\nrequests_per_minute = 5\n"), clock: ManualClock())
        let configuration = try PolicyConfiguration(toml: Self.sharedDocuments[1])
        let error = await #expect(throws: PolicyError.self) { try await gate.apply(configuration) }
        #expect(error?.code == .invalidArgument)
        #expect(gate.configuration.storage.isEmpty)
    }

    // MARK: Description

    @Test("PolicyPostgresSettings has no password field and its description lists password_env by name")
    func descriptionHasNoPassword() throws {
        let settings = Self.allPostgresSettings
        #expect(
            settings.description == "url = postgres://gate@db:5432/app, host = db, port = 5432, user = gate, "
                + "database = app, password_env = GATE_PW, lease_seconds = 30, timeout_ms = 2000, retry_seconds = 60, "
                + "max_connections = 10, tls = verify-ca, tls_root_cert = /etc/ssl/db-ca.pem")
        #expect(PolicyPostgresSettings().description == "")
        #expect(PolicyPostgresSettings(passwordEnvironmentVariable: "PGPASSWORD").description == "password_env = PGPASSWORD")

        let labels = Mirror(reflecting: settings).children.compactMap(\.label)
        #expect(labels.count == 12)
        #expect(labels.filter { $0.lowercased().contains("password") } == ["passwordEnvironmentVariable"])

        let read = try #require(try PolicyConfiguration(toml: Self.allPostgresFields).postgres)
        #expect(read.description.contains("password_env = GATE_PW"))
        #expect(!read.description.contains("password ="))
    }

    /// BUG (settings): the reader refuses a URL with a password, but settings built in code
    /// (or decoded with `JSONDecoder` as `PolicyPostgresSettings` alone) keep one, and
    /// `description`, "printed and logged freely", shows it.
    @Test("a password in a URL built in code does not reach the description")
    func descriptionHidesURLPassword() {
        let settings = PolicyPostgresSettings(url: "postgres://gate:hunter2@db:5432/app", host: "db")
        #expect(!settings.description.contains("hunter2"))
        #expect(settings.description.contains("host = db"))
    }
}
