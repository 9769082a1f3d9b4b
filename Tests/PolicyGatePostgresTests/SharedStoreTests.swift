#if Postgres
import Foundation
import PolicyGate
import PolicyGatePostgres
import PolicyGateTestKit
import PostgresNIO
import Testing

/// Everything against the real server runs one test at a time: the fault tests restart it.
@Suite(
    "PostgreSQL store", .serialized,
    .enabled("needs a PostgreSQL server: run `eval \"$(bash .ci/postgres.sh start)\"` first") { await TestDatabase.shouldRun() })
struct PostgresStoreTests {
    // MARK: Schema

    @Test("migrate() applies the versioned SQL once; a second run applies nothing")
    func migrateIsIdempotent() async throws {
        try await TestDatabase.prepare()
        let store = try PostgresPolicyStore(settings: TestDatabase.ownerSettings)
        defer { store.close() }
        #expect(try await store.migrate(TestDatabase.migrationOptions) == [])
        let versions = try PostgresPolicyStore.migrations().map(\.version)
        #expect(versions.first == 1)
        let recorded = try await TestDatabase.scalar("SELECT max(version)::bigint FROM policygate.schema_migrations")
        #expect(recorded == Int64(versions.last!))
    }

    // MARK: Same semantics as in-process

    @Test("a request cap is shared by two gates (two processes' worth) and retryAfter is the window's")
    func requestCapAcrossGates() async throws {
        let provider = TestDatabase.uniqueProvider("rpm")
        let limits = PolicyLimits(requestsPerMinute: 3)
        let (a, b, stores) = try await TestDatabase.twoGates(provider, limits)
        defer { stores.forEach { $0.close() } }
        let key = PolicyKey(provider: provider, scope: .user("u1"))
        _ = try await a.acquire(key, maxWait: .zero)
        _ = try await b.acquire(key, maxWait: .zero)
        _ = try await a.acquire(key, maxWait: .zero)
        let error = await #expect(throws: PolicyError.self) { _ = try await b.acquire(key, maxWait: .zero) }
        #expect(error?.code == .rateLimited)
        #expect(error?.limit == .requestsPerMinute)
        // The oldest call leaves the window 60 s (plus at most one 1 s bucket) after it came.
        let retry = try #require(error?.retryAfter)
        #expect(retry > .seconds(58) && retry <= .seconds(61), "retryAfter \(retry)")
        // Another scope of the same provider has its own counters.
        _ = try await b.acquire(PolicyKey(provider: provider, scope: .user("u2")), maxWait: .zero)
        await a.flushStoreWrites()
        await b.flushStoreWrites()
    }

    @Test("commitTokens replaces the estimate for every process: a lower commit lets another gate in")
    func commitReplacesEstimate() async throws {
        let provider = TestDatabase.uniqueProvider("tpm")
        let limits = PolicyLimits(tokensPerMinute: 1_000)
        let (a, b, stores) = try await TestDatabase.twoGates(provider, limits)
        defer { stores.forEach { $0.close() } }
        let key = PolicyKey(provider: provider)
        var permit = try await a.acquire(key, estimatedTokens: 800, maxWait: .zero)
        let refused = await #expect(throws: PolicyError.self) { _ = try await b.acquire(key, estimatedTokens: 300, maxWait: .zero) }
        #expect(refused?.limit == .tokensPerMinute)
        try permit.commitTokens(100)
        await a.flushStoreWrites()
        _ = try await b.acquire(key, estimatedTokens: 300, maxWait: .zero)
        // A higher commit counts too: 100 + 300 + 700 > 1000.
        try permit.commitTokens(700)
        await a.flushStoreWrites()
        let over = await #expect(throws: PolicyError.self) { _ = try await b.acquire(key, estimatedTokens: 100, maxWait: .zero) }
        #expect(over?.limit == .tokensPerMinute)
        let counted = try await TestDatabase.scalar(
            "SELECT sum(tokens)::bigint FROM policygate.admissions WHERE key = \(key.storeName)")
        #expect(counted == 1_000)
    }

    @Test("the concurrency cap holds across gates, and a release in one wakes a waiter in the other")
    func concurrencyAcrossGates() async throws {
        let provider = TestDatabase.uniqueProvider("conc")
        let limits = PolicyLimits(maxConcurrent: 2)
        let (a, b, stores) = try await TestDatabase.twoGates(provider, limits)
        defer { stores.forEach { $0.close() } }
        let key = PolicyKey(provider: provider)
        let first = try await a.acquire(key, maxWait: .zero)
        let second = try await a.acquire(key, maxWait: .zero)
        let full = await #expect(throws: PolicyError.self) { _ = try await b.acquire(key, maxWait: .zero) }
        #expect(full?.limit == .concurrency)
        let waiter = Task { () async throws -> PolicyKey? in
            let permit = try await b.acquire(key, maxWait: .seconds(20))
            return permit.key
        }
        try await Task.sleep(for: .milliseconds(200))
        _ = consume first  // released by A: announced with NOTIFY, so B's waiter is woken
        let started = ContinuousClock.now
        let admitted = try await waiter.value
        // The lease is 30 s: only the notification could have woken it this early.
        #expect(ContinuousClock.now - started < .seconds(15))
        #expect(admitted == key)
        _ = consume second
        await a.flushStoreWrites()
        await b.flushStoreWrites()
    }

    @Test("FIFO within one process: waiters are admitted in arrival order")
    func fifoWithinProcess() async throws {
        let provider = TestDatabase.uniqueProvider("fifo")
        let store = try await TestDatabase.store()
        defer { store.close() }
        let gate = try TestDatabase.gate(provider, PolicyLimits(maxConcurrent: 1), store: store)
        let key = PolicyKey(provider: provider)
        let holder = try await gate.acquire(key, maxWait: .zero)
        let order = Locked<[Int]>([])
        var tasks: [Task<Void, any Error>] = []
        for index in 0..<4 {
            tasks.append(
                Task {
                    let permit = try await gate.acquire(key, maxWait: .seconds(20))
                    order.withLock { $0.append(index) }
                    try await Task.sleep(for: .milliseconds(20))
                    _ = consume permit
                })
            try await Task.sleep(for: .milliseconds(100))  // so that they queue in this order
        }
        _ = consume holder
        for task in tasks { try await task.value }
        #expect(order.withLock { $0 } == [0, 1, 2, 3])
        await gate.flushStoreWrites()
    }

    @Test("a schedule closes a shared provider as it closes an in-process one")
    func scheduleClosesSharedProvider() async throws {
        let provider = TestDatabase.uniqueProvider("sched")
        let store = try await TestDatabase.store()
        defer { store.close() }
        var configuration = try PolicyConfiguration(
            toml: """
                [limits.\(provider)]
                requests_per_minute = 100
                store = "postgres"
                [[limits.\(provider).schedule]]
                name = "always-closed"
                cron = "* * * * *"
                closed = true
                """)
        configuration.postgres = TestDatabase.settings
        let gate = try PolicyService(configuration: configuration, store: store)
        let error = await #expect(throws: PolicyError.self) {
            _ = try await gate.acquire(PolicyKey(provider: provider), maxWait: .zero)
        }
        #expect(error?.closedBy == "always-closed")
    }

    @Test("exactly one statement per uncontended acquire (pg_stat_statements)")
    func oneStatementPerAcquire() async throws {
        let loaded = try await TestDatabase.withConnection { connection in
            var loaded = false
            for try await name in try await connection.query(
                "SELECT name FROM pg_available_extensions WHERE name = 'pg_stat_statements'", logger: TestDatabase.logger
            ).decode(String.self) { loaded = !name.isEmpty }
            if loaded {
                try await connection.query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements SCHEMA public", logger: TestDatabase.logger)
            }
            return loaded
        }
        try #require(loaded, "pg_stat_statements is not available on the test server")
        let provider = TestDatabase.uniqueProvider("stmt")
        let store = try await TestDatabase.store(lease: .seconds(600))
        defer { store.close() }
        let gate = try TestDatabase.gate(
            provider, PolicyLimits(requestsPerMinute: 1_000, tokensPerMinute: 1_000_000, maxConcurrent: 100), store: store)
        try await Task.sleep(for: .milliseconds(300))  // the listener's LISTEN is issued before we count
        _ = try await TestDatabase.scalar("SELECT 0::bigint FROM pg_stat_statements_reset()")
        let count = 20
        func acquire(_ remaining: Int) async throws {
            guard remaining > 0 else {
                // All permits held: count now, before any release is written.
                let statements = try await TestDatabase.scalar(
                    """
                    SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements
                    WHERE query ILIKE '%policygate.%' AND query NOT ILIKE '%pg_stat_statements%'
                    """)
                let admits = try await TestDatabase.scalar(
                    "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements WHERE query ILIKE '%policygate.admit(%'")
                #expect(admits == Int64(count))
                #expect(statements == Int64(count), "statements naming policygate while acquiring \(count) permits")
                return
            }
            let permit = try await gate.acquire(
                PolicyKey(provider: provider, scope: .user("u\(remaining)")), estimatedTokens: 10, maxWait: .zero)
            try await acquire(remaining - 1)
            _ = consume permit
        }
        try await acquire(count)
        await gate.flushStoreWrites()
    }

    // MARK: Configuration

    @Test("a TOML file shares providers through [store], with the connection in [store.postgres]")
    func tomlConfiguration() async throws {
        let provider = TestDatabase.uniqueProvider("toml")
        let configuration = try PolicyConfiguration(
            toml: """
                [store]
                default = "postgres"
                [store.postgres]
                url = "\(TestDatabase.url)"
                timeout_ms = 1500
                [limits.\(provider)]
                requests_per_minute = 1
                on_store_failure = "fail_open"
                [limits.local]
                requests_per_minute = 1
                store = "memory"
                """)
        #expect(configuration.storage(for: provider) == PolicyStorage(store: .postgres, failurePolicy: .failOpen))
        #expect(configuration.storage(for: "local") == PolicyStorage(store: .memory, failurePolicy: .failClosed))
        try await TestDatabase.prepare()
        let gate = try await PolicyService.connecting(configuration: configuration)
        _ = try await gate.acquire(PolicyKey(provider: provider), maxWait: .zero)
        let refused = await #expect(throws: PolicyError.self) { _ = try await gate.acquire(PolicyKey(provider: provider), maxWait: .zero) }
        #expect(refused?.limit == .requestsPerMinute)
        // The in-process provider needs no store and still answers synchronously.
        _ = try gate.tryAcquire(PolicyKey(provider: "local"))
        let shared = #expect(throws: PolicyError.self) { _ = try gate.tryAcquire(PolicyKey(provider: provider)) }
        #expect(shared?.code == .invalidArgument)
    }
}
#endif
