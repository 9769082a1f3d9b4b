// The floor for the contended shape: the bare async semaphore people use instead of a gate.
// A lock and a deque of continuations, nothing else: no windows, no timeouts, no cancellation.

import Synchronization

/// A counting semaphore whose waiters are admitted first in, first out.
public final class FIFOSemaphore: Sendable {
    private struct State {
        var available: Int
        /// A ring buffer: `count` continuations from `head`, wrapping; grown by doubling.
        var ring: [UnsafeContinuation<Void, Never>?] = Array(repeating: nil, count: 16)
        var head = 0
        var count = 0

        mutating func append(_ continuation: UnsafeContinuation<Void, Never>) {
            if count == ring.count {
                ring = (0..<count).map { ring[(head + $0) % ring.count] } + Array(repeating: nil, count: count)
                head = 0
            }
            ring[(head + count) & (ring.count - 1)] = continuation
            count += 1
        }

        mutating func removeFirst() -> UnsafeContinuation<Void, Never>? {
            guard count > 0 else { return nil }
            let first = ring[head]
            ring[head] = nil
            head = (head + 1) & (ring.count - 1)
            count -= 1
            return first
        }
    }

    private let state: Mutex<State>

    /// A semaphore with `slots` free slots.
    public init(slots: Int) {
        state = Mutex(State(available: slots))
    }

    /// Takes a slot, waiting behind earlier waiters if there is none.
    public func wait() async {
        // A free slot means nobody waits: a slot freed while waiters exist goes to the first.
        let taken = state.withLock { state in
            guard state.available > 0 else { return false }
            state.available -= 1
            return true
        }
        if taken { return }
        await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
            let now = state.withLock { state in
                guard state.available > 0 else {
                    state.append(continuation)
                    return false
                }
                state.available -= 1
                return true
            }
            if now { continuation.resume() }
        }
    }

    /// Gives a slot back: to the first waiter, if any.
    public func signal() {
        let next = state.withLock { state in
            guard let first = state.removeFirst() else {
                state.available += 1
                return nil as UnsafeContinuation<Void, Never>?
            }
            return first
        }
        next?.resume()
    }
}
