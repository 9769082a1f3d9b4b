import PolicyGate

// The contended shapes, shared by the floors (which time them) and the ordo-one target.

/// `tasks` tasks, task `t` on `keys[t % keys.count]`, each looping acquire, commit, release.
@concurrent
public func contendedCalls(_ gate: PolicyService, _ keys: [PolicyKey], tasks: Int, callsPerTask: Int) async throws {
    try await withThrowingTaskGroup(of: Void.self) { group in
        for task in 0..<tasks {
            let key = keys[task % keys.count]
            group.addTask {
                for _ in 0..<callsPerTask {
                    var permit = try await gate.acquire(key, estimatedTokens: 100)
                    try permit.commitTokens(90)
                    permit.release()
                }
            }
        }
        try await group.waitForAll()
    }
}

/// The contended shape through the gate: each task loops acquire, one `Task.yield()`
/// while holding, release.
@concurrent
public func contendedYieldCalls(_ gate: PolicyService, _ keys: [PolicyKey], tasks: Int, callsPerTask: Int) async throws {
    try await withThrowingTaskGroup(of: Void.self) { group in
        for task in 0..<tasks {
            let key = keys[task % keys.count]
            group.addTask {
                for _ in 0..<callsPerTask {
                    let permit = try await gate.acquire(key, estimatedTokens: 100)
                    await Task.yield()
                    permit.release()
                }
            }
        }
        try await group.waitForAll()
    }
}

/// The same shape on bare FIFO semaphores, one per key: the floor.
@concurrent
public func semaphoreCalls(_ semaphores: [FIFOSemaphore], tasks: Int, callsPerTask: Int) async {
    await withTaskGroup(of: Void.self) { group in
        for task in 0..<tasks {
            let semaphore = semaphores[task % semaphores.count]
            group.addTask {
                for _ in 0..<callsPerTask {
                    await semaphore.wait()
                    await Task.yield()
                    semaphore.signal()
                }
            }
        }
        await group.waitForAll()
    }
}
