import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A value read without a lock and replaced under one: the provider table, read on every call
/// and changed only on reloads, schedule transitions and adaptive steps.
///
/// Writers keep the master copy under a ``Locked`` lock (``withLock(_:)``) and, on the way out,
/// publish a copy of it into one of two slots, alternating. Readers (``read(_:)``) take no lock:
/// they announce themselves on a reader counter of the slot they are about to read (one of
/// 16 stripes, so that readers on different threads do not share a cache line), re-check that
/// the slot is still the published one, and read it. A writer overwrites the unpublished slot
/// only once every counter of that slot is zero, so a reader never sees a slot being written.
///
/// All the ordering comes from sequentially consistent `Atomic` operations, which
/// ThreadSanitizer sees (they are inlined into this module), so it needs no special build.
/// A read must be short and must not take the writer's lock (the writer waits for it).
package final class Snapshotted<Value: Sendable>: @unchecked Sendable {  // slots: see the type's comment
    private static var stripes: Int { 16 }
    /// Counters per stripe, padded so each stripe's pair has a 64-byte line of its own.
    private static var stride: Int { 8 }

    private let master: Locked<Value>
    /// The two published copies; `current` names the one readers take.
    private let slots: UnsafeMutablePointer<Value>
    private let current = Atomic<Int>(0)
    /// `readers[stripe * stride + slot]`: readers of `slot` that announced themselves on `stripe`.
    private let readers: UnsafeMutablePointer<Atomic<Int>>

    package init(_ value: Value) {
        master = Locked(value)
        slots = .allocate(capacity: 2)
        slots.initialize(to: value)
        (slots + 1).initialize(to: value)
        readers = .allocate(capacity: Self.stripes * Self.stride)
        for index in 0..<(Self.stripes * Self.stride) { (readers + index).initialize(to: Atomic(0)) }
    }

    deinit {
        slots.deinitialize(count: 2)
        slots.deallocate()
        readers.deinitialize(count: Self.stripes * Self.stride)
        readers.deallocate()
    }

    /// Runs `body` with exclusive access to the master copy, then publishes the copy (also when
    /// `body` throws: its changes stand, as with ``Locked``). Readers see either the value
    /// before or the value after, never a mix.
    package func withLock<Result, E: Error>(
        _ body: (inout sending Value) throws(E) -> sending Result
    ) throws(E) -> sending Result {
        try master.withLock { (value: inout sending Value) throws(E) -> sending Result in
            defer { publish(value) }
            return try body(&value)
        }
    }

    /// Reads the master copy under the writers' lock: for reads that must not miss a change
    /// made (or being made) by a writer that already holds, or held, the lock.
    package func readLocked<Result: Sendable>(_ body: (borrowing Value) -> Result) -> Result {
        master.withLock { (value: inout sending Value) -> Result in body(value) }
    }

    /// Reads the last published copy without a lock.
    @inline(__always)
    package func read<Result>(_ body: (borrowing Value) -> Result) -> Result {
        let stripe = Self.stripe() &* Self.stride
        while true {
            let slot = current.load(ordering: .sequentiallyConsistent)
            let counter = stripe &+ slot
            readers[counter].wrappingAdd(1, ordering: .sequentiallyConsistent)
            if current.load(ordering: .sequentiallyConsistent) == slot {
                defer { readers[counter].wrappingSubtract(1, ordering: .sequentiallyConsistent) }
                return body(slots[slot])
            }
            // A writer published meanwhile (and may be about to overwrite `slot`): step back.
            readers[counter].wrappingSubtract(1, ordering: .sequentiallyConsistent)
        }
    }

    /// Copies `value` into the unpublished slot once its readers are gone, then publishes it.
    /// Called under the master lock, so writers never overlap.
    private func publish(_ value: Value) {
        let next = 1 &- current.load(ordering: .sequentiallyConsistent)
        var spins = 0
        while !drained(next) {
            // Readers hold a slot for a lookup; one may have been preempted holding it.
            spins &+= 1
            if spins > 64 { sched_yield() }
        }
        slots[next] = value
        current.store(next, ordering: .sequentiallyConsistent)
    }

    private func drained(_ slot: Int) -> Bool {
        for stripe in 0..<Self.stripes where readers[stripe &* Self.stride &+ slot].load(ordering: .sequentiallyConsistent) != 0 {
            return false
        }
        return true
    }

    /// The calling thread's stripe: its thread identity, hashed.
    @inline(__always)
    private static func stripe() -> Int {
        #if canImport(Darwin)
        let identity = UInt(bitPattern: pthread_self())
        #elseif canImport(Glibc) || canImport(Musl)
        let identity = UInt(pthread_self())
        #else
        let identity: UInt = 0
        #endif
        // Fibonacci hashing: thread identities are aligned addresses; their high bits vary.
        return Int(truncatingIfNeeded: (identity &* 0x9E37_79B9_7F4A_7C15) >> 60)
    }
}
