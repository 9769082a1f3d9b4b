#if Postgres
import Foundation
import PolicyGate
import PolicyGatePostgres
import PolicyGateTestKit
import PostgresNIO
import Synchronization
import Testing

/// A count shared with callbacks.
final class Counter: Sendable {
    private let count = Mutex(0)
    var value: Int { count.withLock { $0 } }
    func add(_ n: Int) { count.withLock { $0 += n } }
    func raise(to n: Int) { count.withLock { $0 = max($0, n) } }
}

/// NOTIFY only for waiters, two statements per call, batched cleanup, connections.
extension PostgresStoreTests {
    /// A store with `configure` applied to the test options, migrated.
    static func operationsStore(_ configure: (inout PostgresPolicyStore.Options) -> Void = { _ in }) async throws -> PostgresPolicyStore {
        var options = PostgresPolicyStore.Options()
        options.writeRetryPeriod = .seconds(30)
        configure(&options)
        try await TestDatabase.prepare()  // migrated by the owner; the store runs as the application's role
        return try PostgresPolicyStore(settings: TestDatabase.settings, options: options)
    }

    /// Counts the NOTIFYs naming `key` that a LISTEN connection (a store's listener) receives.
    static func notificationCounter(for key: PolicyKey) async throws -> (PostgresPolicyStore, Counter) {
        let listener = try await operationsStore()
        let count = Counter()
        let name = key.storeName
        let connected = Counter()
        listener.observeChanges { payload in
            if payload == nil { connected.add(1) }
            if payload == name { count.add(1) }
        }
        // The listener announces nil once LISTEN is in place.
        let deadline = ContinuousClock.now + .seconds(10)
        while connected.value == 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(connected.value > 0, "the listener did not connect")
        return (listener, count)
    }

    /// pg_stat_statements, which `.ci/postgres.sh` loads.
    static func statementStatistics() async throws {
        _ = try await TestDatabase.withConnection { connection in
            try await connection.query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements SCHEMA public", logger: TestDatabase.logger)
        }
    }

    @Test("an uncontended call costs two statements (the commit travels with the release) and sends no NOTIFY")
    func twoStatementsNoNotify() async throws {
        try await Self.statementStatistics()
        let provider = TestDatabase.uniqueProvider("two")
        let key = PolicyKey(provider: provider)
        let (listener, notified) = try await Self.notificationCounter(for: key)
        defer { listener.close() }
        let store = try await Self.operationsStore { $0.lease = .seconds(600) }
        defer { store.close() }
        let gate = try TestDatabase.gate(
            provider, PolicyLimits(requestsPerMinute: 1_000, tokensPerMinute: 1_000_000, maxConcurrent: 5), store: store)
        try await Task.sleep(for: .milliseconds(300))  // this store's LISTEN is issued before we count
        _ = try await TestDatabase.scalar("SELECT 0::bigint FROM pg_stat_statements_reset()")
        let calls = 20
        for _ in 0..<calls {
            var permit = try await gate.acquire(key, estimatedTokens: 100, maxWait: .zero)
            try permit.commitTokens(7)
            _ = consume permit
            await gate.flushStoreWrites()
        }
        func count(_ pattern: String) async throws -> Int64? {
            try await TestDatabase.scalar(
                """
                SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements
                WHERE query ILIKE \(pattern) AND query NOT ILIKE '%pg_stat_statements%'
                """)
        }
        #expect(try await count("%policygate.%") == Int64(2 * calls), "statements naming policygate for \(calls) calls")
        #expect(try await count("%policygate.admit(%") == Int64(calls))
        #expect(try await count("%policygate.release(%") == Int64(calls))
        #expect(try await count("%policygate.commit(%") == 0)
        // The commits were applied all the same, by the releases.
        let tokens = try await TestDatabase.scalar("SELECT sum(tokens)::bigint FROM policygate.admissions WHERE key = \(key.storeName)")
        #expect(tokens == Int64(7 * calls))
        try await Task.sleep(for: .milliseconds(300))
        #expect(notified.value == 0, "NOTIFYs for a key nobody waits for")
    }

    @Test("a commit on a permit still held is written alone after the hold, and counts for other processes")
    func heldCommitIsWritten() async throws {
        let provider = TestDatabase.uniqueProvider("hold")
        let store = try await Self.operationsStore { $0.commitHold = .milliseconds(100) }
        defer { store.close() }
        let gate = try TestDatabase.gate(provider, PolicyLimits(tokensPerMinute: 1_000), store: store)
        let key = PolicyKey(provider: provider)
        var permit = try await gate.acquire(key, estimatedTokens: 900, maxWait: .zero)
        try permit.commitTokens(100)
        // Not released: the commit goes alone once the hold has passed.
        let deadline = ContinuousClock.now + .seconds(5)
        var tokens: Int64?
        repeat {
            try await Task.sleep(for: .milliseconds(50))
            tokens = try await TestDatabase.scalar("SELECT sum(tokens)::bigint FROM policygate.admissions WHERE key = \(key.storeName)")
        } while tokens != 100 && ContinuousClock.now < deadline
        #expect(tokens == 100)
        _ = consume permit
        await gate.flushStoreWrites()
    }

    @Test("a waiter in another store instance is registered while it waits, woken by NOTIFY, and unregistered after")
    func waiterRegistration() async throws {
        let provider = TestDatabase.uniqueProvider("wait")
        let limits = PolicyLimits(maxConcurrent: 1)
        let key = PolicyKey(provider: provider)
        let (listener, notified) = try await Self.notificationCounter(for: key)
        defer { listener.close() }
        let (a, b, stores) = try await TestDatabase.twoGates(provider, limits)
        defer { stores.forEach { $0.close() } }
        let registrations = {
            try await TestDatabase.scalar("SELECT count(*)::bigint FROM policygate.waiters WHERE key = \(key.storeName)")
        }
        let first = try await a.acquire(key, maxWait: .zero)
        let waiter = Task {
            let permit = try await b.acquire(key, maxWait: .seconds(20))
            _ = consume permit
        }
        // B's refused admission registered it.
        let deadline = ContinuousClock.now + .seconds(5)
        while try await registrations() != 1, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(try await registrations() == 1)
        let released = ContinuousClock.now
        _ = consume first
        _ = try await waiter.value
        // The lease is 30 s: only the NOTIFY could have woken B this soon.
        #expect(ContinuousClock.now - released < .seconds(5))
        await a.flushStoreWrites()
        await b.flushStoreWrites()
        #expect(notified.value >= 1)
        // B's last waiter left: its registration goes, and later calls notify nobody.
        let gone = ContinuousClock.now + .seconds(5)
        while try await registrations() != 0, ContinuousClock.now < gone { try await Task.sleep(for: .milliseconds(20)) }
        #expect(try await registrations() == 0)
        try await Task.sleep(for: .milliseconds(200))
        let before = notified.value
        for _ in 0..<5 {
            let permit = try await a.acquire(key, maxWait: .zero)
            _ = consume permit
            await a.flushStoreWrites()
        }
        try await Task.sleep(for: .milliseconds(300))
        #expect(notified.value == before)
    }

    @Test("no lost wake-up: a release racing the waiter's registration still wakes it (40 rounds)")
    func registrationRacesRelease() async throws {
        let provider = TestDatabase.uniqueProvider("race")
        let (a, b, stores) = try await TestDatabase.twoGates(provider, PolicyLimits(maxConcurrent: 1))
        defer { stores.forEach { $0.close() } }
        for round in 0..<40 {
            let key = PolicyKey(provider: provider, scope: .user("r\(round)"))
            let held = try await a.acquire(key, maxWait: .zero)
            let waiter = Task { () async throws -> Bool in
                let permit = try await b.acquire(key, maxWait: .seconds(20))
                _ = consume permit
                return true
            }
            // Released around the time B is refused and registers (a few milliseconds).
            try await Task.sleep(for: .microseconds(Int64(round % 8) * 700))
            _ = consume held
            let started = ContinuousClock.now
            // A lost wake-up would leave B asleep until the 30 s lease's end (its retryAfter).
            let woken = try await withTimeout(seconds: 10) { try await waiter.value }
            #expect(woken)
            #expect(ContinuousClock.now - started < .seconds(5), "round \(round)")
        }
        await a.flushStoreWrites()
        await b.flushStoreWrites()
    }

    @Test("cleanup deletes in bounded batches until done; keepAdmissionsLog = false deletes admissions at release")
    func batchedCleanupAndNoLog() async throws {
        let store = try await Self.operationsStore {
            $0.cleanupBatch = 1_000
            $0.keepAdmissionsLog = false
        }
        defer { store.close() }
        let name = PolicyKey(provider: TestDatabase.uniqueProvider("batch")).storeName
        _ = try await TestDatabase.withConnection { connection in
            try await connection.query(
                """
                INSERT INTO policygate.usage (key, win, bucket, requests, tokens)
                SELECT \(name), 0, (policygate.now_us() - 3600000000) / 1000000 - g, 1, 10 FROM generate_series(1, 2500) g
                """, logger: TestDatabase.logger)
        }
        try await Self.statementStatistics()
        _ = try await TestDatabase.scalar("SELECT 0::bigint FROM pg_stat_statements_reset()")
        let deleted = try await store.cleanup()
        #expect(deleted >= 2_500)
        #expect(try await TestDatabase.scalar("SELECT count(*)::bigint FROM policygate.usage WHERE key = \(name)") == 0)
        // 2 500 rows in batches of 1 000: at least three statements, and one that found nothing.
        let statements = try await TestDatabase.scalar(
            "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements WHERE query ILIKE '%policygate.cleanup(%'")
        #expect((statements ?? 0) >= 3)

        let provider = TestDatabase.uniqueProvider("nolog")
        let gate = try TestDatabase.gate(provider, PolicyLimits(requestsPerMinute: 100), store: store)
        let key = PolicyKey(provider: provider)
        let permit = try await gate.acquire(key, maxWait: .zero)
        #expect(try await TestDatabase.scalar("SELECT count(*)::bigint FROM policygate.admissions WHERE key = \(key.storeName)") == 1)
        _ = consume permit
        await gate.flushStoreWrites()
        #expect(try await TestDatabase.scalar("SELECT count(*)::bigint FROM policygate.admissions WHERE key = \(key.storeName)") == 0)
        // The window still counts the call.
        #expect(try await TestDatabase.scalar("SELECT sum(requests)::bigint FROM policygate.usage WHERE key = \(key.storeName)") == 1)
    }

    @Test("a failing cleanup is reported through telemetry as a store failure (operation cleanup)")
    func cleanupFailureReported() async throws {
        var options = PostgresPolicyStore.Options()
        options.lease = .seconds(3)  // maintenance runs every second
        options.cleanupInterval = .milliseconds(500)
        options.callTimeout = .milliseconds(500)
        let store = try PostgresPolicyStore(
            settings: PolicyPostgresSettings(url: "postgres://policygate@127.0.0.1:1/postgres"), options: options)
        defer { store.close() }
        let recorder = TelemetryRecorder()
        let gate = try TestDatabase.gate("cleanup-down", PolicyLimits(requestsPerMinute: 5), store: store, telemetry: recorder)
        defer { withExtendedLifetime(gate) {} }  // it reports the store's failures while it lives
        let deadline = ContinuousClock.now + .seconds(10)
        while !recorder.storeFailures.contains(where: { $0.operation == .cleanup }), ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        let failure = try #require(recorder.storeFailures.first { $0.operation == .cleanup })
        #expect(failure.outcome == .willRetry)
        #expect(!failure.error.isEmpty)
    }

    @Test("connections: at most maxConnections pooled sessions per store, plus one listener")
    func poolSize() async throws {
        func sessions(listening: Bool) async throws -> Int64 {
            try await TestDatabase.scalar(
                listening
                    ? "SELECT count(*)::bigint FROM pg_stat_activity WHERE application_name = 'policygate' AND query ILIKE 'LISTEN%'"
                    : "SELECT count(*)::bigint FROM pg_stat_activity WHERE application_name = 'policygate' AND query NOT ILIKE 'LISTEN%'")
                ?? 0
        }
        try await Task.sleep(for: .milliseconds(300))  // earlier tests' closed stores hang up
        let (pooledBefore, listenersBefore) = (try await sessions(listening: false), try await sessions(listening: true))
        let store = try await Self.operationsStore { $0.maxConnections = 3 }
        defer { store.close() }
        let provider = TestDatabase.uniqueProvider("pool")
        let gate = try TestDatabase.gate(provider, PolicyLimits(requestsPerMinute: 10_000, maxConcurrent: 1_000), store: store)
        let peak = Counter()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<24 {
                group.addTask {
                    for _ in 0..<5 {
                        let permit = try await gate.acquire(PolicyKey(provider: provider, scope: .user("u\(index)")), maxWait: .seconds(10))
                        _ = consume permit
                    }
                }
            }
            group.addTask {
                for _ in 0..<20 {
                    peak.raise(to: Int(try await sessions(listening: false) - pooledBefore))
                    try await Task.sleep(for: .milliseconds(20))
                }
            }
            try await group.waitForAll()
        }
        await gate.flushStoreWrites()
        #expect(peak.value <= 3, "pooled sessions above maxConnections")
        #expect(peak.value >= 1)
        #expect(try await sessions(listening: true) - listenersBefore == 1, "one listener connection per store")
    }
}
#endif
