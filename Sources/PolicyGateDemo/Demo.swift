// A small, deterministic demonstration: two users of one provider send bursts of calls through a
// real `PolicyService` running on a virtual clock, so three minutes of traffic replay at once.
// Each call tries the gate; when refused it waits for the `retryAfter` the gate names (or for a
// slot to free), in arrival order, then holds its permit for the call's duration and commits the
// tokens the "provider" reported.
import PolicyGate
import PolicyGateTestKit

struct Call {
    let id: Int
    let key: PolicyKey
    let arrival: Duration
    let estimate: Int
    let actual: Int
    let duration: Duration
}

/// A permit held while its call runs (a class, because permits cannot be copied into arrays).
final class Running {
    var permit: PolicyPermit?
    let call: Call
    let ends: Duration
    init(permit: consuming PolicyPermit, call: Call, ends: Duration) {
        self.permit = consume permit
        self.call = call
        self.ends = ends
    }
}

func stamp(_ d: Duration) -> String {
    let ms = Int(d.components.seconds) * 1_000 + Int(d.components.attoseconds / 1_000_000_000_000_000)
    let text = "\(ms / 1_000).\(ms % 1_000 / 100)s"
    return String(repeating: " ", count: max(0, 7 - text.count)) + text
}

@main
enum Demo {
    static func main() throws {
        let clock = ManualClock()
        let recorder = TelemetryRecorder()
        let limits = PolicyLimits(requestsPerMinute: 12, tokensPerMinute: 9_000, maxConcurrent: 3)
        let gate = try PolicyService(limits: ["openai": limits], clock: clock, telemetry: recorder)

        // A fixed pseudo-random workload (a linear congruential generator keeps it reproducible).
        var seed: UInt64 = 42
        func next(_ range: ClosedRange<Int>) -> Int {
            seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return range.lowerBound + Int((seed >> 33) % UInt64(range.count))
        }
        let users = [PolicyKey(provider: "openai", scope: .user("ada")), PolicyKey(provider: "openai", scope: .user("bob"))]
        var calls: [Call] = []
        var at = 0
        for id in 1...30 {
            at += next(0...6_000)  // milliseconds between arrivals
            let estimate = next(300...1_500)
            calls.append(
                Call(
                    id: id, key: users[next(0...1)], arrival: .milliseconds(at), estimate: estimate,
                    actual: estimate * next(60...130) / 100, duration: .milliseconds(next(1_500...9_000))))
        }

        print("limits: openai \(limits)  (per user)\n")
        var pending = calls[...]  // not yet arrived
        var queues: [PolicyKey: [Call]] = [:]
        var retryAt: [PolicyKey: Duration] = [:]
        var running: [Running] = []
        var waited: [Duration] = []
        var firstWait: [Int: Duration] = [:]

        func now() -> Duration { clock.now.offset }

        /// Admits the heads of the users' queues that fit now.
        func admitHeads() {
            for key in users {
                while let call = queues[key]?.first {
                    if let at = retryAt[key], at > now() { break }
                    do {
                        var permit = try gate.tryAcquire(key, estimatedTokens: call.estimate)
                        queues[key]!.removeFirst()
                        retryAt[key] = nil
                        let wait = now() - call.arrival
                        waited.append(wait)
                        print(
                            "\(stamp(now()))  #\(call.id) \(key.scope)  admitted  est \(call.estimate)\(wait > .zero ? "  after waiting \(stamp(wait))" : "")  in flight \(gate.currentState(for: key).inFlight)"
                        )
                        try permit.commitTokens(call.estimate)  // nothing reported yet: the estimate stands
                        running.append(Running(permit: permit, call: call, ends: now() + call.duration))
                    } catch {
                        if firstWait[call.id] == nil {
                            firstWait[call.id] = now()
                            let retry = error.retryAfter.map { "retry in \(stamp($0))" } ?? "until a slot frees"
                            print("\(stamp(now()))  #\(call.id) \(key.scope)  waits     \(error.limit!), \(retry)")
                        }
                        retryAt[key] = error.retryAfter.map { now() + $0 }
                        break
                    }
                }
            }
        }

        while !pending.isEmpty || queues.values.contains(where: { !$0.isEmpty }) || !running.isEmpty {
            // The next event: an arrival, a call finishing, or a retry time.
            var times: [Duration] = running.map(\.ends) + retryAt.values.filter { $0 > now() }
            if let arrival = pending.first?.arrival { times.append(arrival) }
            if let next = times.min(), next > now() { clock.advance(to: .init(offset: next)) }
            // Calls that finished commit the provider's count and release their slot.
            for done in running.filter({ $0.ends <= now() }) {
                try done.permit!.commitTokens(done.call.actual)
                done.permit = nil
                retryAt[done.call.key] = nil
            }
            running.removeAll { $0.permit == nil }
            while let call = pending.first, call.arrival <= now() {
                pending.removeFirst()
                queues[call.key, default: []].append(call)
            }
            admitHeads()
        }

        let sorted = waited.sorted()
        print(
            """

            \(calls.count) calls over \(stamp(now())) of virtual time
            admitted at once: \(waited.filter { $0 == .zero }.count), after waiting: \(waited.filter { $0 > .zero }.count) \
            (median wait \(stamp(sorted[sorted.count / 2])), longest \(stamp(sorted.last!)))
            telemetry: \(recorder.acquires.count) acquires, \(recorder.commits.count) commits, \(recorder.rejects.count) refusals, \(recorder.releases.count) releases
            """)
        for key in users {
            print("    \(gate.currentState(for: key))")
        }
    }
}
