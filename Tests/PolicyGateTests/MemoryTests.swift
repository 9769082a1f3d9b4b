import PolicyGate
import PolicyGateTestKit
import Testing

@Suite("Bounded memory", .timeLimit(.minutes(5)))
struct MemoryTests {
    @Test("keys with nothing left in any window, in flight or waiting are dropped")
    func idleKeysAreDropped() async throws {
        let clock = ManualClock()
        let gate = try PolicyService(limits: ["p": PolicyLimits(requestsPerMinute: 10, tokensPerDay: 1_000_000)], clock: clock)
        let count = 20_000
        for i in 0..<count {
            var permit = try gate.tryAcquire(PolicyKey(provider: "p", scope: .user("u\(i)")), estimatedTokens: 10)
            try permit.commitTokens(5)
        }
        #expect(gate.storedKeyCount == count)
        // A key still holding a permit and one still counted today are kept.
        let busy = PolicyKey(provider: "p", scope: .user("busy"))
        let held = try gate.tryAcquire(busy, estimatedTokens: 1)
        clock.advance(by: .seconds(86_400 + 1_440))  // a day and one bucket: every earlier call has left
        let recent = PolicyKey(provider: "p", scope: .user("recent"))
        _ = try gate.tryAcquire(recent, estimatedTokens: 1)
        // Traffic on new keys sweeps old idle ones as it goes (two per new key).
        for i in 0..<count / 2 {
            _ = try gate.tryAcquire(PolicyKey(provider: "p", scope: .org("o\(i)")), estimatedTokens: 1)
        }
        #expect(gate.storedKeyCount < count, "stored: \(gate.storedKeyCount)")
        #expect(gate.purgeIdleKeys() == count / 2 + 2)
        #expect(Set(gate.activeKeys()).isSuperset(of: [busy, recent]))
        _ = consume held
        clock.advance(by: .seconds(86_400 + 1_440))
        #expect(gate.purgeIdleKeys() == 0)
        #expect(gate.storedKeyCount == 0)
        // A dropped key comes back with fresh counters.
        _ = try gate.tryAcquire(busy, estimatedTokens: 1)
        #expect(gate.currentState(for: busy)[.day]?.tokens.used == 1)
    }
}
