#if Postgres
import Foundation
import PolicyGate
import PolicyGatePostgres
import PolicyGateTestKit
import PostgresNIO
import Testing

/// Faults of issue 13 against the real server: keys the database cannot hold as they are,
/// admissions whose callers left, lock order, isolation, lease tokens, fencing.
extension PostgresStoreTests {
    /// Keys that 0001 could not store or announce: longer than NOTIFY's 8000-byte payload (every
    /// release failed), longer than a btree row (every admission failed), with a NUL.
    static let awkwardIdentifiers: [(name: String, id: String)] = [
        ("9000-byte", String(repeating: "k", count: 9_000)),
        ("10 KB random", String((0..<10_240).map { _ in "abcdefghijklmnopqrstuvwxyz0123456789".randomElement()! })),
        ("NUL", "before\u{0}after"),
    ]

    @Test("keys of any length or content are counted across gates and released (fail_open never bypasses them)", arguments: [0, 1, 2])
    func awkwardKeys(_ index: Int) async throws {
        let (label, id) = Self.awkwardIdentifiers[index]
        let provider = TestDatabase.uniqueProvider("key")
        let stores = [try await TestDatabase.store(), try await TestDatabase.store()]
        defer { stores.forEach { $0.close() } }
        let recorder = TelemetryRecorder()
        let limits = PolicyLimits(maxConcurrent: 1)
        let a = try TestDatabase.gate(provider, limits, store: stores[0], failurePolicy: .failOpen, telemetry: recorder)
        let b = try TestDatabase.gate(provider, limits, store: stores[1], failurePolicy: .failOpen, telemetry: recorder)
        let key = PolicyKey(provider: provider, scope: .user(id))
        do {
            let held = try await a.acquire(key, maxWait: .zero)
            let inert = held.isInert
            #expect(!inert, "\(label): admitted uncounted")
            let refused = await #expect(throws: PolicyError.self, "\(label)") { _ = try await b.acquire(key, maxWait: .zero) }
            #expect(refused?.limit == .concurrency, "\(label)")
            // A waiter in the other gate is woken by the release's NOTIFY (it carries the digest).
            let waiter = Task { try await b.acquire(key, maxWait: .seconds(10)).isInert }
            try await Task.sleep(for: .milliseconds(200))
            _ = consume held
            let woken = try await withTimeout(seconds: 5) { try await waiter.value }
            #expect(!woken, "\(label)")
        }
        await a.flushStoreWrites()
        await b.flushStoreWrites()
        #expect(recorder.storeFailures.isEmpty, "\(label): \(recorder.storeFailures.map(\.error))")
        let live = try await TestDatabase.scalar("SELECT count(*)::bigint FROM policygate.leases WHERE key = \(key.storeName)")
        #expect(live == 0, "\(label)")
        let labels = try await TestDatabase.withConnection { connection in
            var labels: [String] = []
            for try await value in try await connection.query(
                "SELECT key_label FROM policygate.admissions WHERE key = \(key.storeName)", logger: TestDatabase.logger
            ).decode(String.self) { labels.append(value) }
            return labels
        }
        #expect(labels.count == 2, "\(label)")
        #expect(labels.allSatisfy { $0 == key.storeLabel && $0.hasPrefix("\(provider.utf8.count):\(provider)/u:") }, "\(label)")
    }

    @Test("callers that time out or are cancelled on a locked key row leave no lease behind")
    func abandonedAdmissionsAreGivenBack() async throws {
        let provider = TestDatabase.uniqueProvider("abandon")
        let store = try await TestDatabase.store(timeout: .seconds(3))
        defer { store.close() }
        // Gates of their own (as many processes' worth), so that every caller is the head of
        // its key in its process and has a statement waiting on the row.
        let gates = try (0..<9).map { _ in try TestDatabase.gate(provider, PolicyLimits(maxConcurrent: 20), store: store) }
        let gate = gates[0]
        let key = PolicyKey(provider: provider)
        let kept = try await gate.acquire(key, maxWait: .zero)  // creates the row; stays held
        try await TestDatabase.withConnection { connection in
            try await connection.query("BEGIN", logger: TestDatabase.logger)
            try await connection.query(
                "SELECT 1 FROM policygate.keys WHERE key = \(key.storeName) FOR UPDATE", logger: TestDatabase.logger)
            // Four callers time out at their maximum wait; four are cancelled while their
            // statements still wait for the row (which then commit once it is free).
            let timingOut = (1...4).map { i in
                Task { try await gates[i].acquire(key, maxWait: .milliseconds(200 + 100 * i)).isInert }
            }
            let cancelled = (5...8).map { i in Task { try await gates[i].acquire(key, maxWait: .seconds(30)).isInert } }
            try await Task.sleep(for: .milliseconds(500))
            for task in cancelled { task.cancel() }
            for task in timingOut {
                let error = await #expect(throws: PolicyError.self) { _ = try await task.value }
                #expect(error?.code == .timedOut)
            }
            for task in cancelled { await #expect(throws: CancellationError.self) { _ = try await task.value } }
            try await Task.sleep(for: .milliseconds(500))
            try await connection.query("ROLLBACK", logger: TestDatabase.logger)
        }
        // The abandoned statements commit now; each admission is given back as it arrives.
        let query: PostgresQuery = "SELECT count(*)::bigint FROM policygate.leases WHERE key = \(key.storeName)"
        var live = try await TestDatabase.scalar(query)
        for _ in 0..<50 where live != 1 {
            try await Task.sleep(for: .milliseconds(100))
            for gate in gates { await gate.flushStoreWrites() }
            live = try await TestDatabase.scalar(query)
        }
        #expect(live == 1, "only the kept permit's lease may remain")
        let late = try await TestDatabase.scalar(
            "SELECT count(*)::bigint FROM policygate.admissions WHERE key = \(key.storeName) AND released_us IS NOT NULL")
        #expect((late ?? 0) >= 1, "the cancelled callers' statements were expected to commit late")
        _ = consume kept
        await gate.flushStoreWrites()
        #expect(try await TestDatabase.scalar(query) == 0)
    }

    @Test("release and an admission dropping the same expired lease do not deadlock (one lock order)")
    func releaseAndExpiryDoNotDeadlock() async throws {
        let store = try await TestDatabase.store()
        defer { store.close() }
        let name = PolicyKey(provider: TestDatabase.uniqueProvider("order")).storeName
        // A pause inside release(), between its two row locks, for sessions that ask for it.
        try await TestDatabase.withConnection { connection in
            try await connection.query(
                """
                CREATE OR REPLACE FUNCTION public.policygate_test_pause() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF current_setting('policygate_test.pause', true) = 'on' THEN PERFORM pg_sleep(1.5); END IF;
                    RETURN NEW;
                END $$
                """, logger: TestDatabase.logger)
            try await connection.query(
                """
                CREATE OR REPLACE TRIGGER policygate_test_pause AFTER UPDATE OF released_us ON policygate.admissions
                FOR EACH ROW EXECUTE FUNCTION public.policygate_test_pause()
                """, logger: TestDatabase.logger)
        }
        defer {
            Task {
                try? await TestDatabase.withConnection { connection in
                    try await connection.query(
                        "DROP TRIGGER IF EXISTS policygate_test_pause ON policygate.admissions", logger: TestDatabase.logger)
                }
            }
        }
        // An admission whose lease expires at once (1 µs).
        let admit: PostgresQuery = """
            SELECT admission_id FROM policygate.admit(\(name), 'order', 0, ARRAY[NULL, NULL, NULL]::bigint[],
                ARRAY[NULL, NULL, NULL]::bigint[], NULL::integer, 1, 'test', 42, NULL::integer, NULL::bigint)
            """
        let id = try #require(try await TestDatabase.scalar(admit))
        try await withTimeout(seconds: 20) {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    try await TestDatabase.withConnection { connection in
                        try await connection.query("SET policygate_test.pause = 'on'", logger: TestDatabase.logger)
                        _ = try await connection.query(
                            "SELECT policygate.release(\(id), 42, NULL::bigint, true)", logger: TestDatabase.logger
                        ).collect()
                    }
                }
                group.addTask {
                    try await Task.sleep(for: .milliseconds(400))
                    // Drops the expired lease of the key (and records its loss) while release() pauses.
                    _ = try await TestDatabase.scalar(admit)
                }
                do {
                    try await group.waitForAll()
                } catch let error as PSQLError {
                    throw TestFailure("PostgreSQL: \(error.serverInfo?[.message] ?? "\(error.code)")")
                }
            }
        }
        let released = try await TestDatabase.scalar(
            "SELECT count(*)::bigint FROM policygate.admissions WHERE id = \(id) AND released_us IS NOT NULL")
        #expect(released == 1)
    }

    @Test("a database whose default isolation is serializable: sessions are pinned to read committed")
    func serializableDefaultIsolation() async throws {
        let database = try await TestDatabase.createDatabase("policygate_iso")
        try await TestDatabase.withConnection { connection in
            try await connection.query(
                PostgresQuery(unsafeSQL: "ALTER DATABASE \(database) SET default_transaction_isolation = 'serializable'"),
                logger: TestDatabase.logger)
        }
        do {
            let owner = try PostgresPolicyStore(
                settings: TestDatabase.ownerSettings(url: TestDatabase.url(TestDatabase.ownerURL, database: database)))
            try await owner.migrate(TestDatabase.migrationOptions)
            owner.close()
            let store = try await TestDatabase.store(
                settings: PolicyPostgresSettings(url: TestDatabase.url(TestDatabase.url, database: database)))
            try await store.checkSchema()
            let provider = TestDatabase.uniqueProvider("iso")
            let gate = try TestDatabase.gate(provider, PolicyLimits(requestsPerMinute: 1), store: store)
            let key = PolicyKey(provider: provider)
            _ = try await gate.acquire(key, maxWait: .zero)
            let second = await #expect(throws: PolicyError.self) { _ = try await gate.acquire(key, maxWait: .zero) }
            #expect(second?.code == .rateLimited)
            await gate.flushStoreWrites()
            store.close()
        }
        try await TestDatabase.dropDatabase(database)
    }

    @Test("commit and release act only on the lease token they were given (id and nonce)")
    func leaseTokensAreChecked() async throws {
        let store = try await TestDatabase.store()
        defer { store.close() }
        let key = PolicyKey(provider: TestDatabase.uniqueProvider("nonce"))
        let request = PolicyStoreRequest(
            key: key, tokens: 10, requestCaps: [nil, nil, 1_000], tokenCaps: [nil, nil, nil], maxConcurrent: 1)
        guard case .admitted(let lease) = try await store.admit(request) else {
            Issue.record("not admitted")
            return
        }
        let forged = PolicyStoreLease(id: lease.id, admittedAt: lease.admittedAt, nonce: lease.nonce &+ 1)
        try await store.commit(forged, tokens: 99)
        try await store.release(forged)
        let tokens = try await TestDatabase.scalar("SELECT tokens FROM policygate.admissions WHERE id = \(lease.id)")
        let live = try await TestDatabase.scalar("SELECT count(*)::bigint FROM policygate.leases WHERE admission_id = \(lease.id)")
        #expect(tokens == 10)
        #expect(live == 1)
        try await store.commit(lease, tokens: 7)
        try await store.release(lease)
        #expect(try await TestDatabase.scalar("SELECT tokens FROM policygate.admissions WHERE id = \(lease.id)") == 7)
        #expect(try await TestDatabase.scalar("SELECT count(*)::bigint FROM policygate.leases WHERE admission_id = \(lease.id)") == 0)
    }

    @Test("values the database refuses as data are a PolicyStoreRequestError, not an outage")
    func dataErrorsAreRequestErrors() async throws {
        let store = try await TestDatabase.store()
        defer { store.close() }
        let request = PolicyStoreRequest(
            key: PolicyKey(provider: TestDatabase.uniqueProvider("data")), tokens: -1, requestCaps: [nil, nil, nil],
            tokenCaps: [nil, nil, nil], maxConcurrent: nil)
        await #expect(throws: PolicyStoreRequestError.self) { _ = try await store.admit(request) }
    }

    @Test("renewals that cannot get through: leases reported lost before they expire, admissions refused until the database answers")
    func fencingWhenRenewalsStall() async throws {
        let provider = TestDatabase.uniqueProvider("fence")
        let store = try await TestDatabase.store(lease: .seconds(3), timeout: .milliseconds(500))
        defer { store.close() }
        let recorder = TelemetryRecorder()
        let gate = try TestDatabase.gate(provider, PolicyLimits(maxConcurrent: 5), store: store, telemetry: recorder)
        let key = PolicyKey(provider: provider)
        // A pooled connection is open before the timed admission (its TLS handshake would
        // otherwise delay the lease's start past the renewal tick, and the store's probe at
        // that tick, which the database answers, could end the fence before it is looked at).
        _ = try await gate.acquire(PolicyKey(provider: provider, scope: .user("warm")), maxWait: .zero)
        await gate.flushStoreWrites()
        let held = try await gate.acquire(key, maxWait: .zero)
        let start = ContinuousClock.now
        try await TestDatabase.withConnection { connection in
            // renew() locks the key's row first: holding it stalls every renewal.
            try await connection.query("BEGIN", logger: TestDatabase.logger)
            try await connection.query(
                "SELECT 1 FROM policygate.keys WHERE key = \(key.storeName) FOR UPDATE", logger: TestDatabase.logger)
            try await withTimeout(seconds: 10) {
                while recorder.leaseLosses.isEmpty { try await Task.sleep(for: .milliseconds(50)) }
            }
            let reported = ContinuousClock.now - start
            #expect(reported < .seconds(3), "reported after \(reported), the lease is 3 s")
            #expect(recorder.leaseLosses == [PolicyLeaseLossEvent(key: key, reason: .unconfirmed)])
            #expect(store.isFenced)
            #expect(store.lostLeases == 1)
            let refused = await #expect(throws: PolicyError.self) {
                _ = try await gate.acquire(PolicyKey(provider: provider, scope: .user("other")), maxWait: .zero)
            }
            #expect(refused?.code == .storeUnavailable)
            try await connection.query("ROLLBACK", logger: TestDatabase.logger)
        }
        try await withTimeout(seconds: 10) {
            while store.isFenced { try await Task.sleep(for: .milliseconds(50)) }
        }
        _ = try await gate.acquire(PolicyKey(provider: provider, scope: .user("other")), maxWait: .seconds(2))
        _ = consume held
        await gate.flushStoreWrites()
    }
}
#endif

#if Postgres
extension PostgresStoreTests {
    @Test("a process partitioned from the server: it reports its lease lost within the lease, the other gets the slot only after")
    func networkPartition() async throws {
        var components = try #require(URLComponents(string: TestDatabase.url))
        let proxy = try TCPProxy(upstreamPort: components.port ?? 5432)
        defer { proxy.stop() }
        components.port = proxy.port
        let lease = Duration.seconds(3)
        let run = UUID().uuidString.prefix(8)
        let partitioned = try await TestDatabase.store(
            lease: lease, timeout: .milliseconds(500), holder: "partitioned-\(run)",
            settings: PolicyPostgresSettings(url: components.string))
        let direct = try await TestDatabase.store(lease: lease, timeout: .milliseconds(500), holder: "direct-\(run)")
        defer { partitioned.close(); direct.close() }
        let provider = TestDatabase.uniqueProvider("partition")
        let recorder = TelemetryRecorder()
        let a = try TestDatabase.gate(provider, PolicyLimits(maxConcurrent: 1), store: partitioned, telemetry: recorder)
        let b = try TestDatabase.gate(provider, PolicyLimits(maxConcurrent: 1), store: direct)
        let key = PolicyKey(provider: provider)

        let held = try await a.acquire(key, maxWait: .zero)
        proxy.set(.stall)
        let stalled = Date()
        // The other process waits for the slot: it comes back when the lease expires.
        let waiter = Task { try await b.acquire(key, maxWait: .seconds(15)).isInert }
        try await withTimeout(seconds: 10) {
            while recorder.leaseLosses.isEmpty { try await Task.sleep(for: .milliseconds(20)) }
        }
        let told = Date()
        #expect(told.timeIntervalSince(stalled) < 3, "reported \(told.timeIntervalSince(stalled)) s after the partition; the lease is 3 s")
        #expect(recorder.leaseLosses.map(\.reason) == [.unconfirmed])
        let waiterInert = try await withTimeout(seconds: 15) { try await waiter.value }
        #expect(!waiterInert)
        // From the admissions log (both processes on this host, so one wall clock): the
        // partitioned call counts as in flight until its process was told, and the other was
        // admitted only after that.
        let name = key.storeName
        let admittedAfter = try await TestDatabase.scalar(
            "SELECT min(admitted_us)::bigint FROM policygate.admissions WHERE key = \(name) AND holder = \(direct.holder)")
        let toldMicroseconds = Int64(told.timeIntervalSince1970 * 1_000_000)
        #expect(
            (admittedAfter ?? 0) > toldMicroseconds, "admitted at \(admittedAfter ?? -1) µs, the holder was told at \(toldMicroseconds) µs")
        let lost = try await TestDatabase.scalar(
            "SELECT count(*)::bigint FROM policygate.admissions WHERE key = \(name) AND holder = \(partitioned.holder) AND lease_lost_us IS NOT NULL"
        )
        #expect(lost == 1)
        // Healed: the partitioned process answers again and its release is written.
        proxy.set(.pass)
        _ = consume held
        try await withTimeout(seconds: 20) {
            await a.flushStoreWrites()
            while partitioned.isFenced { try await Task.sleep(for: .milliseconds(50)) }
        }
        await b.flushStoreWrites()
        #expect(try await TestDatabase.scalar("SELECT count(*)::bigint FROM policygate.leases WHERE key = \(name)") == 0)
    }
}
#endif
