#if Postgres
import Foundation
import Logging
import PolicyGate
import PostgresNIO
import Synchronization

/// Counters shared by every process that uses the same PostgreSQL database, so that five
/// replicas of a service together stay under one provider cap.
///
/// ```swift
/// let configuration = try PolicyConfiguration(contentsOfFile: "policy.toml")  // store = "postgres"
/// let gate = try await PolicyService.connecting(configuration: configuration)
/// ```
///
/// Each admission is one statement, `SELECT * FROM policygate.admit(…)`: it locks the key's row
/// (never a table), reads the database's clock (`clock_timestamp()`, so hosts' clock skew
/// cannot over-admit), checks the windows and the concurrency slots, and records the call, in
/// one round trip. Commits and releases are one statement each, written in the background
/// and retried. Concurrency slots are leases that this store renews every third of
/// ``Options/lease`` while the call runs, so a crashed process's slots come back after the
/// lease. Releases and lowered commits are announced with `NOTIFY`, which wakes the head
/// waiter of the key in every process; nobody polls.
///
/// The schema is in versioned SQL files (`Sources/PolicyGatePostgres/Migrations/`), applied by
/// ``migrate()``. The store never logs or prints a password.
public final class PostgresPolicyStore: PolicyQuotaStore {
    /// How the store behaves; the defaults suit most deployments.
    public struct Options: Sendable, Hashable {
        /// How long a concurrency slot lasts without renewal (a crashed process's slots come
        /// back after this). Renewed every third of it.
        public var lease: Duration = .seconds(30)
        /// The longest one database call may take (the server is told too, as its
        /// `statement_timeout`).
        public var callTimeout: Duration = .seconds(2)
        /// How long commits and releases are retried while the database is unreachable.
        public var writeRetryPeriod: Duration = .seconds(60)
        /// The most pooled connections (plus one for notifications).
        public var maxConnections: Int = 10
        /// How often old usage rows, expired leases and old admissions are deleted.
        public var cleanupInterval: Duration = .seconds(60)

        /// The defaults.
        public init() {}

        /// The options a `[store.postgres]` table sets, over the defaults.
        public init(_ settings: PolicyPostgresSettings) {
            if let seconds = settings.leaseSeconds { lease = .seconds(seconds) }
            if let milliseconds = settings.timeoutMilliseconds { callTimeout = .milliseconds(milliseconds) }
            if let seconds = settings.retrySeconds { writeRetryPeriod = .seconds(seconds) }
            if let count = settings.maxConnections { maxConnections = count }
        }
    }

    /// The options in force.
    public let options: Options
    /// Who holds this store's slots, as the database's `admissions.holder` records it
    /// (host and process id, unless given).
    public let holder: String
    private let client: PostgresClient
    private let connection: PostgresConnection.Configuration
    private let logger: Logger
    private let tasks = Mutex<[Task<Void, Never>]>([])
    private let held = Mutex<Set<Int64>>([])
    /// In a class, not stored in the mutex as a closure: a closure read and written back
    /// through a generic lock is wrapped in two more reabstraction thunks each time, and
    /// calling it grew with every notification.
    private let observer = Mutex<ChangeObserver?>(nil)
    private let lost = Atomic<Int>(0)

    /// Connects to the database `settings` and the environment describe.
    ///
    /// Fields missing from `settings` come from `POLICYGATE_POSTGRES_URL`, then `PGHOST`,
    /// `PGPORT`, `PGUSER`, `PGDATABASE`; the password from the variable
    /// ``PolicyPostgresSettings/passwordEnvironmentVariable`` names (`PGPASSWORD` by default).
    /// Connections are opened lazily; nothing is written until ``migrate()`` or an admission.
    /// - Throws: ``PostgresStoreError`` if the settings do not describe a database.
    public init(
        settings: PolicyPostgresSettings = PolicyPostgresSettings(), options: Options? = nil, holder: String? = nil,
        environment: [String: String] = ProcessInfo.processInfo.environment,
        logger: Logger? = nil
    ) throws {
        // Quiet by default: a failing database is reported through the gate's telemetry.
        let logger = logger ?? {
            var logger = Logger(label: "policygate.postgres")
            logger.logLevel = .error
            return logger
        }()
        let options = options ?? Options(settings)
        self.options = options
        self.holder = holder ?? "\(ProcessInfo.processInfo.hostName):\(ProcessInfo.processInfo.processIdentifier)"
        self.logger = logger
        let endpoint = try Endpoint(settings: settings, environment: environment)
        let milliseconds = options.callTimeout.nanosecondsSaturating / 1_000_000
        let parameters = [("statement_timeout", "\(milliseconds)"), ("application_name", "policygate")]

        var configuration = PostgresClient.Configuration(
            host: endpoint.host, port: endpoint.port, username: endpoint.user, password: endpoint.password,
            database: endpoint.database, tls: .disable)
        configuration.options.maximumConnections = options.maxConnections
        configuration.options.additionalStartupParameters = parameters
        configuration.options.connectTimeout = options.callTimeout
        client = PostgresClient(configuration: configuration, backgroundLogger: logger)

        var listener = PostgresConnection.Configuration(
            host: endpoint.host, port: endpoint.port, username: endpoint.user, password: endpoint.password,
            database: endpoint.database, tls: .disable)
        listener.options.additionalStartupParameters = parameters
        connection = listener

        let client = client
        let run = Task { await client.run() }
        tasks.withLock { $0.append(run) }
        startMaintenance()
    }

    deinit {
        for task in tasks.withLock({ $0 }) { task.cancel() }
    }

    /// Stops the store's connections and background work. Permits still held are left to
    /// their leases.
    public func close() {
        for task in tasks.withLock({ $0 }) { task.cancel() }
    }

    /// How many of this store's leases expired before it could renew them (the process
    /// stalled longer than the lease): their calls were no longer counted as in flight.
    public var lostLeases: Int { lost.load(ordering: .relaxed) }

    // MARK: Schema

    /// The migrations in this version of the library, in order: `(version, name, sql)`.
    public static func migrations() throws -> [(version: Int, name: String, sql: String)] {
        guard let directory = Bundle.module.url(forResource: "Migrations", withExtension: nil) else {
            throw PostgresStoreError("the migrations are missing from the PolicyGatePostgres bundle")
        }
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasSuffix(".sql") }.sorted()
        return try files.map { file in
            guard let version = Int(file.prefix { $0.isNumber }) else {
                throw PostgresStoreError("migration \(file) does not start with its version number")
            }
            let sql = try String(contentsOf: directory.appendingPathComponent(file), encoding: .utf8)
            return (version, String(file.dropLast(4)), sql)
        }
    }

    /// Brings the database's `policygate` schema to this library's version, applying the
    /// missing migrations in order, each in a transaction, under an advisory lock (several
    /// processes starting at once apply each migration once).
    /// - Returns: The versions applied now (empty when the schema was up to date).
    @discardableResult
    public func migrate() async throws -> [Int] {
        let migrations = try Self.migrations()
        return try await client.withTransaction(logger: logger) { connection in
            try await connection.query("SELECT pg_advisory_xact_lock(7049102611)", logger: logger)
            try await connection.query("CREATE SCHEMA IF NOT EXISTS policygate", logger: logger)
            try await connection.query(
                """
                CREATE TABLE IF NOT EXISTS policygate.schema_migrations (
                    version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())
                """, logger: logger)
            var applied = Set<Int>()
            for try await version in try await connection.query(
                "SELECT version FROM policygate.schema_migrations", logger: logger
            ).decode(Int.self) {
                applied.insert(version)
            }
            var now: [Int] = []
            for migration in migrations where !applied.contains(migration.version) {
                // The file holds several statements and functions: run it as one block.
                let tag = "$policygate_migration$"
                guard !migration.sql.contains(tag) else { throw PostgresStoreError("migration \(migration.name) contains \(tag)") }
                try await connection.query(
                    PostgresQuery(unsafeSQL: "DO $policygate_do$ BEGIN EXECUTE \(tag)\(migration.sql)\(tag); END $policygate_do$"),
                    logger: logger)
                try await connection.query(
                    "INSERT INTO policygate.schema_migrations (version, name) VALUES (\(migration.version), \(migration.name))",
                    logger: logger)
                now.append(migration.version)
            }
            return now
        }
    }

    // MARK: PolicyQuotaStore

    /// The store's ``Options/callTimeout``.
    public var callTimeout: Duration { options.callTimeout }
    /// The store's ``Options/writeRetryPeriod``.
    public var writeRetryPeriod: Duration { options.writeRetryPeriod }

    /// One statement: `policygate.admit` checks and records the call under the key's row lock.
    public func admit(_ request: PolicyStoreRequest) async throws -> PolicyStoreDecision {
        let (r, t) = (request.requestCaps, request.tokenCaps)
        let leaseMicroseconds = options.lease.nanosecondsSaturating / 1_000
        let rows = try await describing {
            try await client.query(
                """
                SELECT admitted, admission_id, now_us, refused_by, lease_expiry_us, wins, buckets, requests, tokens
                FROM policygate.admit(\(request.keyName), \(request.tokens), ARRAY[\(r[0]), \(r[1]), \(r[2])]::bigint[],
                    ARRAY[\(t[0]), \(t[1]), \(t[2])]::bigint[], \(request.maxConcurrent)::integer, \(leaseMicroseconds), \(holder))
                """, logger: logger)
        }
        typealias Row = (Bool, Int64?, Int64, String?, Int64?, [Int16]?, [Int64]?, [Int64]?, [Int64]?)
        var decision: PolicyStoreDecision?
        for try await (admitted, id, now, refusedBy, leaseExpiry, wins, buckets, requests, tokens) in rows.decode(Row.self) {
            if admitted, let id {
                held.withLock { _ = $0.insert(id) }
                decision = .admitted(PolicyStoreLease(id: id, admittedAt: now))
            } else if refusedBy == "concurrency" {
                decision = .concurrencyFull(retryAfter: leaseExpiry.map { .microseconds(max(0, $0 - now)) })
            } else {
                let (wins, buckets, requests, tokens) = (wins ?? [], buckets ?? [], requests ?? [], tokens ?? [])
                var found: [PolicyStoreUsage.Bucket] = []
                for i in wins.indices where i < buckets.count && i < requests.count && i < tokens.count {
                    guard let window = PolicyWindow(rawValue: Int(wins[i])) else { continue }
                    found.append(.init(window: window, index: buckets[i], requests: requests[i], tokens: tokens[i]))
                }
                decision = .windowsFull(PolicyStoreUsage(now: now, buckets: found))
            }
        }
        guard let decision else { throw PostgresStoreError("policygate.admit returned no row") }
        return decision
    }

    /// One statement: `policygate.commit` sets the call's tokens (idempotent).
    public func commit(_ lease: PolicyStoreLease, tokens: Int) async throws {
        try await describing {
            _ = try await client.query("SELECT policygate.commit(\(lease.id), \(tokens))", logger: logger).collect()
        }
    }

    /// One statement: `policygate.release` deletes the lease and announces it.
    public func release(_ lease: PolicyStoreLease) async throws {
        try await describing {
            _ = try await client.query("SELECT policygate.release(\(lease.id))", logger: logger).collect()
        }
        held.withLock { _ = $0.remove(lease.id) }
    }

    /// Starts the listener that turns `NOTIFY policygate` into `onChange`.
    public func observeChanges(_ onChange: @escaping @Sendable (String?) -> Void) {
        let first = observer.withLock { observer in
            defer { observer = ChangeObserver(onChange) }
            return observer == nil
        }
        guard first else { return }
        let task = Task { [weak self, connection, logger] in
            var attempt = 0
            while !Task.isCancelled {
                do {
                    let listener = try await PostgresConnection.connect(configuration: connection, id: 0, logger: logger)
                    defer { Task { try? await listener.close() } }
                    try await listener.listen(on: "policygate") { notifications in
                        attempt = 0
                        // News may have been missed while disconnected: everyone looks again.
                        self?.observer.withLock { $0 }?.call(nil)
                        for try await notification in notifications {
                            self?.observer.withLock { $0 }?.call(notification.payload)
                        }
                    }
                } catch {
                    if Task.isCancelled { return }
                    logger.debug("policygate: notification listener lost", metadata: ["error": "\(Self.describe(error))"])
                }
                attempt += 1
                try? await Task.sleep(for: .milliseconds(min(2_000, 100 * attempt)))
            }
        }
        tasks.withLock { $0.append(task) }
    }

    // MARK: Maintenance

    /// Renews the leases of calls still running, and deletes what no window needs any more.
    private func startMaintenance() {
        let interval = options.lease / 3
        let task = Task { [weak self] in
            var sinceCleanup: Duration = .zero
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                guard let self, !Task.isCancelled else { return }
                await self.renew()
                sinceCleanup += interval
                if sinceCleanup >= self.options.cleanupInterval {
                    sinceCleanup = .zero
                    _ = try? await self.cleanup()
                }
            }
        }
        tasks.withLock { $0.append(task) }
    }

    private func renew() async {
        let ids = held.withLock { Array($0) }
        guard !ids.isEmpty else { return }
        do {
            var renewed = Set<Int64>()
            let rows = try await client.query(
                "SELECT policygate.renew(\(ids)::bigint[], \(options.lease.nanosecondsSaturating / 1_000))", logger: logger)
            for try await id in rows.decode(Int64.self) { renewed.insert(id) }
            // A lease that expired was not renewed: its slot may be someone else's now.
            let expired = held.withLock { held -> Int in
                let gone = ids.filter { !renewed.contains($0) && held.contains($0) }
                for id in gone { held.remove(id) }
                return gone.count
            }
            if expired > 0 { lost.add(expired, ordering: .relaxed) }
        } catch {
            logger.debug("policygate: lease renewal failed", metadata: ["error": "\(Self.describe(error))"])
        }
    }

    /// Deletes usage rows that left every window, expired leases and admissions older than
    /// two days. Runs every ``Options/cleanupInterval`` on its own; one process at a time
    /// does the work.
    /// - Returns: How many rows were deleted.
    @discardableResult
    public func cleanup() async throws -> Int {
        try await describing {
            var deleted = 0
            for try await count in try await client.query("SELECT policygate.cleanup()", logger: logger).decode(Int64.self) {
                deleted = Int(count)
            }
            return deleted
        }
    }

    // MARK: Helpers

    /// Runs `body`, replacing its error by one that says what went wrong without the
    /// connection's secrets.
    private func describing<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as CancellationError {
            throw error
        } catch {
            throw PostgresStoreError(Self.describe(error))
        }
    }

    /// What went wrong, from the server's message or the connection's state; never the
    /// password (PSQLError's own description hides everything, its debug one shows the query).
    static func describe(_ error: any Error) -> String {
        if let error = error as? PSQLError {
            if let message = error.serverInfo?[.message] {
                let code = error.serverInfo?[.sqlState].map { " (SQLSTATE \($0))" } ?? ""
                return "PostgreSQL: \(message)\(code)"
            }
            if let underlying = error.underlying { return "PostgreSQL connection: \(underlying)" }
            return "PostgreSQL: \(error.code)"
        }
        if let error = error as? PostgresStoreError { return error.message }
        return String(describing: error)
    }
}

/// The gate's callback for news of keys.
final class ChangeObserver: Sendable {
    let call: @Sendable (String?) -> Void
    init(_ call: @escaping @Sendable (String?) -> Void) { self.call = call }
}

/// What went wrong with the PostgreSQL store.
public struct PostgresStoreError: Error, CustomStringConvertible, Sendable {
    /// A sentence, without secrets.
    public let message: String
    init(_ message: String) { self.message = message }
    /// The message.
    public var description: String { message }
}

/// Where to connect, from the settings and the environment.
struct Endpoint {
    var host = "localhost"
    var port = 5432
    var user = "postgres"
    var database: String?
    var password: String?

    init(settings: PolicyPostgresSettings, environment: [String: String]) throws {
        if let value = environment["PGHOST"] { host = value }
        if let value = environment["PGPORT"].flatMap(Int.init) { port = value }
        if let value = environment["PGUSER"] { user = value }
        if let value = environment["PGDATABASE"] { database = value }
        if let url = settings.url ?? environment["POLICYGATE_POSTGRES_URL"] {
            guard let components = URLComponents(string: url), ["postgres", "postgresql"].contains(components.scheme ?? "")
            else { throw PostgresStoreError("the PostgreSQL URL must look like postgres://user@host:port/database") }
            if let value = components.host, !value.isEmpty { host = value }
            if let value = components.port { port = value }
            if let value = components.user { user = value }
            if let value = components.password { password = value }
            let path = components.path.drop { $0 == "/" }
            if !path.isEmpty { database = String(path) }
        }
        if let value = settings.host { host = value }
        if let value = settings.port { port = value }
        if let value = settings.user { user = value }
        if let value = settings.database { database = value }
        if let value = environment[settings.passwordEnvironmentVariable ?? "PGPASSWORD"] { password = value }
    }
}
#endif
