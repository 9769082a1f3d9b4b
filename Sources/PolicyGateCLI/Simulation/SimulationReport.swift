import Foundation

/// What a simulation found, per provider: outcomes, waits, peaks, usage against caps, and a
/// timeline for charts. `Codable`: `--json` prints it, scripts read it back.
///
/// Times are seconds from the start of the simulation; limits are named by their configuration
/// keys (`requests_per_minute` … `tokens_per_day`, `max_concurrent`), and `closed` stands for a
/// schedule entry that closes the gate.
package struct SimulationReport: Codable, Sendable, Hashable {
    /// The report's JSON schema (`schema_version`; see `encodeJSON`).
    package var schemaVersion = jsonSchemaVersion
    /// The wall-clock date of time zero (ISO 8601), against which schedules were read.
    package var startDate: String
    /// The simulated time from the start to the last event (the last call's end), in seconds.
    package var simulatedSeconds: Double
    /// How long the replay took on this machine, in seconds.
    package var wallSeconds: Double
    /// The calls replayed.
    package var calls: Int
    /// Calls replayed per second of wall time.
    package var callsPerSecond: Double
    /// The time between two timeline samples, in seconds.
    package var sampleIntervalSeconds: Double
    /// One entry per provider with calls or limits, by name.
    package var providers: [ProviderReport]
    /// With a provider model (`--capacity`): each modelled provider's 429s and goodput with
    /// adaptive caps off and on, the same calls replayed both ways.
    package var adaptiveComparison: [AdaptiveComparison]? = nil

    /// Creates a report.
    package init(
        startDate: String, simulatedSeconds: Double, wallSeconds: Double, calls: Int, callsPerSecond: Double,
        sampleIntervalSeconds: Double, providers: [ProviderReport]
    ) {
        self.startDate = startDate
        self.simulatedSeconds = simulatedSeconds
        self.wallSeconds = wallSeconds
        self.calls = calls
        self.callsPerSecond = callsPerSecond
        self.sampleIntervalSeconds = sampleIntervalSeconds
        self.providers = providers
    }

    /// The provider named `name`, if it is in the report.
    package subscript(provider name: String) -> ProviderReport? {
        providers.first { $0.provider == name }
    }
}

/// One provider's part of a ``SimulationReport``. Caps apply to each key (provider and scope)
/// separately; counts and peaks of in-flight and queued calls add up the provider's keys, usage
/// against a cap is the busiest key's.
package struct ProviderReport: Codable, Sendable, Hashable {
    /// The provider's name.
    package var provider: String
    /// Whether the configuration gates it (a provider without caps admits every call at once).
    package var isGated: Bool
    /// How many keys (scopes) its calls used.
    package var keys: Int
    /// Calls that arrived.
    package var calls: Int
    /// Calls admitted, at once or after waiting.
    package var admitted: Int
    /// Of those, the ones admitted on arrival.
    package var admittedAtOnce: Int
    /// Calls that had to wait (admitted later, or timed out or cancelled while waiting), by the
    /// limit that first held them (for a call queued behind others: what the head waited for).
    package var delayed: [String: Int]
    /// Calls refused on arrival because they could not be admitted within their `max_wait`, by
    /// the limit that stood in the way.
    package var rejected: [String: Int]
    /// Calls refused because their estimate exceeds a token cap (they could never fit), by cap.
    package var oversized: [String: Int]
    /// Calls refused for a token count the gate does not accept (0 under a token cap).
    package var invalid: Int
    /// Calls whose `max_wait` ran out while they waited, by the limit the key's queue was held by.
    package var timedOut: [String: Int]
    /// Calls whose `cancel_after` came while they waited (they used nothing).
    package var cancelled: Int
    /// Calls whose `cancel_after` came while they ran: released without a commit, so their
    /// estimate stayed counted.
    package var cutShort: Int
    /// Calls still waiting when nothing more could happen (a gate closed for good, say).
    package var unfinished: Int
    /// Time from arrival to admission of the admitted calls.
    package var wait: WaitStatistics
    /// The same per class (`interactive`, `batch`), when the provider had batch calls; `nil`
    /// otherwise, and left out of the JSON.
    package var waitByPriority: [String: WaitStatistics]? = nil
    /// The most calls in flight at once, over all its keys.
    package var peakInFlight: Int
    /// When that peak was first reached.
    package var peakInFlightAt: Double
    /// The most calls waiting at once, over all its keys.
    package var peakQueued: Int
    /// When that peak was first reached.
    package var peakQueuedAt: Double
    /// The estimates of the admitted calls, summed.
    package var estimatedTokens: Int
    /// What the admitted calls ended up counting for: the actual count of completed calls (of
    /// calls with parts, input and output, and cache reads where `count_cache_reads` says so),
    /// the estimate of calls cut short.
    package var committedTokens: Int
    /// When any admitted call gave its estimate or usage in parts (input and output): the
    /// estimates' input and output, summed as the gate counted them (a call estimated by its
    /// total alone counts the total as input and as output). `nil` otherwise, and left out of
    /// the JSON.
    package var estimatedInputTokens: Int? = nil
    /// The output part of the estimates, as ``estimatedInputTokens`` counts the input.
    package var estimatedOutputTokens: Int? = nil
    /// The input the admitted calls ended up counting for, as the gate counted it: with cache
    /// reads where the provider's `count_cache_reads` says so; a total alone as input.
    package var committedInputTokens: Int? = nil
    /// The output the admitted calls ended up counting for, as ``committedInputTokens``.
    package var committedOutputTokens: Int? = nil
    /// Each cap the provider has (in its base limits or any schedule entry), and `closed` if a
    /// schedule entry closes it.
    package var limits: [LimitReport]
    /// Samples over time for charts.
    package var timeline: Timeline
    /// What the provider model answered (``ProviderCapacity``), when the provider had one.
    package var providerModel: ProviderModelReport? = nil
    /// With tiers or per-scope overrides: the calls grouped by where their caps came from
    /// (``TierReport``), by ``TierReport/source``; `nil` otherwise, and left out of the JSON.
    /// ``limits`` then show the provider's own caps against the busiest key, whatever its tier.
    package var tiers: [TierReport]? = nil

    /// Calls refused in any way: rejected, oversized or invalid.
    package var refused: Int { rejected.values.reduce(0, +) + oversized.values.reduce(0, +) + invalid }

    /// The entry for limit `name` (`tokens_per_minute`), if the provider has that cap.
    package subscript(limit name: String) -> LimitReport? {
        limits.first { $0.limit == name }
    }
}

/// The calls of one provider whose caps came from the same place: a tier, the scope's
/// override, or the provider's own caps.
package struct TierReport: Codable, Sendable, Hashable {
    /// `tier <name>` (the tier the calls named), `override` (scopes with caps of their own,
    /// whatever tier they named), or `provider` (no tier named).
    package var source: String
    /// How many keys (scopes) these calls used.
    package var keys: Int
    /// Calls that arrived.
    package var calls: Int
    /// Calls admitted, at once or after waiting.
    package var admitted: Int
    /// Of those, the ones admitted on arrival.
    package var admittedAtOnce: Int
    /// Calls refused: rejected, oversized or invalid.
    package var refused: Int
    /// Calls whose `max_wait` ran out while they waited.
    package var timedOut: Int
    /// Time from arrival to admission of the admitted calls.
    package var wait: WaitStatistics
}

/// Usage of one cap: how close the busiest key came to it, and when it first held a call back.
package struct LimitReport: Codable, Sendable, Hashable {
    /// `requests_per_minute` … `tokens_per_day`, `max_concurrent`, or `closed`.
    package var limit: String
    /// The base cap (`nil` when only schedule entries set it, and for `closed`).
    package var cap: Int?
    /// The highest usage seen: for windows, the most any key had counted in the window at a
    /// timeline sample (the gate's own bucketed count, read with `currentState`); for
    /// `max_concurrent`, the most permits any key held at once (exact).
    package var peakUsed: Int
    /// When that peak was first seen (`nil` if never above 0).
    package var peakAt: Double?
    /// The cap in force at that moment (schedules may change it).
    package var capAtPeak: Int?
    /// The first moment a call was held back or refused because of this cap.
    package var firstHitAt: Double?
    /// How many calls it held back or refused.
    package var hits: Int
}

/// Order statistics of waits, in seconds.
///
/// `pXX` is the wait that more than XX % of the admitted calls did not exceed: the value at
/// position ⌊XX/100 × n⌋ of the n waits sorted (0-based). For 10 calls, 5 admitted at once and 5
/// after 61 s, p50 is 61 s.
package struct WaitStatistics: Codable, Sendable, Hashable {
    /// The median (see above).
    package var p50: Double
    /// The 95th percentile.
    package var p95: Double
    /// The 99th percentile.
    package var p99: Double
    /// The longest wait.
    package var max: Double
    /// The mean wait.
    package var mean: Double

    /// Statistics of `count` waits of which `sortedNonZero` (ascending, nanoseconds) are the
    /// non-zero ones; all zero when there are none.
    init(zeroCount: Int, sortedNonZero: [Int64]) {
        let count = zeroCount + sortedNonZero.count
        func percentile(_ fraction: Double) -> Double {
            guard count > 0 else { return 0 }
            let rank = Swift.min(count - 1, Int((fraction * Double(count)).rounded(.down)))
            return rank < zeroCount ? 0 : Double(sortedNonZero[rank - zeroCount]) / 1e9
        }
        p50 = percentile(0.50)
        p95 = percentile(0.95)
        p99 = percentile(0.99)
        max = Double(sortedNonZero.last ?? 0) / 1e9
        mean = count == 0 ? 0 : sortedNonZero.reduce(0.0) { $0 + Double($1) } / 1e9 / Double(count)
    }
}

/// A provider's state sampled every ``SimulationReport/sampleIntervalSeconds``, as parallel
/// arrays (one element per sample), each sample taken after every event at or before its time.
package struct Timeline: Codable, Sendable, Hashable {
    /// Sample times, seconds from the start.
    package var time: [Double] = []
    /// Calls waiting, over all keys.
    package var queued: [Int] = []
    /// Calls in flight, over all keys.
    package var inFlight: [Int] = []
    /// Whether a schedule entry closed the provider.
    package var closed: [Bool] = []
    /// One series per window cap the provider has.
    package var series: [UsageSeries] = []
}

/// One window cap over time: the busiest key's usage and the cap in force.
package struct UsageSeries: Codable, Sendable, Hashable {
    /// `requests_per_minute` … `tokens_per_day`.
    package var limit: String
    /// The busiest key's count in the window at each sample.
    package var used: [Int]
    /// The cap in force at each sample (`nil` while none is set).
    package var cap: [Int?]
}

extension SimulationReport {
    /// The report as `simulate --json` writes it: snake_case keys and `schema_version`
    /// (see `encodeJSON`).
    package var json: String { encodeJSON(self) }
}
