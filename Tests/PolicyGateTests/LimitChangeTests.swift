import Foundation
import PolicyGateTestKit
import Testing

@testable import PolicyGate

/// The defects found where limits change under load, each reproduced deterministically: on the
/// state machine with instants passed by hand, or through the gate on a manual clock.
@Suite("Limits that change under load", .timeLimit(.minutes(5)))
struct LimitChangeTests {
    typealias Machine = GateStateMachine<Int>
    let second: Int64 = 1_000_000_000
    let key = PolicyKey(provider: "p", scope: .user("u"))

    func admitted(_ effects: Machine.Effects) -> [Int] {
        (effects.resumes.items ?? []).compactMap { if case .success = $0.result { $0.payload } else { nil } }
    }

    // MARK: 1. A lowered concurrency cap

    @Test("lowering max_concurrent takes the slots back from waiters: no admission while in flight reaches the new cap")
    func loweredConcurrencyThroughTheGate() async throws {
        let clock = ManualClock()
        let gate = try PolicyService(limits: ["p": PolicyLimits(requestsPerMinute: 2, maxConcurrent: 4)], clock: clock)
        let first = PermitBox(), second = PermitBox()
        first.store(try gate.tryAcquire(key))
        second.store(try gate.tryAcquire(key))
        // Two more queue behind the minute window, each holding one of the two free slots.
        let (w1, t1) = startWaiter(gate, key, tokens: 0)
        await eventually("first waiter queued") { gate.currentState(for: key).queued == 1 }
        let (w2, t2) = startWaiter(gate, key, tokens: 0)
        await eventually("second waiter queued") { gate.currentState(for: key).queued == 2 }
        #expect(gate.currentState(for: key).waitingForCapacity == 2)

        try await gate.setLimits(PolicyLimits(requestsPerMinute: 2, maxConcurrent: 2), for: "p")
        #expect(gate.currentState(for: key).waitingForCapacity == 0)  // slots given back
        clock.advance(by: .seconds(61))
        for _ in 0..<1_000 { await Task.yield() }
        var state = gate.currentState(for: key)
        #expect(state.inFlight == 2 && state.queued == 2, "in flight \(state.inFlight) under a cap of 2")
        #expect(!w1.isDone && !w2.isDone)

        // One release makes room for one waiter, the first in line.
        first.release()
        await eventually("first waiter admitted") { w1.isDone }
        #expect(w1.hasPermit && !w2.isDone)
        state = gate.currentState(for: key)
        #expect(state.inFlight == 2 && state.queued == 1)
        second.release()
        await eventually("second waiter admitted") { w2.isDone }
        #expect(w2.hasPermit)
        w1.release()
        w2.release()
        await t1.value
        await t2.value
    }

    @Test("on the machine: waiters holding slots beyond a lowered cap give them back, last first, keeping their place")
    func loweredConcurrencyOnTheMachine() {
        var m = Machine(limits: CompiledLimits(PolicyLimits(requestsPerMinute: 2, maxConcurrent: 4), generation: 1), now: 0)
        _ = m.tryAdmit(tokens: 0, now: 0)
        _ = m.tryAdmit(tokens: 0, now: 0)
        for id in 1...3 { _ = m.enqueue(id: UInt64(id), tokens: 0, deadline: .max, payload: id, now: 0) }
        #expect(m.slotted == 2 && m.queued == 3)
        _ = m.setLimits(CompiledLimits(PolicyLimits(requestsPerMinute: 2, maxConcurrent: 3), generation: 2), now: second)
        #expect(m.slotted == 1)
        #expect(admitted(m.tick(now: 61 * second)) == [1])  // the head only: 3 in flight now
        #expect(m.inFlight == 3 && m.slotted == 0)
        #expect(admitted(m.tick(now: 200 * second)).isEmpty)
        _ = m.release()
        _ = m.release()
        #expect(admitted(m.tick(now: 200 * second)) == [2, 3])
        // Raising the cap again hands slots out in order.
        _ = m.setLimits(CompiledLimits(PolicyLimits(maxConcurrent: 10), generation: 3), now: 201 * second)
        #expect(m.inFlight == 3)
    }

    // MARK: 2. A token cap lowered below a caller's estimate

    @Test("a token cap lowered after the caller checked its estimate refuses it as oversized, never traps")
    func loweredTokenCapOnTheMachine() {
        var m = Machine(limits: CompiledLimits(PolicyLimits(tokensPerMinute: 10_000), generation: 1), now: 0)
        _ = m.setLimits(CompiledLimits(PolicyLimits(tokensPerMinute: 1_000), generation: 2), now: 0)
        let (result, _) = m.tryAdmit(tokens: 5_000, now: 0)
        guard case .failure(let rejection) = result else {
            Issue.record("admitted 5 000 tokens under a cap of 1 000")
            return
        }
        #expect(rejection.kind == .tokensPerMinute && rejection.retryAt == nil)
        let error = AdmissionRules.error(.rateLimited, rejection, now: 0, "estimate of 5000 tokens")
        #expect(error.code == .oversized && error.limit == .tokensPerMinute)
        // Waiting cannot help either: refused at once, with a deadline or without.
        guard case .rejected(let refused, _) = m.enqueue(id: 1, tokens: 5_000, deadline: .max, payload: 1, now: 0) else {
            Issue.record("queued an estimate that can never fit")
            return
        }
        #expect(refused.code == .oversized)
        #expect(m.queued == 0 && m.inFlight == 0)
    }

    @Test("through the core: a caller holding limits read before the cap was lowered is refused as oversized")
    func loweredTokenCapThroughTheCore() async throws {
        let gate = try PolicyService(limits: ["p": PolicyLimits(tokensPerMinute: 10_000)], clock: ManualClock())
        let stale = try #require(gate.core.compiledLimits(for: key))
        try await gate.setLimits(PolicyLimits(tokensPerMinute: 1_000), for: "p")
        let (_, result) = gate.core.admitNow(key, tokens: 5_000, limits: stale, now: 0)
        guard case .failure(let rejection) = result else {
            Issue.record("admitted 5 000 tokens under a cap of 1 000")
            return
        }
        #expect(rejection.exceededCap == 1_000)
        await #expect(throws: PolicyError.self) {
            _ = try await gate.core.wait(key, tokens: 5_000, limits: stale, deadline: .max)
        }
        #expect(gate.currentState(for: key).inFlight == 0)
        #expect(gate.currentState(for: key).windows.first?.tokens.used == 0)
    }

    // MARK: 3. Record and commit address the same bucket

    @Test("a caller whose clock reading is older than the window's head commits into the bucket it was recorded in")
    func commitFindsItsBucket() {
        var m = Machine(limits: CompiledLimits(PolicyLimits(tokensPerMinute: 100_000), generation: 1), now: 0)
        guard case .success = m.tryAdmit(tokens: 100, now: 61 * second).0,
            case .success(let late) = m.tryAdmit(tokens: 100, now: 59 * second + second / 2).0
        else {
            Issue.record("both should be admitted")
            return
        }
        // The second caller read the clock first but took the lock second: it was recorded at
        // the head (61 s), and its commit must land there too.
        #expect(throws: Never.self) { _ = try m.commit(late, from: 100, to: 10) }
        #expect(m.usage(now: 61 * second).first?.tokens == 110)
        // When the bucket of 59 s has left the window and the one of 61 s has not, both calls
        // are still counted, with the committed count.
        #expect(m.usage(now: 120 * second + second / 2).first?.tokens == 110)
        #expect(m.usage(now: 122 * second + 1).first?.tokens == 0)
    }

    // MARK: 4. A key created just after a schedule transition

    @Test("a key created after a transition's hand-over, by callers holding the older limits, starts on the new ones")
    func newKeyAfterTransition() async throws {
        let clock = ManualClock()
        let utc = try PolicySchedule.timeZone(named: "UTC")
        let schedule = PolicySchedule(
            timeZone: utc,
            entries: [
                PolicyScheduleEntry(name: "peak", cron: try CronExpression("* 9-17 * * *"), limits: PolicyLimits(requestsPerMinute: 5))
            ])
        let gate = try PolicyService(
            configuration: PolicyConfiguration(limits: ["p": PolicyLimits(requestsPerMinute: 1)], schedules: ["p": schedule]),
            clock: clock, startDate: try Date("2026-03-02T08:59:00Z", strategy: .iso8601))
        let before = try #require(gate.core.compiledLimits(for: key))
        #expect(before.requestCaps[0] == 1)
        clock.advance(by: .seconds(61))
        gate.core.advanceSchedules(now: clock.now.offset.nanoseconds)  // the hand-over: no key exists yet
        #expect(gate.core.compiledLimits(for: key)?.requestCaps[0] == 5)

        // Two callers that read the limits before the transition now create and use the key.
        let grants = Locked<[Grant]>([])
        let tasks = (0..<2).map { _ in
            Task {
                if let grant = try? await gate.core.wait(key, tokens: 0, limits: before, deadline: .max) {
                    grants.withLock { $0.append(grant) }
                }
            }
        }
        await eventually("both callers admitted under the peak's 5 per minute") { grants.withLock { $0.count } == 2 }
        for task in tasks { task.cancel() }
        for grant in grants.withLock({ $0 }) { grant.storage.release() }
        #expect(gate.currentState(for: key).queued == 0)
    }

    // MARK: 5. One refusal, one report

    @Test("a caller moved from the shared path to the in-process one by a reload is reported refused once")
    func sharedToMemoryReportsOnce() async throws {
        let clock = ManualClock()
        let telemetry = TelemetryRecorder()
        let store = AnsweringStore()
        var configuration = PolicyConfiguration(limits: ["p": PolicyLimits(maxConcurrent: 1)])
        configuration.storage = ["p": PolicyStorage(store: .postgres)]
        let gate = try PolicyService(
            configuration: configuration, store: store, clock: clock, startDate: Date(), telemetry: telemetry)
        // The store says the slot is taken; the caller waits for news.
        let (box, task) = startWaiter(gate, key, tokens: 0, maxWait: .seconds(5))
        await eventually("the store was asked") { store.admissions.withLock { $0 } == 1 }
        // In this process the only slot is taken, then the provider moves here.
        var memory = configuration
        memory.storage = [:]
        try await gate.apply(memory)
        let held = try gate.tryAcquire(key)
        await eventually("the caller queued in this process") { gate.currentState(for: key).queued == 1 }
        clock.advance(by: .seconds(6))
        await eventually("the caller gave up") { box.isDone }
        await task.value
        #expect((box.error as? PolicyError)?.code == .timedOut)
        #expect(telemetry.rejects.count == 1, "reported \(telemetry.rejects.count) times: \(telemetry.rejects.map(\.error.code))")
        _ = consume held
    }
}

/// A store that always finds the concurrency cap full: enough to park a shared caller.
private final class AnsweringStore: PolicyQuotaStore {
    let admissions = Locked(0)
    var callTimeout: Duration { .seconds(2) }
    var writeRetryPeriod: Duration { .seconds(1) }

    func admit(_ request: PolicyStoreRequest) async throws -> PolicyStoreDecision {
        admissions.withLock { $0 += 1 }
        return .concurrencyFull(retryAfter: nil)
    }

    func commit(_ lease: PolicyStoreLease, tokens: Int) async throws {}
    func release(_ lease: PolicyStoreLease) async throws {}
    func observeChanges(_ onChange: @escaping @Sendable (String?) -> Void) {}
}
