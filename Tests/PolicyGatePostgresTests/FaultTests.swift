#if Postgres
import Foundation
import PolicyGate
import PolicyGatePostgres
import PolicyGateTestKit
import PostgresNIO
import Testing

extension PostgresStoreTests {
    @Test("an unreachable database: fail_closed throws storeUnavailable, fail_open admits and reports")
    func unreachableDatabase() async throws {
        // Nothing listens on port 1: every connection attempt is refused.
        let settings = PolicyPostgresSettings(url: "postgres://policygate@127.0.0.1:1/postgres")
        let store = try await TestDatabase.store(timeout: .milliseconds(500), settings: settings)
        defer { store.close() }
        let recorder = TelemetryRecorder()
        let closed = try TestDatabase.gate("down-closed", PolicyLimits(requestsPerMinute: 5), store: store, telemetry: recorder)
        let open = try TestDatabase.gate(
            "down-open", PolicyLimits(requestsPerMinute: 5), store: store, failurePolicy: .failOpen, telemetry: recorder)
        try await withTimeout(seconds: 10) {
            let error = await #expect(throws: PolicyError.self) {
                _ = try await closed.acquire(PolicyKey(provider: "down-closed"), maxWait: .seconds(30))
            }
            #expect(error?.code == .storeUnavailable)
            let permit = try await open.acquire(PolicyKey(provider: "down-open"), maxWait: .seconds(30))
            let inert = permit.isInert
            #expect(inert)
        }
        let outcomes = recorder.storeFailures.map(\.outcome)
        #expect(outcomes.contains(.refused))
        #expect(outcomes.contains(.admittedUncounted))
        // The reported error names the failure, not the connection's secrets.
        #expect(recorder.storeFailures.allSatisfy { !$0.error.isEmpty })
    }

    @Test("a slow database: the call times out at the store's timeout, or at the caller's maximum wait if sooner")
    func slowDatabase() async throws {
        let provider = TestDatabase.uniqueProvider("slow")
        let store = try await TestDatabase.store(timeout: .milliseconds(600))
        defer { store.close() }
        let closed = try TestDatabase.gate(provider, PolicyLimits(requestsPerMinute: 100), store: store)
        let key = PolicyKey(provider: provider)
        _ = try await closed.acquire(key, maxWait: .zero)  // creates the key's row
        await closed.flushStoreWrites()
        try await TestDatabase.withConnection { connection in
            // Another session holds the key's row: admissions of this key block on it.
            try await connection.query("BEGIN", logger: TestDatabase.logger)
            try await connection.query(
                "SELECT 1 FROM policygate.keys WHERE key = \(key.storeName) FOR UPDATE", logger: TestDatabase.logger)
            try await withTimeout(seconds: 10) {
                let start = ContinuousClock.now
                let unavailable = await #expect(throws: PolicyError.self) { _ = try await closed.acquire(key, maxWait: .seconds(30)) }
                #expect(unavailable?.code == .storeUnavailable)
                #expect(ContinuousClock.now - start < .seconds(5))
                let timedOut = await #expect(throws: PolicyError.self) { _ = try await closed.acquire(key, maxWait: .milliseconds(200)) }
                #expect(timedOut?.code == .timedOut)
            }
            // Other keys do not wait for this row: row locks, not a table lock.
            _ = try await closed.acquire(PolicyKey(provider: provider, scope: .user("other")), maxWait: .seconds(5))
            try await connection.query("ROLLBACK", logger: TestDatabase.logger)
        }
        _ = try await closed.acquire(key, maxWait: .seconds(5))
        await closed.flushStoreWrites()
    }

    @Test("a process killed while holding slots: they come back after the lease")
    func killedProcessSlotsReturn() async throws {
        let provider = TestDatabase.uniqueProvider("killed")
        try await TestDatabase.prepare()  // the worker only checks the schema
        let worker = try Worker(["hold", "--provider", provider, "--count", "2", "--concurrent", "2", "--lease-seconds", "4"])
        let line = worker.readLine()
        try #require(line == "held 2", "worker said: \(line)")
        worker.kill()
        let store = try await TestDatabase.store()
        defer { store.close() }
        let gate = try TestDatabase.gate(provider, PolicyLimits(maxConcurrent: 2), store: store)
        let key = PolicyKey(provider: provider)
        let full = await #expect(throws: PolicyError.self) { _ = try await gate.acquire(key, maxWait: .zero) }
        #expect(full?.limit == .concurrency)
        // The refusal named when the first lease expires, so the waiter sleeps until then.
        let retry = try #require(full?.retryAfter)
        #expect(retry <= .seconds(4))
        // Bounded by its maximum wait: the leases are 4 s.
        let first = try await gate.acquire(key, maxWait: .seconds(15))
        let second = try await gate.acquire(key, maxWait: .seconds(15))
        _ = consume first
        _ = consume second
        let lost = try await TestDatabase.scalar(
            "SELECT count(*)::bigint FROM policygate.admissions WHERE key = \(key.storeName) AND lease_lost_us IS NOT NULL")
        #expect(lost == 2)
        // The killed process never committed: its estimates stand in the windows.
        let killedTokens = try await TestDatabase.scalar(
            "SELECT sum(tokens)::bigint FROM policygate.admissions WHERE key = \(key.storeName) AND lease_lost_us IS NOT NULL")
        #expect(killedTokens == 200)
        await gate.flushStoreWrites()
    }

    @Test("a slot held longer than its lease is kept: the holder renews it while the call runs")
    func leaseRenewedWhileHeld() async throws {
        let provider = TestDatabase.uniqueProvider("renew")
        let (a, b, stores) = try await TestDatabase.twoGates(provider, PolicyLimits(maxConcurrent: 1), lease: .seconds(2))
        defer { stores.forEach { $0.close() } }
        let key = PolicyKey(provider: provider)
        let held = try await a.acquire(key, maxWait: .zero)
        try await Task.sleep(for: .seconds(5))  // two and a half leases
        let refused = await #expect(throws: PolicyError.self) { _ = try await b.acquire(key, maxWait: .zero) }
        #expect(refused?.limit == .concurrency)
        #expect(stores[0].lostLeases == 0)
        _ = consume held
        await a.flushStoreWrites()
        _ = try await b.acquire(key, maxWait: .seconds(5))
        await b.flushStoreWrites()
    }

    @Test("cleanup() deletes usage that left every window and admissions older than two days")
    func cleanupDeletesOldRows() async throws {
        let store = try await TestDatabase.store()
        defer { store.close() }
        let name = PolicyKey(provider: TestDatabase.uniqueProvider("old")).storeName
        try await TestDatabase.withConnection { connection in
            // A minute bucket from an hour ago and a three-day-old admission, released.
            try await connection.query(
                """
                INSERT INTO policygate.usage (key, win, bucket, requests, tokens)
                VALUES (\(name), 0, (policygate.now_us() - 3600000000) / 1000000, 1, 10)
                """, logger: TestDatabase.logger)
            try await connection.query(
                """
                INSERT INTO policygate.admissions (key, admitted_us, tokens, windows, holder, released_us)
                VALUES (\(name), policygate.now_us() - 259200000000, 10, 1, 'test', policygate.now_us() - 259100000000)
                """, logger: TestDatabase.logger)
        }
        let deleted = try await store.cleanup()
        #expect(deleted >= 2)
        let usage = try await TestDatabase.scalar("SELECT count(*)::bigint FROM policygate.usage WHERE key = \(name)")
        let admissions = try await TestDatabase.scalar("SELECT count(*)::bigint FROM policygate.admissions WHERE key = \(name)")
        #expect(usage == 0)
        #expect(admissions == 0)
    }

    @Test("the database restarted mid-run: callers get their failure policy, nothing hangs, no commit is lost or counted twice")
    func databaseRestart() async throws {
        let script = TestDatabase.serverScript
        try #require(FileManager.default.fileExists(atPath: script.path), "\(script.path) is missing")
        let closedProvider = TestDatabase.uniqueProvider("restart-closed")
        let openProvider = TestDatabase.uniqueProvider("restart-open")
        let store = try await TestDatabase.store(timeout: .seconds(1))
        defer { store.close() }
        let recorder = TelemetryRecorder()
        let limits = PolicyLimits(requestsPerMinute: 100_000, tokensPerDay: 100_000_000, maxConcurrent: 50)
        let closed = try TestDatabase.gate(closedProvider, limits, store: store, telemetry: recorder)
        let open = try TestDatabase.gate(openProvider, limits, store: store, failurePolicy: .failOpen, telemetry: recorder)
        struct Tally: Sendable { var admitted = 0, uncounted = 0, unavailable = 0, timedOut = 0, other: [String] = [] }
        let end = ContinuousClock.now + .seconds(6)
        let tallies = try await withTimeout(seconds: 60) {
            try await withThrowingTaskGroup(of: (Int, Tally).self) { group in
                for index in 0..<8 {
                    let gate = index % 2 == 0 ? closed : open
                    let key = PolicyKey(provider: index % 2 == 0 ? closedProvider : openProvider)
                    group.addTask {
                        var tally = Tally()
                        while ContinuousClock.now < end {
                            do {
                                var permit = try await gate.acquire(key, estimatedTokens: 10, maxWait: .seconds(2))
                                if permit.isInert { tally.uncounted += 1 } else { tally.admitted += 1 }
                                try await Task.sleep(for: .milliseconds(5))
                                try permit.commitTokens(7)
                            } catch let error as PolicyError where error.code == .storeUnavailable {
                                tally.unavailable += 1
                                try await Task.sleep(for: .milliseconds(50))
                            } catch let error as PolicyError where error.code == .timedOut {
                                tally.timedOut += 1
                            } catch {
                                tally.other.append("\(error)")
                            }
                        }
                        return (index, tally)
                    }
                }
                group.addTask {
                    try await Task.sleep(for: .milliseconds(1_500))
                    let status = try await run("/bin/bash", [script.path, "restart"])
                    return (-1, status == 0 ? Tally() : Tally(other: ["restart failed: \(status)"]))
                }
                var all = [Tally](repeating: Tally(), count: 9)
                for try await (index, tally) in group { all[index < 0 ? 8 : index] = tally }
                return all
            }
        }
        try await withTimeout(seconds: 60) { await closed.flushStoreWrites() }
        let other = tallies.flatMap(\.other)
        #expect(other.isEmpty, "unexpected outcomes: \(other.prefix(5))")
        let admitted = tallies.map(\.admitted).reduce(0, +)
        #expect(admitted > 0)
        // The fail_closed provider, from the database's admissions log:
        // - every call that got a permit was released, and ends with its committed 7 tokens
        //   (commits were retried across the restart): none lost;
        // - a call the database recorded but whose reply the restart lost (its caller saw
        //   storeUnavailable or timedOut, so no permit) keeps its estimate of 10, like a process
        //   that died before committing, and is never released: at most one per such failure;
        // - the windows hold exactly the admissions' tokens: nothing counted twice.
        let name = PolicyKey(provider: closedProvider).storeName
        let closedTallies = tallies.enumerated().filter { $0.offset % 2 == 0 && $0.offset < 8 }.map(\.element)
        let permits = closedTallies.map(\.admitted).reduce(0, +)
        let failures = closedTallies.map { $0.unavailable + $0.timedOut }.reduce(0, +)
        let released = try await TestDatabase.scalar(
            "SELECT count(*)::bigint FROM policygate.admissions WHERE key = \(name) AND released_us IS NOT NULL")
        let releasedNotCommitted = try await TestDatabase.scalar(
            "SELECT count(*)::bigint FROM policygate.admissions WHERE key = \(name) AND released_us IS NOT NULL AND tokens <> 7")
        let orphans = try await TestDatabase.scalar(
            "SELECT count(*)::bigint FROM policygate.admissions WHERE key = \(name) AND released_us IS NULL")
        let orphansNotAtEstimate = try await TestDatabase.scalar(
            "SELECT count(*)::bigint FROM policygate.admissions WHERE key = \(name) AND released_us IS NULL AND tokens <> 10")
        let admissionTokens = try await TestDatabase.scalar(
            "SELECT coalesce(sum(tokens), 0)::bigint FROM policygate.admissions WHERE key = \(name)")
        let windowTokens = try await TestDatabase.scalar(
            "SELECT coalesce(sum(tokens), 0)::bigint FROM policygate.usage WHERE key = \(name) AND win = 2")
        #expect(released == Int64(permits))
        #expect(releasedNotCommitted == 0)
        #expect((orphans ?? 0) <= Int64(failures), "\(orphans ?? -1) unreleased admissions, \(failures) failed calls")
        #expect(orphansNotAtEstimate == 0)
        #expect(windowTokens == admissionTokens)
        let failOpenErrors = tallies.enumerated().filter { $0.offset % 2 == 1 && $0.offset < 8 }.map { $0.element.unavailable }.reduce(0, +)
        #expect(failOpenErrors == 0, "a fail_open provider never throws storeUnavailable")
    }
}
#endif

#if Postgres
/// Runs a shell command on a thread of its own (not the cooperative pool's) and returns its
/// exit status. `system` waits for the command itself: Foundation's `Process` would also wait
/// for the restarted server, which inherits the command's descriptors and never exits.
func run(_ executable: String, _ arguments: [String]) async throws -> Int32 {
    let command = ([executable] + arguments).map { "'\($0)'" }.joined(separator: " ") + " </dev/null >/dev/null 2>&1"
    return await withCheckedContinuation { continuation in
        Thread.detachNewThread {
            let status = system(command)
            continuation.resume(returning: status)
        }
    }
}
#endif
