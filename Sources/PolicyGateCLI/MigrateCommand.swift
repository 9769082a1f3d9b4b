import Foundation
import PolicyGate
import Synchronization

#if Postgres
import PolicyGatePostgres
#endif

/// `policy-gate migrate`: brings a database's `policygate` schema to this version, as its owner,
/// and grants the application's role what it needs.
package enum MigrateCommand {
    /// The command's options.
    package static let spec = CommandSpec(
        name: "migrate",
        summary: "Apply the shared store's schema migrations to a PostgreSQL database (as its owner).",
        discussion: [
            "Connects as the schema's owner (a role with CREATE on the database for the first run) and applies the "
                + "migrations this version has that the database lacks, each once, with their own lock and statement "
                + "timeouts; refuses a database whose applied migrations differ from this version's files. Then revokes "
                + "the schema from PUBLIC and grants --runtime-role USAGE on the schema and EXECUTE on its functions, "
                + "and nothing else: the application connects as that role. Run it once per upgrade, before the "
                + "processes of the new version start (they only check the schema's version).",
            "The connection comes from --url, or POLICYGATE_POSTGRES_URL, PGHOST, PGPORT, PGUSER, PGDATABASE; the "
                + "password from the variable --password-env names (PGPASSWORD by default); TLS from --tls, the URL's "
                + "sslmode and sslrootcert, PGSSLMODE and PGSSLROOTCERT (verify-full unless the host is loopback). "
                + "Needs a policy-gate built with the Postgres trait.",
        ],
        options: [
            OptionSpec("--url", value: "url", "postgres://owner@host:port/database, without a password."),
            OptionSpec("--password-env", value: "name", "The environment variable holding the password (PGPASSWORD)."),
            OptionSpec("--tls", value: "mode", "disable, prefer, require, verify-ca or verify-full."),
            OptionSpec("--tls-root-cert", value: "file", "A PEM file of the authorities the server's certificate chains to."),
            OptionSpec("--runtime-role", value: "role", "The application's role, to grant EXECUTE on the schema's functions."),
            OptionSpec("--lock-timeout-ms", value: "n", "How long a statement may wait for a lock (default 5000)."),
            OptionSpec("--statement-timeout-s", value: "n", "How long one statement may run (default 900)."),
            OptionSpec("--check", "Only check that the schema is at this version, as the application does at start."),
        ])

    static func run(_ parsed: CommandSpec.Parsed, _ context: PolicyGateTool.Context) -> Int32 {
        var settings = PolicyPostgresSettings(url: parsed.value("--url"))
        settings.passwordEnvironmentVariable = parsed.value("--password-env")
        settings.tlsRootCertificate = parsed.value("--tls-root-cert")
        let lockTimeout: Int
        let statementTimeout: Int
        do throws(UsageError) {
            if let url = settings.url, URLComponents(string: url)?.password != nil || url.lowercased().contains("password=") {
                throw UsageError(
                    "--url must not carry a password: put it in PGPASSWORD or name a variable with --password-env", command: spec)
            }
            if let name = parsed.value("--tls") {
                guard let mode = PolicyPostgresSettings.TLSMode(rawValue: name) else {
                    let modes = PolicyPostgresSettings.TLSMode.allCases.map(\.rawValue).joined(separator: ", ")
                    throw UsageError("--tls '\(name)' is not one of \(modes)", command: spec)
                }
                settings.tls = mode
            }
            lockTimeout = try integerOption(
                parsed.value("--lock-timeout-ms"), name: "--lock-timeout-ms", in: 1...3_600_000, default: 5_000, command: spec)
            statementTimeout = try integerOption(
                parsed.value("--statement-timeout-s"), name: "--statement-timeout-s", in: 1...86_400, default: 900, command: spec)
        } catch {
            context.stderr.line(error.description)
            return PolicyGateTool.ExitStatus.usage
        }
        #if Postgres
        var options = PostgresPolicyStore.MigrationOptions(runtimeRole: parsed.value("--runtime-role"))
        options.lockTimeout = .milliseconds(lockTimeout)
        options.statementTimeout = .seconds(statementTimeout)
        let check = parsed.flag("--check")
        let (connection, migration) = (settings, options)
        let outcome = blocking { () async throws -> [String] in
            let store = try PostgresPolicyStore(settings: connection)
            defer { store.close() }
            if check {
                return ["policygate schema at version \(try await store.checkSchema()), as this policy-gate expects"]
            }
            let applied = try await store.migrate(migration)
            let names = try PostgresPolicyStore.migrations().filter { applied.contains($0.version) }.map(\.name)
            var lines = names.map { "applied \($0)" }
            let version = try PostgresPolicyStore.schemaVersion()
            lines.append(applied.isEmpty ? "policygate schema up to date (version \(version))" : "policygate schema at version \(version)")
            if let role = migration.runtimeRole {
                lines.append("granted USAGE on schema policygate and EXECUTE on its functions to \(role)")
            }
            return lines
        }
        switch outcome {
        case .success(let lines):
            for line in lines { context.stdout.line(line) }
            return PolicyGateTool.ExitStatus.success
        case .failure(let error):
            context.error("\(error)")
            return PolicyGateTool.ExitStatus.failure
        }
        #else
        _ = (lockTimeout, statementTimeout)
        context.error("this policy-gate was built without PostgreSQL support: build it with `swift build --traits Postgres`")
        return PolicyGateTool.ExitStatus.failure
        #endif
    }

    /// Runs `body` to its end from synchronous code (the command's entry point is synchronous;
    /// the store is asynchronous). Not for use on the concurrency pool's threads.
    private static func blocking<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) -> Result<T, any Error> {
        let box = ResultBox<T>()
        let done = DispatchSemaphore(value: 0)
        Task.detached {
            let outcome: Result<T, any Error>
            do { outcome = .success(try await body()) } catch { outcome = .failure(error) }
            box.result.withLock { $0 = outcome }
            done.signal()
        }
        done.wait()
        return box.result.withLock { $0 } ?? .failure(CancellationError())
    }
}

/// Where a detached task leaves its result for the thread that waits for it.
private final class ResultBox<T: Sendable>: Sendable {
    let result = Mutex<Result<T, any Error>?>(nil)
}
