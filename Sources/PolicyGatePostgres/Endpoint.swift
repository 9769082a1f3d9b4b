#if Postgres
import Foundation
import PolicyGate
import PostgresNIO

/// Where to connect and how, from the settings and the environment.
struct Endpoint {
    var host = "localhost"
    var port = 5432
    var user = "postgres"
    var database: String?
    var password: String?
    /// The TLS mode in force (`PolicyPostgresSettings.tls`, the URL's `sslmode`, `PGSSLMODE`,
    /// or the default for the host).
    var tls: PolicyPostgresSettings.TLSMode = .verifyFull
    /// The PEM file of trusted authorities; `nil`: the system's trust store.
    var rootCertificate: String?

    init(settings: PolicyPostgresSettings, environment: [String: String]) throws {
        if let value = environment["PGHOST"] { host = value }
        if let value = environment["PGPORT"].flatMap(Int.init) { port = value }
        if let value = environment["PGUSER"] { user = value }
        if let value = environment["PGDATABASE"] { database = value }
        var urlMode: String?
        var urlRoot: String?
        if let url = settings.url ?? environment["POLICYGATE_POSTGRES_URL"] {
            guard let components = URLComponents(string: url), ["postgres", "postgresql"].contains(components.scheme ?? "")
            else { throw PostgresStoreError("the PostgreSQL URL must look like postgres://user@host:port/database", code: .configuration) }
            if let value = components.host, !value.isEmpty { host = value }
            if let value = components.port { port = value }
            if let value = components.user { user = value }
            if let value = components.password { password = value }
            let path = components.path.drop { $0 == "/" }
            if !path.isEmpty { database = String(path) }
            for item in components.queryItems ?? [] {
                switch item.name {
                case "sslmode": urlMode = item.value
                case "sslrootcert": urlRoot = item.value
                default: break
                }
            }
        }
        if let value = settings.host { host = value }
        if let value = settings.port { port = value }
        if let value = settings.user { user = value }
        if let value = settings.database { database = value }
        if let value = environment[settings.passwordEnvironmentVariable ?? "PGPASSWORD"] { password = value }

        if let mode = settings.tls {
            tls = mode
        } else if let name = urlMode ?? environment["PGSSLMODE"] {
            guard let mode = PolicyPostgresSettings.TLSMode(rawValue: name) else {
                let modes = PolicyPostgresSettings.TLSMode.allCases.map(\.rawValue).joined(separator: ", ")
                throw PostgresStoreError("sslmode \"\(name)\" is not one of \(modes)", code: .configuration)
            }
            tls = mode
        } else {
            // Loopback traffic never leaves the host: use TLS when the server offers it, as
            // libpq does, so that a development server without TLS keeps working.
            tls = Self.isLoopback(host) ? .prefer : .verifyFull
        }
        rootCertificate = settings.tlsRootCertificate ?? urlRoot ?? environment["PGSSLROOTCERT"]
        if rootCertificate == "system" || rootCertificate == "" { rootCertificate = nil }
        // libpq's rule: require with a root certificate at hand checks the chain.
        if tls == .require && rootCertificate != nil { tls = .verifyCA }
    }

    /// `localhost`, `127.x.x.x` or `::1`.
    static func isLoopback(_ host: String) -> Bool {
        let host = host.lowercased()
        if host == "localhost" || host == "::1" || host == "[::1]" { return true }
        let parts = host.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts[0] == "127" && parts.allSatisfy { UInt8($0) != nil }
    }

    /// `host:port`, for messages.
    var address: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// NIOSSL's configuration for ``tls``; `nil` for `PolicyPostgresSettings.TLSMode.disable`.
    var tlsConfiguration: TLSConfiguration? {
        var configuration = TLSConfiguration.makeClientConfiguration()
        switch tls {
        case .disable: return nil
        case .prefer, .require: configuration.certificateVerification = .none
        case .verifyCA: configuration.certificateVerification = .noHostnameVerification
        case .verifyFull: configuration.certificateVerification = .fullVerification
        }
        if let rootCertificate { configuration.trustRoots = .file(rootCertificate) }
        return configuration
    }

    /// The pool's TLS setting.
    var clientTLS: PostgresClient.Configuration.TLS {
        guard let configuration = tlsConfiguration else { return .disable }
        return tls == .prefer ? .prefer(configuration) : .require(configuration)
    }

    /// A single connection's TLS setting; reads the root certificate now, so that a missing
    /// or unreadable file is an error at once.
    func connectionTLS() throws -> PostgresConnection.Configuration.TLS {
        guard let configuration = tlsConfiguration else { return .disable }
        let context: NIOSSLContext
        do {
            context = try NIOSSLContext(configuration: configuration)
        } catch {
            throw PostgresStoreError(
                "cannot use the TLS root certificate \(rootCertificate.map { "file '\($0)'" } ?? "store of the system"): \(error)",
                code: .configuration)
        }
        return tls == .prefer ? .prefer(context) : .require(context)
    }

    /// `error`, from connecting to this endpoint or a statement, as a ``PostgresStoreError``
    /// whose code says what to do.
    func storeError(_ error: any Error) -> PostgresStoreError {
        if let error = error as? PostgresStoreError { return error }
        guard let psql = error as? PSQLError else { return PostgresStoreError(PostgresPolicyStore.describe(error)) }
        if psql.code == .sslUnsupported {
            return PostgresStoreError(
                "the server at \(address) does not offer TLS, and tls = \"\(tls.rawValue)\" requires it: turn ssl on at the "
                    + "server (or, on a network you trust, choose tls = \"prefer\" or \"disable\")", code: .tlsUnavailable)
        }
        if let underlying = psql.underlying {
            if let extra = underlying as? NIOSSLExtraError, extra == .failedToValidateHostname {
                return PostgresStoreError(
                    "the certificate of the server at \(address) does not name '\(host)' (tls = \"verify-full\"): connect "
                        + "by a name the certificate lists", code: .tlsVerification)
            }
            if underlying is NIOSSLError || underlying is NIOSSLExtraError || underlying is BoringSSLError {
                let roots = rootCertificate.map { "'\($0)'" } ?? "the system's trust store"
                return PostgresStoreError(
                    "TLS with the server at \(address) failed (tls = \"\(tls.rawValue)\", trusted authorities from \(roots)): "
                        + "\(underlying)", code: .tlsVerification)
            }
        }
        let message = PostgresPolicyStore.describe(error)
        switch psql.serverInfo?[.sqlState] {
        case "28P01", "28000":
            return PostgresStoreError(
                "\(message): check the user '\(user)', its password, and that the server's pg_hba.conf admits it this way "
                    + "(tls = \"\(tls.rawValue)\")", code: .authentication)
        case "42704":
            return PostgresStoreError(message, code: .configuration)
        case "42501":
            return PostgresStoreError(message, code: .permission)
        default:
            return PostgresStoreError(message)
        }
    }
}
#endif
