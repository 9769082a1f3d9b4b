import Foundation
import PolicyGateTestKit
import Testing

@testable import PolicyGate

/// A key of a provider with tiers finds its tier's caps in its own storage once they are
/// known to be its tier's (``CompiledLimits/isTierVerified``): what marks them, what clears
/// the mark, and that a call on the marked limits is checked against the tier's caps.
@Suite("Tier lookup once per key", .timeLimit(.minutes(5)))
struct TierLookupTests {
    let clock = ManualClock()

    static let toml = """
        [limits.openai]
        requests_per_minute = 3

        [limits.openai.tiers.free]
        requests_per_minute = 2

        [limits.openai.tiers.pro]
        requests_per_minute = 5
        tokens_per_day      = 1_000
        """

    /// Whether `key`'s storage holds limits marked as its tier's; `nil` without a storage.
    func isVerified(_ gate: PolicyService, _ key: PolicyKey) -> Bool? {
        gate.core.shard(for: key).table.withLock { $0.lookup(key)?.machine.limits.isTierVerified }
    }

    @Test("a key's first call marks its limits; a change of limits clears the mark until its next call")
    func marksAndClears() async throws {
        let configuration = try PolicyConfiguration(toml: Self.toml)
        let gate = try PolicyService(configuration: configuration, clock: clock)
        let key = PolicyKey(provider: "openai", scope: .user("u"), tier: "pro")
        #expect(isVerified(gate, key) == nil)
        var permit = try gate.tryAcquire(key, estimatedTokens: 10)
        try permit.commitTokens(10)
        #expect(isVerified(gate, key) == true)
        var reloaded = configuration
        reloaded.limits["openai"]?.requestsPerHour = 1_000
        try await gate.apply(reloaded)
        #expect(isVerified(gate, key) == false)
        // Still the tier's caps, handed over by the reload, and marked again by the next call.
        #expect(gate.currentState(for: key).limits.requestsPerMinute == 5)
        _ = try gate.tryAcquire(key, estimatedTokens: 10)
        #expect(isVerified(gate, key) == true)
        try await gate.setScopeOverride(PolicyLimits(requestsPerMinute: 1), for: .user("u"), provider: "openai")
        #expect(isVerified(gate, key) == false)
        // The override's cap of 1 is used up: the next call is refused on the override's caps.
        #expect(throws: PolicyError.self) { _ = try gate.tryAcquire(key, estimatedTokens: 10) }
        #expect(isVerified(gate, key) == true)
    }

    @Test("a call naming another tier than the key's first call is looked up every time and never marks")
    func otherTierNeverMarks() throws {
        let gate = try PolicyService(configuration: PolicyConfiguration(toml: Self.toml), clock: clock)
        let free = PolicyKey(provider: "openai", scope: .user("u"), tier: "free")
        _ = try gate.tryAcquire(free, estimatedTokens: 1)
        #expect(isVerified(gate, free) == true)
        // Same counters, pro's caps: 4 more in the minute, each looked up.
        for _ in 0..<4 {
            _ = try gate.tryAcquire(free.inTier("pro"), estimatedTokens: 1)
            #expect(isVerified(gate, free) == false)
        }
        #expect(throws: PolicyError.self) { _ = try gate.tryAcquire(free.inTier("pro"), estimatedTokens: 1) }
        // Back to free: looked up, marked, and refused on free's cap of 2 (5 used).
        #expect(throws: PolicyError.self) { _ = try gate.tryAcquire(free, estimatedTokens: 1) }
        #expect(isVerified(gate, free) == true)
        #expect(gate.currentState(for: free).limits.requestsPerMinute == 2)
    }

    @Test("limits replaced between a call's admission and its mark are not marked")
    func lateMarkIsRefused() throws {
        let gate = try PolicyService(configuration: PolicyConfiguration(toml: Self.toml), clock: clock)
        let pro = PolicyKey(provider: "openai", scope: .user("u"), tier: "pro")
        _ = try gate.tryAcquire(pro, estimatedTokens: 1)
        let storage = try #require(gate.core.shard(for: pro).table.withLock { $0.lookup(pro) })
        let proLimits = storage.machine.limits
        // A call naming free moves the key to free's set of the same generation, as a call
        // running between another pro call's admission and its mark would.
        _ = try gate.tryAcquire(pro.inTier("free"), estimatedTokens: 1)
        gate.core.verifyTier(of: storage, for: pro, limits: proLimits)
        #expect(isVerified(gate, pro) == false)
        // So the next pro call looks its tier up and counts under pro's cap of 5 (2 used).
        for _ in 0..<3 { _ = try gate.tryAcquire(pro, estimatedTokens: 1) }
        #expect(throws: PolicyError.self) { _ = try gate.tryAcquire(pro, estimatedTokens: 1) }
        #expect(gate.currentState(for: pro).limits.requestsPerMinute == 5)
    }

    @Test("an estimate is checked against the key's tier's caps on marked limits too, and refused as reported")
    func checksTheTiersCaps() throws {
        let rejected = RejectCounter()
        let gate = try PolicyService(configuration: PolicyConfiguration(toml: Self.toml), clock: clock, telemetry: rejected)
        let pro = PolicyKey(provider: "openai", scope: .user("u"), tier: "pro")
        let plain = PolicyKey(provider: "openai", scope: .user("v"))
        // The provider has no token caps: an estimate of 0 passes its own check.
        _ = try gate.tryAcquire(plain, estimatedTokens: 0)
        // Pro has a daily token cap: 0 would bypass it, and 2 000 can never fit it.
        for _ in 0..<2 {
            let zero = try #require(throws: PolicyError.self) { _ = try gate.tryAcquire(pro, estimatedTokens: 0) }
            #expect(zero.code == .invalidTokenCount)
            _ = try gate.tryAcquire(pro, estimatedTokens: 10)
            #expect(isVerified(gate, pro) == true)
            let oversized = try #require(throws: PolicyError.self) { _ = try gate.tryAcquire(pro, estimatedTokens: 2_000) }
            #expect(oversized.code == .oversized)
        }
        #expect(rejected.count == 4)
        #expect(gate.currentState(for: pro).windows.first?.requests.used == 2)
    }
}

/// Counts refusals reported to telemetry.
final class RejectCounter: PolicyTelemetry, Sendable {
    private let counted = Locked(0)
    var count: Int { counted.withLock { $0 } }
    func didReject(_ event: PolicyRejectEvent) { counted.withLock { $0 += 1 } }
}
