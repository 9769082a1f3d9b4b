#if Postgres
import Foundation
import PolicyGate
import PolicyGatePostgres
import PolicyGateTestKit
import PostgresNIO
import Synchronization
import Testing

extension PostgresStoreTests {
    /// A nested provider kept in the store: account, `per.org`, `per.user`.
    static func nestedGate(
        _ provider: String, account: PolicyLimits, org: PolicyLimits, user: PolicyLimits, store: any PolicyQuotaStore,
        failurePolicy: PolicyStorage.FailurePolicy = .failClosed
    ) throws -> PolicyService {
        var configuration = PolicyConfiguration(limits: [provider: account])
        configuration.scopeLimits[provider] = ["org": org, "user": user]
        configuration.storage[provider] = PolicyStorage(store: .postgres, failurePolicy: failurePolicy)
        return try PolicyService(configuration: configuration, store: store)
    }

    /// The levels of a member's chain: the account, its org, itself.
    static func chain(of key: PolicyKey) -> [PolicyKey] {
        [PolicyKey(provider: key.provider)] + key.parents.map { PolicyKey(provider: key.provider, scope: $0) } + [key]
    }

    static func member(_ provider: String, _ user: String, _ org: String) -> PolicyKey {
        PolicyKey(provider: provider, scope: .user(user), within: [.org(org)])
    }

    /// Requests counted in a key's live minute window, from the store's own table.
    static func minuteRequests(_ key: PolicyKey) async throws -> Int64 {
        try await TestDatabase.scalar(
            "SELECT coalesce(sum(requests), 0)::bigint FROM policygate.usage WHERE key = \(key.chainStoreName) AND win = 0") ?? -1
    }

    @Test(
        "a nested chain across two gates: one statement per admission, refusals name the level, every level counted, a release at the org wakes the other gate"
    )
    func nestedChainAcrossGates() async throws {
        let provider = TestDatabase.uniqueProvider("chain")
        let stores = [try await TestDatabase.store(), try await TestDatabase.store()]
        defer { stores.forEach { $0.close() } }
        let counting = CountingStore(stores[0])
        let account = PolicyLimits(requestsPerMinute: 100, tokensPerMinute: 10_000, maxConcurrent: 3)
        let org = PolicyLimits(requestsPerMinute: 100, maxConcurrent: 2)
        let user = PolicyLimits(requestsPerMinute: 2)
        let a = try Self.nestedGate(provider, account: account, org: org, user: user, store: counting)
        let b = try Self.nestedGate(provider, account: account, org: org, user: user, store: stores[1])
        let (u1, u2, u3) = (Self.member(provider, "u1", "acme"), Self.member(provider, "u2", "acme"), Self.member(provider, "u3", "acme"))

        var first = try await a.acquire(u1, estimatedTokens: 500, maxWait: .zero)
        #expect(counting.calls.withLock { $0 } == ["admitChain"])
        let second = try await b.acquire(u2, estimatedTokens: 500, maxWait: .zero)
        // acme holds its two: refused at the org level, counted nowhere.
        let refused = await #expect(throws: PolicyError.self) { _ = try await b.acquire(u3, estimatedTokens: 10, maxWait: .zero) }
        #expect(refused?.limit == .concurrency)
        #expect(refused?.level == Self.chain(of: u3)[1])
        #expect(try await Self.minuteRequests(u3) == 0)
        #expect(try await Self.minuteRequests(Self.chain(of: u1)[0]) == 2)
        #expect(try await Self.minuteRequests(Self.chain(of: u1)[1]) == 2)
        #expect(try await Self.minuteRequests(u1) == 1)

        // A waiter in gate b under acme is woken by gate a's release of another user of acme.
        let waiter = Task { try await b.acquire(u3, estimatedTokens: 10, maxWait: .seconds(10)).isInert }
        try await Task.sleep(for: .milliseconds(300))
        try first.commitTokens(100)  // at every level
        let released = ContinuousClock.now
        first.release()
        await a.flushStoreWrites()
        let thirdInert = try await withTimeout(seconds: 10) { try await waiter.value }
        #expect(!thirdInert)
        print("nested chain: waiter in another gate admitted \(ContinuousClock.now - released) after the release at its org")
        let tokens = try await TestDatabase.scalar(
            "SELECT coalesce(sum(tokens), 0)::bigint FROM policygate.usage WHERE key = \(Self.chain(of: u1)[0].chainStoreName) AND win = 0")
        let expected: Int64 = 100 + 500 + 10  // u1 committed 100, u2's and u3's estimates
        #expect(tokens == expected)
        let leafTokens = try await TestDatabase.scalar(
            "SELECT coalesce(sum(tokens), 0)::bigint FROM policygate.usage WHERE key = \(u1.chainStoreName) AND win = 0")
        #expect(leafTokens == 100)
        // Commit and release: one statement each (or one for both, the commit carried).
        let calls = counting.calls.withLock { $0 }
        #expect(
            calls.first == "admitChain" && calls.dropFirst().allSatisfy { $0 == "commit" || $0 == "release" } && calls.count <= 3,
            "\(calls)")

        // The user's window: u1's second call fits, its third is refused at the user level.
        let again = try await a.acquire(u1, estimatedTokens: 10, maxWait: .zero)
        let window = await #expect(throws: PolicyError.self) { _ = try await a.acquire(u1, estimatedTokens: 10, maxWait: .zero) }
        #expect(window?.limit == .requestsPerMinute)
        #expect(window?.level == u1)
        let retry = try #require(window?.retryAfter)
        #expect(retry > .seconds(55) && retry <= .seconds(61), "retryAfter \(retry)")
        _ = consume second
        _ = consume again
        await a.flushStoreWrites()
        await b.flushStoreWrites()
        let live = try await TestDatabase.scalar(
            "SELECT count(*)::bigint FROM policygate.leases WHERE key IN (\(Self.chain(of: u1)[0].chainStoreName), \(Self.chain(of: u1)[1].chainStoreName))"
        )
        #expect(live == 0)
    }

    @Test(
        "randomised: four gates share one account; no level is ever over its caps, every level counts exactly the same calls, across cancellations and a store cut off"
    )
    func nestedRandomisedAcrossGates() async throws {
        let provider = TestDatabase.uniqueProvider("chainrand")
        var components = try #require(URLComponents(string: TestDatabase.url))
        let proxy = try TCPProxy(upstreamPort: components.port ?? 5432)
        defer { proxy.stop() }
        components.port = proxy.port
        var stores = [try await TestDatabase.store(), try await TestDatabase.store(), try await TestDatabase.store()]
        stores.append(try await TestDatabase.store(timeout: .milliseconds(500), settings: PolicyPostgresSettings(url: components.string)))
        defer { stores.forEach { $0.close() } }
        let caps = (account: 6, org: 3, user: 2, accountRPM: 60, userRPM: 8)
        let gates = try stores.map { store in
            try Self.nestedGate(
                provider, account: PolicyLimits(requestsPerMinute: caps.accountRPM, maxConcurrent: caps.account),
                org: PolicyLimits(requestsPerMinute: 1_000, maxConcurrent: caps.org),
                user: PolicyLimits(requestsPerMinute: caps.userRPM, maxConcurrent: caps.user), store: store)
        }
        let orgs = ["acme", "beta", "gamma"]
        let keys = orgs.flatMap { org in (0..<3).map { Self.member(provider, "u\($0)", org) } }
        let tally = ChainTally()
        let userCap = caps.user, accountCap = caps.account, orgCap = caps.org
        @Sendable func hold(_ key: PolicyKey, _ delta: Int) {
            tally.held.withLock { table in
                for level in Self.chain(of: key) {
                    table[level.chainStoreName, default: 0] += delta
                    let cap = level == key ? userCap : level.scope == .global ? accountCap : orgCap
                    if table[level.chainStoreName]! > cap {
                        tally.over.withLock { $0.append("\(level) holds \(table[level.chainStoreName]!)") }
                    }
                }
            }
        }
        var random = SeededRandomNumberGenerator(seed: 16)
        let plans = (0..<160).map { _ in
            (
                gate: Int.random(in: 0..<gates.count, using: &random), key: Int.random(in: 0..<keys.count, using: &random),
                holdMs: Int.random(in: 0..<30, using: &random),
                cancelMs: Int.random(in: 0..<8, using: &random) == 0 ? Int.random(in: 1..<40, using: &random) : nil,
                startMs: Int.random(in: 0..<3_000, using: &random)
            )
        }
        let cut = Task {
            try? await Task.sleep(for: .milliseconds(1_000))
            proxy.set(.cut)
            try? await Task.sleep(for: .milliseconds(700))
            proxy.set(.pass)
        }
        await withTaskGroup(of: Void.self) { group in
            for plan in plans {
                let gate = gates[plan.gate]
                let key = keys[plan.key]
                let task = Task {
                    try? await Task.sleep(for: .milliseconds(plan.startMs))
                    do {
                        let permit = try await gate.acquire(key, maxWait: .seconds(3))
                        hold(key, 1)
                        tally.admitted.add(1, ordering: .relaxed)
                        try? await Task.sleep(for: .milliseconds(plan.holdMs))
                        hold(key, -1)
                        _ = consume permit
                    } catch let error as PolicyError where error.code == .storeUnavailable {
                        // Only the gate behind the proxy may find the store unavailable (a
                        // deadlock or a failed statement would show up here for the others).
                        if plan.gate == 3 {
                            tally.unavailable.add(1, ordering: .relaxed)
                        } else {
                            tally.unavailableDirect.add(1, ordering: .relaxed)
                        }
                    } catch {}
                }
                group.addTask {
                    if let cancel = plan.cancelMs {
                        try? await Task.sleep(for: .milliseconds(plan.startMs + cancel))
                        task.cancel()
                    }
                    await task.value
                }
            }
        }
        await cut.value
        for gate in gates { await gate.flushStoreWrites() }
        #expect(tally.unavailableDirect.load(ordering: .relaxed) == 0)
        #expect(tally.over.withLock { $0 }.isEmpty, "\(tally.over.withLock { $0 }.prefix(5))")
        // All or nothing: every level counted exactly the calls of the keys under it.
        let accountCount = try await Self.minuteRequests(Self.chain(of: keys[0])[0])
        var orgSum: Int64 = 0
        var userSum: Int64 = 0
        for org in orgs {
            let members = keys.filter { $0.parents == [.org(org)] }
            let orgCount = try await Self.minuteRequests(Self.chain(of: members[0])[1])
            var users: Int64 = 0
            for member in members {
                let count = try await Self.minuteRequests(member)
                #expect(count <= Int64(caps.userRPM))
                users += count
            }
            #expect(orgCount == users, "org \(org): \(orgCount) counted, its users \(users)")
            orgSum += orgCount
            userSum += users
        }
        #expect(accountCount == orgSum && orgSum == userSum)
        #expect(accountCount <= Int64(caps.accountRPM))
        // Admissions the callers got are counted; the store may count more (answers that came
        // after their caller left are counted and given back).
        #expect(accountCount >= Int64(tally.admitted.load(ordering: .relaxed)))
        print(
            "nested randomised: \(tally.admitted.load(ordering: .relaxed)) admitted, \(accountCount) counted, \(tally.unavailable.load(ordering: .relaxed)) refused while cut off"
        )
        let live = try await TestDatabase.scalar(
            "SELECT count(*)::bigint FROM policygate.leases WHERE key = \(Self.chain(of: keys[0])[0].chainStoreName) AND expires_us > policygate.now_us()"
        )
        #expect(live == 0)
    }

    @Test("a chain's lease is renewed at every level while its permit is held, and released at every level")
    func nestedChainLeaseRenewal() async throws {
        let provider = TestDatabase.uniqueProvider("chainlease")
        let store = try await TestDatabase.store(lease: .milliseconds(1_500))
        defer { store.close() }
        let gate = try Self.nestedGate(
            provider, account: PolicyLimits(maxConcurrent: 5), org: PolicyLimits(maxConcurrent: 5),
            user: PolicyLimits(maxConcurrent: 1), store: store)
        let key = Self.member(provider, "u1", "acme")
        let names = Self.chain(of: key).map(\.chainStoreName)
        let permit = try await gate.acquire(key, maxWait: .zero)
        try await Task.sleep(for: .seconds(3))  // two lease lengths: only renewals keep them
        let live = try await TestDatabase.scalar(
            "SELECT count(*)::bigint FROM policygate.leases WHERE key = ANY(\(names)) AND expires_us > policygate.now_us()")
        #expect(live == 3)
        #expect(store.lostLeases == 0)
        _ = consume permit
        await gate.flushStoreWrites()
        let after = try await TestDatabase.scalar("SELECT count(*)::bigint FROM policygate.leases WHERE key = ANY(\(names))")
        #expect(after == 0)
    }

    @Test("latency: a three-level chain's admission and release vs a single key's (printed, not asserted)")
    func nestedChainLatency() async throws {
        let store = try await TestDatabase.store()
        defer { store.close() }
        let flatProvider = TestDatabase.uniqueProvider("flatlat")
        let flat = try TestDatabase.gate(flatProvider, PolicyLimits(requestsPerMinute: 100_000, maxConcurrent: 100), store: store)
        let provider = TestDatabase.uniqueProvider("chainlat")
        let nested = try Self.nestedGate(
            provider, account: PolicyLimits(requestsPerMinute: 100_000, maxConcurrent: 100),
            org: PolicyLimits(requestsPerMinute: 100_000, maxConcurrent: 100),
            user: PolicyLimits(requestsPerMinute: 100_000, maxConcurrent: 100),
            store: store)
        func measure(_ gate: PolicyService, _ key: PolicyKey) async throws -> Duration {
            for _ in 0..<20 { _ = try await gate.acquire(key) }  // warm up
            await gate.flushStoreWrites()
            let clock = ContinuousClock()
            var times: [Duration] = []
            for _ in 0..<200 {
                let start = clock.now
                let permit = try await gate.acquire(key)
                times.append(clock.now - start)
                _ = consume permit
            }
            await gate.flushStoreWrites()
            return times.sorted()[times.count / 2]
        }
        let single = try await measure(flat, PolicyKey(provider: flatProvider, scope: .user("u1")))
        let chain = try await measure(nested, Self.member(provider, "u1", "acme"))
        print("store admission median: single key \(single), three-level chain \(chain) (200 sequential calls each)")
    }
}

/// What the randomised test's callers saw: what they held per level, what went over a cap.
final class ChainTally: Sendable {
    let held = Mutex<[String: Int]>([:])
    let over = Mutex<[String]>([])
    let admitted = Atomic<Int>(0)
    let unavailable = Atomic<Int>(0)
    let unavailableDirect = Atomic<Int>(0)
}

/// Forwards to a store and records which calls reached it, to count round trips.
final class CountingStore: PolicyQuotaStore {
    let inner: any PolicyQuotaStore
    let calls = Mutex<[String]>([])
    init(_ inner: any PolicyQuotaStore) { self.inner = inner }
    private func note(_ call: String) { calls.withLock { $0.append(call) } }
    func admit(_ request: PolicyStoreRequest) async throws -> PolicyStoreDecision {
        note("admit")
        return try await inner.admit(request)
    }
    func admitChain(_ request: PolicyStoreChainRequest) async throws -> PolicyStoreChainDecision {
        note("admitChain")
        return try await inner.admitChain(request)
    }
    var supportsChains: Bool { inner.supportsChains }
    func commit(_ lease: PolicyStoreLease, tokens: Int) async throws {
        note("commit")
        try await inner.commit(lease, tokens: tokens)
    }
    func release(_ lease: PolicyStoreLease) async throws {
        note("release")
        try await inner.release(lease)
    }
    func release(_ lease: PolicyStoreLease, committing tokens: Int?) async throws {
        note("release")
        try await inner.release(lease, committing: tokens)
    }
    func observeChanges(_ onChange: @escaping @Sendable (String?) -> Void) { inner.observeChanges(onChange) }
    var callTimeout: Duration { inner.callTimeout }
    var writeRetryPeriod: Duration { inner.writeRetryPeriod }
    func endRenewal(of lease: PolicyStoreLease) { inner.endRenewal(of: lease) }
    func observeLeaseLoss(_ onLoss: @escaping @Sendable (PolicyLeaseLossEvent) -> Void) { inner.observeLeaseLoss(onLoss) }
    var commitHold: Duration { inner.commitHold }
    func beginWaiting(for keyName: String) { inner.beginWaiting(for: keyName) }
    func endWaiting(for keyName: String) { inner.endWaiting(for: keyName) }
    func observeFailures(_ onFailure: @escaping @Sendable (PolicyStoreFailureEvent) -> Void) { inner.observeFailures(onFailure) }
}
#endif
