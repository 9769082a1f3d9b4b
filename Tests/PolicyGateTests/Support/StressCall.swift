import PolicyGateTestKit

@testable import PolicyGate

/// One call of a stress test on the real clock: the admission as the gate recorded it, and the
/// permit, still held.
struct StressCall {
    /// The admission's instant: the latest clock reading the gate had seen, so the admission
    /// really happened between this and `returned`.
    let time: Int64
    /// The admission's place in its key's order.
    let sequence: UInt64
    /// The clock read once `acquire` returned.
    let returned: Int64
    /// The permit; `release()` gives its slot back.
    let box: PermitBox

    /// Acquires `key` waiting at most `maxWait` (`nil`: until admitted), cancelling the call
    /// after `cancelAfter` if it is set; `nil` when the call was refused or cancelled.
    static func acquire(
        _ key: PolicyKey, from gate: PolicyService, maxWait: Duration?, cancelAfter: Duration?
    ) async -> StressCall? {
        let time = gate.core.environment.time
        let box = PermitBox()
        let admitted = Locked<(Int64, UInt64, Int64)?>(nil)
        let task = Task {
            do {
                let permit = try await gate.acquire(key, maxWait: maxWait)
                let returned = time.now()
                admitted.withLock { $0 = (permit.admission.time, permit.admission.sequence, returned) }
                box.store(permit)
            } catch {
                box.fail(error)
            }
        }
        let canceller = cancelAfter.map { delay in
            Task {
                try await Task.sleep(for: delay)
                task.cancel()
            }
        }
        await task.value
        canceller?.cancel()
        guard let (at, sequence, returned) = admitted.withLock({ $0 }) else { return nil }
        return StressCall(time: at, sequence: sequence, returned: returned, box: box)
    }

    /// Holds the permit for up to `longest` microseconds (or a yield, at random), records the
    /// hold in `log` under `key`, then releases it.
    func hold<R: RandomNumberGenerator>(
        key: Int, upToMicroseconds longest: Int, using rng: inout R, into log: Locked<[StressHold]>, clock: any TimeSource
    ) async {
        if Bool.random(using: &rng) {
            try? await Task.sleep(for: .microseconds(Int.random(in: 0...longest, using: &rng)))
        } else {
            await Task.yield()
        }
        let before = clock.now()
        log.withLock {
            $0.append(StressHold(key: key, time: time, sequence: sequence, returned: returned, releasedBefore: before))
        }
        box.release()
    }
}

/// A permit held in a stress test, as ``StressCall/hold(key:upToMicroseconds:using:into:clock:)`` recorded it.
struct StressHold {
    /// Which of the test's keys.
    let key: Int
    /// The admission's instant as the gate recorded it.
    let time: Int64
    /// The admission's place in its key's order.
    let sequence: UInt64
    /// Read once `acquire` returned.
    let returned: Int64
    /// Read just before the permit was released: never after the slot was given back.
    let releasedBefore: Int64
}

/// A change of a cap in a stress test: in force from some instant in `[before, after]` (read
/// before the call that changed it and once it returned).
struct CapChange {
    let before: Int64
    let after: Int64
    let cap: Int
}

extension [CapChange] {
    /// The highest cap that may have been in force at some instant of `[from, to]`, the changes
    /// in the order they were made.
    func highestCap(from: Int64, to: Int64) -> Int {
        var cap = 0
        for (i, change) in enumerated() where change.before <= to {
            let next = i + 1 < count ? self[i + 1] : nil
            if next.map({ $0.after > from }) ?? true { cap = Swift.max(cap, change.cap) }
        }
        return cap
    }
}
