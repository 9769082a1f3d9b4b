import Foundation

/// How a PostgreSQL store is reached (`[store.postgres]`); the fields left out come from the
/// environment (`POLICYGATE_POSTGRES_URL`, then the usual `PGHOST`, `PGPORT`, `PGUSER`,
/// `PGDATABASE`, `PGPASSWORD`, `PGSSLMODE`, `PGSSLROOTCERT`) or their defaults.
///
/// ```toml
/// [store.postgres]
/// url = "postgres://gate@db.internal:5432/app"
/// password_env = "GATE_DB_PASSWORD"
/// tls = "verify-full"               # the default for a host other than loopback
/// ```
///
/// It never holds a password: a configuration file is no place for one, and this value is
/// printed and logged freely. The password is read from the variable ``passwordEnvironmentVariable``
/// names (`PGPASSWORD` by default) when the store connects.
public struct PolicyPostgresSettings: Sendable, Hashable, Codable, CustomStringConvertible {
    /// A `postgres://user@host:port/database` URL, without a password.
    public var url: String?
    /// The server's host name or address.
    public var host: String?
    /// The server's port.
    public var port: Int?
    /// The user to connect as.
    public var user: String?
    /// The database.
    public var database: String?
    /// The environment variable holding the password (`PGPASSWORD` when left out).
    public var passwordEnvironmentVariable: String?
    /// How long a concurrency slot lasts unless its holder renews it (the holder renews it
    /// every third of this while the call runs). A crashed process's slots come back after it.
    public var leaseSeconds: Int?
    /// The longest one database call may take (a caller's maximum wait shortens it).
    public var timeoutMilliseconds: Int?
    /// How long commits and releases are retried while the database is unreachable.
    public var retrySeconds: Int?
    /// The most connections the store opens (plus one for notifications).
    public var maxConnections: Int?
    /// How the connection is protected (`tls`); when left out, the URL's `sslmode`, then
    /// `PGSSLMODE`, then ``TLSMode/verifyFull`` for a host other than loopback and
    /// ``TLSMode/prefer`` for loopback (`localhost`, `127.x.x.x`, `::1`).
    public var tls: TLSMode?
    /// A PEM file of the certificate authorities the server's certificate must chain to
    /// (`tls_root_cert`); when left out, the URL's `sslrootcert`, then `PGSSLROOTCERT`, then the
    /// system's trust store.
    public var tlsRootCertificate: String?

    /// How a connection to the server is protected, as libpq's `sslmode` names it.
    public enum TLSMode: String, Sendable, Hashable, Codable, CaseIterable {
        /// Plain TCP: passwords and data travel in the clear.
        case disable
        /// TLS if the server offers it, plain TCP otherwise; the certificate is not checked.
        case prefer
        /// TLS or no connection; the certificate is not checked (unless a root certificate is
        /// given: then as ``verifyCA``, libpq's rule).
        case require
        /// TLS, and the server's certificate must chain to a trusted authority.
        case verifyCA = "verify-ca"
        /// TLS, a trusted certificate, and it must name the host connected to.
        case verifyFull = "verify-full"
    }

    /// Settings with every field left to the environment and the defaults.
    public init(
        url: String? = nil, host: String? = nil, port: Int? = nil, user: String? = nil, database: String? = nil,
        passwordEnvironmentVariable: String? = nil, leaseSeconds: Int? = nil, timeoutMilliseconds: Int? = nil,
        retrySeconds: Int? = nil, maxConnections: Int? = nil, tls: TLSMode? = nil, tlsRootCertificate: String? = nil
    ) {
        self.url = url
        self.host = host
        self.port = port
        self.user = user
        self.database = database
        self.passwordEnvironmentVariable = passwordEnvironmentVariable
        self.leaseSeconds = leaseSeconds
        self.timeoutMilliseconds = timeoutMilliseconds
        self.retrySeconds = retrySeconds
        self.maxConnections = maxConnections
        self.tls = tls
        self.tlsRootCertificate = tlsRootCertificate
    }

    /// The keys of `[store.postgres]`; the configuration reader knows them from here.
    enum CodingKeys: String, CodingKey, CaseIterable {
        case url, host, port, user, database
        case passwordEnvironmentVariable = "password_env"
        case leaseSeconds = "lease_seconds"
        case timeoutMilliseconds = "timeout_ms"
        case retrySeconds = "retry_seconds"
        case maxConnections = "max_connections"
        case tls
        case tlsRootCertificate = "tls_root_cert"
    }

    /// The settings that are set, as `key = value` pairs; a password in a URL built in code is
    /// shown as `***`.
    public var description: String {
        let fields: [(String, String?)] = [
            ("url", url.map(Self.redacted)), ("host", host), ("port", port.map(String.init)), ("user", user), ("database", database),
            ("password_env", passwordEnvironmentVariable), ("lease_seconds", leaseSeconds.map(String.init)),
            ("timeout_ms", timeoutMilliseconds.map(String.init)), ("retry_seconds", retrySeconds.map(String.init)),
            ("max_connections", maxConnections.map(String.init)), ("tls", tls?.rawValue),
            ("tls_root_cert", tlsRootCertificate),
        ]
        return fields.compactMap { key, value in value.map { "\(key) = \($0)" } }.joined(separator: ", ")
    }

    /// Whether a URL may carry a password: a `user:password@` part, a `password=` parameter,
    /// or a form `URLComponents` cannot read (where one could hide). Such a URL is refused.
    static func urlHasPassword(_ url: String) -> Bool {
        guard let components = URLComponents(string: url), components.scheme != nil else {
            return url.contains("@") || url.lowercased().contains("password")
        }
        if components.password != nil { return true }
        return components.queryItems?.contains { $0.name.lowercased() == "password" } ?? false
    }

    /// `url` with any password replaced by `***`, for descriptions.
    static func redacted(_ url: String) -> String {
        guard urlHasPassword(url) else { return url }
        guard var components = URLComponents(string: url), components.scheme != nil else { return "<unreadable URL, hidden>" }
        if components.password != nil { components.password = "***" }
        components.queryItems = components.queryItems?.map {
            $0.name.lowercased() == "password" ? URLQueryItem(name: $0.name, value: "***") : $0
        }
        return components.string ?? "<hidden>"
    }
}
