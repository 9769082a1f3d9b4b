#if Postgres
import Foundation
import Logging
import PolicyGate
import PolicyGatePostgres
import PolicyGateTestKit
import PostgresNIO
import Testing

/// The PostgreSQL server the tests use, as `.ci/postgres.sh start` exports it:
/// `POLICYGATE_POSTGRES_URL` (the application's role, over TLS, its password in `PGPASSWORD`),
/// `POLICYGATE_POSTGRES_OWNER_URL` (the schema's owner, which runs the migrations; password in
/// `POLICYGATE_POSTGRES_OWNER_PASSWORD`), `POLICYGATE_POSTGRES_ADMIN_URL` (a superuser, for
/// the tests' setup and checks) and `POLICYGATE_POSTGRES_PLAIN_URL` (a server without TLS).
///
/// Without a reachable server the tests are skipped, saying so; with
/// `POLICYGATE_REQUIRE_POSTGRES=1` (CI) they run anyway and fail.
enum TestDatabase {
    static let environment = ProcessInfo.processInfo.environment
    static let url = environment["POLICYGATE_POSTGRES_URL"] ?? "postgres://policygate@127.0.0.1:55432/postgres"
    static let ownerURL = environment["POLICYGATE_POSTGRES_OWNER_URL"] ?? url
    static let adminURL = environment["POLICYGATE_POSTGRES_ADMIN_URL"] ?? ownerURL
    static let plainURL = environment["POLICYGATE_POSTGRES_PLAIN_URL"]
    static let isRequired = environment["POLICYGATE_REQUIRE_POSTGRES"] == "1"
    static let logger = Logger(label: "policygate.tests")

    /// The application's role and the owner's.
    static var runtimeRole: String { URLComponents(string: url)?.user ?? "postgres" }
    static var ownerRole: String { URLComponents(string: ownerURL)?.user ?? "postgres" }

    /// The application's settings (password from `PGPASSWORD`).
    static var settings: PolicyPostgresSettings { PolicyPostgresSettings(url: url) }
    /// The owner's settings.
    static var ownerSettings: PolicyPostgresSettings { ownerSettings(url: ownerURL) }
    static func ownerSettings(url: String) -> PolicyPostgresSettings {
        let variable = environment["POLICYGATE_POSTGRES_OWNER_PASSWORD"] != nil ? "POLICYGATE_POSTGRES_OWNER_PASSWORD" : nil
        return PolicyPostgresSettings(url: url, passwordEnvironmentVariable: variable)
    }
    /// How the tests migrate: granting the runtime role, when it is not the owner.
    static var migrationOptions: PostgresPolicyStore.MigrationOptions {
        PostgresPolicyStore.MigrationOptions(runtimeRole: runtimeRole == ownerRole ? nil : runtimeRole)
    }

    /// Whether the tests should run: the server answers, or CI requires it.
    static func shouldRun() async -> Bool {
        if isRequired { return true }
        return await reachable()
    }

    static func reachable() async -> Bool {
        guard let endpoint = try? connectionConfiguration() else { return false }
        do {
            let connection = try await withTimeout(seconds: 3) {
                try await PostgresConnection.connect(configuration: endpoint, id: 1, logger: logger)
            }
            try? await connection.close()
            return true
        } catch {
            return false
        }
    }

    /// A direct connection's configuration for `url` (the superuser's by default), with the TLS
    /// its `sslmode` and `sslrootcert` ask for.
    static func connectionConfiguration(
        _ url: String = adminURL, password: String? = nil
    ) throws -> PostgresConnection.Configuration {
        guard let components = URLComponents(string: url), let host = components.host else {
            throw TestFailure("not a postgres:// URL: \(url)")
        }
        let items = components.queryItems ?? []
        var tls = PostgresConnection.Configuration.TLS.disable
        if let mode = items.first(where: { $0.name == "sslmode" })?.value, mode != "disable" {
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.certificateVerification =
                switch mode {
                case "verify-full": .fullVerification
                case "verify-ca": .noHostnameVerification
                default: .none
                }
            if let root = items.first(where: { $0.name == "sslrootcert" })?.value { configuration.trustRoots = .file(root) }
            tls = .require(try NIOSSLContext(configuration: configuration))
        }
        return PostgresConnection.Configuration(
            host: host, port: components.port ?? 5432, username: components.user ?? "postgres",
            password: password ?? components.password, database: String(components.path.drop { $0 == "/" }), tls: tls)
    }

    /// Migrates the test database as its owner, once per test process.
    static func prepare() async throws {
        try await migrated.run {
            let owner = try PostgresPolicyStore(settings: ownerSettings)
            defer { owner.close() }
            try await owner.migrate(migrationOptions)
        }
    }
    private static let migrated = Once()

    /// A store on the test server as the application's role (the schema migrated by its owner
    /// first), or on `settings`, as they are.
    static func store(
        lease: Duration = .seconds(30), timeout: Duration = .seconds(2), holder: String? = nil,
        settings: PolicyPostgresSettings? = nil
    ) async throws -> PostgresPolicyStore {
        var options = PostgresPolicyStore.Options()
        options.lease = lease
        options.callTimeout = timeout
        options.writeRetryPeriod = .seconds(30)
        if settings == nil { try await prepare() }
        return try PostgresPolicyStore(settings: settings ?? self.settings, options: options, holder: holder)
    }

    /// Creates a database of its own for a test, owned by the owner role; returns its name.
    static func createDatabase(_ prefix: String) async throws -> String {
        let name = "\(prefix)_\(UUID().uuidString.prefix(8).lowercased())"
        try await withConnection { connection in
            try await connection.query(
                PostgresQuery(unsafeSQL: "CREATE DATABASE \(name) OWNER \"\(ownerRole)\""), logger: logger)
        }
        return name
    }

    /// Drops a database `createDatabase` made.
    static func dropDatabase(_ name: String) async throws {
        try await withConnection { connection in
            try await connection.query(PostgresQuery(unsafeSQL: "DROP DATABASE IF EXISTS \(name) WITH (FORCE)"), logger: logger)
        }
    }

    /// `url` with its database replaced by `database`.
    static func url(_ url: String, database: String) -> String {
        var components = URLComponents(string: url)!
        components.path = "/\(database)"
        return components.string!
    }

    /// A gate whose provider `provider` is shared through `store`.
    static func gate(
        _ provider: String, _ limits: PolicyLimits, store: PostgresPolicyStore,
        failurePolicy: PolicyStorage.FailurePolicy = .failClosed, telemetry: (any PolicyTelemetry)? = nil
    ) throws -> PolicyService {
        var configuration = PolicyConfiguration(limits: [provider: limits])
        configuration.storage[provider] = PolicyStorage(store: .postgres, failurePolicy: failurePolicy)
        return try PolicyService(configuration: configuration, store: store, telemetry: telemetry)
    }

    /// Two gates sharing `provider` through two stores of their own: two processes' worth in
    /// one test. Close the stores when done.
    static func twoGates(
        _ provider: String, _ limits: PolicyLimits, lease: Duration = .seconds(30)
    ) async throws -> (PolicyService, PolicyService, stores: [PostgresPolicyStore]) {
        let stores = [try await store(lease: lease), try await store(lease: lease)]
        return (try gate(provider, limits, store: stores[0]), try gate(provider, limits, store: stores[1]), stores)
    }

    /// A provider name no other test (or earlier run) uses.
    static func uniqueProvider(_ prefix: String) -> String {
        "\(prefix)-\(UUID().uuidString.prefix(8))"
    }

    /// Runs `body` with a direct connection to the test server as the superuser (for setting up
    /// and reading what the store wrote), or as `url` says with `password`.
    @discardableResult
    static func withConnection<T: Sendable>(
        _ url: String = adminURL, password: String? = nil, _ body: (PostgresConnection) async throws -> T
    ) async throws -> T {
        let connection = try await PostgresConnection.connect(
            configuration: connectionConfiguration(url, password: password), id: 2, logger: logger)
        do {
            let result = try await body(connection)
            try? await connection.close()
            return result
        } catch {
            try? await connection.close()
            throw error
        }
    }

    /// One `bigint` from a query.
    static func scalar(_ query: PostgresQuery) async throws -> Int64? {
        try await withConnection { connection in
            var value: Int64?
            for try await v in try await connection.query(query, logger: logger).decode(Int64?.self) { value = v }
            return value
        }
    }

    /// The repository's `.ci/postgres.sh`, which restarts the test server.
    static var serverScript: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent(".ci/postgres.sh")
    }
}

/// Runs a body once; later callers wait for it and share its success (a failure is retried).
actor Once {
    private var done = false
    func run(_ body: @Sendable () async throws -> Void) async throws {
        guard !done else { return }
        try await body()
        done = true
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Runs `body`, failing if it takes longer than `seconds`: nothing in these tests may hang.
func withTimeout<T: Sendable>(seconds: Double, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: .milliseconds(Int(seconds * 1_000)))
            return nil
        }
        guard let first = try await group.next(), let value = first else {
            group.cancelAll()
            throw TestFailure("did not finish within \(seconds) s")
        }
        group.cancelAll()
        return value
    }
}

/// A child process of the worker executable.
final class Worker: @unchecked Sendable {
    let process = Process()
    private let output = Pipe()

    init(_ arguments: [String]) throws {
        guard let executable = builtExecutable(named: "policy-gate-store-worker") else {
            throw TestFailure("policy-gate-store-worker was not found next to the test bundle; 'swift build --traits Postgres' builds it")
        }
        process.executableURL = executable
        process.arguments = arguments
        var environment = ProcessInfo.processInfo.environment
        environment["POLICYGATE_POSTGRES_URL"] = TestDatabase.url
        process.environment = environment
        process.standardOutput = output
        try process.run()
    }

    /// Reads the worker's output until it ends (the worker exits).
    func finish() -> (status: Int32, output: String) {
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// Reads one line of the worker's output (blocking).
    func readLine() -> String {
        var bytes: [UInt8] = []
        while true {
            let byte = output.fileHandleForReading.readData(ofLength: 1)
            guard let first = byte.first, first != 10 else { break }
            bytes.append(first)
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    func kill() {
        Foundation.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }
}
#endif
