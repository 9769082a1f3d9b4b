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
/// one round trip. The release is one more statement, written in the background and retried,
/// carrying the permit's last commit (a commit on a permit held longer than
/// ``Options/commitHold`` is written alone). Concurrency slots are leases that this store
/// renews every third of ``Options/lease`` while their permits hold them, so a crashed
/// process's slots come back after the lease. Releases and lowered commits are announced with
/// `NOTIFY` to the processes that registered a waiter for the key in `policygate.waiters`
/// (a refused admission registers; ``endWaiting(for:)`` unregisters), waking their head
/// waiters; nobody polls, and an uncontended call sends no NOTIFY.
///
/// Keys are stored and announced by a fixed-size digest (`PolicyKey.storeName`), with a
/// readable label in `policygate.admissions.key_label`. Each admission carries a random nonce
/// that every later statement about it must name. Every statement is bounded on both sides
/// (the server's `statement_timeout` and a client-side timeout), an admission waits for its
/// key's lock no longer than its caller waits, and sessions run under READ COMMITTED whatever
/// the database's default. When no renewal succeeds within the lease minus
/// ``Options/fencingMargin``, the store counts its leases lost, reports each through
/// `PolicyTelemetry.didLoseLease(_:)`, and refuses admissions (fail_closed callers get
/// `PolicyError.Code.storeUnavailable`) until the database answers again.
///
/// The schema is in versioned SQL files (`Sources/PolicyGatePostgres/Migrations/`), applied by
/// ``migrate(_:)`` as the schema's owner, once per upgrade (`policy-gate migrate`); the
/// application's role only executes the schema's functions, and the store checks the schema's
/// version at start (``checkSchema()``). The store never logs or prints a password.
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
        /// The most rows of each kind one cleanup statement deletes (each statement is its
        /// own short transaction; cleanup repeats it until nothing is left or its time
        /// budget, ``cleanupBudget``, is spent).
        public var cleanupBatch: Int = 5_000
        /// How long one cleanup may keep deleting batches before it leaves the rest to the next.
        public var cleanupBudget: Duration = .seconds(10)
        /// Whether `policygate.admissions` keeps a row per call after its release (the audit
        /// log, kept ``admissionsRetention``). Without it, a release deletes its admission.
        public var keepAdmissionsLog: Bool = true
        /// How long ended admissions are kept in the log.
        public var admissionsRetention: Duration = .seconds(2 * 86_400)
        /// How long a permit's commit waits for its release to carry it, before it is
        /// written on its own (see `PolicyQuotaStore.commitHold`). A permit that commits
        /// and then releases within this costs one statement less.
        public var commitHold: Duration = .milliseconds(50)
        /// How long before a lease would expire, counted from the last renewal sent that
        /// succeeded, the store stops vouching for it: it reports the lease lost and admits
        /// nothing until the database answers again. `nil`: a sixth of ``lease``. At most half
        /// the lease (renewals come every third).
        public var fencingMargin: Duration?

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
    /// How the connections are protected: `PolicyPostgresSettings.tls`, the URL's `sslmode`,
    /// `PGSSLMODE`, or the host's default (`verify-full`; `prefer` for loopback).
    public var tls: PolicyPostgresSettings.TLSMode { endpoint.tls }
    let client: PostgresClient
    /// The listener's configuration, also used by ``migrate(_:)`` and ``checkSchema()``.
    let connection: PostgresConnection.Configuration
    let endpoint: Endpoint
    let logger: Logger
    private let tasks = Mutex<[Task<Void, Never>]>([])
    /// The leases this store keeps alive (their permits hold them), and whether it is fenced.
    private let leases = Mutex(HeldLeases())
    /// In a class, not stored in the mutex as a closure: a closure read and written back
    /// through a generic lock is wrapped in two more reabstraction thunks each time, and
    /// calling it grew with every notification.
    private let observer = Mutex<Observer<String?>?>(nil)
    private let lossObserver = Mutex<Observer<PolicyLeaseLossEvent>?>(nil)
    private let lost = Atomic<Int>(0)
    private let failureObserver = Mutex<Observer<PolicyStoreFailureEvent>?>(nil)
    /// This store instance, as `policygate.waiters` names it.
    let waiterID = Int64.random(in: .min ... .max)
    /// Keys this process's callers wait for news of: how many, and the token of the
    /// registration in `policygate.waiters` (nil: not known to be registered).
    private let waiting = Mutex<[String: Waiting]>([:])

    /// Connects to the database `settings` and the environment describe.
    ///
    /// Fields missing from `settings` come from `POLICYGATE_POSTGRES_URL`, then `PGHOST`,
    /// `PGPORT`, `PGUSER`, `PGDATABASE`; the password from the variable
    /// `PolicyPostgresSettings.passwordEnvironmentVariable` names (`PGPASSWORD` by default);
    /// TLS from `PolicyPostgresSettings.tls` and `PolicyPostgresSettings.tlsRootCertificate`,
    /// then the URL's `sslmode` and `sslrootcert`, then `PGSSLMODE` and `PGSSLROOTCERT`.
    /// Connections are opened lazily; ``checkSchema()`` (which `PolicyService.connecting`
    /// calls) connects once and checks the schema's version.
    /// - Throws: ``PostgresStoreError`` (``PostgresStoreError/Code/configuration``) if the
    ///   settings do not describe a database or name a root certificate that cannot be read.
    public init(
        settings: PolicyPostgresSettings = PolicyPostgresSettings(), options: Options? = nil, holder: String? = nil,
        environment: [String: String] = ProcessInfo.processInfo.environment,
        logger: Logger? = nil
    ) throws {
        // Quiet by default: a failing database is reported through the gate's telemetry.
        let logger =
            logger
            ?? {
                var logger = Logger(label: "policygate.postgres")
                logger.logLevel = .error
                return logger
            }()
        let options = options ?? Options(settings)
        self.options = options
        self.holder = holder ?? "\(ProcessInfo.processInfo.hostName):\(ProcessInfo.processInfo.processIdentifier)"
        self.logger = logger
        let endpoint = try Endpoint(settings: settings, environment: environment)
        self.endpoint = endpoint
        let parameters = Self.sessionParameters(options)

        var configuration = PostgresClient.Configuration(
            host: endpoint.host, port: endpoint.port, username: endpoint.user, password: endpoint.password,
            database: endpoint.database, tls: endpoint.clientTLS)
        configuration.options.maximumConnections = options.maxConnections
        configuration.options.additionalStartupParameters = parameters
        configuration.options.connectTimeout = options.callTimeout
        // Idle pooled connections are checked this often, so a dead one is found before use.
        configuration.options.keepAliveBehavior = .init(frequency: min(.seconds(30), options.lease / 3))
        client = PostgresClient(configuration: configuration, backgroundLogger: logger)

        var listener = PostgresConnection.Configuration(
            host: endpoint.host, port: endpoint.port, username: endpoint.user, password: endpoint.password,
            database: endpoint.database, tls: try endpoint.connectionTLS())
        listener.options.additionalStartupParameters = parameters
        listener.options.connectTimeout = .nanoseconds(options.callTimeout.nanosecondsSaturating)
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

    /// How many of this store's leases it stopped vouching for: they expired before it could
    /// renew them, or no renewal succeeded in time (see ``Options/fencingMargin``). Their
    /// calls may no longer have been counted as in flight.
    public var lostLeases: Int { lost.load(ordering: .relaxed) }

    /// Whether the store is fenced: it lost its leases for want of a renewal and refuses
    /// admissions until the database answers again.
    public var isFenced: Bool { leases.withLock { $0.fenced } }

    /// What every session is started with: the server's statement timeout, READ COMMITTED
    /// (admit() needs a fresh snapshot after the key's lock, whatever the database's default
    /// isolation), and TCP keepalives so the server drops a vanished client's session (and
    /// its row locks) well within a lease.
    static func sessionParameters(_ options: Options) -> [(String, String)] {
        let seconds = max(1, options.lease.nanosecondsSaturating / 6_000_000_000)
        return [
            ("statement_timeout", "\(options.callTimeout.nanosecondsSaturating / 1_000_000)"),
            ("default_transaction_isolation", "read committed"),
            ("tcp_keepalives_idle", "\(seconds)"),
            ("tcp_keepalives_interval", "\(seconds)"),
            ("tcp_keepalives_count", "3"),
            ("application_name", "policygate"),
        ]
    }

    // MARK: PolicyQuotaStore

    /// The store's ``Options/callTimeout``.
    public var callTimeout: Duration { options.callTimeout }
    /// The store's ``Options/writeRetryPeriod``.
    public var writeRetryPeriod: Duration { options.writeRetryPeriod }

    /// One statement: `policygate.admit` checks and records the call under the key's row lock,
    /// waiting for that lock no longer than `PolicyStoreRequest.maximumWait`.
    /// - Throws: ``PostgresStoreError`` when the database fails or does not answer in time, or
    ///   while the store is fenced (``isFenced``); `PolicyStoreRequestError` when it refuses the
    ///   request's values (SQLSTATE classes 22 and 54).
    public func admit(_ request: PolicyStoreRequest) async throws -> PolicyStoreDecision {
        if isFenced {
            throw PostgresStoreError("no lease renewal succeeded in time: admitting nothing until the database answers again")
        }
        let (r, t) = (request.requestCaps, request.tokenCaps)
        let leaseMicroseconds = options.lease.nanosecondsSaturating / 1_000
        let nonce = Int64.random(in: .min ... .max)
        // Rounded up: the server gives up no sooner than the caller. Not sent when the caller
        // waits at least as long as the statement_timeout (no lock_timeout to set then).
        let waitMilliseconds = request.maximumWait.flatMap { wait in
            wait < options.callTimeout ? Int32(clamping: (wait.nanosecondsSaturating + 999_999) / 1_000_000) : nil
        }
        let sent = ContinuousClock.now
        typealias Row = (Bool, Int64?, Int64, String?, Int64?, [Int16]?, [Int64]?, [Int64]?, [Int64]?, Bool)
        // Decoded inside `describing` too: the server's error arrives with the rows.
        let rows: [Row] = try await describing {
            var rows: [Row] = []
            for try await row in try await client.query(
                """
                SELECT admitted, admission_id, now_us, refused_by, lease_expiry_us, wins, buckets, requests, tokens, registered
                FROM policygate.admit(\(request.keyName), \(request.keyLabel), \(request.tokens),
                    ARRAY[\(r[0]), \(r[1]), \(r[2])]::bigint[], ARRAY[\(t[0]), \(t[1]), \(t[2])]::bigint[],
                    \(request.maxConcurrent)::integer, \(leaseMicroseconds), \(holder), \(nonce), \(waitMilliseconds)::integer,
                    \(waiterID))
                """, logger: logger
            ).decode(Row.self) {
                rows.append(row)
            }
            return rows
        }
        var decision: PolicyStoreDecision?
        for (admitted, id, now, refusedBy, leaseExpiry, wins, buckets, requests, tokens, registered) in rows {
            if registered { self.registered(request.keyName, token: nonce) }
            if admitted, let id {
                let lease = PolicyStoreLease(id: id, admittedAt: now, nonce: nonce)
                holdLease(lease, key: request.key, confirmed: sent)
                decision = .admitted(lease)
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

    /// Refused, and registered as waiting for `keyName`: the caller's beginWaiting keeps it.
    func registered(_ keyName: String, token: Int64) {
        waiting.withLock { $0[keyName, default: Waiting()].token = token }
    }

    /// Keeps `lease` alive (renewed) until its permit releases it.
    func holdLease(_ lease: PolicyStoreLease, key: PolicyKey, confirmed: ContinuousClock.Instant) {
        leases.withLock { $0.held[lease.id] = HeldLease(lease: lease, key: key, confirmed: confirmed) }
    }

    /// One statement: `policygate.commit` sets the call's tokens (idempotent).
    public func commit(_ lease: PolicyStoreLease, tokens: Int) async throws {
        try await describing {
            _ = try await client.query("SELECT policygate.commit(\(lease.id), \(lease.nonce), \(tokens))", logger: logger).collect()
        }
    }

    /// One statement: `policygate.release` deletes the lease and announces it to the
    /// processes waiting for its key, if any. The lease is no longer renewed from the start,
    /// whether or not the statement succeeds.
    public func release(_ lease: PolicyStoreLease) async throws {
        try await release(lease, committing: nil)
    }

    /// One statement: `policygate.release` sets the call's tokens first when `tokens` is not
    /// `nil`, then releases as ``release(_:)`` does.
    public func release(_ lease: PolicyStoreLease, committing tokens: Int?) async throws {
        endRenewal(of: lease)
        let keep = options.keepAdmissionsLog
        try await describing {
            _ = try await client.query(
                "SELECT policygate.release(\(lease.id), \(lease.nonce), \(tokens.map(Int64.init))::bigint, \(keep))",
                logger: logger
            ).collect()
        }
    }

    /// The store's ``Options/commitHold``.
    public var commitHold: Duration { options.commitHold }

    /// Counts a caller waiting for news of `keyName`. Its refused admission registered this
    /// store in `policygate.waiters`; if that registration may be gone (the previous waiter's
    /// unregistration raced with it), it is written again in the background and the key
    /// announced, so that the caller looks again.
    public func beginWaiting(for keyName: String) {
        let missing = waiting.withLock { table -> Bool in
            table[keyName, default: Waiting()].count += 1
            return table[keyName]?.token == nil
        }
        if missing { reregister(keyName) }
    }

    /// Uncounts a caller; when it was the last for `keyName`, deletes the registration in
    /// the background (only if it is still the one this store wrote last).
    public func endWaiting(for keyName: String) {
        let token = waiting.withLock { table -> Int64?? in
            guard var entry = table[keyName] else { return nil }
            entry.count -= 1
            if entry.count > 0 {
                table[keyName] = entry
                return nil
            }
            table[keyName] = nil
            return .some(entry.token)
        }
        guard case .some(.some(let token)) = token else { return }
        let task = Task { [weak self] in
            guard let self else { return }
            do {
                _ = try await self.bounded {
                    try await self.client.query(
                        "SELECT policygate.unregister_waiter(\(self.waiterID), \(keyName), \(token))", logger: self.logger
                    ).collect()
                }
            } catch {
                // Left to expire (a lease after its last refresh): until then, releases of the
                // key still send a NOTIFY nobody needs.
                self.reportFailure(.waiters, error)
            }
        }
        _ = task
    }

    /// Writes `keyName`'s registration again and announces the key to this process.
    private func reregister(_ keyName: String) {
        let token = Int64.random(in: .min ... .max)
        let task = Task { [weak self] in
            guard let self else { return }
            waiting.withLock { table in
                if table[keyName] != nil { table[keyName]?.token = token }
            }
            await self.refreshWaiters([(keyName, token)], announceAll: true)
        }
        _ = task
    }

    /// Extends this store's registrations for `keys`; announces those that had to be written
    /// again (all of them with `announceAll`), since a release may have missed them.
    private func refreshWaiters(_ keys: [(String, Int64)], announceAll: Bool = false) async {
        guard !keys.isEmpty else { return }
        let (names, tokens) = (keys.map(\.0), keys.map(\.1))
        let leaseMicroseconds = options.lease.nanosecondsSaturating / 1_000
        do {
            let rewritten = try await bounded {
                var rewritten: [String] = []
                for try await key in try await self.client.query(
                    "SELECT policygate.refresh_waiters(\(self.waiterID), \(self.holder), \(names)::text[], \(tokens)::bigint[], \(leaseMicroseconds))",
                    logger: self.logger
                ).decode(String.self) {
                    rewritten.append(key)
                }
                return rewritten
            }
            for key in announceAll ? names : rewritten { observer.withLock { $0 }?.call(key) }
        } catch {
            reportFailure(.waiters, error)
            // The waiters cannot be sure to hear of a release: let them look again now.
            for key in names { observer.withLock { $0 }?.call(key) }
        }
    }

    /// Keeps `onFailure`, called when the store's background work fails.
    public func observeFailures(_ onFailure: @escaping @Sendable (PolicyStoreFailureEvent) -> Void) {
        failureObserver.withLock { $0 = Observer(onFailure) }
    }

    /// The key that `PolicyStoreFailureEvent`s of the store's own work name.
    static let storeKey = PolicyKey(provider: "policygate.store")

    private func reportFailure(_ operation: PolicyStoreFailureEvent.Operation, _ error: any Error) {
        let description = error is CancellationError ? "cancelled" : Self.describe(error)
        logger.debug("policygate: \(operation.rawValue) failed", metadata: ["error": "\(description)"])
        failureObserver.withLock { $0 }?.call(
            PolicyStoreFailureEvent(key: Self.storeKey, operation: operation, outcome: .willRetry, error: description))
    }

    /// Stops renewing `lease`: its permit released it, or nobody took it.
    public func endRenewal(of lease: PolicyStoreLease) {
        leases.withLock { held in
            if held.held[lease.id]?.lease == lease { held.held[lease.id] = nil }
        }
    }

    /// Keeps `onLoss`, called for each lease the store stops vouching for.
    public func observeLeaseLoss(_ onLoss: @escaping @Sendable (PolicyLeaseLossEvent) -> Void) {
        lossObserver.withLock { $0 = Observer(onLoss) }
    }

    /// Starts the listener that turns `NOTIFY policygate` into `onChange`.
    public func observeChanges(_ onChange: @escaping @Sendable (String?) -> Void) {
        let first = observer.withLock { observer in
            defer { observer = Observer(onChange) }
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

    /// The margin before a lease's expiry at which the store stops vouching for it.
    var fencingMargin: Duration { min(options.fencingMargin ?? options.lease / 6, options.lease / 2) }

    /// Renews the leases of permits still running, fences the store when renewals fail for
    /// too long, and deletes what no window needs any more. Every statement here has a
    /// client-side timeout too, so a half-open connection cannot stall the loop.
    private func startMaintenance() {
        let task = Task { [weak self] in
            var lastCleanup = ContinuousClock.now
            while !Task.isCancelled {
                guard let wake = self?.nextMaintenance() else { return }
                try? await Task.sleep(until: wake)
                guard let self, !Task.isCancelled else { return }
                await self.renew()
                await self.refreshWaiters(
                    self.waiting.withLock { table in
                        table.compactMap { key, entry in entry.count > 0 ? entry.token.map { (key, $0) } : nil }
                    })
                if ContinuousClock.now - lastCleanup >= self.options.cleanupInterval {
                    lastCleanup = .now
                    do {
                        try await self.cleanup()
                    } catch {
                        self.reportFailure(.cleanup, error)
                    }
                }
            }
        }
        // Apart from renewal, which may be stuck in a call: wakes when the first lease would
        // have to be given up.
        let fencer = Task { [weak self] in
            while !Task.isCancelled {
                guard let wake = self?.nextFence() else { return }
                try? await Task.sleep(until: wake)
                guard let self, !Task.isCancelled else { return }
                self.fence(now: .now)
            }
        }
        tasks.withLock { $0 += [task, fencer] }
    }

    /// When to renew next: a third of the lease after the last renewal, or within a second
    /// after a failed one.
    private func nextMaintenance() -> ContinuousClock.Instant {
        let failing = leases.withLock { $0.failing }
        return .now + (failing ? min(.seconds(1), options.lease / 3) : options.lease / 3)
    }

    /// When the first held lease would have to be given up; with none held, a sixth of the
    /// lease from now (a new lease's limit is at least half a lease away).
    private func nextFence() -> ContinuousClock.Instant {
        let earliest = leases.withLock { $0.held.values.map(\.confirmed).min() }
        return earliest.map { $0 + options.lease - fencingMargin } ?? .now + options.lease / 6
    }

    private func renew() async {
        let held = leases.withLock { state in state.held.values.map(\.lease) }
        let fenced = isFenced
        guard !held.isEmpty || fenced else { return }
        let sent = ContinuousClock.now
        do {
            var renewed = Set<Int64>()
            if held.isEmpty {
                // Fenced with nothing to renew: any answer will do.
                _ = try await bounded { try await self.client.query("SELECT 1", logger: self.logger).collect() }
            } else {
                let (ids, nonces) = (held.map(\.id), held.map(\.nonce))
                let leaseMicroseconds = options.lease.nanosecondsSaturating / 1_000
                renewed = try await bounded {
                    var renewed = Set<Int64>()
                    let rows = try await self.client.query(
                        "SELECT policygate.renew(\(ids)::bigint[], \(nonces)::bigint[], \(leaseMicroseconds))", logger: self.logger)
                    for try await id in rows.decode(Int64.self) { renewed.insert(id) }
                    return renewed
                }
            }
            // A lease that expired was not renewed: its slot may be someone else's now.
            let expired = leases.withLock { state -> [HeldLease] in
                state.failing = false
                state.fenced = false
                var gone: [HeldLease] = []
                for lease in held {
                    guard let entry = state.held[lease.id], entry.lease == lease else { continue }
                    if renewed.contains(lease.id) {
                        state.held[lease.id]?.confirmed = sent
                    } else {
                        gone.append(entry)
                        state.held[lease.id] = nil
                    }
                }
                return gone
            }
            report(expired, .expired)
        } catch {
            leases.withLock { $0.failing = true }
            logger.debug("policygate: lease renewal failed", metadata: ["error": "\(Self.describe(error))"])
        }
    }

    /// Gives up the leases no renewal confirmed within the lease minus the margin: the
    /// database may count their slots free by now. Fences the store if there were any.
    func fence(now: ContinuousClock.Instant) {
        let limit = options.lease - fencingMargin
        let gone = leases.withLock { state -> [HeldLease] in
            let gone = state.held.values.filter { now - $0.confirmed >= limit }
            for lease in gone { state.held[lease.lease.id] = nil }
            if !gone.isEmpty { state.fenced = true }
            return gone
        }
        report(gone, .unconfirmed)
    }

    private func report(_ gone: [HeldLease], _ reason: PolicyLeaseLossEvent.Reason) {
        guard !gone.isEmpty else { return }
        lost.add(gone.count, ordering: .relaxed)
        logger.warning("policygate: leases lost", metadata: ["count": "\(gone.count)", "reason": "\(reason.rawValue)"])
        guard let observer = lossObserver.withLock({ $0 }) else { return }
        for lease in gone { observer.call(PolicyLeaseLossEvent(key: lease.key, reason: reason)) }
    }

    /// Runs `body`, giving up (and cancelling it) after the call timeout: the server's
    /// `statement_timeout` cannot fire on a connection that no longer reaches it.
    private func bounded<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let timeout = options.callTimeout
        return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            let once = Locked<CheckedContinuation<T, any Error>?>(continuation)
            let timer = Task {
                try? await Task.sleep(for: timeout)
                guard !Task.isCancelled, let continuation = once.withLock({ $0.take() }) else { return }
                continuation.resume(throwing: PostgresStoreError("the database did not answer within \(timeout)"))
            }
            let work = Task {
                let result: Result<T, any Error>
                do { result = .success(try await body()) } catch { result = .failure(error) }
                timer.cancel()
                once.withLock { $0.take() }?.resume(with: result)
            }
            _ = work
        }
    }

    /// Deletes usage rows that left every window, expired leases and waiter registrations,
    /// and ended admissions older than ``Options/admissionsRetention``, in batches of
    /// ``Options/cleanupBatch`` rows of each kind (one short transaction each), until nothing
    /// is left or ``Options/cleanupBudget`` is spent. Runs every ``Options/cleanupInterval``
    /// on its own, reporting failures as `PolicyStoreFailureEvent.Operation.cleanup`; one
    /// process at a time does the work.
    /// - Returns: How many rows were deleted.
    @discardableResult
    public func cleanup() async throws -> Int {
        let batch = Int32(clamping: max(1, options.cleanupBatch))
        let retention = options.admissionsRetention.nanosecondsSaturating / 1_000
        let stop = ContinuousClock.now + options.cleanupBudget
        var deleted = 0
        while true {
            let count = try await bounded {
                try await self.describing {
                    var deleted: Int64 = 0
                    for try await count in try await self.client.query(
                        "SELECT policygate.cleanup(\(batch)::integer, \(retention)::bigint)", logger: self.logger
                    ).decode(Int64.self) {
                        deleted = count
                    }
                    return Int(deleted)
                }
            }
            deleted += count
            if count == 0 || ContinuousClock.now >= stop { return deleted }
        }
    }

    // MARK: Helpers

    /// Runs `body`, replacing its error by one that says what went wrong without the
    /// connection's secrets.
    /// A data exception (SQLSTATE class 22) or a program limit (54) says the request cannot be
    /// recorded as given, not that the database is unavailable: it becomes
    /// `PolicyStoreRequestError`, to which the gate applies no failure policy.
    func describing<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as CancellationError {
            throw error
        } catch {
            if let state = (error as? PSQLError)?.serverInfo?[.sqlState], state.hasPrefix("22") || state.hasPrefix("54") {
                throw PolicyStoreRequestError(Self.describe(error))
            }
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

/// A callback of the gate's: news of keys, lost leases.
final class Observer<Argument>: Sendable {
    let call: @Sendable (Argument) -> Void
    init(_ call: @escaping @Sendable (Argument) -> Void) { self.call = call }
}

/// A key this store's callers wait for news of.
struct Waiting: Sendable {
    /// Callers waiting (between `beginWaiting` and `endWaiting`).
    var count = 0
    /// The token of the registration this store wrote last, if any.
    var token: Int64?
}

/// A lease this store keeps alive for a permit.
struct HeldLease: Sendable {
    let lease: PolicyStoreLease
    let key: PolicyKey
    /// When the last admission or renewal that set its expiry was sent: the database's
    /// expiry is at least a lease after that.
    var confirmed: ContinuousClock.Instant
}

/// The leases a store keeps alive, and the state of their renewal.
struct HeldLeases: Sendable {
    var held: [Int64: HeldLease] = [:]
    /// The last renewal failed: try again soon.
    var failing = false
    /// Leases were given up for want of a renewal: admit nothing until the database answers.
    var fenced = false
}

/// What went wrong with the PostgreSQL store.
public struct PostgresStoreError: Error, CustomStringConvertible, Sendable {
    /// What kind of failure, for code that reacts to it; ``message`` says it to people.
    public enum Code: String, Sendable, Hashable {
        /// The database failed or did not answer in time (the gate applies its failure policy).
        case database
        /// The settings do not describe a database, or name an unreadable certificate file.
        case configuration
        /// The TLS mode requires TLS and the server does not offer it.
        case tlsUnavailable
        /// The server's certificate was not trusted, or does not name the host connected to.
        case tlsVerification
        /// The server refused the user or its password.
        case authentication
        /// The role may not do this (a runtime role migrating, a role without EXECUTE).
        case permission
        /// The database's schema is older than this library's (or absent): run the migrations.
        case schemaOutdated
        /// The database's schema is newer than this library knows: upgrade the library.
        case schemaNewer
        /// A migration applied to the database differs from this library's file of that version.
        case migrationChanged
        /// A migration failed; it was rolled back, unless its file runs outside a transaction.
        case migrationFailed
    }
    /// What kind of failure.
    public let code: Code
    /// A sentence, without secrets.
    public let message: String
    init(_ message: String, code: Code = .database) {
        self.message = message
        self.code = code
    }
    /// The message.
    public var description: String { message }
}

#endif
