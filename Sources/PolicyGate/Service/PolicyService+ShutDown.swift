import Synchronization

extension PolicyService {
    /// How long ``shutDown(gracePeriod:)`` lets permits in flight finish by default.
    public static let defaultShutdownGracePeriod: Duration = .seconds(30)

    /// Shuts the gate down gracefully: it stops admitting, lets the permits in flight finish
    /// within `gracePeriod`, then writes what the shared store still has to be told and stops
    /// its timers.
    ///
    /// In order:
    /// 1. From the call on, every ``acquire(_:estimatedTokens:model:maxWait:priority:)`` and
    ///    ``tryAcquire(_:estimatedTokens:model:priority:)`` fails with ``PolicyError/Code/shutDown``, and so does
    ///    every caller already waiting (in this process's queues or for the shared store).
    /// 2. Permits already held keep working: they commit and release as usual. The call waits
    ///    until none is held or `gracePeriod` has passed on the gate's clock, whichever is first.
    /// 3. Shared permits still held then are given back to the store (their slots free for
    ///    other processes now, not when their leases expire; their later commits are not
    ///    written), and every commit and release is written (``flushStoreWrites()``).
    /// 4. The schedule and hold-warning timers stop.
    ///
    /// Calling it again, or from several tasks, is harmless: every call returns once the first
    /// has finished. Cancelling the calling task skips what is left of the grace period.
    /// `PolicyGateService` in the `PolicyGateServiceLifecycle` module (trait `ServiceLifecycle`)
    /// calls this when its service group shuts down.
    /// - Parameter gracePeriod: The longest to wait for permits in flight (negative: zero).
    public nonisolated func shutDown(gracePeriod: Duration = PolicyService.defaultShutdownGracePeriod) async {
        await core.shutDown(gracePeriod: gracePeriod)
    }

    /// Whether ``shutDown(gracePeriod:)`` was called: the gate admits nothing more.
    public nonisolated var isShutDown: Bool { core.environment.lifecycle.isStopping }
}

extension GateCore {
    /// See ``PolicyService/shutDown(gracePeriod:)``.
    func shutDown(gracePeriod: Duration) async {
        let lifecycle = environment.lifecycle
        guard lifecycle.begin() else {
            await lifecycle.waitUntilStopped()
            return
        }
        // The flag is set: from here no caller enqueues (checked under each shard's lock).
        forEachStorage(of: nil) { storage, aftermath in
            storage.settle(storage.machine.failAll(GateLifecycle.refusal(nil)), into: &aftermath)
        }
        for gate in chains.withLock({ Array($0.values) }) {
            gate.withMachine { machine in ((), machine.failAll(GateLifecycle.refusal(nil))) }
        }
        shared?.announce(nil)  // callers waiting for news of the store look again, and leave
        let deadline = environment.time.now().clampedAdding(max(0, gracePeriod.nanosecondsSaturating))
        await drain(until: deadline)
        shared?.giveBackAll()
        await shared?.flush()
        stopTimers()
        lifecycle.finish()
    }

    /// Permits held now: in this process's keys and in the shared store.
    var permitsHeld: Int {
        var held = shared?.heldCount ?? 0
        for shard in shards {
            held += shard.table.withLock { table in table.storages.reduce(0) { $0 + $1.machine.inFlight } }
        }
        // A nested provider's permits are all counted at its account.
        for gate in chains.withLock({ Array($0.values) }) { held += gate.lock.withLock { _ in gate.machine.buckets[0].inFlight } }
        return held
    }

    /// Waits until no permit is held, `deadline` passes, or the task is cancelled.
    private func drain(until deadline: Int64) async {
        let lifecycle = environment.lifecycle
        while !Task.isCancelled {
            let mark = lifecycle.releases
            guard permitsHeld > 0, environment.time.now() < deadline else { return }
            await lifecycle.waitForRelease(after: mark, until: deadline, time: environment.time)
        }
    }
}

/// A gate's shutdown: the flag every admission checks, and the waits of
/// ``PolicyService/shutDown(gracePeriod:)`` (for releases, and for a shutdown under way).
final class GateLifecycle: Sendable {
    private enum Phase { case running, stopping, stopped }

    private struct State {
        var phase = Phase.running
        /// Releases seen while stopping; a drain compares it with what it saw before counting.
        var releases: UInt64 = 0
        var drainWaiters: [UnsafeContinuation<Void, Never>] = []
        var stopWaiters: [UnsafeContinuation<Void, Never>] = []
    }

    /// Read by every admission and release: a relaxed load, so that a running gate pays one
    /// load and a branch for it. The shard locks order it with the waiters (see
    /// ``GateCore/wait(_:tokens:limits:deadline:)``).
    private let stopping = Atomic<Bool>(false)
    private let state = Locked(State())

    var isStopping: Bool {
        @inline(__always) get { stopping.load(ordering: .relaxed) }
    }

    /// The error every refused caller gets.
    static func refusal(_ key: PolicyKey?) -> PolicyError {
        PolicyError(.shutDown, key: key, message: "the gate is shut down and admits no more calls")
    }

    /// Starts stopping; `false` if a shutdown began before.
    func begin() -> Bool {
        let first = state.withLock { state in
            guard state.phase == .running else { return false }
            state.phase = .stopping
            return true
        }
        if first { stopping.store(true, ordering: .sequentiallyConsistent) }
        return first
    }

    /// Marks the shutdown done and resumes whoever waited for it.
    func finish() {
        let waiters = state.withLock { state in
            state.phase = .stopped
            defer { state.stopWaiters = [] }
            return state.stopWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Returns once the shutdown under way has finished.
    func waitUntilStopped() async {
        await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
            let done = state.withLock { state in
                if state.phase == .stopped { return true }
                state.stopWaiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }

    var releases: UInt64 { state.withLock { $0.releases } }

    /// A permit was released while stopping: wakes the drain.
    func permitReleased() {
        let waiters = state.withLock { state in
            state.releases &+= 1
            defer { state.drainWaiters = [] }
            return state.drainWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Suspends until a release after `mark`, `deadline` on `time`, or cancellation.
    func waitForRelease(after mark: UInt64, until deadline: Int64, time: any TimeSource) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { [self] in
                await withTaskCancellationHandler {
                    await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
                        let parked = state.withLock { state in
                            guard state.releases == mark, !Task.isCancelled else { return false }
                            state.drainWaiters.append(continuation)
                            return true
                        }
                        if !parked { continuation.resume() }
                    }
                } onCancel: { [self] in
                    // Only the drain parks here; a spurious wake makes it count again.
                    let waiters = state.withLock { state in
                        defer { state.drainWaiters = [] }
                        return state.drainWaiters
                    }
                    for waiter in waiters { waiter.resume() }
                }
            }
            group.addTask { try? await time.sleep(until: deadline) }
            await group.next()
            group.cancelAll()
        }
    }
}
