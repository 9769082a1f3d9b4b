#if Postgres
import Foundation
import Logging
import PolicyGate
import PostgresNIO

extension PostgresPolicyStore {
    /// One versioned SQL file of the schema (`Migrations/NNNN_name.sql`).
    public struct Migration: Sendable, Hashable {
        /// The number the file's name starts with.
        public let version: Int
        /// The file's name without `.sql`.
        public let name: String
        /// The file's text.
        public let sql: String
        /// The SHA-256 of the text (line endings read as `\n`), recorded in
        /// `policygate.schema_migrations` when applied and compared by every later run.
        public let checksum: String
        /// Whether the file runs in one transaction (all or nothing). A file whose first line is
        /// `-- policygate: no-transaction` runs statement by statement outside any transaction,
        /// as `CREATE INDEX CONCURRENTLY` must: write each of its statements so that it can run
        /// again (`IF NOT EXISTS`, dropping an invalid index first), since a failure leaves the
        /// earlier ones applied and the whole file is run again next time.
        public let transactional: Bool

        /// The directive that makes a file run outside a transaction, alone on its first line.
        public static let noTransactionDirective = "-- policygate: no-transaction"

        /// A migration of `version` named `name` with the text `sql`.
        public init(version: Int, name: String, sql: String) {
            self.version = version
            self.name = name
            self.sql = sql
            let normalized = sql.replacingOccurrences(of: "\r\n", with: "\n")
            checksum = SHA256.hexDigest(of: normalized.utf8)
            let firstLine = normalized.prefix { $0 != "\n" }.trimmingCharacters(in: .whitespaces)
            transactional = firstLine != Self.noTransactionDirective
        }

        /// The file's statements, split at semicolons outside quotes, dollar quotes and
        /// comments, each with the line it starts on.
        public var statements: [(sql: String, line: Int)] { SQLStatements.split(sql) }
    }

    /// How ``migrate(_:)`` runs.
    public struct MigrationOptions: Sendable, Hashable {
        /// The role the application connects as: granted USAGE on the schema and EXECUTE on
        /// every function in it, and nothing else (its privileges on the tables are revoked).
        /// `nil`: no role is granted anything (the owner alone can call the functions).
        public var runtimeRole: String?
        /// How long a statement may wait for a lock (the server's `lock_timeout`) before the
        /// migration gives up, so that a migration queued behind a long transaction does not
        /// hold up every call behind it.
        public var lockTimeout: Duration = .seconds(5)
        /// How long one statement may run (the server's `statement_timeout`); not the store's
        /// call timeout, since building an index can take minutes.
        public var statementTimeout: Duration = .seconds(900)

        /// Options granting `runtimeRole`, with the default timeouts.
        public init(runtimeRole: String? = nil) {
            self.runtimeRole = runtimeRole
        }
    }

    /// The migrations in this version of the library, in order.
    public static func migrations() throws -> [Migration] {
        guard let directory = Bundle.module.url(forResource: "Migrations", withExtension: nil) else {
            throw PostgresStoreError("the migrations are missing from the PolicyGatePostgres bundle", code: .configuration)
        }
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasSuffix(".sql") }.sorted()
        return try files.map { file in
            guard let version = Int(file.prefix { $0.isNumber }) else {
                throw PostgresStoreError("migration \(file) does not start with its version number", code: .configuration)
            }
            let sql = try String(contentsOf: directory.appendingPathComponent(file), encoding: .utf8)
            return Migration(version: version, name: String(file.dropLast(4)), sql: sql)
        }
    }

    /// The schema version this library works with: its last migration's.
    public static func schemaVersion() throws -> Int { try migrations().last?.version ?? 0 }

    /// Connects once and checks that the database's `policygate` schema is at this library's
    /// version. The store changes no schema at start: ``migrate(_:)`` does, run by the
    /// schema's owner.
    /// - Returns: The schema's version.
    /// - Throws: ``PostgresStoreError``: ``PostgresStoreError/Code/schemaOutdated`` (run the
    ///   migrations), ``PostgresStoreError/Code/schemaNewer`` (upgrade this library),
    ///   ``PostgresStoreError/Code/permission`` (grant the role with
    ///   `policy-gate migrate --runtime-role`), and the connection's own failures
    ///   (``PostgresStoreError/Code/tlsUnavailable``, ``PostgresStoreError/Code/tlsVerification``,
    ///   ``PostgresStoreError/Code/authentication``, ``PostgresStoreError/Code/database``).
    @discardableResult
    public func checkSchema() async throws -> Int {
        let known = try Self.schemaVersion()
        let migrate = "run `policy-gate migrate` (or PostgresPolicyStore.migrate) as the schema's owner"
        let found: Int?
        do {
            found = try await withDirectConnection { connection in
                var version: Int?
                for try await value in try await connection.query("SELECT policygate.schema_version()", logger: logger)
                    .decode(Int?.self)
                {
                    version = value
                }
                return version
            }
        } catch {
            switch (error as? PSQLError)?.serverInfo?[.sqlState] {
            case "3F000":
                throw PostgresStoreError("the database has no policygate schema: \(migrate)", code: .schemaOutdated)
            case "42883":
                // policygate.schema_version() came with migration 3.
                throw PostgresStoreError(
                    "the database's policygate schema is older than version 3, this library needs \(known): \(migrate)",
                    code: .schemaOutdated)
            case "42501":
                throw PostgresStoreError(
                    "the role '\(endpoint.user)' may not use the policygate schema (\(Self.describe(error))): grant it with "
                        + "`policy-gate migrate --runtime-role \(endpoint.user)` as the schema's owner", code: .permission)
            default:
                throw endpoint.storeError(error)
            }
        }
        guard let found else {
            throw PostgresStoreError("the database's policygate schema records no migration: \(migrate)", code: .schemaOutdated)
        }
        if found < known {
            throw PostgresStoreError(
                "the database's policygate schema is at version \(found), this library needs \(known): \(migrate)",
                code: .schemaOutdated)
        }
        if found > known {
            throw PostgresStoreError(
                "the database's policygate schema is at version \(found), newer than this library knows (\(known)): "
                    + "upgrade the library", code: .schemaNewer)
        }
        return found
    }

    /// Brings the database's `policygate` schema to this library's version: applies the
    /// missing migrations in order under an advisory lock (so that two runs apply each file
    /// once), with `options`' lock and statement timeouts; verifies that the files applied
    /// before are the ones this library has (their checksums; rows a previous version
    /// recorded without one are given this library's, as the files never change); then
    /// revokes everything in the schema from `PUBLIC` and grants the runtime role USAGE on the
    /// schema and EXECUTE on all its functions (again on every run, so functions of new files
    /// are covered). Run it as the schema's owner, not as the application's role.
    /// - Returns: The versions applied now (empty when the schema was up to date).
    /// - Throws: ``PostgresStoreError``: ``PostgresStoreError/Code/migrationChanged``,
    ///   ``PostgresStoreError/Code/schemaNewer``, ``PostgresStoreError/Code/migrationFailed``
    ///   (naming the file, statement and line), ``PostgresStoreError/Code/permission``, and
    ///   the connection's failures.
    @discardableResult
    public func migrate(_ options: MigrationOptions = MigrationOptions()) async throws -> [Int] {
        try await migrate(Self.migrations(), options)
    }

    /// ``migrate(_:)`` granting `runtimeRole`.
    @discardableResult
    public func migrate(runtimeRole: String?) async throws -> [Int] {
        try await migrate(MigrationOptions(runtimeRole: runtimeRole))
    }

    /// Applies `migrations` (this library's, or a test's).
    @discardableResult
    func migrate(_ migrations: [Migration], _ options: MigrationOptions) async throws -> [Int] {
        let byVersion = Dictionary(migrations.map { ($0.version, $0) }, uniquingKeysWith: { first, _ in first })
        guard byVersion.count == migrations.count else {
            throw PostgresStoreError("two migrations have the same version", code: .configuration)
        }
        let known = migrations.map(\.version).max() ?? 0
        let logger = logger
        do {
            return try await withDirectConnection { connection in
                func run(_ sql: String) async throws {
                    _ = try await connection.query(PostgresQuery(unsafeSQL: sql), logger: logger).collect()
                }
                func milliseconds(_ duration: Duration) -> Int64 { max(1, duration.nanosecondsSaturating / 1_000_000) }
                try await run("SET statement_timeout = \(milliseconds(options.statementTimeout))")
                // Waiting for another run of the migrations is bounded by the statement timeout.
                try await run("SET lock_timeout = 0")
                try await run("SELECT pg_advisory_lock(7049102611)")
                do {
                    try await run("SET lock_timeout = \(milliseconds(options.lockTimeout))")
                    let applied = try await prepareHistory(connection, byVersion: byVersion, known: known)
                    var now: [Int] = []
                    for migration in migrations.sorted(by: { $0.version < $1.version }) where !applied.contains(migration.version) {
                        try await apply(migration, on: connection)
                        now.append(migration.version)
                    }
                    try await grant(options.runtimeRole, on: connection)
                    try await run("SELECT pg_advisory_unlock(7049102611)")
                    return now
                } catch {
                    try? await run("ROLLBACK")
                    try? await run("SELECT pg_advisory_unlock(7049102611)")
                    throw error
                }
            }
        } catch let error as PostgresStoreError {
            throw error
        } catch {
            let described = endpoint.storeError(error)
            if described.code == .permission {
                throw PostgresStoreError(
                    "\(described.message): run the migrations as the schema's owner (a role with CREATE on the database "
                        + "for the first run), not as the application's role", code: .permission)
            }
            throw described
        }
    }

    /// Creates the schema and its history table if missing (adding the checksum column to a
    /// table an older version created), checks the recorded checksums, and returns the
    /// versions applied.
    private func prepareHistory(
        _ connection: PostgresConnection, byVersion: [Int: Migration], known: Int
    ) async throws -> Set<Int> {
        func exists(_ query: PostgresQuery) async throws -> Bool {
            try await connection.query(query, logger: logger).collect().count > 0
        }
        // CREATE SCHEMA IF NOT EXISTS would need CREATE on the database even when it exists.
        if try await !exists("SELECT 1 FROM pg_namespace WHERE nspname = 'policygate'") {
            try await connection.query("CREATE SCHEMA policygate", logger: logger)
        }
        try await connection.query(
            """
            CREATE TABLE IF NOT EXISTS policygate.schema_migrations (
                version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(),
                checksum text)
            """, logger: logger)
        if try await !exists(
            """
            SELECT 1 FROM pg_attribute
            WHERE attrelid = 'policygate.schema_migrations'::regclass AND attname = 'checksum' AND NOT attisdropped
            """)
        {
            try await connection.query("ALTER TABLE policygate.schema_migrations ADD COLUMN checksum text", logger: logger)
        }
        var applied = Set<Int>()
        for try await (version, name, checksum) in try await connection.query(
            "SELECT version, name, checksum FROM policygate.schema_migrations ORDER BY version", logger: logger
        ).decode((Int, String, String?).self) {
            applied.insert(version)
            guard let migration = byVersion[version] else {
                if version > known {
                    throw PostgresStoreError(
                        "the database's policygate schema has migration \(name) (version \(version)), newer than this "
                            + "library knows (\(known)): upgrade the library", code: .schemaNewer)
                }
                throw PostgresStoreError(
                    "the database has migration \(name) (version \(version)), which this library does not have",
                    code: .migrationChanged)
            }
            if let checksum {
                guard checksum == migration.checksum else {
                    throw PostgresStoreError(
                        "migration \(migration.name) was applied with checksum \(checksum), but this library's file has "
                            + "\(migration.checksum): an applied migration must never change; put the change in a new file",
                        code: .migrationChanged)
                }
            } else {
                // Recorded by a version without checksums: the files never change, so this is it.
                try await connection.query(
                    "UPDATE policygate.schema_migrations SET checksum = \(migration.checksum) WHERE version = \(version)",
                    logger: logger)
            }
        }
        return applied
    }

    /// Runs one file and records it: in a transaction, or statement by statement.
    private func apply(_ migration: Migration, on connection: PostgresConnection) async throws {
        let record: PostgresQuery = """
            INSERT INTO policygate.schema_migrations (version, name, checksum)
            VALUES (\(migration.version), \(migration.name), \(migration.checksum))
            """
        let statements = migration.statements
        if migration.transactional { try await connection.query("BEGIN", logger: logger) }
        for (index, statement) in statements.enumerated() {
            do {
                _ = try await connection.query(PostgresQuery(unsafeSQL: statement.sql), logger: logger).collect()
            } catch {
                if migration.transactional { _ = try? await connection.query("ROLLBACK", logger: logger) }
                let outcome =
                    migration.transactional
                    ? "rolled back" : "statements before it stay applied; the file runs again from its start next time"
                throw PostgresStoreError(
                    "migration \(migration.name) failed at statement \(index + 1) of \(statements.count) (line "
                        + "\(statement.line)): \(Self.describe(error)); \(outcome)", code: .migrationFailed)
            }
        }
        _ = try await connection.query(record, logger: logger).collect()
        if migration.transactional { try await connection.query("COMMIT", logger: logger) }
        logger.info("policygate: migration applied", metadata: ["migration": "\(migration.name)"])
    }

    /// Revokes the schema from `PUBLIC` and grants `role` what the application needs.
    private func grant(_ role: String?, on connection: PostgresConnection) async throws {
        var statements = [
            "REVOKE ALL ON SCHEMA policygate FROM PUBLIC",
            "REVOKE ALL ON ALL TABLES IN SCHEMA policygate FROM PUBLIC",
            "REVOKE ALL ON ALL SEQUENCES IN SCHEMA policygate FROM PUBLIC",
            "REVOKE ALL ON ALL FUNCTIONS IN SCHEMA policygate FROM PUBLIC",
        ]
        if let role {
            var owner = ""
            for try await name in try await connection.query("SELECT current_user::text", logger: logger).decode(String.self) {
                owner = name
            }
            guard role != owner else {
                throw PostgresStoreError(
                    "the runtime role '\(role)' is the role running the migrations: the application needs a role of its "
                        + "own, which may only execute the schema's functions", code: .configuration)
            }
            let quoted = "\"" + role.replacingOccurrences(of: "\"", with: "\"\"") + "\""
            statements += [
                "REVOKE ALL ON SCHEMA policygate FROM \(quoted)",
                "REVOKE ALL ON ALL TABLES IN SCHEMA policygate FROM \(quoted)",
                "REVOKE ALL ON ALL SEQUENCES IN SCHEMA policygate FROM \(quoted)",
                "GRANT USAGE ON SCHEMA policygate TO \(quoted)",
                "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA policygate TO \(quoted)",
            ]
        }
        try await connection.query("BEGIN", logger: logger)
        for statement in statements {
            try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
        }
        try await connection.query("COMMIT", logger: logger)
    }

    /// Runs `body` on a connection of its own (TLS and all as the pool's), closed after.
    func withDirectConnection<T: Sendable>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        let connection = try await PostgresConnection.connect(configuration: self.connection, id: 1, logger: logger)
        do {
            let result = try await body(connection)
            try? await connection.close()
            return result
        } catch {
            try? await connection.close()
            throw error
        }
    }
}

/// Splits SQL text into statements at the semicolons that end them, skipping those in
/// quotes ('…', E'…', "…"), dollar quotes ($$…$$, $tag$…$tag$) and comments (--, nested /* */).
enum SQLStatements {
    static func split(_ text: String) -> [(sql: String, line: Int)] {
        let bytes = Array(text.utf8)
        var statements: [(sql: String, line: Int)] = []
        var start = 0
        var line = 1
        var firstLine: Int?
        var i = 0
        func isIdentifier(_ byte: UInt8) -> Bool {
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A) || byte == 0x5F
                || byte >= 0x80
        }
        func at(_ index: Int) -> UInt8? { index < bytes.count ? bytes[index] : nil }
        func finish(_ end: Int) {
            if let firstLine {
                let sql = String(decoding: bytes[start..<end], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                statements.append((sql, firstLine))
            }
            firstLine = nil
            start = end + 1
        }
        while i < bytes.count {
            let byte = bytes[i]
            switch byte {
            case 0x0A:
                line += 1
                i += 1
            case 0x2D where at(i + 1) == 0x2D:  // -- comment
                while i < bytes.count && bytes[i] != 0x0A { i += 1 }
            case 0x2F where at(i + 1) == 0x2A:  // /* comment */, nested
                var depth = 0
                repeat {
                    if bytes[i] == 0x0A { line += 1 }
                    if bytes[i] == 0x2F && at(i + 1) == 0x2A {
                        depth += 1
                        i += 2
                    } else if bytes[i] == 0x2A && at(i + 1) == 0x2F {
                        depth -= 1
                        i += 2
                    } else {
                        i += 1
                    }
                } while depth > 0 && i < bytes.count
            case 0x3B:  // ;
                finish(i)
                i += 1
            default:
                if byte != 0x20 && byte != 0x09 && byte != 0x0D && firstLine == nil {
                    firstLine = line
                    start = i
                }
                if byte == 0x27 || byte == 0x22 {  // '…' or "…"
                    let escapes =
                        byte == 0x27 && i > 0 && (bytes[i - 1] == 0x45 || bytes[i - 1] == 0x65)
                        && (i < 2 || !isIdentifier(bytes[i - 2]))
                    i += 1
                    while i < bytes.count {
                        if bytes[i] == 0x0A { line += 1 }
                        if escapes && bytes[i] == 0x5C {
                            i += 2
                            continue
                        }
                        if bytes[i] == byte {
                            if at(i + 1) == byte {
                                i += 2
                                continue
                            }
                            break
                        }
                        i += 1
                    }
                    i += 1
                } else if byte == 0x24 && (i == 0 || !isIdentifier(bytes[i - 1])) {  // $tag$ … $tag$
                    var end = i + 1
                    while end < bytes.count && isIdentifier(bytes[end]) && !(end == i + 1 && bytes[end] >= 0x30 && bytes[end] <= 0x39) {
                        end += 1
                    }
                    guard at(end) == 0x24 else {
                        i += 1
                        continue
                    }
                    let tag = Array(bytes[i...end])
                    i = end + 1
                    while i < bytes.count {
                        if bytes[i] == 0x0A { line += 1 }
                        if bytes[i] == 0x24 && i + tag.count <= bytes.count && Array(bytes[i..<(i + tag.count)]) == tag {
                            i += tag.count
                            break
                        }
                        i += 1
                    }
                } else {
                    i += 1
                }
            }
        }
        finish(bytes.count)
        return statements
    }
}
#endif
