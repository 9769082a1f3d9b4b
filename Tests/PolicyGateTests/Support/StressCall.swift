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
}
