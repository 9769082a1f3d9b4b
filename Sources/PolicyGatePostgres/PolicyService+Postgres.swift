#if Postgres
import Foundation
import PolicyGate

extension PolicyService {
    /// Creates a gate whose shared providers keep their counters in PostgreSQL: connects as
    /// `configuration.postgres` and the environment say, checks that the schema is at this
    /// library's version (``PostgresPolicyStore/checkSchema()``; it changes nothing: the
    /// schema's owner runs the migrations, `policy-gate migrate`), and returns the gate.
    ///
    /// ```swift
    /// let gate = try await PolicyService.connecting(configuration: PolicyConfiguration(contentsOfFile: "policy.toml"))
    /// ```
    /// - Parameters:
    ///   - configuration: Limits, schedules and storage per provider (`store = "postgres"`).
    ///   - options: The store's lease, timeouts and pool size; by default those of
    ///     `[store.postgres]`, then the library's defaults.
    ///   - telemetry: Receives every event, store failures included.
    /// - Throws: ``PostgresStoreError`` if the database cannot be reached (its code says why:
    ///   TLS, authentication…) or its schema is not this library's version;
    ///   `PolicyError` for an invalid configuration built in code.
    public static func connecting(
        configuration: PolicyConfiguration, options: PostgresPolicyStore.Options? = nil,
        telemetry: (any PolicyTelemetry)? = nil
    ) async throws -> PolicyService {
        let store = try PostgresPolicyStore(settings: configuration.postgres ?? PolicyPostgresSettings(), options: options)
        do {
            try await store.checkSchema()
        } catch {
            store.close()
            throw error
        }
        return try PolicyService(configuration: configuration, store: store, telemetry: telemetry)
    }
}
#endif
