#if Postgres
import Foundation
import PolicyGate
@testable import PolicyGatePostgres
import PolicyGateTestKit
import PostgresNIO
import Testing

/// How the store resolves TLS from its settings and the environment; no server needed.
@Suite("PostgreSQL connection settings (TLS)")
struct PostgresConnectionSettingsTests {
    /// The TLS mode a store resolves for `url` and `environment`.
    func mode(_ settings: PolicyPostgresSettings, _ environment: [String: String] = [:]) throws -> PolicyPostgresSettings.TLSMode {
        let store = try PostgresPolicyStore(settings: settings, environment: environment)
        defer { store.close() }
        return store.tls
    }

    @Test("verify-full unless the host is loopback, where TLS is used when offered (prefer)")
    func defaults() throws {
        #expect(try mode(PolicyPostgresSettings(url: "postgres://gate@db.internal:5432/app")) == .verifyFull)
        #expect(try mode(PolicyPostgresSettings(url: "postgres://gate@10.0.0.7/app")) == .verifyFull)
        #expect(try mode(PolicyPostgresSettings(host: "127.1.2.3")) == .prefer)
        #expect(try mode(PolicyPostgresSettings(url: "postgres://gate@localhost/app")) == .prefer)
        #expect(try mode(PolicyPostgresSettings(url: "postgres://gate@[::1]:5432/app")) == .prefer)
        #expect(try mode(PolicyPostgresSettings(), ["PGHOST": "db.internal"]) == .verifyFull)
        // 127.example.com is a name, not a loopback address.
        #expect(try mode(PolicyPostgresSettings(host: "127.example.com")) == .verifyFull)
    }

    @Test("the setting over the URL's sslmode over PGSSLMODE; require with a root certificate checks the chain")
    func precedence() throws {
        let url = "postgres://gate@db.internal/app?sslmode=require"
        #expect(try mode(PolicyPostgresSettings(url: url)) == .require)
        #expect(try mode(PolicyPostgresSettings(url: url), ["PGSSLMODE": "disable"]) == .require)
        #expect(try mode(PolicyPostgresSettings(url: url, tls: .verifyFull)) == .verifyFull)
        #expect(try mode(PolicyPostgresSettings(host: "db.internal"), ["PGSSLMODE": "prefer"]) == .prefer)
        #expect(try mode(PolicyPostgresSettings(host: "localhost"), ["PGSSLMODE": "verify-ca"]) == .verifyCA)
        #expect(try mode(PolicyPostgresSettings(url: "postgres://gate@db.internal/app?sslmode=require&sslrootcert=system")) == .require)
        // libpq's rule: require with a root certificate at hand verifies it (as verify-ca).
        let ca = try #require(ProcessInfo.processInfo.environment["POLICYGATE_POSTGRES_CA"] ?? Self.anyCertificate())
        #expect(try mode(PolicyPostgresSettings(url: url), ["PGSSLROOTCERT": ca]) == .verifyCA)
        #expect(try mode(PolicyPostgresSettings(url: url + "&sslrootcert=\(ca)")) == .verifyCA)
        #expect(try mode(PolicyPostgresSettings(url: url, tlsRootCertificate: ca)) == .verifyCA)
    }

    @Test("an unknown sslmode or an unreadable root certificate is a configuration error at once")
    func badSettings() throws {
        for settings in [
            PolicyPostgresSettings(url: "postgres://gate@db.internal/app?sslmode=allow"),
            PolicyPostgresSettings(url: "postgres://gate@db.internal/app?sslmode=verify_full"),
        ] {
            let error = #expect(throws: PostgresStoreError.self) { _ = try mode(settings) }
            #expect(error?.code == .configuration)
            #expect(error?.message.contains("verify-full") == true, "\(error?.message ?? "")")
        }
        let missing = #expect(throws: PostgresStoreError.self) {
            _ = try mode(PolicyPostgresSettings(url: "postgres://gate@db.internal/app", tlsRootCertificate: "/nonexistent/ca.pem"))
        }
        #expect(missing?.code == .configuration)
        #expect(missing?.message.contains("/nonexistent/ca.pem") == true)
        let env = #expect(throws: PostgresStoreError.self) { _ = try mode(PolicyPostgresSettings(), ["PGSSLMODE": "sometimes"]) }
        #expect(env?.code == .configuration)
    }

    @Test("statements are split at semicolons outside quotes, dollar quotes and comments")
    func statementSplitting() throws {
        let sql = """
            -- a comment; with a semicolon and an apostrophe's
            CREATE TABLE t (a text DEFAULT 'x;y''z');  /* block ; /* nested ; */ still ; */
            CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END $$;
            SELECT $tag$ ; $$ ; $tag$, E'\\';', "a;b", $1;

            -- only a comment at the end;
            """
        let statements = PostgresPolicyStore.Migration(version: 1, name: "t", sql: sql).statements
        #expect(statements.map(\.line) == [2, 3, 4])
        #expect(statements[0].sql.hasSuffix("DEFAULT 'x;y''z')"))
        #expect(statements[1].sql.hasSuffix("RETURN 1; END $$"))
        #expect(statements[2].sql.hasSuffix("$tag$ ; $$ ; $tag$, E'\\';', \"a;b\", $1"))
        // The library's own files: 0001 has its schema, 4 tables, 4 indexes, 4 comments, 7 functions.
        let migrations = try PostgresPolicyStore.migrations()
        #expect(migrations.prefix(3).map(\.version) == [1, 2, 3])
        #expect(migrations.allSatisfy { !$0.statements.isEmpty })
        #expect(migrations[0].statements.count == 20)
        #expect(migrations[0].statements.filter { $0.sql.hasPrefix("CREATE FUNCTION") }.count == 7)
        #expect(migrations.allSatisfy { $0.transactional })
        let directive = PostgresPolicyStore.Migration(version: 9, name: "x", sql: "-- policygate: no-transaction\r\nSELECT 1;\r\n")
        #expect(!directive.transactional)
        #expect(
            directive.checksum
                == PostgresPolicyStore.Migration(version: 9, name: "x", sql: "-- policygate: no-transaction\nSELECT 1;\n").checksum)
    }

    /// A PEM certificate that exists on this machine, for settings that only need a readable file.
    static func anyCertificate() -> String? {
        ["/etc/ssl/certs/ca-certificates.crt", "/etc/ssl/cert.pem"].first { FileManager.default.fileExists(atPath: $0) }
    }
}

/// Security against the real server: TLS, the least-privileged role, the migration runner.
extension PostgresStoreTests {
    /// The runtime role's password, as `.ci/postgres.sh` exports it.
    static var runtimePassword: String? { ProcessInfo.processInfo.environment["PGPASSWORD"] }

    /// `TestDatabase.url` with `change` applied to its components.
    static func runtimeURL(_ change: (inout URLComponents) -> Void) -> String {
        var components = URLComponents(string: TestDatabase.url)!
        change(&components)
        return components.string!
    }

    /// Sets the URL's `sslmode` (and keeps its `sslrootcert`).
    static func sslmode(_ mode: String, _ components: inout URLComponents) {
        components.queryItems = (components.queryItems ?? []).filter { $0.name != "sslmode" } + [URLQueryItem(name: "sslmode", value: mode)]
    }

    @Test("the store's sessions are TLS, as a non-superuser role that logged in with scram-sha-256")
    func sessionsAreEncryptedAndUnprivileged() async throws {
        #expect(TestDatabase.runtimeRole != TestDatabase.ownerRole, "the tests must run as a role other than the owner")
        let store = try await TestDatabase.store()
        defer { store.close() }
        #expect(store.tls == .verifyFull)
        let version = try await store.checkSchema()
        #expect(version == (try PostgresPolicyStore.schemaVersion()))
        let provider = TestDatabase.uniqueProvider("tls")
        let gate = try TestDatabase.gate(provider, PolicyLimits(requestsPerMinute: 10), store: store)
        _ = try await gate.acquire(PolicyKey(provider: provider), maxWait: .zero)
        let role = TestDatabase.runtimeRole
        let (sessions, encrypted) = try await TestDatabase.withConnection { connection in
            var result = (0, 0)
            for try await (all, ssl) in try await connection.query(
                """
                SELECT count(*)::int, count(*) FILTER (WHERE s.ssl)::int
                FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.usename = \(role)
                """, logger: TestDatabase.logger
            ).decode((Int, Int).self) { result = (all, ssl) }
            return result
        }
        #expect(sessions > 0)
        #expect(encrypted == sessions)
        let attributes = try await TestDatabase.withConnection { connection in
            var found: [String] = []
            for try await (superuser, scram, createrole) in try await connection.query(
                "SELECT rolsuper, rolpassword LIKE 'SCRAM-SHA-256$%', rolcreaterole FROM pg_authid WHERE rolname = \(role)",
                logger: TestDatabase.logger
            ).decode((Bool, Bool, Bool).self) { found = ["super \(superuser)", "scram \(scram)", "createrole \(createrole)"] }
            return found
        }
        #expect(attributes == ["super false", "scram true", "createrole false"])
        await gate.flushStoreWrites()
    }

    @Test("verify-full refuses a server whose certificate does not name the host; verify-ca accepts it")
    func verifyFullRefusesWrongHost() async throws {
        try await TestDatabase.prepare()
        // 127.0.0.2 reaches the same server, but the certificate names only localhost and 127.0.0.1.
        let wrong = Self.runtimeURL { $0.host = "127.0.0.2" }
        let store = try PostgresPolicyStore(settings: PolicyPostgresSettings(url: wrong))
        defer { store.close() }
        #expect(store.tls == .verifyFull)
        let error = await #expect(throws: PostgresStoreError.self) { try await store.checkSchema() }
        #expect(error?.code == .tlsVerification)
        #expect(error?.message.contains("does not name '127.0.0.2'") == true, "\(error?.message ?? "")")
        var configuration = PolicyConfiguration(limits: ["p": PolicyLimits(requestsPerMinute: 1)])
        configuration.storage["p"] = PolicyStorage(store: .postgres)
        configuration.postgres = PolicyPostgresSettings(url: wrong)
        let refused = await #expect(throws: PostgresStoreError.self) {
            _ = try await PolicyService.connecting(configuration: configuration)
        }
        #expect(refused?.code == .tlsVerification)

        let chainOnly = try PostgresPolicyStore(
            settings: PolicyPostgresSettings(
                url: Self.runtimeURL {
                    $0.host = "127.0.0.2"
                    Self.sslmode("verify-ca", &$0)
                }))
        defer { chainOnly.close() }
        #expect(try await chainOnly.checkSchema() == (try PostgresPolicyStore.schemaVersion()))

        // Without the test CA, the system's trust store does not know the server's certificate.
        let untrusted = try PostgresPolicyStore(
            settings: PolicyPostgresSettings(
                url: Self.runtimeURL {
                    $0.queryItems = [
                        URLQueryItem(name: "sslmode", value: "verify-full"), URLQueryItem(name: "sslrootcert", value: "system"),
                    ]
                }))
        defer { untrusted.close() }
        let unknown = await #expect(throws: PostgresStoreError.self) { try await untrusted.checkSchema() }
        #expect(unknown?.code == .tlsVerification, "\(unknown?.message ?? "")")
    }

    @Test("require refuses a server without TLS, clearly; prefer (loopback's default) connects to it in the clear")
    func requireRefusesServerWithoutTLS() async throws {
        let plain = try #require(TestDatabase.plainURL, "POLICYGATE_POSTGRES_PLAIN_URL (a server without TLS) is not set")
        for mode in ["require", "verify-full"] {
            let store = try PostgresPolicyStore(settings: PolicyPostgresSettings(url: plain + "?sslmode=\(mode)"))
            defer { store.close() }
            let error = await #expect(throws: PostgresStoreError.self) { try await store.checkSchema() }
            #expect(error?.code == .tlsUnavailable, "\(mode): \(error?.message ?? "")")
            #expect(error?.message.contains("does not offer TLS") == true)
        }
        let preferring = try PostgresPolicyStore(settings: PolicyPostgresSettings(url: plain))
        defer { preferring.close() }
        #expect(preferring.tls == .prefer)
        // Connected: the server answered that it has no policygate schema.
        let error = await #expect(throws: PostgresStoreError.self) { try await preferring.checkSchema() }
        #expect(error?.code == .schemaOutdated, "\(error?.message ?? "")")
        #expect(error?.message.contains("policy-gate migrate") == true)
    }

    @Test("a wrong password is an authentication error; plain TCP for the runtime role is refused by the server")
    func authenticationErrors() async throws {
        let wrong = try PostgresPolicyStore(settings: TestDatabase.settings, environment: ["PGPASSWORD": "not-the-password"])
        defer { wrong.close() }
        let error = await #expect(throws: PostgresStoreError.self) { try await wrong.checkSchema() }
        #expect(error?.code == .authentication, "\(error?.message ?? "")")
        #expect(error?.message.contains("not-the-password") == false)
        let clear = try PostgresPolicyStore(settings: PolicyPostgresSettings(url: TestDatabase.url, tls: .disable))
        defer { clear.close() }
        let refused = await #expect(throws: PostgresStoreError.self) { try await clear.checkSchema() }
        #expect(refused?.code == .authentication, "\(refused?.message ?? "")")
        #expect(refused?.message.contains("no encryption") == true, "\(refused?.message ?? "")")
    }

    @Test("the runtime role may execute the functions and nothing else: no table access, no migrating")
    func runtimeRoleCannotChangeTables() async throws {
        try await TestDatabase.prepare()
        let statements = [
            "INSERT INTO policygate.leases (admission_id, key, expires_us, nonce) VALUES (-1, 'k', 9223372036854775807, 1)",
            "UPDATE policygate.usage SET requests = 0",
            "DELETE FROM policygate.leases",
            "DELETE FROM policygate.admissions",
            "TRUNCATE policygate.keys",
            "SELECT count(*) FROM policygate.admissions",
            "CREATE TABLE policygate.mine (a int)",
            "ALTER FUNCTION policygate.admit(text, text, bigint, bigint[], bigint[], integer, bigint, text, bigint, integer, bigint) RESET search_path",
        ]
        try await TestDatabase.withConnection(TestDatabase.url, password: Self.runtimePassword) { connection in
            for statement in statements {
                do {
                    _ = try await connection.query(PostgresQuery(unsafeSQL: statement), logger: TestDatabase.logger).collect()
                    Issue.record("the runtime role could run: \(statement)")
                } catch let error as PSQLError {
                    let state = error.serverInfo?[.sqlState]
                    #expect(state == "42501", "\(statement): \(error.serverInfo?[.message] ?? "\(error.code)")")
                }
            }
            var version: Int?
            for try await value in try await connection.query("SELECT policygate.schema_version()", logger: TestDatabase.logger)
                .decode(Int.self)
            { version = value }
            #expect(version == (try PostgresPolicyStore.schemaVersion()))
        }
        let store = try PostgresPolicyStore(settings: TestDatabase.settings)
        defer { store.close() }
        let error = await #expect(throws: PostgresStoreError.self) { try await store.migrate() }
        #expect(error?.code == .permission, "\(error?.message ?? "")")
        #expect(error?.message.contains("owner") == true)

        // Every function: SECURITY DEFINER, search_path pinned, no EXECUTE for PUBLIC, EXECUTE for the role.
        let role = TestDatabase.runtimeRole
        let rows = try await TestDatabase.withConnection { connection in
            var rows: [(String, Bool, Bool, Bool, Bool)] = []
            for try await row in try await connection.query(
                """
                SELECT p.oid::regprocedure::text, p.prosecdef,
                       coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false),
                       EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a WHERE a.grantee = 0),
                       has_function_privilege(\(role), p.oid, 'EXECUTE')
                FROM pg_proc p WHERE p.pronamespace = 'policygate'::regnamespace
                """, logger: TestDatabase.logger
            ).decode((String, Bool, Bool, Bool, Bool).self) { rows.append(row) }
            return rows
        }
        #expect(rows.count >= 8)
        for (name, definer, pinned, publicExecute, granted) in rows {
            #expect(
                definer && pinned && !publicExecute && granted,
                "\(name): definer \(definer), pinned \(pinned), PUBLIC \(publicExecute), granted \(granted)")
        }
        let tablePrivileges = try await TestDatabase.scalar(
            """
            SELECT count(*)::bigint FROM pg_class c
            WHERE c.relnamespace = 'policygate'::regnamespace AND c.relkind IN ('r', 'S', 'p')
              AND (has_table_privilege(\(role), c.oid, 'SELECT,INSERT,UPDATE,DELETE,TRUNCATE,REFERENCES,TRIGGER'))
            """)
        #expect(tablePrivileges == 0)
    }

    @Test("a role with CREATE on public shadowing count(): 3 leases under max_concurrent 1 before migration 3, 1 after")
    func shadowedCountCannotOverAdmit() async throws {
        let database = try await TestDatabase.createDatabase("policygate_shadow")
        let ownerURL = TestDatabase.url(TestDatabase.ownerURL, database: database)
        let ownerPassword = ProcessInfo.processInfo.environment["POLICYGATE_POSTGRES_OWNER_PASSWORD"]
        let runtimeURL = TestDatabase.url(TestDatabase.url, database: database)
        // An aggregate count(bigint) that always says 0: an exact match, so it wins over
        // pg_catalog's count("any") wherever public is on the search_path.
        let shadow = """
            CREATE FUNCTION public.zero(bigint, bigint) RETURNS bigint LANGUAGE sql IMMUTABLE AS 'SELECT 0::bigint';
            CREATE AGGREGATE public.count(bigint) (sfunc = public.zero, stype = bigint, initcond = '0')
            """
        func create(_ url: String, _ password: String?) async throws {
            try await TestDatabase.withConnection(url, password: password) { connection in
                for statement in shadow.split(separator: ";\n") {
                    try await connection.query(PostgresQuery(unsafeSQL: String(statement)), logger: TestDatabase.logger)
                }
            }
        }
        func admitThree(_ store: PostgresPolicyStore) async throws -> Int {
            let key = PolicyKey(provider: TestDatabase.uniqueProvider("shadow"))
            let request = PolicyStoreRequest(
                key: key, tokens: 1, requestCaps: [nil, nil, nil], tokenCaps: [nil, nil, nil], maxConcurrent: 1)
            var admitted = 0
            for _ in 0..<3 {
                if case .admitted(let lease) = try await store.admit(request) {
                    admitted += 1
                    store.endRenewal(of: lease)
                }
            }
            return admitted
        }
        /// Three admissions under `max_concurrent = 1` through migration 2's `admit` itself: this
        /// version's store calls a later signature.
        func admitThreeOnMigration2(_ url: String, _ password: String?) async throws -> Int {
            let key = String(repeating: "ab", count: 32)
            return try await TestDatabase.withConnection(url, password: password) { connection in
                var admitted = 0
                for nonce in 1...3 {
                    let rows = try await connection.query(
                        PostgresQuery(
                            unsafeSQL: """
                                SELECT admitted FROM policygate.admit('\(key)', 'shadow', 1, ARRAY[NULL, NULL, NULL]::bigint[],
                                    ARRAY[NULL, NULL, NULL]::bigint[], 1, 30000000, 'test', \(nonce), 1000)
                                """), logger: TestDatabase.logger)
                    for try await value in rows.decode(Bool.self) where value { admitted += 1 }
                }
                return admitted
            }
        }
        do {
            // Before: migrations 1 and 2, the application as the owner (as deployments ran them).
            let owner = try PostgresPolicyStore(settings: TestDatabase.ownerSettings(url: ownerURL))
            defer { owner.close() }
            let all = try PostgresPolicyStore.migrations()
            try await owner.migrate(Array(all.prefix(2)), PostgresPolicyStore.MigrationOptions())
            try await create(ownerURL, ownerPassword)
            #expect(
                try await admitThreeOnMigration2(ownerURL, ownerPassword) == 3,
                "the attack of issue 14 no longer reproduces before migration 3")

            // After: every migration; the application's own role creates the shadow.
            try await owner.migrate(TestDatabase.migrationOptions)
            try await TestDatabase.withConnection(TestDatabase.url(TestDatabase.adminURL, database: database)) { connection in
                try await connection.query("DROP AGGREGATE public.count(bigint)", logger: TestDatabase.logger)
                try await connection.query("DROP FUNCTION public.zero(bigint, bigint)", logger: TestDatabase.logger)
                try await connection.query(
                    PostgresQuery(unsafeSQL: "GRANT CREATE ON SCHEMA public TO \"\(TestDatabase.runtimeRole)\""),
                    logger: TestDatabase.logger)
            }
            try await create(runtimeURL, Self.runtimePassword)
            let shadowed = try await TestDatabase.withConnection(runtimeURL, password: Self.runtimePassword) { connection in
                var value: Int64 = -1
                for try await count in try await connection.query(
                    "SELECT count(x) FROM (VALUES (1::bigint), (2::bigint)) v(x)", logger: TestDatabase.logger
                ).decode(Int64.self) { value = count }
                return value
            }
            #expect(shadowed == 0, "the shadow is live in the application's sessions")
            let store = try PostgresPolicyStore(settings: PolicyPostgresSettings(url: runtimeURL))
            defer { store.close() }
            try await store.checkSchema()
            #expect(try await admitThree(store) == 1)
        }
        try await TestDatabase.dropDatabase(database)
    }

    @Test("a database the previous runner migrated: checksums recorded, migration 3 applied; a changed file is refused")
    func upgradeFromPreviousRunnerAndChecksums() async throws {
        let database = try await TestDatabase.createDatabase("policygate_upgrade")
        let ownerURL = TestDatabase.url(TestDatabase.ownerURL, database: database)
        let ownerPassword = ProcessInfo.processInfo.environment["POLICYGATE_POSTGRES_OWNER_PASSWORD"]
        let all = try PostgresPolicyStore.migrations()
        do {
            // What the previous runner did: its table (no checksum), each file in a DO block.
            try await TestDatabase.withConnection(ownerURL, password: ownerPassword) { connection in
                try await connection.query("BEGIN", logger: TestDatabase.logger)
                try await connection.query("CREATE SCHEMA IF NOT EXISTS policygate", logger: TestDatabase.logger)
                try await connection.query(
                    """
                    CREATE TABLE IF NOT EXISTS policygate.schema_migrations (
                        version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())
                    """, logger: TestDatabase.logger)
                for migration in all.prefix(2) {
                    try await connection.query(
                        PostgresQuery(
                            unsafeSQL:
                                "DO $policygate_do$ BEGIN EXECUTE $policygate_migration$\(migration.sql)$policygate_migration$; END $policygate_do$"
                        ),
                        logger: TestDatabase.logger)
                    try await connection.query(
                        "INSERT INTO policygate.schema_migrations (version, name) VALUES (\(migration.version), \(migration.name))",
                        logger: TestDatabase.logger)
                }
                try await connection.query("COMMIT", logger: TestDatabase.logger)
            }
            let owner = try PostgresPolicyStore(settings: TestDatabase.ownerSettings(url: ownerURL))
            defer { owner.close() }
            let applied = try await owner.migrate(TestDatabase.migrationOptions)
            #expect(applied == all.dropFirst(2).map(\.version))
            let admin = TestDatabase.url(TestDatabase.adminURL, database: database)
            let recorded = try await TestDatabase.withConnection(admin) { connection in
                var rows: [Int: String] = [:]
                for try await (version, checksum) in try await connection.query(
                    "SELECT version, checksum FROM policygate.schema_migrations", logger: TestDatabase.logger
                ).decode((Int, String).self) { rows[version] = checksum }
                return rows
            }
            #expect(recorded == Dictionary(uniqueKeysWithValues: all.map { ($0.version, $0.checksum) }))
            let runtime = try PostgresPolicyStore(
                settings: PolicyPostgresSettings(url: TestDatabase.url(TestDatabase.url, database: database)))
            defer { runtime.close() }
            #expect(try await runtime.checkSchema() == all.last?.version)

            // An applied file that changed since: refused, naming it.
            try await TestDatabase.withConnection(admin) { connection in
                try await connection.query(
                    "UPDATE policygate.schema_migrations SET checksum = 'edited' WHERE version = 1", logger: TestDatabase.logger)
            }
            let changed = await #expect(throws: PostgresStoreError.self) { try await owner.migrate(TestDatabase.migrationOptions) }
            #expect(changed?.code == .migrationChanged)
            #expect(changed?.message.contains("0001_initial") == true, "\(changed?.message ?? "")")
        }
        try await TestDatabase.dropDatabase(database)
    }

    @Test("a no-transaction file builds an index CONCURRENTLY; a file in a transaction cannot; a newer schema is refused at start")
    func noTransactionFilesAndNewerSchema() async throws {
        let database = try await TestDatabase.createDatabase("policygate_concurrently")
        let ownerURL = TestDatabase.url(TestDatabase.ownerURL, database: database)
        let all = try PostgresPolicyStore.migrations()
        let known = try #require(all.last?.version)
        do {
            let owner = try PostgresPolicyStore(settings: TestDatabase.ownerSettings(url: ownerURL))
            defer { owner.close() }
            let inTransaction = PostgresPolicyStore.Migration(
                version: known + 1, name: "\(known + 1)_in_transaction",
                sql: "CREATE INDEX CONCURRENTLY admissions_holder_idx ON policygate.admissions (holder);\n")
            let failed = await #expect(throws: PostgresStoreError.self) {
                try await owner.migrate(all + [inTransaction], TestDatabase.migrationOptions)
            }
            #expect(failed?.code == .migrationFailed)
            #expect(failed?.message.contains("cannot run inside a transaction block") == true, "\(failed?.message ?? "")")
            #expect(failed?.message.contains("statement 1 of 1 (line 1)") == true, "\(failed?.message ?? "")")

            let concurrently = PostgresPolicyStore.Migration(
                version: known + 1, name: "\(known + 1)_concurrently",
                sql: """
                    -- policygate: no-transaction
                    -- Each statement can run again: a failed build leaves an invalid index, dropped first.
                    DROP INDEX CONCURRENTLY IF EXISTS policygate.admissions_holder_idx;
                    CREATE INDEX CONCURRENTLY admissions_holder_idx ON policygate.admissions (holder);
                    """)
            #expect(!concurrently.transactional)
            #expect(try await owner.migrate(all + [concurrently], TestDatabase.migrationOptions) == [known + 1])
            let valid = try await TestDatabase.withConnection(TestDatabase.url(TestDatabase.adminURL, database: database)) { connection in
                var valid: Bool?
                for try await value in try await connection.query(
                    "SELECT indisvalid FROM pg_index WHERE indexrelid = 'policygate.admissions_holder_idx'::regclass",
                    logger: TestDatabase.logger
                ).decode(Bool.self) { valid = value }
                return valid
            }
            #expect(valid == true)

            // This library knows one version less than the database now has.
            let runtime = try PostgresPolicyStore(
                settings: PolicyPostgresSettings(url: TestDatabase.url(TestDatabase.url, database: database)))
            defer { runtime.close() }
            let newer = await #expect(throws: PostgresStoreError.self) { try await runtime.checkSchema() }
            #expect(newer?.code == .schemaNewer, "\(newer?.message ?? "")")
            let refused = await #expect(throws: PostgresStoreError.self) { try await owner.migrate(TestDatabase.migrationOptions) }
            #expect(refused?.code == .schemaNewer)
        }
        try await TestDatabase.dropDatabase(database)
    }

    @Test("migrations have their own timeouts: longer than the store's call timeout, and a lock waited for only so long")
    func migrationTimeouts() async throws {
        let database = try await TestDatabase.createDatabase("policygate_timeouts")
        let ownerURL = TestDatabase.url(TestDatabase.ownerURL, database: database)
        let all = try PostgresPolicyStore.migrations()
        let known = try #require(all.last?.version)
        do {
            var storeOptions = PostgresPolicyStore.Options()
            storeOptions.callTimeout = .milliseconds(300)
            let owner = try PostgresPolicyStore(settings: TestDatabase.ownerSettings(url: ownerURL), options: storeOptions)
            defer { owner.close() }
            // Older than this library: refused at start, until migrated.
            let runtime = try PostgresPolicyStore(
                settings: PolicyPostgresSettings(url: TestDatabase.url(TestDatabase.url, database: database)))
            defer { runtime.close() }
            let empty = await #expect(throws: PostgresStoreError.self) { try await runtime.checkSchema() }
            #expect(empty?.code == .schemaOutdated)
            try await owner.migrate(Array(all.prefix(2)), TestDatabase.migrationOptions)
            let old = await #expect(throws: PostgresStoreError.self) { try await runtime.checkSchema() }
            #expect(old?.code == .schemaOutdated, "\(old?.message ?? "")")

            let slow = PostgresPolicyStore.Migration(version: known + 1, name: "\(known + 1)_slow", sql: "SELECT pg_sleep(1);\n")
            #expect(try await owner.migrate(all + [slow], TestDatabase.migrationOptions) == all.dropFirst(2).map(\.version) + [known + 1])

            var tight = TestDatabase.migrationOptions
            tight.statementTimeout = .milliseconds(500)
            let tooSlow = PostgresPolicyStore.Migration(version: known + 2, name: "\(known + 2)_too_slow", sql: "SELECT pg_sleep(2);\n")
            let timedOut = await #expect(throws: PostgresStoreError.self) { try await owner.migrate(all + [slow, tooSlow], tight) }
            #expect(timedOut?.message.contains("statement timeout") == true, "\(timedOut?.message ?? "")")

            let alter = PostgresPolicyStore.Migration(
                version: known + 2, name: "\(known + 2)_alter", sql: "ALTER TABLE policygate.keys ADD COLUMN note text;\n")
            var quick = TestDatabase.migrationOptions
            quick.lockTimeout = .milliseconds(300)
            try await TestDatabase.withConnection(TestDatabase.url(TestDatabase.adminURL, database: database)) { connection in
                try await connection.query("BEGIN", logger: TestDatabase.logger)
                try await connection.query("SELECT count(*) FROM policygate.keys", logger: TestDatabase.logger)
                let started = ContinuousClock.now
                let locked = await #expect(throws: PostgresStoreError.self) { try await owner.migrate(all + [slow, alter], quick) }
                #expect(locked?.code == .migrationFailed)
                #expect(locked?.message.contains("lock timeout") == true, "\(locked?.message ?? "")")
                #expect(ContinuousClock.now - started < .seconds(5))
                try await connection.query("ROLLBACK", logger: TestDatabase.logger)
            }
            #expect(try await owner.migrate(all + [slow, alter], quick) == [known + 2])
        }
        try await TestDatabase.dropDatabase(database)
    }

    @Test("policy-gate migrate: applies the migrations as the owner and grants the runtime role; --check as the application")
    func migrateCommand() async throws {
        guard let executable = builtExecutable(named: "policy-gate") else {
            throw TestFailure("policy-gate was not found next to the test bundle; 'swift build --traits Postgres' builds it")
        }
        let database = try await TestDatabase.createDatabase("policygate_cli")
        do {
            func run(_ arguments: [String]) throws -> (Int32, String, String) {
                let process = Process()
                process.executableURL = executable
                process.arguments = arguments
                let (output, error) = (Pipe(), Pipe())
                process.standardOutput = output
                process.standardError = error
                try process.run()
                let out = output.fileHandleForReading.readDataToEndOfFile()
                let err = error.fileHandleForReading.readDataToEndOfFile()
                process.waitUntilExit()
                return (process.terminationStatus, String(decoding: out, as: UTF8.self), String(decoding: err, as: UTF8.self))
            }
            let owner = TestDatabase.ownerSettings(url: TestDatabase.url(TestDatabase.ownerURL, database: database))
            var arguments = ["migrate", "--url", owner.url!, "--runtime-role", TestDatabase.runtimeRole]
            if let variable = owner.passwordEnvironmentVariable { arguments += ["--password-env", variable] }
            let runtimeURL = TestDatabase.url(TestDatabase.url, database: database)
            let before = try run(["migrate", "--check", "--url", runtimeURL])
            #expect(before.0 == 1)
            #expect(before.2.contains("policy-gate migrate"), "\(before.2)")
            let first = try run(arguments)
            #expect(first.0 == 0, "\(first.2)")
            #expect(first.1.contains("applied 0001_initial\napplied 0002_faults\napplied 0003_least_privilege\n"), "\(first.1)")
            #expect(first.1.contains("EXECUTE on its functions to \(TestDatabase.runtimeRole)"))
            let again = try run(arguments)
            #expect(again.0 == 0)
            #expect(again.1.hasPrefix("policygate schema up to date (version \(try PostgresPolicyStore.schemaVersion()))"), "\(again.1)")
            let check = try run(["migrate", "--check", "--url", runtimeURL])
            #expect(check.0 == 0, "\(check.2)")
            let asRuntime = try run(["migrate", "--url", runtimeURL])
            #expect(asRuntime.0 == 1)
            #expect(asRuntime.2.contains("owner"), "\(asRuntime.2)")
        }
        try await TestDatabase.dropDatabase(database)
    }
}
#endif
