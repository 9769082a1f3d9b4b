import Testing

@testable import PolicyGate

/// The rules, driven synchronously: no tasks, no clock, `now` passed by hand.
@Suite("State machine")
struct GateStateMachineTests {
    typealias Machine = GateStateMachine<Int>
    let second: Int64 = 1_000_000_000

    func machine(_ limits: PolicyLimits, generation: UInt64 = 1) -> Machine {
        Machine(limits: CompiledLimits(limits, generation: generation), now: 0)
    }

    func admitted(_ effects: Machine.Effects) -> [Int] {
        (effects.resumes.items ?? []).compactMap { if case .success = $0.result { $0.payload } else { nil } }
    }

    @Test("waiters take slots in order, then window capacity; the timer is asked for when capacity frees")
    func slotsThenCapacity() throws {
        var m = machine(PolicyLimits(requestsPerMinute: 3, maxConcurrent: 2))
        guard case .success = m.tryAdmit(tokens: 0, now: 0).0, case .success = m.tryAdmit(tokens: 0, now: 0).0 else {
            Issue.record("first two should be admitted")
            return
        }
        for id in 1...3 {
            guard case .enqueued(let effects) = m.enqueue(id: UInt64(id), tokens: 0, deadline: .max, payload: id, now: 0) else {
                Issue.record("should queue")
                return
            }
            #expect(effects.resumes.items == nil && effects.wake == nil)  // only a release can help
        }
        #expect(m.slotted == 0 && m.queued == 3)
        let waiting = m.release()
        #expect(waiting)
        var effects = m.tick(now: second)
        #expect(admitted(effects) == [1])  // the third request of the minute
        let stillWaiting = m.release()
        #expect(stillWaiting)
        effects = m.tick(now: 2 * second)
        #expect(admitted(effects).isEmpty)
        #expect(m.slotted == 1)  // waiter 2 holds a slot, waiting for the window
        #expect(effects.wake == 61 * second)  // when the calls of t = 0 leave the minute
        effects = m.tick(now: 61 * second)
        #expect(admitted(effects) == [2])
    }

    @Test("a deadline that cannot be met is refused at enqueue; one that passes while waiting times out")
    func deadlines() {
        var m = machine(PolicyLimits(requestsPerMinute: 1))
        _ = m.tryAdmit(tokens: 0, now: 0)
        guard case .rejected(let error, _) = m.enqueue(id: 1, tokens: 0, deadline: 30 * second, payload: 1, now: 0) else {
            Issue.record("expected a fast failure")
            return
        }
        #expect(error.code == .rateLimited && error.retryAfter == .seconds(61))
        guard case .enqueued(let effects) = m.enqueue(id: 2, tokens: 0, deadline: 70 * second, payload: 2, now: 0) else {
            Issue.record("expected to queue")
            return
        }
        #expect(effects.wake == 61 * second)
        #expect(admitted(m.tick(now: 61 * second)) == [2])
        // With a slot held, a waiter's deadline is its only timer.
        var c = machine(PolicyLimits(maxConcurrent: 1))
        _ = c.tryAdmit(tokens: 0, now: 0)
        guard case .enqueued(let queued) = c.enqueue(id: 3, tokens: 0, deadline: 5 * second, payload: 3, now: 0) else {
            Issue.record("expected to queue")
            return
        }
        #expect(queued.wake == 5 * second)
        let expired = c.tick(now: 5 * second)
        guard case .failure(let timeout) = expired.resumes.items?.first?.result else {
            Issue.record("expected a timeout")
            return
        }
        #expect(timeout.code == .timedOut && timeout.limit == .concurrency)
        #expect(c.queued == 0)
    }

    @Test("limits only move forward by generation")
    func generations() {
        var m = machine(PolicyLimits(requestsPerMinute: 1), generation: 5)
        _ = m.setLimits(CompiledLimits(PolicyLimits(requestsPerMinute: 100), generation: 4), now: 0)
        #expect(m.limits.requestCaps[0] == 1)
        _ = m.setLimits(CompiledLimits(PolicyLimits(requestsPerMinute: 100), generation: 6), now: 0)
        #expect(m.limits.requestCaps[0] == 100)
    }

    @Test("a commit that would overflow is refused and changes nothing")
    func commitOverflow() throws {
        var m = machine(PolicyLimits(requestsPerMinute: 10))
        let half = TokenCounts(total: Int64.max / 2)
        guard case .success(let a) = m.tryAdmit(tokens: half, now: 0).0,
            case .success(let b) = m.tryAdmit(tokens: half, now: 0).0
        else {
            Issue.record("should admit")
            return
        }
        do {
            _ = try m.commit(a, from: half, to: TokenCounts(total: Int64.max))
            Issue.record("an overflowing commit was accepted")
        } catch {
            #expect(error.code == .invalidTokenCount)
        }
        #expect(m.usage(now: 0).first?.tokens == Int64.max / 2 * 2)
        _ = try m.commit(b, from: half, to: 0)
        #expect(m.usage(now: 0).first?.tokens == Int64.max / 2)
    }

    @Test("the window ring: usage leaves 60 to 61 buckets after it was recorded")
    func ring() {
        let w = SlidingWindow(length: 60 * second, now: 0, firstSequence: 1)
        w.record(tokens: 5)  // bucket 0
        w.advance(to: 30 * second)
        w.record(tokens: 7)  // bucket 30
        w.advance(to: 60 * second + 999_999_999)
        #expect(w.requestTotal == 2 && w.tokenTotal == 12)
        #expect(w.earliestFit(requests: 1, tokens: 10, requestCap: 2, tokenCap: 100, now: 60 * second) == 61 * second)
        #expect(w.earliestFit(requests: 1, tokens: 95, requestCap: 10, tokenCap: 100, now: 60 * second) == 91 * second)
        #expect(w.earliestFit(requests: 1, tokens: 101, requestCap: 10, tokenCap: 100, now: 60 * second) == nil)
        w.advance(to: 61 * second)
        #expect(w.requestTotal == 1 && w.tokenTotal == 7)
        w.advance(to: 10_000 * second)
        #expect(w.isEmpty)
    }
}

@Suite("Compiled limits")
struct CompiledLimitsLayoutTests {
    @Test("compiled limits stay within 120 bytes: copied on every acquire, larger copies cost far more")
    func size() {
        #expect(MemoryLayout<CompiledLimits>.size <= 120, "\(MemoryLayout<CompiledLimits>.size) bytes")
        #expect(MemoryLayout<CompiledLimits?>.size <= 120)
    }

    @Test("a concurrency cap beyond 32 bits is clamped just below the 'no cap' value, and reads back as a cap")
    func largeConcurrencyCap() {
        let huge = CompiledLimits(PolicyLimits(maxConcurrent: Int.max - 1), generation: 1)
        #expect(huge.maxConcurrent == Int(Int32.max) - 1)
        #expect(CompiledLimits(PolicyLimits(maxConcurrent: 3), generation: 1).maxConcurrent == 3)
        #expect(CompiledLimits(PolicyLimits(requestsPerMinute: 1), generation: 1).maxConcurrent == .max)
    }
}
