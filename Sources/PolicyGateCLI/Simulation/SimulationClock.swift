import PolicyGate
import Synchronization

/// The simulator's virtual clock: the event loop sets it, the gate reads it on every call.
///
/// Unlike `ManualClock`, sleeping on it never ends by itself, only by cancellation. The gate's
/// one sleeper in a simulation is its schedule timer; were it woken, it would apply transitions
/// on another thread at whatever instant the loop had reached by then. Without it the gate
/// applies a due transition on the next call that reaches it, on the loop's thread and at the
/// loop's instant, so a simulation is deterministic. (The simulator retries its waiting calls at
/// every transition, so nothing is applied late.) Reading it is one relaxed atomic load.
final class SimulationClock: Clock, Sendable {
    /// A point on the virtual timeline, in nanoseconds from its start.
    struct Instant: InstantProtocol, Sendable {
        var nanoseconds: Int64

        func advanced(by duration: Duration) -> Instant {
            Instant(nanoseconds: nanoseconds.clampedAdding(duration.nanosecondsSaturating))
        }

        func duration(to other: Instant) -> Duration { .nanoseconds(other.nanoseconds &- nanoseconds) }

        static func < (lhs: Instant, rhs: Instant) -> Bool { lhs.nanoseconds < rhs.nanoseconds }
    }

    private let nanoseconds = Atomic<Int64>(0)
    /// The suspended sleepers (the gate's lock type, so that ThreadSanitizer builds see it).
    private let sleepers = Locked<(next: UInt64, waiting: [UInt64: UnsafeContinuation<Void, any Error>])>((0, [:]))

    var now: Instant { Instant(nanoseconds: nanoseconds.load(ordering: .relaxed)) }

    var minimumResolution: Duration { .nanoseconds(1) }

    /// Moves the clock to `nanoseconds`; only the event loop calls this, always forwards.
    @inline(__always)
    func set(_ value: Int64) {
        nanoseconds.store(value, ordering: .relaxed)
    }

    /// Suspends until the task is cancelled (see the type's discussion).
    func sleep(until deadline: Instant, tolerance: Duration? = nil) async throws {
        let id = sleepers.withLock { state in
            state.next += 1
            return state.next
        }
        try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<Void, any Error>) in
                // Checked under the lock: a cancellation handler that already ran found nothing
                // to resume, and one that runs later will find this continuation.
                let cancelled = sleepers.withLock { state in
                    if Task.isCancelled { return true }
                    state.waiting[id] = continuation
                    return false
                }
                if cancelled { continuation.resume(throwing: CancellationError()) }
            }
        } onCancel: {
            sleepers.withLock { $0.waiting.removeValue(forKey: id) }?.resume(throwing: CancellationError())
        }
    }
}
