import PolicyGateTestKit
import Testing

@testable import PolicyGate

/// The shared path against a store that answers late, fails or never answers in time
/// (``FakeQuotaStore``, on a manual clock): deadlines, cancellation, retries and admissions
/// whose caller left. No database, no sleeping.
@Suite("Shared gate under store faults (fake store)")
struct SharedGateFaultTests {
    static let provider = "llm"

    /// A manual clock, a fake store on it, and a gate sharing ``provider`` through the store.
    struct Fixture {
        let clock = ManualClock()
        let store: FakeQuotaStore
        let recorder = TelemetryRecorder()
        let gate: PolicyService

        init(
            _ limits: PolicyLimits, callTimeout: Duration = .seconds(2), writeRetryPeriod: Duration = .seconds(10),
            failurePolicy: PolicyStorage.FailurePolicy = .failClosed
        ) throws {
            store = FakeQuotaStore(clock: clock, callTimeout: callTimeout, writeRetryPeriod: writeRetryPeriod)
            var configuration = PolicyConfiguration(limits: [provider: limits])
            configuration.storage[provider] = PolicyStorage(store: .postgres, failurePolicy: failurePolicy)
            gate = try PolicyService(configuration: configuration, store: store, clock: clock, telemetry: recorder)
        }
    }

    /// How a caller leaves before the store answers.
    enum Leaving: String, CaseIterable, Sendable {
        case deadline, cancellation
    }

    @Test("an admission answered after its caller left is given back; the store was told the caller's wait", arguments: Leaving.allCases)
    func lateAdmissionIsGivenBack(_ leaving: Leaving) async throws {
        let f = try Fixture(PolicyLimits(maxConcurrent: 1))
        let key = PolicyKey(provider: Self.provider)
        f.store.script([.held])
        let (box, task) = startWaiter(f.gate, key, tokens: 10, maxWait: .seconds(1))
        await eventually("admission sent") { f.store.heldAdmissionCount == 1 }
        switch leaving {
        case .deadline:
            await eventually("timer armed") { f.clock.nextDeadline != nil }
            f.clock.advance(by: .seconds(1))
            await task.value
            #expect((box.error as? PolicyError)?.code == .timedOut)
        case .cancellation:
            task.cancel()
            await task.value
            #expect(box.error is CancellationError)
        }
        #expect(!box.hasPermit)
        // The store may give up (a lock wait, say) when the caller does.
        #expect(f.store.requests.map(\.maximumWait) == [.seconds(1)])

        f.store.answerHeldAdmissions()  // the statement commits after its caller left
        await eventually("late admission released") { f.store.releaseCount == 1 }
        #expect(f.store.liveLeases.isEmpty)
        #expect(f.store.renewedLeases.isEmpty)
        // The slot is free again for a caller that does not wait.
        let permit = try await f.gate.acquire(key, maxWait: .zero)
        let inert = permit.isInert
        #expect(!inert)
    }

    @Test("a store slower than its timeout: fail_open admits uncounted, and the admission that comes later is given back")
    func lateAdmissionAfterStoreTimeoutUnderFailOpen() async throws {
        let f = try Fixture(PolicyLimits(maxConcurrent: 1), callTimeout: .milliseconds(500), failurePolicy: .failOpen)
        let (clock, store, recorder, gate) = (f.clock, f.store, f.recorder, f.gate)
        let key = PolicyKey(provider: Self.provider)
        store.script([.delayed(.seconds(3))])
        let (box, task) = startWaiter(gate, key, tokens: 10, maxWait: .seconds(30))
        await eventually("both timers armed") { clock.sleeperCount == 2 }
        clock.advance(by: .milliseconds(500))
        await task.value
        #expect(box.hasPermit)
        #expect(recorder.storeFailures.map(\.outcome) == [.admittedUncounted])
        clock.advance(by: .seconds(3))
        await eventually("late admission released") { store.releaseCount == 1 }
        #expect(store.liveLeases.isEmpty)
        box.release()
    }

    @Test(
        "a request the store cannot record is refused with invalidArgument, even under fail_open",
        arguments: PolicyStorage.FailurePolicy.allCases)
    func unrecordableRequestIsNeverUncounted(_ policy: PolicyStorage.FailurePolicy) async throws {
        let f = try Fixture(PolicyLimits(maxConcurrent: 1), failurePolicy: policy)
        f.store.script([.refuse("value out of range"), .fail("down")])
        let key = PolicyKey(provider: Self.provider)
        let error = await #expect(throws: PolicyError.self) { _ = try await f.gate.acquire(key, maxWait: .zero) }
        #expect(error?.code == .invalidArgument)
        #expect(f.recorder.storeFailures.isEmpty)
        #expect(f.recorder.rejects.map(\.error.code) == [.invalidArgument])
        // A failure to answer still meets the policy.
        if policy == .failOpen {
            let permit = try await f.gate.acquire(key, maxWait: .zero)
            let inert = permit.isInert
            #expect(inert)
        } else {
            let unavailable = await #expect(throws: PolicyError.self) { _ = try await f.gate.acquire(key, maxWait: .zero) }
            #expect(unavailable?.code == .storeUnavailable)
        }
    }

    @Test("a released permit's lease is no longer renewed, even while its release cannot be written")
    func failedReleaseStopsRenewal() async throws {
        let f = try Fixture(PolicyLimits(maxConcurrent: 1), writeRetryPeriod: .seconds(1))
        let (clock, store, recorder, gate) = (f.clock, f.store, f.recorder, f.gate)
        let key = PolicyKey(provider: Self.provider)
        store.scriptWrites(Array(repeating: .fail("down"), count: 100))
        do {
            let permit = try await gate.acquire(key, maxWait: .zero)
            #expect(store.renewedLeases.count == 1)
            _ = consume permit
        }
        // Stopped at once, before the first write attempt was even made.
        #expect(store.renewedLeases.isEmpty)
        await eventually("first attempt failed") { recorder.storeFailures.count == 1 }
        #expect(store.liveLeases.count == 1)  // the release was not written: the lease will expire
        for _ in 0..<20 {
            if recorder.storeFailures.last?.outcome == .gaveUp { break }
            await eventually("retry scheduled") { clock.sleeperCount == 1 || recorder.storeFailures.last?.outcome == .gaveUp }
            clock.advance(by: .milliseconds(200))
        }
        await eventually("gave up") { recorder.storeFailures.last?.outcome == .gaveUp }
        #expect(recorder.storeFailures.allSatisfy { $0.operation == .release })
        #expect(store.renewedLeases.isEmpty)
    }

    @Test("a lost lease is reported to telemetry with its key and reason")
    func lostLeaseIsReported() async throws {
        let f = try Fixture(PolicyLimits(maxConcurrent: 2))
        let (store, recorder, gate) = (f.store, f.recorder, f.gate)
        let key = PolicyKey(provider: Self.provider, scope: .user("u-1"))
        let permit = try await gate.acquire(key, maxWait: .zero)
        let lease = try #require(store.liveLeases.first)
        store.loseLease(lease, reason: .unconfirmed)
        #expect(recorder.leaseLosses == [PolicyLeaseLossEvent(key: key, reason: .unconfirmed)])
        _ = consume permit
    }

    @Test("flush waits for the writes issued before it, not for those issued after")
    func flushWaitsOnlyForEarlierWrites() {
        var writes = Writes<Int>()
        let first = writes.issue()
        let flushedAtOnce = writes.wait(1)  // a flush: waits for `first`
        let second = writes.issue()  // steady traffic goes on
        let secondFlushedAtOnce = writes.wait(2)  // a second flush: waits for both
        let afterFirst = writes.finish(first)  // the first flush is done, `second` still pending
        let third = writes.issue()
        let afterThird = writes.finish(third)  // the second flush still waits for `second`
        let afterSecond = writes.finish(second)
        let idle = writes.wait(3)  // nothing pending: done at once
        #expect(!flushedAtOnce && !secondFlushedAtOnce)
        #expect(afterFirst == [1])
        #expect(afterThird.isEmpty)
        #expect(afterSecond == [2])
        #expect(idle)
    }

    @Test("flush waits for a release still unanswered, and returns once it is written")
    func flushWaitsForPendingRelease() async throws {
        let f = try Fixture(PolicyLimits(maxConcurrent: 5))
        let (store, gate) = (f.store, f.gate)
        let key = PolicyKey(provider: Self.provider)
        let box = PermitBox()
        box.store(try await gate.acquire(key, maxWait: .zero))
        await gate.flushStoreWrites()  // nothing pending
        store.scriptWrites([.held])
        box.release()
        await eventually("release sent") { store.heldWriteCount == 1 }
        let flushed = Locked(false)
        let flush = Task {
            await gate.flushStoreWrites()
            flushed.withLock { $0 = true }
        }
        for _ in 0..<1_000 { await Task.yield() }
        let early = flushed.withLock { $0 }
        #expect(!early)
        store.answerHeldWrites()
        await flush.value
        #expect(store.liveLeases.isEmpty)
    }

    @Test("seeded: deadlines, cancellations, latencies and late answers never leave a lease without a permit")
    func seededFaults() async throws {
        let seed = UInt64(getenvString("POLICYGATE_SEED").flatMap { UInt64($0) } ?? 0x5eed_13)
        let rounds = getenvString("POLICYGATE_SOAK") == nil ? 8 : 200
        var random = SeededGenerator(seed: seed)
        for round in 0..<rounds {
            try await Self.faultRound(&random, round: round, seed: seed)
        }
    }

    /// One round: callers of distinct keys, each with a scripted store behaviour, a maximum
    /// wait and maybe a cancellation; the clock driven in random steps.
    static func faultRound(_ random: inout SeededGenerator, round: Int, seed: UInt64) async throws {
        let f = try Fixture(PolicyLimits(maxConcurrent: 1))
        let (clock, store, gate) = (f.clock, f.store, f.gate)
        let behaviors: [FakeQuotaStore.Behavior] = [.immediate, .delayed(.milliseconds(300)), .delayed(.seconds(3)), .held, .fail("x")]
        let waits: [Duration] = [.zero, .milliseconds(500), .seconds(1), .seconds(10)]
        var callers: [(box: PermitBox, task: Task<Void, Never>, cancel: Bool)] = []
        for i in 0..<6 {
            let key = PolicyKey(provider: provider, scope: .user("u\(i)"))
            store.script([behaviors.randomElement(using: &random)!], for: key)
            let (box, task) = startWaiter(gate, key, tokens: 1, maxWait: waits.randomElement(using: &random)!)
            callers.append((box, task, Bool.random(using: &random)))
        }
        await eventually("all sent (seed \(seed), round \(round))") { store.requests.count == callers.count }
        for caller in callers where caller.cancel { caller.task.cancel() }
        for _ in 0..<8 {
            clock.advance(by: .milliseconds(Int64.random(in: 100...1_500, using: &random)))
            if Bool.random(using: &random) { store.answerHeldAdmissions() }
            for _ in 0..<50 { await Task.yield() }
        }
        store.answerHeldAdmissions()
        clock.advance(by: .seconds(60))
        for caller in callers { await caller.task.value }
        let permits = callers.filter { $0.box.hasPermit }.count
        // Every lease the store holds belongs to a permit; the others were given back.
        await eventually("only permits hold leases (seed \(seed), round \(round))") {
            store.liveLeases.count == permits && store.renewedLeases.count == permits
        }
        for caller in callers { caller.box.release() }
        await gate.flushStoreWrites()
        #expect(store.liveLeases.isEmpty, "seed \(seed), round \(round)")
        #expect(store.renewedLeases.isEmpty, "seed \(seed), round \(round)")
    }
}
