import Foundation
import PolicyGate
import PolicyGateTestKit

/// The example a newcomer sees with `policy-gate simulate` and no arguments: a configuration of
/// three providers and a reproducible day of traffic that strains it.
///
/// The traffic follows the day (quiet at night, busiest mid-afternoon UTC), comes in bursts
/// (each provider now and then sends several times its usual rate for a minute or two), has
/// log-normal token sizes (median about 900 tokens, a long tail to 32 000) whose actual counts
/// mostly come in under the estimate, durations that grow with the tokens, a `max_wait` on most
/// calls and a few callers who give up (`cancel_after`). About 1.1 million calls a day.
package enum SyntheticWorkload {
    /// Monday 2026-01-05 00:00 UTC: a weekday, so the example's business-hours schedule applies.
    package static let startDate = Date(timeIntervalSince1970: 1_767_571_200)

    /// The example configuration the synthetic traffic is meant for.
    package static let exampleTOML = """
        # The example configuration of `policy-gate simulate`.

        # One shared account: every call counts against the same key (scope "global").
        [limits.openai]
        requests_per_minute = 900
        tokens_per_minute   = 900_000
        tokens_per_day      = 700_000_000
        max_concurrent      = 64

        # Caps per user (scopes "user:u-1" … "user:u-40"); a few users send most of the calls.
        [limits.anthropic]
        requests_per_minute = 30
        tokens_per_minute   = 60_000
        tokens_per_day      = 24_000_000
        max_concurrent      = 4

        # Caps per project, lower in business hours, closed for a nightly maintenance window.
        [limits.mistral]
        requests_per_minute = 240
        tokens_per_hour     = 12_000_000
        max_concurrent      = 12
        timezone            = "UTC"

        [[limits.mistral.schedule]]
        name   = "maintenance"
        cron   = "0-19 2 * * *"
        closed = true

        [[limits.mistral.schedule]]
        name = "business-hours"
        cron = "* 9-17 * * mon-fri"
        requests_per_minute = 150

        """

    /// The example configuration, decoded.
    package static var configuration: PolicyConfiguration {
        // The text above is part of the program and checked by the tests.
        try! PolicyConfiguration(toml: exampleTOML)
    }

    /// One provider's share of the traffic.
    struct Source {
        let provider: String
        /// Its calls per second, on average over a day.
        let rate: Double
        /// The scopes it uses and their weights.
        let scopes: [(scope: PolicyScope, weight: Double)]
    }

    static let sources: [Source] = [
        Source(provider: "openai", rate: 7, scopes: [(.global, 1)]),
        // Zipf-like: user k sends in proportion to k^-0.7.
        Source(provider: "anthropic", rate: 2.7, scopes: (1...40).map { (.user("u-\($0)"), pow(Double($0), -0.7)) }),
        Source(provider: "mistral", rate: 3, scopes: [(.project("search"), 3), (.project("chat"), 2), (.project("batch"), 1)]),
    ]

    /// A reproducible synthetic workload for ``configuration``.
    /// - Parameters:
    ///   - seed: The same seed gives the same calls.
    ///   - duration: How long the traffic lasts (one day gives about 1.1 million calls).
    /// - Returns: The calls, ordered by arrival.
    package static func calls(seed: UInt64, duration: Duration) -> [SimulatedCall] {
        let end = Double(duration.nanosecondsSaturating) / 1e9
        var calls: [SimulatedCall] = []
        calls.reserveCapacity(Int(end * sources.reduce(0) { $0 + $1.rate } * 1.05))
        for (number, source) in sources.enumerated() {
            var random = SimulationRandom(seed: seed &+ UInt64(number) &* 0x9E37_79B9_7F4A_7C15)
            let keys = source.scopes.map { PolicyKey(provider: source.provider, scope: $0.scope) }
            let total = source.scopes.reduce(0) { $0 + $1.weight }
            var cumulative: [Double] = []
            var sum = 0.0
            for scope in source.scopes {
                sum += scope.weight / total
                cumulative.append(sum)
            }
            var time = 0.0
            var burstUntil = -1.0
            var nextBurst = random.exponential(mean: 2_400)
            while true {
                // Bursts: about one every 40 minutes, 30 s to a few minutes long, 3× the rate.
                if time >= nextBurst {
                    burstUntil = time + 30 + random.exponential(mean: 60)
                    nextBurst = burstUntil + random.exponential(mean: 2_400)
                }
                let rate = source.rate * dailyShape(time) * (time < burstUntil ? 3 : 1)
                time += random.exponential(mean: 1 / rate)
                guard time < end else { break }
                let pick = random.uniform()
                let key = keys[cumulative.firstIndex { pick < $0 } ?? keys.count - 1]
                let estimate = Int(min(32_000, max(20, 900 * exp(0.8 * random.normal()))))
                let actual = Int(Double(estimate) * (0.55 + 0.5 * random.uniform()))
                let seconds = 0.3 + Double(actual) * (0.002 + 0.004 * random.uniform())
                let waitDraw = random.uniform()
                let maxWait: Int64? = waitDraw < 0.3 ? 10 : waitDraw < 0.6 ? 60 : waitDraw < 0.7 ? 300 : nil
                let cancelAfter = random.uniform() < 0.02 ? Int64((1 + 29 * random.uniform()) * 1e9) : nil
                calls.append(
                    SimulatedCall(
                        atNanoseconds: Int64(time * 1e9), key: key, estimatedTokens: estimate, actualTokens: actual,
                        durationNanoseconds: Int64(seconds * 1e9), maxWaitNanoseconds: maxWait.map { $0 * 1_000_000_000 },
                        cancelAfterNanoseconds: cancelAfter))
            }
        }
        calls.sort { $0.nanoseconds.at < $1.nanoseconds.at }
        return calls
    }

    /// Traffic over the day (UTC), averaging 1: about a third of the mean at night, 1.9× at 14:00.
    static func dailyShape(_ seconds: Double) -> Double {
        let hour = seconds.truncatingRemainder(dividingBy: 86_400) / 3_600
        let distance = (hour - 14) / 4
        return (0.25 + 1.55 * exp(-distance * distance)) / 0.775
    }
}

/// The seeded bits (`SeededRandomNumberGenerator`, SplitMix64) with the distributions the
/// synthetic workload draws from.
struct SimulationRandom: RandomNumberGenerator {
    private var bits: SeededRandomNumberGenerator

    init(seed: UInt64) { bits = SeededRandomNumberGenerator(seed: seed) }

    mutating func next() -> UInt64 { bits.next() }

    /// Uniform in [0, 1).
    mutating func uniform() -> Double { Double(next() >> 11) * 0x1p-53 }

    /// Exponentially distributed with the given mean.
    mutating func exponential(mean: Double) -> Double { -mean * log(1 - uniform()) }

    /// Standard normal (Box–Muller).
    mutating func normal() -> Double {
        let u = 1 - uniform()
        return (-2 * log(u)).squareRoot() * cos(2 * Double.pi * uniform())
    }
}
