import Synchronization

#if POLICYGATE_PTHREAD_LOCK
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
#endif

/// A value guarded by a lock: the only lock type in the gate.
///
/// Normally a `Mutex<Void>` from the Synchronization module. ThreadSanitizer cannot see that
/// lock on Linux (its futex word is handled inside the uninstrumented standard library, so every
/// access it orders is reported as a race: two threads incrementing a counter under
/// `Mutex.withLock` are flagged). CI's ThreadSanitizer pass therefore builds with
/// `-DPOLICYGATE_PTHREAD_LOCK`, which swaps in a `pthread_mutex_t` that TSan understands; the
/// rest of the code is identical in both builds.
package final class Locked<Value: ~Copyable>: @unchecked Sendable {  // `value` is only touched under the lock
    #if POLICYGATE_PTHREAD_LOCK
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    #else
    private let mutex = Mutex(())
    #endif
    @exclusivity(unchecked) private var value: Value

    package init(_ value: consuming sending Value) {
        self.value = value
        #if POLICYGATE_PTHREAD_LOCK
        mutex = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        #endif
    }

    #if POLICYGATE_PTHREAD_LOCK
    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }
    #endif

    /// Runs `body` with exclusive access to the value.
    @inline(__always)
    package func withLock<Result: ~Copyable, E: Error>(
        _ body: (inout sending Value) throws(E) -> sending Result
    ) throws(E) -> sending Result {
        #if POLICYGATE_PTHREAD_LOCK
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
        #else
        return try mutex.withLock { _ throws(E) -> sending Result in try body(&value) }
        #endif
    }
}
