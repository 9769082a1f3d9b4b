import Foundation
import PolicyGateTestKit
import Synchronization
import Testing

@testable import PolicyGate

/// Keys in tiers on the real clock, under load from several tasks, while another task keeps
/// setting and removing their scopes' overrides and reloading the file (which clears what a key
/// remembers of its tier, ``CompiledLimits/isTierVerified``). Afterwards the record of every
/// admission and release is checked against the concurrency caps that may have been in force.
///
/// One key names its tier, one names the other tier, one gets its tier from the resolver; the
/// run lasts until 1 500 admissions and 40 changes (about 1–2 s; 30 s at most), or 60 s with
/// `POLICYGATE_SOAK=1`.
@Suite("Tiers that change on a real clock")
struct TierStressTests {
    static let toml = """
        [limits.p]
        requests_per_minute = 1_000_000

        [limits.p.tiers.free]
        max_concurrent = 2

        [limits.p.tiers.pro]
        max_concurrent = 4
        """

    @Test(
        "tasks acquiring in tiers while overrides come and go and the file reloads never exceed a cap in force",
        .timeLimit(.minutes(5)))
    func stress() async throws {
        let configuration = try PolicyConfiguration(toml: Self.toml)
        let telemetry = TelemetryRecorder()
        let gate = try PolicyService(configuration: configuration, clock: ContinuousClock(), telemetry: telemetry)
        await gate.setTierResolver { $0 == .user("c") ? "pro" : nil }
        let time = gate.core.environment.time
        let scopes: [PolicyScope] = [.user("a"), .user("b"), .user("c")]
        let tierCaps = [4, 2, 4]
        let keys = [
            PolicyKey(provider: "p", scope: scopes[0], tier: "pro"),
            PolicyKey(provider: "p", scope: scopes[1], tier: "free"),
            PolicyKey(provider: "p", scope: scopes[2]),
        ]
        let soakEnd = Environment.soak ? time.now() + 60_000_000_000 : 0
        // Long enough for a starved machine to reach the checks below; the run ends when they hold.
        let hardEnd = max(soakEnd, time.now() + 120_000_000_000)
        let stop = Locked(false)
        let held = Locked<[StressHold]>([])
        let changes = Locked<[[CapChange]]>(tierCaps.map { [CapChange(before: .min, after: .min, cap: $0)] })
        let reloads = Locked(0)

        await withTaskGroup(of: Void.self) { group in
            for worker in 0..<6 {
                group.addTask {
                    var rng = SeededGenerator(seed: UInt64(worker) + 11)
                    while !stop.withLock({ $0 }) {
                        let k = Int.random(in: 0..<keys.count, using: &rng)
                        // Most wait briefly; some queue until admitted or cancelled.
                        let patient = Int.random(in: 0..<4, using: &rng) == 0
                        let wait: Duration? = patient ? nil : .milliseconds(Int.random(in: 0...20, using: &rng))
                        let cancelAfter: Duration? = patient ? .milliseconds(Int.random(in: 20...200, using: &rng)) : nil
                        guard let call = await StressCall.acquire(keys[k], from: gate, maxWait: wait, cancelAfter: cancelAfter)
                        else { continue }
                        await call.hold(key: k, upToMicroseconds: 1_000, using: &rng, into: held, clock: time)
                    }
                }
            }
            group.addTask {
                while true {
                    try? await Task.sleep(for: .milliseconds(10))
                    let now = time.now()
                    let done = held.withLock { $0.count } >= 1_500 && changes.withLock { $0.joined().count } >= 40
                    if now >= hardEnd || (done && now >= soakEnd) { break }
                }
                stop.withLock { $0 = true }
            }
            group.addTask {
                var rng = SeededGenerator(seed: 77)
                while !stop.withLock({ $0 }) {
                    if Int.random(in: 0..<4, using: &rng) == 0 {
                        // Same caps, new generation: every key's remembered tier is cleared.
                        try? await gate.apply(configuration, keepingScopeOverrides: true)
                        reloads.withLock { $0 += 1 }
                    } else {
                        let k = Int.random(in: 0..<keys.count, using: &rng)
                        let cap = Int.random(in: 0...6, using: &rng)
                        let before = time.now()
                        // 0 removes the override: the tier's cap is in force again.
                        let limits = cap == 0 ? nil : PolicyLimits(maxConcurrent: cap)
                        try? await gate.setScopeOverride(limits, for: scopes[k], provider: "p")
                        let after = time.now()
                        changes.withLock { $0[k].append(CapChange(before: before, after: after, cap: cap == 0 ? tierCaps[k] : cap)) }
                    }
                    try? await Task.sleep(for: .milliseconds(Int.random(in: 2...20, using: &rng)))
                }
            }
        }

        let admissions = held.withLock { $0 }
        let changeLog = changes.withLock { $0 }
        // Counted so that it can only err towards passing: a call counts as in flight at
        // another's admission only if the gate admitted it earlier and it was released after
        // that admission surely happened.
        var violations: [String] = []
        for k in 0..<keys.count {
            let mine = admissions.filter { $0.key == k }.sorted { $0.sequence < $1.sequence }
            for (i, call) in mine.enumerated() {
                let inFlight = mine[..<i].reduce(0) { $0 + ($1.releasedBefore >= call.returned ? 1 : 0) }
                let cap = changeLog[k].highestCap(from: call.time, to: call.returned)
                if inFlight >= cap {
                    violations.append("key \(k): admitted with \(inFlight) in flight under a cap of \(cap)")
                }
            }
        }
        #expect(violations.isEmpty, "\(violations.count) violations, first: \(violations.prefix(5))")

        // The run did what it was meant to: every key admitted and was refused on its cap.
        let counts = (0..<keys.count).map { k in admissions.filter { $0.key == k }.count }
        let refused = Set(telemetry.rejects.filter { $0.error.limit == .concurrency }.map(\.key))
        #expect(counts.allSatisfy { $0 > 50 }, "admissions per key: \(counts)")
        #expect(refused == Set(keys), "refused on concurrency: \(refused)")
        #expect(reloads.withLock { $0 } > 3)
        print(
            "tier stress: \(admissions.count) admissions \(counts), \(changeLog.joined().count - keys.count) override changes, \(reloads.withLock { $0 }) reloads"
        )
    }
}
