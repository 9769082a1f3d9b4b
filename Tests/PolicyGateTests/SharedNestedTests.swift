import PolicyGateTestKit
import Testing

@testable import PolicyGate

/// Nested limits kept in a shared store (``FakeQuotaStore``, on a manual clock): one store
/// call per chain admission, refusals naming the level, news of a level waking the keys
/// waiting under it, faults, and several services sharing one account.
@Suite("Shared store: nested chains (fake store)")
struct SharedNestedTests {
    static let provider = "llm"

    /// Account 3 in flight, each org 2, each user 1.
    static func configuration(failurePolicy: PolicyStorage.FailurePolicy = .failClosed) -> PolicyConfiguration {
        var configuration = PolicyConfiguration(limits: [provider: PolicyLimits(maxConcurrent: 3)])
        configuration.scopeLimits[provider] = [
            "org": PolicyLimits(maxConcurrent: 2), "user": PolicyLimits(requestsPerMinute: 100, maxConcurrent: 1),
        ]
        configuration.storage[provider] = PolicyStorage(store: .postgres, failurePolicy: failurePolicy)
        return configuration
    }

    static func user(_ user: String, org: String) -> PolicyKey {
        PolicyKey(provider: provider, scope: .user(user), within: [.org(org)])
    }

    @Test("a chain is admitted in one store call naming every level; commit and release are one call each")
    func oneRoundTrip() async throws {
        let clock = ManualClock()
        let store = FakeQuotaStore(clock: clock)
        let gate = try PolicyService(configuration: Self.configuration(), store: store, clock: clock, telemetry: nil)
        let key = Self.user("u1", org: "acme")
        var permit = try await gate.acquire(key, estimatedTokens: 10)
        #expect(store.callCount == 1)
        #expect(store.requests.isEmpty)
        let request = try #require(store.chainRequests.first)
        #expect(request.levels.map(\.key) == [PolicyKey(provider: Self.provider), key.level(1), key])
        #expect(request.levels.map(\.maxConcurrent) == [3, 2, 1])
        #expect(request.levels[2].requestCaps == [100, nil, nil])
        #expect(request.tokens == 10)
        // User u1 of acme is not user u1 of another org (nor u1 without parents).
        #expect(request.levels[2].keyName == key.chainStoreName)
        #expect(key.chainStoreName != Self.user("u1", org: "beta").chainStoreName)
        #expect(key.chainStoreName != PolicyKey(provider: Self.provider, scope: .user("u1")).chainStoreName)
        #expect(
            PolicyKey(provider: Self.provider, scope: .user("u1")).chainStoreName
                == PolicyKey(provider: Self.provider, scope: .user("u1")).storeName)
        for level in request.levels { #expect(store.liveCount(at: level.keyName) == 1) }
        try permit.commitTokens(7)
        permit.release()
        await gate.flushStoreWrites()
        // The commit travels with the release (or alone): never more than one call each.
        #expect(store.callCount <= 3)
        #expect(store.releaseCount == 1)
        for level in request.levels { #expect(store.liveCount(at: level.keyName) == 0) }
    }

    @Test("a refusal names the level and the limit; another org still gets in; a release at the org wakes the waiter under it")
    func refusalNamesLevelAndReleaseWakes() async throws {
        let clock = ManualClock()
        let store = FakeQuotaStore(clock: clock)
        let gate = try PolicyService(configuration: Self.configuration(), store: store, clock: clock, telemetry: nil)
        let first = try await gate.acquire(Self.user("u1", org: "acme"))
        let second = try await gate.acquire(Self.user("u2", org: "acme"))
        // acme holds its 2: a third user of acme is refused at the org level.
        let third = Self.user("u3", org: "acme")
        let refused = try await #require(throws: PolicyError.self) { _ = try await gate.acquire(third, maxWait: .zero) }
        #expect(refused.code == .rateLimited)
        #expect(refused.level == third.level(1))
        #expect(refused.limit == .concurrency)
        #expect(refused.key == third)
        // The same user twice: refused at its own level.
        let again = try await #require(throws: PolicyError.self) {
            _ = try await gate.acquire(Self.user("u1", org: "acme"), maxWait: .zero)
        }
        #expect(again.level == Self.user("u1", org: "acme"))
        // Another org fits; then the account (3) is full for everyone.
        let other = try await gate.acquire(Self.user("v1", org: "beta"))
        let account = try await #require(throws: PolicyError.self) {
            _ = try await gate.acquire(Self.user("v2", org: "beta"), maxWait: .zero)
        }
        #expect(account.level == PolicyKey(provider: Self.provider))

        // u3 waits (refused at acme); u1's release frees acme and the account: the store
        // announces each level, and u3, whose own key nobody released, is woken and admitted.
        let (box, task) = startWaiter(gate, third, tokens: 0)
        await eventually("u3 refused once") { store.chainRequests.filter { $0.levels.last?.key == third }.count == 2 }
        let calls = store.callCount
        #expect(!box.isDone)
        first.release()
        await task.value
        #expect(box.hasPermit, "\(String(describing: box.error))")
        // Its release and one more admission: u3 did not poll.
        #expect(store.callCount == calls + 2)
        box.release()
        second.release()
        other.release()
        await gate.flushStoreWrites()
        #expect(store.liveLeases.isEmpty)
    }

    @Test("store faults meet the failure policy; a store without chains is refused when the gate is made")
    func faultsAndUnsupportedStore() async throws {
        let clock = ManualClock()
        let store = FakeQuotaStore(clock: clock)
        let closed = try PolicyService(configuration: Self.configuration(), store: store, clock: clock, telemetry: nil)
        store.script([.fail("connection reset")])
        let error = try await #require(throws: PolicyError.self) { _ = try await closed.acquire(Self.user("u1", org: "acme")) }
        #expect(error.code == .storeUnavailable)
        store.script([.refuse("value out of range")])
        let invalid = try await #require(throws: PolicyError.self) { _ = try await closed.acquire(Self.user("u1", org: "acme")) }
        #expect(invalid.code == .invalidArgument)

        let openStore = FakeQuotaStore(clock: clock)
        let open = try PolicyService(
            configuration: Self.configuration(failurePolicy: .failOpen), store: openStore, clock: clock, telemetry: nil)
        openStore.script([.fail("connection reset")])
        let permit = try await open.acquire(Self.user("u1", org: "acme"))
        let inert = permit.isInert
        #expect(inert)
        #expect(openStore.liveLeases.isEmpty)

        let flat = FlatOnlyStore()
        #expect(throws: PolicyError.self) {
            _ = try PolicyService(configuration: Self.configuration(), store: flat, clock: clock, telemetry: nil)
        }
        // The default implementation refuses clearly rather than counting only the leaf.
        await #expect(throws: PolicyStoreRequestError.self) { _ = try await flat.admitChain(PolicyStoreChainRequest(levels: [])) }
    }

    @Test(
        "a chain admitted after its caller's deadline is given back at every level; a shutdown refuses a waiter and gives back held chains")
    func lateAdmissionAndShutdown() async throws {
        let clock = ManualClock()
        let store = FakeQuotaStore(clock: clock)
        let gate = try PolicyService(configuration: Self.configuration(), store: store, clock: clock, telemetry: nil)
        let key = Self.user("u1", org: "acme")
        store.script([.held])
        let (box, task) = startWaiter(gate, key, tokens: 0, maxWait: .seconds(1))
        await eventually("admission sent") { store.heldAdmissionCount == 1 }
        await eventually("timer armed") { clock.nextDeadline != nil }
        clock.advance(by: .seconds(1))
        await task.value
        #expect((box.error as? PolicyError)?.code == .timedOut)
        store.answerHeldAdmissions()  // recorded at every level after the caller left
        await eventually("late chain released") { store.releaseCount == 1 }
        let levels = try #require(store.chainRequests.first?.levels)
        for level in levels { #expect(store.liveCount(at: level.keyName) == 0) }

        // Held: u1 and u2 fill acme; u3 waits under it. A shutdown refuses u3 and, once its
        // grace period ends, gives both chains back.
        let first = PermitBox()
        first.store(try await gate.acquire(key))
        let second = PermitBox()
        second.store(try await gate.acquire(Self.user("u2", org: "acme")))
        let (waiter, waiting) = startWaiter(gate, Self.user("u3", org: "acme"), tokens: 0)
        await eventually("u3 refused by the store") { store.chainRequests.count == 4 }
        let shutdown = Task { await gate.shutDown(gracePeriod: .seconds(5)) }
        await waiting.value
        #expect((waiter.error as? PolicyError)?.code == .shutDown)
        await eventually("grace timer armed") { clock.nextDeadline != nil }
        clock.advance(by: .seconds(5))
        await shutdown.value
        #expect(store.liveLeases.isEmpty)
        for level in levels { #expect(store.liveCount(at: level.keyName) == 0) }
        first.release()
        second.release()
    }

    @Test("several services share one account: no level is ever over its cap, cancellations and a fault included", arguments: [1, 2, 3])
    func randomisedProcesses(seed: UInt64) async throws {
        var random = SeededGenerator(seed: seed)
        let clock = ManualClock()
        let store = FakeQuotaStore(clock: clock)
        let gates = try (0..<3).map { _ in
            try PolicyService(configuration: Self.configuration(), store: store, clock: clock, telemetry: nil)
        }
        let keys = (0..<6).map { Self.user("u\($0 % 3)", org: $0 < 3 ? "acme" : "beta") }
        let names = Set(keys.flatMap { [$0.chainStoreName, $0.level(1).chainStoreName, $0.level(0).chainStoreName] })
        let caps = Dictionary(
            uniqueKeysWithValues: names.map { name in
                (name, name == keys[0].level(0).chainStoreName ? 3 : keys.contains { $0.level(1).chainStoreName == name } ? 2 : 1)
            })
        func checkCaps() {
            for name in names { #expect(store.liveCount(at: name) <= caps[name]!, "over the cap at a level") }
        }
        var boxes: [(PermitBox, Task<Void, Never>)] = []
        var faulted = false
        for step in 0..<60 {
            switch Int.random(in: 0..<10, using: &random) {
            case 0..<5:
                let gate = gates[Int.random(in: 0..<gates.count, using: &random)]
                boxes.append(startWaiter(gate, keys[Int.random(in: 0..<keys.count, using: &random)], tokens: 1))
            case 5..<8:
                if let index = boxes.indices.filter({ boxes[$0].0.hasPermit }).randomElement(using: &random) {
                    boxes[index].0.release()
                }
            case 8:
                if let index = boxes.indices.filter({ !boxes[$0].0.isDone }).randomElement(using: &random) {
                    boxes[index].1.cancel()
                }
            default:
                if !faulted, step > 20 {
                    store.script([.fail("failover")])
                    faulted = true
                }
            }
            for _ in 0..<200 { await Task.yield() }
            checkCaps()
        }
        // Drain: release everything, cancel the rest; everything given back.
        for (box, task) in boxes {
            box.release()
            task.cancel()
        }
        for (box, task) in boxes {
            await task.value
            box.release()
        }
        for gate in gates { await gate.flushStoreWrites() }
        checkCaps()
        #expect(store.liveLeases.isEmpty)
        // Exact counts: every admission the store made was released once.
        let admitted = boxes.filter { $0.0.error == nil }.count
        #expect(admitted <= store.admissionCount)
        #expect(store.releaseCount == store.admissionCount, "admitted \(store.admissionCount), released \(store.releaseCount)")
    }
}

/// A store without chains: only the protocol's required single-key methods.
final class FlatOnlyStore: PolicyQuotaStore {
    func admit(_ request: PolicyStoreRequest) async throws -> PolicyStoreDecision { .concurrencyFull(retryAfter: nil) }
    func commit(_ lease: PolicyStoreLease, tokens: Int) async throws {}
    func release(_ lease: PolicyStoreLease) async throws {}
    func observeChanges(_ onChange: @escaping @Sendable (String?) -> Void) {}
    var callTimeout: Duration { .seconds(1) }
    var writeRetryPeriod: Duration { .seconds(1) }
}
