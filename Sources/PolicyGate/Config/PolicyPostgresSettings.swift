import Foundation

/// How a PostgreSQL store is reached (`[store.postgres]`); the fields left out come from the
/// environment (`POLICYGATE_POSTGRES_URL`, then the usual `PGHOST`, `PGPORT`, `PGUSER`,
/// `PGDATABASE`, `PGPASSWORD`) or their defaults.
///
/// ```toml
/// [store.postgres]
/// url = "postgres://gate@db.internal:5432/app"
/// password_env = "GATE_DB_PASSWORD"
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

    /// Settings with every field left to the environment and the defaults.
    public init(
        url: String? = nil, host: String? = nil, port: Int? = nil, user: String? = nil, database: String? = nil,
        passwordEnvironmentVariable: String? = nil, leaseSeconds: Int? = nil, timeoutMilliseconds: Int? = nil,
        retrySeconds: Int? = nil, maxConnections: Int? = nil
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
    }

    /// The keys of `[store.postgres]`; the configuration reader knows them from here.
    enum CodingKeys: String, CodingKey, CaseIterable {
        case url, host, port, user, database
        case passwordEnvironmentVariable = "password_env"
        case leaseSeconds = "lease_seconds"
        case timeoutMilliseconds = "timeout_ms"
        case retrySeconds = "retry_seconds"
        case maxConnections = "max_connections"
    }

    /// The settings that are set, as `key = value` pairs; a password in a URL built in code is
    /// shown as `***`.
    public var description: String {
        let fields: [(String, String?)] = [
            ("url", url.map(Self.redacted)), ("host", host), ("port", port.map(String.init)), ("user", user), ("database", database),
            ("password_env", passwordEnvironmentVariable), ("lease_seconds", leaseSeconds.map(String.init)),
            ("timeout_ms", timeoutMilliseconds.map(String.init)), ("retry_seconds", retrySeconds.map(String.init)),
            ("max_connections", maxConnections.map(String.init)),
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
