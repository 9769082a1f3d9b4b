import PolicyGate
import PolicyGateTestKit
import Synchronization
import Testing

/// A place to keep a permit that a task hands back ([PolicyPermit] and Task<PolicyPermit, _>
/// cannot exist; a Mutex of an optional permit can).
final class PermitBox: Sendable {
    private let slot = Locked<PolicyPermit?>(nil)
    private let failure = Locked<(any Error)?>(nil)
    private let resolved = Locked(false)

    func store(_ permit: consuming PolicyPermit) {
        var incoming: PolicyPermit? = consume permit
        slot.withLock { $0 = incoming.take() }
        resolved.withLock { $0 = true }
    }

    func fail(_ error: any Error) {
        failure.withLock { $0 = error }
        resolved.withLock { $0 = true }
    }

    var hasPermit: Bool { slot.withLock { $0 != nil } }
    var error: (any Error)? { failure.withLock { $0 } }
    /// Whether the acquire finished (with a permit, since released or not, or an error).
    var isDone: Bool { resolved.withLock { $0 } }

    /// Releases the stored permit (its deinit runs here).
    func release() { slot.withLock { $0 = nil } }

    func commit(_ tokens: Int) throws {
        try withPermit { try $0.commitTokens(tokens) }
    }

    func commit(input: Int, output: Int) throws {
        try withPermit { try $0.commitTokens(input: input, output: output) }
    }

    private func withPermit(_ body: (inout PolicyPermit) throws -> Void) throws {
        try slot.withLock { (permit: inout PolicyPermit?) throws in
            guard var p = permit.take() else { return }
            do {
                try body(&p)
            } catch {
                permit = consume p
                throw error
            }
            permit = consume p
        }
    }
}

/// Starts a task that waits in `acquire` and leaves its permit (or error) in the returned box.
func startWaiter(
    _ gate: PolicyService, _ key: PolicyKey, tokens: Int, maxWait: Duration? = nil
) -> (PermitBox, Task<Void, Never>) {
    let box = PermitBox()
    let task = Task {
        do {
            let permit = try await gate.acquire(key, estimatedTokens: tokens, maxWait: maxWait)
            box.store(permit)
        } catch {
            box.fail(error)
        }
    }
    return (box, task)
}

/// Yields until `condition` holds; fails the test if it never does. Nothing here depends on
/// timing: the tasks being waited for only need to be scheduled.
func eventually(
    _ what: String, sourceLocation: SourceLocation = #_sourceLocation, _ condition: () -> Bool
) async {
    for _ in 0..<200_000 {
        if condition() { return }
        await Task.yield()
    }
    Issue.record("never happened: \(what)", sourceLocation: sourceLocation)
}

/// A small seeded generator (SplitMix64), so failures replay exactly.
typealias SeededGenerator = SeededRandomNumberGenerator

extension Duration {
    var nanoseconds: Int64 {
        let (s, a) = components
        return s * 1_000_000_000 + a / 1_000_000_000
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

func getenvString(_ name: String) -> String? {
    guard let value = getenv(name) else { return nil }
    return String(cString: value)
}
