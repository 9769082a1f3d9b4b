import Foundation
import PolicyGateTestKit
import Synchronization
import Testing

@testable import PolicyGate

/// The gate on the real clock, under load from several tasks, while another task keeps moving
/// the concurrency cap and a schedule transition raises the request cap mid-run. Afterwards the
/// record of every admission (its instant on the gate's clock) and release is checked against
/// the caps in force at each admission.
///
/// It runs until both keys have used up the peak's request cap, at least half a second past the
/// transition (about 1.5 s alone, longer when the machine is busy; 30 s at most); with
/// `POLICYGATE_SOAK=1` for 60 s.
@Suite("Limits that change on a real clock")
struct LimitChangeStressTests {
    static let offPeakRequests = 100
    static let peakRequests = 400

    @Test(
        "tasks acquiring while max_concurrent flips and a schedule transitions never exceed a cap in force",
        .timeLimit(.minutes(5)))
    func stress() async throws {
        let schedule = PolicySchedule(
            timeZone: try PolicySchedule.timeZone(named: "UTC"),
            entries: [
                PolicyScheduleEntry(
                    name: "peak", cron: try CronExpression("* 9-17 * * *"),
                    limits: PolicyLimits(requestsPerMinute: Self.peakRequests))
            ])
        // The transition to the peak falls a second into the run.
        let start = try Date("2026-03-02T08:59:59Z", strategy: .iso8601)
        let telemetry = TelemetryRecorder()
        let gate = try PolicyService(
            configuration: PolicyConfiguration(
                limits: ["p": PolicyLimits(requestsPerMinute: Self.offPeakRequests, maxConcurrent: 4)],
                schedules: ["p": schedule]),
            clock: ContinuousClock(), startDate: start, telemetry: telemetry)
        let time = gate.core.environment.time
        let peakAt = gate.core.wallClock.nanos(at: try Date("2026-03-02T09:00:00Z", strategy: .iso8601))
        let keys = [PolicyKey(provider: "p", scope: .user("a")), PolicyKey(provider: "p", scope: .user("b"))]
        let soakEnd = Environment.soak ? time.now() + 60_000_000_000 : 0
        // Long enough for a starved machine to reach the checks below; the run ends when they hold.
        let hardEnd = max(soakEnd, peakAt + 120_000_000_000)
        let stop = Locked(false)
        let held = Locked<[StressHold]>([])
        let changes = Locked<[CapChange]>([CapChange(before: .min, after: .min, cap: 4)])

        await withTaskGroup(of: Void.self) { group in
            for worker in 0..<6 {
                group.addTask {
                    var rng = SeededGenerator(seed: UInt64(worker) + 1)
                    while !stop.withLock({ $0 }) {
                        let k = Int.random(in: 0..<2, using: &rng)
                        // Most callers wait briefly (and are refused at once when a window is
                        // full); patient ones queue behind the windows, holding slots while
                        // the cap moves, until admitted or cancelled. Some give up early: a
                        // cancelled waiter must take nothing.
                        let patient = Int.random(in: 0..<4, using: &rng) == 0
                        let wait: Duration? = patient ? nil : .milliseconds(Int.random(in: 0...40, using: &rng))
                        let cancelAfter: Duration? =
                            patient
                            ? .milliseconds(Int.random(in: 50...400, using: &rng))
                            : Int.random(in: 0..<4, using: &rng) == 0
                                ? .microseconds(Int.random(in: 50...2_000, using: &rng)) : nil
                        guard let call = await StressCall.acquire(keys[k], from: gate, maxWait: wait, cancelAfter: cancelAfter)
                        else { continue }
                        await call.hold(key: k, upToMicroseconds: 1_500, using: &rng, into: held, clock: time)
                    }
                }
            }
            group.addTask {
                // Stops the others once both keys used up the peak's cap, past the transition.
                while true {
                    try? await Task.sleep(for: .milliseconds(10))
                    let now = time.now()
                    let done = held.withLock { $0.count } >= 2 * Self.peakRequests && now > peakAt + 500_000_000
                    if now >= hardEnd || (done && now >= soakEnd) { break }
                }
                stop.withLock { $0 = true }
            }
            group.addTask {
                var rng = SeededGenerator(seed: 99)
                while !stop.withLock({ $0 }) {
                    let cap = Int.random(in: 1...6, using: &rng)
                    let before = time.now()
                    try? await gate.setLimits(PolicyLimits(requestsPerMinute: Self.offPeakRequests, maxConcurrent: cap), for: "p")
                    let after = time.now()
                    changes.withLock { $0.append(CapChange(before: before, after: after, cap: cap)) }
                    try? await Task.sleep(for: .milliseconds(Int.random(in: 5...40, using: &rng)))
                }
            }
        }

        let admissions = held.withLock { $0 }
        let changeLog = changes.withLock { $0 }
        // Safety, counted so that it can only err towards passing: a call counts as in flight
        // at another's admission only if it was admitted earlier (the gate's own order) and
        // released after that admission had surely happened (`releasedBefore >= returned`).
        var violations: [String] = []
        for k in 0..<2 {
            let mine = admissions.filter { $0.key == k }.sorted { $0.sequence < $1.sequence }
            for (i, call) in mine.enumerated() {
                let inFlight = mine[..<i].reduce(0) { $0 + ($1.releasedBefore >= call.returned ? 1 : 0) }
                let cap = changeLog.highestCap(from: call.time, to: call.returned)
                if inFlight >= cap {
                    violations.append("key \(k): admitted at \(call.time) with \(inFlight) in flight under a cap of \(cap)")
                }
                // Each admission is checked against the minute before it. Peak limits reach a key
                // only at a clock reading past the transition, which then is its admissions' instant.
                let requestCap = call.time < peakAt ? Self.offPeakRequests : Self.peakRequests
                let inWindow = mine[..<i].reduce(0) { $0 + ($1.time > call.time - 60_000_000_000 ? 1 : 0) }
                if inWindow + 1 > requestCap {
                    violations.append("key \(k): admission \(inWindow + 1) of the minute at \(call.time) under a cap of \(requestCap)")
                }
            }
        }
        #expect(violations.isEmpty, "\(violations.count) violations, first: \(violations.prefix(5))")

        // The run did what it was meant to: caps bound, limits changed, the schedule moved
        // (its timer, or a change of the cap resolving the schedule after the transition).
        let rejects = telemetry.rejects.map { $0.error.limit }
        let peak = telemetry.limitChanges.filter { $0.scheduleEntry == "peak" }
        #expect(admissions.count >= 2 * Self.peakRequests, "only \(admissions.count) admissions")
        #expect(changeLog.count > 20, "only \(changeLog.count) changes of the concurrency cap")
        #expect(rejects.contains(.concurrency), "the concurrency cap never refused anyone")
        #expect(rejects.contains(.requestsPerMinute), "the request cap never refused anyone")
        #expect(!peak.isEmpty, "the schedule's peak never took effect")
        // More than the off-peak cap allows: the peak's cap was in force. (On a machine busy
        // enough to start the tasks only after the transition, none falls before it.)
        let beforePeak = admissions.filter { $0.time < peakAt }.count
        #expect(admissions.count - beforePeak > 2 * Self.offPeakRequests)
        print(
            "stress: \(admissions.count) admissions (\(beforePeak) before the transition), \(changeLog.count) cap changes, \(rejects.count) refusals"
        )
    }
}
