import Foundation
import PolicyGate

/// How a ``Simulation`` runs.
package struct SimulationOptions: Sendable {
    /// The wall-clock date of time zero: schedules (business hours, closed days) are read against
    /// it as the virtual clock advances.
    package var startDate: Date
    /// The time between two timeline samples; `nil` picks a round interval giving a few hundred
    /// samples over the calls' arrivals. Samples are thinned (every other one dropped, the
    /// interval doubled) whenever there would be more than ``maximumSamples``.
    package var sampleInterval: Duration?
    /// Called now and then from the simulating thread with the fraction of calls replayed
    /// (0…1); for a progress bar.
    package var progress: (@Sendable (Double) -> Void)?

    /// Providers answered by a model of the provider itself (``ProviderCapacity``): calls
    /// above its hidden capacity get a 429, which the simulated client reports to the gate.
    package var capacities: [String: ProviderCapacity] = [:]

    /// The most timeline samples kept per provider.
    package static let maximumSamples = 2_000

    /// Creates options.
    package init(
        startDate: Date = SyntheticWorkload.startDate, sampleInterval: Duration? = nil,
        progress: (@Sendable (Double) -> Void)? = nil
    ) {
        self.startDate = startDate
        self.sampleInterval = sampleInterval
        self.progress = progress
    }
}

/// Replays calls through a real ``PolicyService`` on a virtual clock and reports what happened.
///
/// A discrete-event loop, single-threaded, with no task per call: arrivals, completions, retries
/// and deadlines are taken in time order from a heap, the clock is set to each one's instant, and
/// the gate is asked with `tryAcquire` (which never waits). A call that is refused joins its key's
/// queue in the simulator; only the head of a key's queue is retried, at the instant the gate's
/// `retryAfter` names, when a call of the key completes (a slot frees, a commit may lower the
/// count), and at the provider's schedule transitions, so waiters are served in arrival order as
/// `acquire` serves them. An admitted call holds its permit for its `duration`, commits its
/// `actualTokens` (or its actual parts, with `commitTokens(input:output:cacheReads:)`) and
/// releases it; a call with estimated parts acquires with them. Everything the gate decides is the gate's own rules.
///
/// Priority classes (a trace's `priority`): each key keeps its interactive and its batch callers
/// in two queues; the head is the first interactive caller, unless the first batch caller has
/// waited the provider's batch aging and arrived earlier (it is then promoted, as in the gate),
/// and with no interactive caller waiting, the first batch caller. A caller is asked for as its
/// class (`tryAcquire(…, priority:)`: a batch caller not yet promoted sees the caps less the
/// reserve), an interactive arrival with only unpromoted batch callers waiting is asked for at
/// once, as `acquire` admits it past them, and the key is retried when its first batch caller is
/// promoted.
///
/// At one instant, completions come first, then arrivals (in trace order), then retries, then
/// deadlines, so a waiter may still be admitted at the instant its `max_wait` ends, as with
/// `acquire`.
///
/// How this differs from tasks calling `acquire` (checked against them by the tests):
/// - `max_wait`: `acquire` refuses a call at once (`rateLimited`) when its windows, or a closed
///   schedule, could not admit it by its deadline even with nobody ahead. The simulator can ask
///   the gate only when the answer cannot be an admission. When a call with a `max_wait` finds
///   every slot of its key taken, or queues behind a head with a larger estimate waiting for token
///   capacity (or a schedule's opening) past that deadline, it is queued and times out at its
///   deadline instead: not admitted either way, but counted as timed out, not rejected.
/// - `cancel_after` during the call: the permit is released then without a commit, so the
///   estimate stays counted (the reply, and its usage, never came).
/// - The gate's schedule timer does not run; a due transition is applied by the next call to the
///   provider (the simulator retries its waiters at every transition, so none is admitted late).
/// - Within one instant the order above is fixed; concurrent tasks give no order.
/// - Timed-out calls are counted under the limit the head of their key's queue was waiting for;
///   the gate names concurrency for a waiter still without a slot.
/// - Telemetry is not installed, nor a tier resolver: a call is in the tier its trace line
///   names (`tier`), or in none.
/// - A batch caller with a `max_wait` arriving behind others, under a provider with
///   `reserved_for_interactive`, is queued and times out at its deadline rather than being
///   refused at once.
package struct Simulation: Sendable {
    /// The limits and schedules of the gate the calls are replayed through.
    package var configuration: PolicyConfiguration
    /// Start date, sampling and progress.
    package var options: SimulationOptions

    /// Creates a simulation of `configuration`.
    package init(configuration: PolicyConfiguration, options: SimulationOptions = SimulationOptions()) {
        self.configuration = configuration
        self.options = options
    }

    /// Replays `calls` (in any order: they are taken by `at`, ties in the given order).
    /// - Returns: What happened, per provider.
    /// - Throws: ``SimulationError`` if a call is invalid (a negative time or token count) or
    ///   the configuration is rejected by the gate.
    package func run(_ calls: [SimulatedCall]) throws(SimulationError) -> SimulationReport {
        let started = ContinuousClock.now
        var engine = try SimulationEngine(configuration: configuration, options: options, calls: calls)
        engine.run()
        return engine.report(started: started)
    }

    /// Replays `calls` like ``run(_:)`` and also says what became of each one.
    /// - Returns: The report, and one outcome per call in the order of `calls`.
    package func runWithOutcomes(_ calls: [SimulatedCall]) throws(SimulationError) -> (report: SimulationReport, outcomes: [CallOutcome]) {
        let started = ContinuousClock.now
        var engine = try SimulationEngine(configuration: configuration, options: options, calls: calls)
        engine.run()
        let report = engine.report(started: started)
        return (report, engine.outcomes())
    }
}

/// What became of one simulated call.
package struct CallOutcome: Sendable, Hashable, CustomStringConvertible {
    /// How the call ended.
    package enum Kind: String, Sendable, Hashable {
        /// Admitted, ran for its duration and committed its actual tokens.
        case completed
        /// Admitted, then cancelled (`cancel_after`) while running: released without a commit.
        case cutShort
        /// Refused on arrival: it could not be admitted within its `max_wait`.
        case rejected
        /// Refused: its estimate exceeds a token cap.
        case oversized
        /// Refused: the gate does not accept its token count.
        case invalid
        /// Admitted, then refused by the provider model (a 429, see ``ProviderCapacity``).
        case throttled
        /// Its `max_wait` ran out while it waited.
        case timedOut
        /// Its `cancel_after` came while it waited.
        case cancelled
        /// Still waiting when nothing more could happen.
        case unfinished
    }

    /// How the call ended.
    package var kind: Kind
    /// When it was admitted, from the start; `nil` if it never was.
    package var admittedAt: Duration?
    /// The limit that refused it or held its queue (for `rejected`, `oversized`, `timedOut`).
    package var limit: String?

    /// Creates an outcome.
    package init(_ kind: Kind, admittedAt: Duration? = nil, limit: String? = nil) {
        self.kind = kind
        self.admittedAt = admittedAt
        self.limit = limit
    }

    /// `completed at 61.0 seconds`, `timedOut (requests_per_minute)`.
    package var description: String {
        var text = kind.rawValue
        if let admittedAt { text += " at \(admittedAt)" }
        if let limit { text += " (\(limit))" }
        return text
    }
}

/// The event loop behind ``Simulation``; used once.
struct SimulationEngine: ~Copyable {
    /// A call as the loop needs it: times in nanoseconds, the key as an index.
    ///
    /// Its estimate counts, as the gate counts them, (total, input, output): a call estimated by
    /// its total alone counts that total as input and as output (see ``estimate(_:)``).
    /// Reasoning that compares two calls' needs compares every one of the three.
    struct Call {
        var at: Int64
        var duration: Int64
        /// The totals; with parts, their sums.
        var estimate: Int
        var actual: Int
        /// `at + max_wait`, or `.max`.
        var waitUntil: Int64
        /// `at + cancel_after`, or `.max`.
        var cancelAt: Int64
        var key: Int32
        /// Its entry in `parts`, or -1 when it gives none (in the padding: the size stays 56 bytes).
        var parts: Int32
    }

    /// The counts in parts of a call that gives any; kept apart so that calls without parts,
    /// the most common, cost no more to replay.
    struct CallParts {
        /// Whether it acquires with input and output estimates (else: with its total, counted
        /// as both), and whether it commits input and output.
        var splitEstimate: Bool
        var splitActual: Bool
        var estimateInput: Int
        var estimateOutput: Int
        var actualInput: Int
        var actualOutput: Int
        var actualCacheReads: Int
    }

    enum Phase: UInt8 {
        case pending, waiting, running, runningToBeCut, throttled, done
    }

    /// A key's counts. Plain numbers only, so that reading and updating them in the array
    /// never copies anything reference-counted.
    struct KeyTally {
        let provider: Int
        /// Where the key's queue (in `queues`) starts: calls before it are finished.
        var queueHead = 0
        /// Calls in its queue still waiting.
        var waiting = 0
        var inFlight = 0
        var peakInFlight = 0
        var peakInFlightAt: Int64 = 0
        /// When the head of the queue fits the windows (or the schedule opens) with nobody else
        /// admitted, as the gate said when it last refused it; `.max` when unknown.
        var headFitsAt: Int64 = .max
        /// The pending retry's instant, or `.max`.
        var retryAt: Int64 = .max
        /// What the head of the queue waits for.
        var blockedBy = SimulationLimit.concurrency
        var lastAdmission: Int64 = .min
        /// Its usage per window cap (``SimulationLimit`` 0…11) when last read from the gate, and
        /// the requests and tokens (total, input, output) added since: together a bound its
        /// usage cannot exceed, so that sampling reads only the keys that may be the busiest.
        var lastRead = InlineArray<12, Int>(repeating: 0)
        /// Where the key's batch queue (in `batchQueues`) starts, and its callers still waiting
        /// (counted in `waiting` too).
        var batchQueueHead = 0
        var batchWaiting = 0
        var addedRequests = 0
        var addedTokens = 0
        var addedInputTokens = 0
        var addedOutputTokens = 0
    }

    /// A provider's counts: plain numbers (see ``KeyTally``).
    struct ProviderTally {
        let hasSchedule: Bool
        var calls = 0, admitted = 0, admittedAtOnce = 0, invalid = 0, cancelled = 0, cutShort = 0, unfinished = 0
        var delayed = LimitCounts(repeating: 0)
        var rejected = LimitCounts(repeating: 0)
        var oversized = LimitCounts(repeating: 0)
        var timedOut = LimitCounts(repeating: 0)
        var firstHit = InlineArray<15, Int64>(repeating: .max)
        var inFlight = 0, peakInFlight = 0, peakInFlightAt: Int64 = 0
        var queued = 0, peakQueued = 0, peakQueuedAt: Int64 = 0
        var estimatedTokens = 0, committedTokens = 0
        /// The same in parts, as the gate counted them (a total alone as input and as output),
        /// and whether any admitted call gave parts.
        var estimatedInputTokens = 0, estimatedOutputTokens = 0, committedInputTokens = 0, committedOutputTokens = 0
        var hadParts = false
        /// Calls the provider model answered with a 429, and calls that completed.
        var throttled = 0, completed = 0
        /// When the adaptive caps next grow (`.min`: to be read from the gate).
        var adaptiveStepAt: Int64 = .min
        /// The next instant its schedule may change its limits (`.max`: never).
        var nextTransition: Int64 = .max
        /// The concurrency cap in force, and until when it holds (a schedule transition).
        var slotCap = Int.max
        var slotCapUntil: Int64 = .min
        /// Admitted calls per class (interactive, batch) and of those the ones admitted at once:
        /// kept only when the provider has batch calls.
        var classAdmitted = InlineArray<2, Int>(repeating: 0)
        var classAtOnce = InlineArray<2, Int>(repeating: 0)
    }

    /// A provider's configuration, keys, and timeline as it is sampled.
    struct ProviderTrack {
        let name: String
        let isGated: Bool
        let base: PolicyLimits
        let hasSchedule: Bool
        /// Whether it has tiers or per-scope overrides: its keys' caps are then their own.
        let isTiered: Bool
        /// The limits (``SimulationLimit`` indices) it has, in the base or a schedule entry.
        let limits: [Int]
        /// Of those, the window caps: one timeline series each.
        let windows: [Int]
        /// How long after its last admission a key may still count usage.
        let horizon: Int64
        var keys: [Int32] = []
        var peakUsed = LimitCounts(repeating: 0)
        var peakAt = InlineArray<15, Int64>(repeating: .max)
        var capAtPeak = InlineArray<15, Int?>(repeating: nil)
        var timeline = Timeline()
    }

    let gate: PolicyService
    let clock: SimulationClock
    let configuration: PolicyConfiguration
    let startDate: Date
    let progress: (@Sendable (Double) -> Void)?
    var calls: [Call]
    /// The parts of the calls that give any (``Call/parts``).
    let parts: [CallParts]
    /// The position in the caller's list of each call in `calls`.
    let order: [Int]
    var phase: [Phase]
    /// How each call ended, and its limit (for outcomes).
    var fate: [(kind: CallOutcome.Kind, limit: UInt8)]
    var admittedAt: [Int64]
    var slot: [Int32]
    var keys: [KeyTally]
    /// Each key, for asking the gate.
    let keyOf: [PolicyKey]
    /// The calls whose key names another tier than `keyOf` has for it (a scope changing
    /// tiers within the trace), with their own key: the tier is not part of a key's identity,
    /// so they share its counters and queue, but each is asked for in its own tier.
    let tierKeys: [Int32: PolicyKey]
    /// Each key's waiting calls in arrival order, some finished (skipped at the front): its
    /// interactive callers, and apart its batch callers.
    var queues: [[Int32]]
    var batchQueues: [[Int32]]
    /// Whether each call is a batch call.
    let isBatch: [Bool]
    /// Per provider: how long a batch caller waits before it is promoted, whether batch calls
    /// see a reserve, and whether any of its calls is a batch call (waits are then kept per class).
    let aging: [Int64]
    let reserves: [Bool]
    let hasBatch: [Bool]
    /// Non-zero waits of each provider's admitted calls per class (interactive, batch), when it
    /// has batch calls.
    var classWaits: [[[Int64]]]
    var providers: [ProviderTrack]
    var tallies: [ProviderTally]
    /// Non-zero waits of each provider's admitted calls, in nanoseconds.
    var waits: [[Int64]]
    var events = SimulationEvents()
    var permits = PermitSlots()
    /// The provider model of each provider that has one.
    var models: [ProviderModel?]
    /// Whether each provider is in adaptive mode.
    let adaptive: [Bool]
    var now: Int64 = 0
    var sampleInterval: Int64
    var nextSample: Int64 = 0

    init(configuration: PolicyConfiguration, options: SimulationOptions, calls input: [SimulatedCall]) throws(SimulationError) {
        // Everything that can throw comes first: a noncopyable value cannot be left half built.
        let clock = SimulationClock()
        let gate: PolicyService
        do {
            gate = try PolicyService(configuration: configuration, clock: clock, startDate: options.startDate)
        } catch {
            throw SimulationError("the configuration cannot be used: \(error.message)")
        }
        // Calls by arrival time, ties in the given order.
        var order = Array(input.indices)
        if !input.indices.dropFirst().allSatisfy({ input[$0 - 1].nanoseconds.at <= input[$0].nanoseconds.at }) {
            order.sort { (input[$0].nanoseconds.at, $0) < (input[$1].nanoseconds.at, $1) }
        }
        var keyIndex: [PolicyKey: Int32] = [:]
        var providerIndex: [String: Int] = [:]
        var calls: [Call] = []
        var parts: [CallParts] = []
        var keys: [KeyTally] = []
        var keyOf: [PolicyKey] = []
        var providers: [ProviderTrack] = []
        calls.reserveCapacity(input.count)
        var lastKey: (key: PolicyKey, index: Int32)?
        var isBatch: [Bool] = []
        isBatch.reserveCapacity(input.count)
        var tierKeys: [Int32: PolicyKey] = [:]
        for position in order {
            let key = input[position].key
            let k: Int32
            if let lastKey, lastKey.key == key {
                k = lastKey.index  // runs of one key are common: skip hashing
            } else if let known = keyIndex[key] {
                k = known
            } else {
                try Self.checkTier(key, configuration, number: position + 1)
                let p: Int
                if let known = providerIndex[key.provider] {
                    p = known
                } else {
                    p = providers.count
                    providerIndex[key.provider] = p
                    providers.append(Self.track(key.provider, configuration))
                }
                k = Int32(keys.count)
                keyIndex[key] = k
                keys.append(KeyTally(provider: p))
                keyOf.append(key)
                providers[p].keys.append(k)
            }
            lastKey = (key, k)
            if key.tier != keyOf[Int(k)].tier {
                try Self.checkTier(key, configuration, number: position + 1)
                tierKeys[Int32(calls.count)] = key
            }
            isBatch.append(input[position].priority == .batch)
            var (call, split) = try Self.compact(input[position], key: k, number: position + 1)
            if let split {
                call.parts = Int32(parts.count)
                parts.append(split)
            }
            calls.append(call)
        }
        self.configuration = configuration
        self.startDate = options.startDate
        self.progress = options.progress
        self.clock = clock
        self.gate = gate
        self.calls = calls
        self.parts = parts
        self.order = order
        fate = Array(repeating: (.unfinished, UInt8.max), count: calls.count)
        admittedAt = Array(repeating: .min, count: calls.count)
        self.keys = keys
        self.keyOf = keyOf
        self.tierKeys = tierKeys
        queues = Array(repeating: [], count: keys.count)
        batchQueues = Array(repeating: [], count: keys.count)
        self.isBatch = isBatch
        aging = providers.map { ($0.base.batchAging ?? PolicyLimits.defaultBatchAging).nanosecondsSaturating }
        reserves = providers.map { $0.base.reservedForInteractive ?? 0 > 0 }
        var hasBatch = Array(repeating: false, count: providers.count)
        for c in calls.indices where isBatch[c] { hasBatch[keys[Int(calls[c].key)].provider] = true }
        self.hasBatch = hasBatch
        classWaits = Array(repeating: [[], []], count: providers.count)
        self.providers = providers
        tallies = providers.map { ProviderTally(hasSchedule: $0.hasSchedule) }
        models = providers.map { track in options.capacities[track.name].map { ProviderModel(capacity: $0) } }
        adaptive = providers.map { configuration.adaptive.contains($0.name) }
        waits = Array(repeating: [], count: providers.count)
        phase = Array(repeating: .pending, count: calls.count)
        slot = Array(repeating: -1, count: calls.count)
        sampleInterval =
            options.sampleInterval.map { max(1_000_000, $0.nanosecondsSaturating) }
            ?? Self.automaticSampleInterval(lastArrival: calls.last?.at ?? 0)
        for p in providers.indices where providers[p].hasSchedule {
            tallies[p].nextTransition = transition(after: 0, provider: p)
        }
    }

    /// Refuses a call naming a tier its provider does not have (the gate would refuse every
    /// such call as an invalid argument): most likely a trace written for another configuration.
    /// A provider without tiers or overrides ignores the tier, as the gate does.
    private static func checkTier(_ key: PolicyKey, _ configuration: PolicyConfiguration, number: Int) throws(SimulationError) {
        guard let tier = key.tier else { return }
        let tiers = configuration.tiers[key.provider] ?? [:]
        let overrides = configuration.scopeOverrides[key.provider] ?? [:]
        guard !tiers.isEmpty || !overrides.isEmpty, tiers[tier] == nil, overrides[key.scope] == nil else { return }
        let known = tiers.isEmpty ? "it has none" : "its tiers: " + tiers.keys.sorted().joined(separator: ", ")
        throw SimulationError(field: "tier", "call \(number): '\(tier)' is not one of provider '\(key.provider)''s tiers (\(known))")
    }

    private static func track(_ name: String, _ configuration: PolicyConfiguration) -> ProviderTrack {
        let base = configuration.limits[name] ?? .unlimited
        let schedule = configuration.schedules[name]
        let tiers = Array((configuration.tiers[name] ?? [:]).values) + Array((configuration.scopeOverrides[name] ?? [:]).values)
        var limits = Set<Int>()
        for kind in PolicyLimitKind.allCases {
            if base[kind] != nil || schedule?.entries.contains(where: { $0.limits[kind] != nil }) == true
                || tiers.contains(where: { $0[kind] != nil })
            {
                limits.insert(SimulationLimit.index(of: kind))
            }
        }
        if schedule?.entries.contains(where: \.isClosed) == true { limits.insert(SimulationLimit.closed) }
        let sorted = limits.sorted()
        let windows = sorted.filter { $0 < SimulationLimit.concurrency }
        // A call is counted until its bucket leaves the window: up to the window and 1/60 of it.
        let longest = windows.map { SimulationLimit.kind($0).window!.duration.nanosecondsSaturating }.max() ?? 0
        return ProviderTrack(
            name: name, isGated: !base.isUnlimited || schedule != nil || !tiers.isEmpty, base: base, hasSchedule: schedule != nil,
            isTiered: !tiers.isEmpty, limits: sorted, windows: windows, horizon: longest + longest / 60 + 1)
    }

    private static func compact(
        _ call: borrowing SimulatedCall, key: Int32, number: Int
    ) throws(SimulationError) -> (Call, CallParts?) {
        let times = call.nanoseconds
        func check(_ nanos: Int64, _ field: String) throws(SimulationError) {
            guard nanos < 0 else { return }
            throw SimulationError(field: field, "call \(number): must not be negative, got \(Duration.nanoseconds(nanos))")
        }
        func check(tokens count: Int, _ field: String) throws(SimulationError) {
            guard count < 0 || count > PolicyLimits.maximumTokenCount else { return }
            throw SimulationError(field: field, "call \(number): must be in 0...\(PolicyLimits.maximumTokenCount), got \(count)")
        }
        // With parts, the total is theirs (as the gate takes it), whatever `estimatedTokens` says.
        var estimate = (total: call.estimatedTokens, input: call.estimatedTokens, output: call.estimatedTokens)
        if let parts = call.estimatedParts {
            try check(tokens: parts.input, "estimated_input_tokens")
            try check(tokens: parts.output, "estimated_output_tokens")
            estimate = (parts.input + parts.output, parts.input, parts.output)
        } else {
            try check(tokens: call.estimatedTokens, "estimated_tokens")
        }
        var actual = (total: call.actualTokens, input: call.actualTokens, output: call.actualTokens, cacheReads: 0)
        if let parts = call.actualParts {
            try check(tokens: parts.input, "actual_input_tokens")
            try check(tokens: parts.output, "actual_output_tokens")
            try check(tokens: parts.cacheReads, "actual_cache_read_tokens")
            actual = (parts.input + parts.output + parts.cacheReads, parts.input, parts.output, parts.cacheReads)
        } else {
            try check(tokens: call.actualTokens, "actual_tokens")
        }
        try check(times.at, "at")
        try check(times.duration, "duration")
        var waitUntil = Int64.max
        if let wait = times.maxWait {
            try check(wait, "max_wait")
            waitUntil = times.at.clampedAdding(wait)
        }
        var cancelAt = Int64.max
        if let after = times.cancelAfter {
            try check(after, "cancel_after")
            cancelAt = times.at.clampedAdding(after)
        }
        let compact = Call(
            at: times.at, duration: times.duration, estimate: estimate.total, actual: actual.total, waitUntil: waitUntil,
            cancelAt: cancelAt, key: key, parts: -1)
        guard call.estimatedParts != nil || call.actualParts != nil else { return (compact, nil) }
        return (
            compact,
            CallParts(
                splitEstimate: call.estimatedParts != nil, splitActual: call.actualParts != nil, estimateInput: estimate.input,
                estimateOutput: estimate.output, actualInput: actual.input, actualOutput: actual.output,
                actualCacheReads: actual.cacheReads)
        )
    }

    /// A round interval giving about 500 samples over the arrivals (at least 1 s).
    static func automaticSampleInterval(lastArrival: Int64) -> Int64 {
        let steps: [Int64] = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1_800, 3_600, 7_200, 21_600, 43_200, 86_400]
        let wanted = lastArrival / 500
        let seconds = steps.first { $0 * 1_000_000_000 >= wanted } ?? (wanted / 86_400_000_000_000 + 1) * 86_400
        return seconds * 1_000_000_000
    }

    // MARK: The loop

    mutating func run() {
        var next = 0
        let count = calls.count
        let stride = max(1, count / 200)
        var reported = 0
        while true {
            let arrival = next < count ? calls[next].at : Int64.max
            let fromHeap: Bool
            let time: Int64
            if let top = events.first, top.time < arrival || (top.time == arrival && top.kind < SimulationEvents.arrival) {
                if isStale(top) {
                    // Dropped before the clock moves to it, so that the simulation ends at its
                    // last real event.
                    _ = events.pop()
                    continue
                }
                fromHeap = true
                time = top.time
            } else if next < count {
                fromHeap = false
                time = arrival
            } else {
                break
            }
            if time > now {
                if time > nextSample { sample(before: time) }
                now = time
                clock.set(time)
            }
            if fromHeap {
                let event = events.pop()
                switch event.kind {
                case SimulationEvents.completion: complete(event.index)
                case SimulationEvents.retry: retry(event.index, at: event.time)
                default: deadline(event.index)
                }
            } else {
                arrive(next)
                next += 1
                if let progress, next - reported >= stride {
                    reported = next
                    progress(Double(next) / Double(count))
                }
            }
        }
        sample(before: now + 1)
        if providers.first?.timeline.time.last.map({ $0 < Double(now) / 1e9 }) ?? false {
            nextSample = now
            sample(before: now + 1)
        }
        for k in keys.indices where keys[k].waiting > 0 {
            tallies[keys[k].provider].unfinished += keys[k].waiting
        }
        progress?(1)
    }

    /// A retry superseded by an earlier one, or the deadline of a call no longer waiting.
    private func isStale(_ event: SimulationEvents.Event) -> Bool {
        switch event.kind {
        case SimulationEvents.retry: keys[event.index].retryAt != event.time
        case SimulationEvents.deadline: phase[event.index] != .waiting
        default: false
        }
    }

    private mutating func arrive(_ c: Int) {
        let k = Int(calls[c].key)
        let p = keys[k].provider
        tallies[p].calls += 1
        if keys[k].waiting > 0 && !passes(c, k) {
            // Behind others: `acquire` would find the gate's queue non-empty and join it, unless
            // the call's deadline is already here or its windows cannot free by then.
            let label = keys[k].blockedBy
            if calls[c].waitUntil <= now { return refuse(c, p, label: label) }
            switch windowsBlock(c, behind: k) {
            case .until(let at, let limit) where at > calls[c].waitUntil: refuse(c, p, label: limit)
            case .admitted: break
            default: enqueue(c, k, label: label)
            }
            return
        }
        do {
            let permit = try tryAcquire(c, k)
            admit(c, k, permit)
        } catch {
            guard error.code == .rateLimited else { return fail(c, p, error) }
            let label = SimulationLimit.index(of: error)
            hit(p, label)
            let waitUntil = calls[c].waitUntil
            if waitUntil != .max {
                // What `acquire` checks before queueing: a deadline already here, or windows (or a
                // closed gate) that cannot admit the call by its deadline even with nobody ahead.
                let freesAt = error.retryAfter.map { now.clampedAdding($0.nanosecondsSaturating) }
                if waitUntil <= now || (label != SimulationLimit.concurrency && (freesAt ?? .max) > waitUntil) {
                    return refuse(c, p, label: label)
                }
            }
            enqueue(c, k, label: label)
            block(k, label: label, retryAfter: error.retryAfter)
        }
    }

    /// Whether call `c` is asked for at once although `k` has callers waiting: an interactive
    /// call with only batch callers not yet promoted waiting (it would queue ahead of them).
    private mutating func passes(_ c: Int, _ k: Int) -> Bool {
        guard !isBatch[c], keys[k].batchWaiting == keys[k].waiting else { return false }
        return !isPromoted(batchHead(k))
    }

    /// Whether batch call `c` has waited its provider's aging at `now` (the gate then orders it
    /// among interactive callers by arrival, and lets it into the reserve).
    private func isPromoted(_ c: Int) -> Bool {
        now >= promotion(c)
    }

    /// When batch call `c` is promoted.
    private func promotion(_ c: Int) -> Int64 {
        calls[c].at.clampedAdding(aging[keys[Int(calls[c].key)].provider])
    }

    /// For a call with a deadline arriving behind `k`'s queue: the limit and the instant its
    /// windows (or a closed schedule) would let it in with nobody ahead, as `acquire` checks it
    /// before queueing; `.unknown` when it surely fits in time, or when asking could admit it.
    ///
    /// A call needing no more tokens than the head fits no later than the head, whose fit the gate
    /// named when it refused it. Otherwise the gate is asked with `tryAcquire`, but only when the
    /// call surely does not fit: the head was refused by a request cap (every call needs a
    /// request), or by a token cap or a closed schedule and this call needs at least as many
    /// tokens. Tokens are compared as the gate counts them, total, input and output each: "no
    /// more" and "at least as many" must hold for all three (a call with less input but more
    /// output than the head may fit now, or later than the head). The head's refusal still
    /// holds: it is retried whenever something could let it in sooner (a completion freeing a
    /// slot or lowering a count, a schedule transition), and an overrun commit forgets its fit.
    private mutating func windowsBlock(_ c: Int, behind k: Int) -> WindowsBlock {
        // At a schedule transition the head's last refusal may no longer hold (it is retried
        // after the arrivals of this instant).
        let p = keys[k].provider
        guard calls[c].waitUntil != .max, !tallies[p].hasSchedule || now < tallies[p].nextTransition else { return .unknown }
        // A batch call sees other caps than the head, and may be promoted before its deadline.
        if isBatch[c] && reserves[p] { return .unknown }
        let blockedBy = keys[k].blockedBy
        let head = head(k)
        // In another tier than the head, it sees other caps: what the head was told says nothing.
        if !tierKeys.isEmpty && key(of: c).tier != key(of: head).tier { return .unknown }
        // Needing no more than the head, it fits no later than the head: in time, then.
        if needsNoMore(c, than: head) && keys[k].headFitsAt <= calls[c].waitUntil { return .unknown }
        let surelyRefused =
            blockedBy < 3
            || (blockedBy != SimulationLimit.concurrency && needsNoMore(head, than: c))
        guard surelyRefused else { return .unknown }
        do {
            let permit = try tryAcquire(c, k)
            // Unreachable by the reasoning above; were it reached, the call jumped the queue.
            assertionFailure("a call behind a blocked queue was admitted")
            admit(c, k, permit)
            return .admitted
        } catch {
            guard error.code == .rateLimited, let retryAfter = error.retryAfter else { return .unknown }
            return .until(now.clampedAdding(retryAfter.nanosecondsSaturating), limit: SimulationLimit.index(of: error))
        }
    }

    /// Whether call `a` counts no more tokens than call `b` in total, in input and in output:
    /// then every token cap that lets `b` in lets `a` in, and every one that refuses `a`
    /// refuses `b`.
    private func needsNoMore(_ a: Int, than b: Int) -> Bool {
        let x = estimate(a)
        let y = estimate(b)
        return x.total <= y.total && x.input <= y.input && x.output <= y.output
    }

    /// Call `c`'s estimate as the gate counts it: a total alone counts as input and as output.
    private func estimate(_ c: Int) -> (total: Int, input: Int, output: Int) {
        let total = calls[c].estimate
        let index = Int(calls[c].parts)
        guard index >= 0 else { return (total, total, total) }
        return (total, parts[index].estimateInput, parts[index].estimateOutput)
    }

    /// The key call `c` is asked for with: its key's, in the tier the call names.
    private func key(of c: Int) -> PolicyKey {
        let key = keyOf[Int(calls[c].key)]
        guard !tierKeys.isEmpty else { return key }
        return tierKeys[Int32(c)] ?? key
    }

    /// Asks the gate to admit call `c` of key `k` now, with its estimate as the call gives it
    /// (in parts or as a total).
    private func tryAcquire(_ c: Int, _ k: Int) throws(PolicyError) -> PolicyPermit {
        let key = key(of: c)
        let index = Int(calls[c].parts)
        // A promoted batch call is an interactive one in every respect.
        let priority: PolicyPriority = isBatch[c] && !isPromoted(c) ? .batch : .interactive
        if index >= 0, parts[index].splitEstimate {
            return try gate.tryAcquire(
                key, estimatedInputTokens: parts[index].estimateInput, estimatedOutputTokens: parts[index].estimateOutput,
                priority: priority)
        }
        return try gate.tryAcquire(key, estimatedTokens: calls[c].estimate, priority: priority)
    }

    enum WindowsBlock {
        case unknown
        case until(Int64, limit: Int)
        case admitted
    }

    /// Tries the head of `k`'s queue, and the next, while they are admitted.
    private mutating func serve(_ k: Int) {
        while keys[k].waiting > 0 {
            let p = keys[k].provider
            if !providers[p].isTiered, keys[k].inFlight >= slotCap(p) {
                // What the gate would answer (its concurrency check comes first), without the
                // cost of a refusal: this is the common case in a queue for slots. Not with
                // tiers, whose keys may have other slot caps than the provider's.
                hit(p, SimulationLimit.concurrency)
                return block(k, label: SimulationLimit.concurrency, retryAfter: nil)
            }
            let c = head(k)
            do {
                let permit = try tryAcquire(c, k)
                dequeue(c, k)
                admit(c, k, permit)
            } catch {
                if error.code == .rateLimited {
                    hit(p, SimulationLimit.index(of: error))
                    return block(k, label: SimulationLimit.index(of: error), retryAfter: error.retryAfter)
                }
                // The limits changed while it waited (a schedule): it can never fit now.
                dequeue(c, k)
                fail(c, keys[k].provider, error)
            }
        }
    }

    /// The head of `k`'s queue was refused: arrange to retry it when the gate says, or at the
    /// provider's next schedule transition, whichever is first (a full concurrency cap frees on
    /// a completion, which serves the queue anyway).
    private mutating func block(_ k: Int, label: Int, retryAfter: Duration?) {
        keys[k].blockedBy = label
        let p = keys[k].provider
        var at = retryAfter.map { now.clampedAdding($0.nanosecondsSaturating) } ?? .max
        keys[k].headFitsAt = at
        if providers[p].hasSchedule {
            if tallies[p].nextTransition <= now { tallies[p].nextTransition = transition(after: now, provider: p) }
            at = min(at, tallies[p].nextTransition)
        }
        if adaptive[p] {
            // Adaptive caps that grow back may let the head in sooner than the gate said.
            if tallies[p].adaptiveStepAt == .min || tallies[p].adaptiveStepAt <= now {
                let next = gate.currentState(for: keyOf[k]).adaptive?.nextIncreaseIn
                tallies[p].adaptiveStepAt = next.map { now.clampedAdding($0.nanosecondsSaturating) } ?? .max
            }
            at = min(at, tallies[p].adaptiveStepAt)
        }
        if keys[k].batchWaiting > 0 {
            // The first batch caller's promotion may make it the head, or let it into the reserve.
            let promotedAt = promotion(batchHead(k))
            if promotedAt > now { at = min(at, promotedAt) }
        }
        guard at != .max else { return }
        at = max(at, now + 1)
        if at < keys[k].retryAt {
            keys[k].retryAt = at
            events.push(time: at, kind: SimulationEvents.retry, index: k)
        }
    }

    private mutating func retry(_ k: Int, at time: Int64) {
        keys[k].retryAt = .max
        serve(k)
    }

    private mutating func admit(_ c: Int, _ k: Int, _ permit: consuming PolicyPermit) {
        let call = calls[c]
        let p = keys[k].provider
        let wait = now - call.at
        admittedAt[c] = now
        tallies[p].admitted += 1
        if wait == 0 { tallies[p].admittedAtOnce += 1 } else { waits[p].append(wait) }
        if hasBatch[p] {
            let cls = isBatch[c] ? 1 : 0
            tallies[p].classAdmitted[cls] += 1
            if wait == 0 { tallies[p].classAtOnce[cls] += 1 } else { classWaits[p][cls].append(wait) }
        }
        let counts = estimate(c)
        tallies[p].estimatedTokens += counts.total
        tallies[p].estimatedInputTokens += counts.input
        tallies[p].estimatedOutputTokens += counts.output
        if call.parts >= 0 { tallies[p].hadParts = true }
        keys[k].inFlight += 1
        keys[k].lastAdmission = now
        keys[k].addedRequests += 1
        keys[k].addedTokens += counts.total
        keys[k].addedInputTokens += counts.input
        keys[k].addedOutputTokens += counts.output
        if keys[k].inFlight > keys[k].peakInFlight {
            keys[k].peakInFlight = keys[k].inFlight
            keys[k].peakInFlightAt = now
        }
        tallies[p].inFlight += 1
        if tallies[p].inFlight > tallies[p].peakInFlight {
            tallies[p].peakInFlight = tallies[p].inFlight
            tallies[p].peakInFlightAt = now
        }
        let ends = now.clampedAdding(call.duration)
        if models[p] != nil, models[p]?.answer(at: now, tokens: call.estimate) == false {
            // The 429 comes back quickly, before any cancellation.
            phase[c] = .throttled
            events.push(time: now.clampedAdding(ProviderModel.refusalLatency), kind: SimulationEvents.completion, index: c)
        } else if call.cancelAt < ends {
            phase[c] = .runningToBeCut
            events.push(time: max(now, call.cancelAt), kind: SimulationEvents.completion, index: c)
        } else {
            phase[c] = .running
            events.push(time: ends, kind: SimulationEvents.completion, index: c)
        }
        slot[c] = permits.store(permit)
    }

    private mutating func complete(_ c: Int) {
        var permit = permits.take(slot[c])
        let k = Int(calls[c].key)
        let p = keys[k].provider
        fate[c].kind = phase[c] == .running ? .completed : phase[c] == .throttled ? .throttled : .cutShort
        if phase[c] == .throttled {
            // What a client does with a 429: tell the gate (with the provider's retry-after),
            // count nothing used, give up the call (no retry: it counts as lost goodput).
            permit.reportThrottled(retryAfter: models[p]?.retryAfter(at: now))
            try? permit.commitTokens(0)
            tallies[p].throttled += 1
            tallies[p].adaptiveStepAt = .min
        } else if phase[c] == .running {
            tallies[p].completed += 1
            // Not expected to throw: the counts were checked. The estimate then stays counted.
            let index = Int(calls[c].parts)
            if index >= 0, parts[index].splitActual {
                let split = parts[index]
                try? permit.commitTokens(input: split.actualInput, output: split.actualOutput, cacheReads: split.actualCacheReads)
            } else {
                try? permit.commitTokens(calls[c].actual)
            }
        } else {
            tallies[p].cutShort += 1
        }
        // What the call counts for now, as the gate counts it (cache reads as input or not, as
        // the provider's limits say): the commit, or the estimate of a call cut short.
        let counted = (total: permit.committedTokens, input: permit.countedInputTokens, output: permit.countedOutputTokens)
        var lowered = phase[c] == .throttled
        if phase[c] != .throttled {
            tallies[p].committedTokens += counted.total
            tallies[p].committedInputTokens += counted.input
            tallies[p].committedOutputTokens += counted.output
        }
        if phase[c] == .running {
            let estimated = estimate(c)
            lowered = counted.total < estimated.total || counted.input < estimated.input || counted.output < estimated.output
            // An overrun of any count can make the head fit later than the gate last said.
            if counted.total > estimated.total || counted.input > estimated.input || counted.output > estimated.output {
                keys[k].headFitsAt = .max
                keys[k].addedTokens += max(0, counted.total - estimated.total)
                keys[k].addedInputTokens += max(0, counted.input - estimated.input)
                keys[k].addedOutputTokens += max(0, counted.output - estimated.output)
            }
        }
        permit.release()
        phase[c] = .done
        keys[k].inFlight -= 1
        tallies[p].inFlight -= 1
        guard keys[k].waiting > 0 else { return }
        // The freed slot or a lower count can only help a head waiting for a slot, or for token
        // capacity (or a schedule's opening, bounded by tokens too); a head waiting for a request
        // cap fits no sooner, and asking would only cost a refusal.
        let blockedBy = keys[k].blockedBy
        if blockedBy == SimulationLimit.concurrency || (blockedBy >= 3 && lowered) { serve(k) }
    }

    private mutating func deadline(_ c: Int) {
        let k = Int(calls[c].key)
        let p = keys[k].provider
        let wasHead = head(k) == c
        dequeue(c, k)
        if calls[c].cancelAt <= calls[c].waitUntil {
            tallies[p].cancelled += 1
            fate[c].kind = .cancelled
        } else {
            tallies[p].timedOut[keys[k].blockedBy] += 1
            fate[c] = (.timedOut, UInt8(keys[k].blockedBy))
        }
        if wasHead && keys[k].waiting > 0 { serve(k) }
    }

    // MARK: Queues and counts

    private mutating func enqueue(_ c: Int, _ k: Int, label: Int) {
        let p = keys[k].provider
        phase[c] = .waiting
        keys[k].waiting += 1
        if isBatch[c] {
            batchQueues[k].append(Int32(c))
            keys[k].batchWaiting += 1
            // Retried when it is promoted, in case it is the first batch caller by then.
            let at = max(promotion(c), now + 1)
            if at < keys[k].retryAt {
                keys[k].retryAt = at
                events.push(time: at, kind: SimulationEvents.retry, index: k)
            }
        } else {
            queues[k].append(Int32(c))
        }
        tallies[p].delayed[label] += 1
        tallies[p].queued += 1
        if tallies[p].queued > tallies[p].peakQueued {
            tallies[p].peakQueued = tallies[p].queued
            tallies[p].peakQueuedAt = now
        }
        let deadline = min(calls[c].waitUntil, calls[c].cancelAt)
        if deadline != .max { events.push(time: deadline, kind: SimulationEvents.deadline, index: c) }
    }

    /// The call of `k`'s queue served next (there must be one): the first interactive caller,
    /// unless the first batch caller is promoted and arrived before it (calls are numbered in
    /// arrival order), or no interactive caller waits.
    private mutating func head(_ k: Int) -> Int {
        guard keys[k].batchWaiting > 0 else { return interactiveHead(k) }
        let batch = batchHead(k)
        guard keys[k].waiting > keys[k].batchWaiting else { return batch }
        let interactive = interactiveHead(k)
        return batch < interactive && isPromoted(batch) ? batch : interactive
    }

    /// The first interactive call of `k`'s queue still waiting (there must be one).
    private mutating func interactiveHead(_ k: Int) -> Int {
        while phase[Int(queues[k][keys[k].queueHead])] != .waiting { keys[k].queueHead += 1 }
        let head = keys[k].queueHead
        if head >= 1_024 && head * 2 >= queues[k].count {
            queues[k].removeFirst(head)
            keys[k].queueHead = 0
        }
        return Int(queues[k][keys[k].queueHead])
    }

    /// The first batch call of `k`'s queue still waiting (there must be one).
    private mutating func batchHead(_ k: Int) -> Int {
        while phase[Int(batchQueues[k][keys[k].batchQueueHead])] != .waiting { keys[k].batchQueueHead += 1 }
        let head = keys[k].batchQueueHead
        if head >= 1_024 && head * 2 >= batchQueues[k].count {
            batchQueues[k].removeFirst(head)
            keys[k].batchQueueHead = 0
        }
        return Int(batchQueues[k][keys[k].batchQueueHead])
    }

    /// Takes a waiting call out of its queue (lazily: it is skipped when it reaches the front).
    private mutating func dequeue(_ c: Int, _ k: Int) {
        phase[c] = .done
        keys[k].waiting -= 1
        if isBatch[c] { keys[k].batchWaiting -= 1 }
        tallies[keys[k].provider].queued -= 1
        if keys[k].batchWaiting == 0 && !batchQueues[k].isEmpty {
            batchQueues[k].removeAll(keepingCapacity: true)
            keys[k].batchQueueHead = 0
        }
        if keys[k].waiting == keys[k].batchWaiting && !queues[k].isEmpty {
            queues[k].removeAll(keepingCapacity: true)
            keys[k].queueHead = 0
        }
        if keys[k].waiting == 0 {
            keys[k].retryAt = .max  // nobody left to retry: a pending retry is stale
        }
    }

    private mutating func hit(_ p: Int, _ label: Int) {
        if tallies[p].firstHit[label] == .max { tallies[p].firstHit[label] = now }
    }

    /// Refused on arrival: it could not be admitted within its `max_wait`.
    private mutating func refuse(_ c: Int, _ p: Int, label: Int) {
        phase[c] = .done
        fate[c] = (.rejected, UInt8(label))
        tallies[p].rejected[label] += 1
    }

    /// Refused for good: oversized, or an invalid token count.
    private mutating func fail(_ c: Int, _ p: Int, _ error: PolicyError) {
        phase[c] = .done
        if error.code == .oversized {
            let label = SimulationLimit.index(of: error)
            fate[c] = (.oversized, UInt8(label))
            tallies[p].oversized[label] += 1
            hit(p, label)
        } else {
            fate[c].kind = .invalid
            tallies[p].invalid += 1
        }
    }

    // MARK: Schedules

    /// The concurrency cap of provider `p` in force now, as the gate resolves it (cached until
    /// its schedule may change it).
    private mutating func slotCap(_ p: Int) -> Int {
        if now >= tallies[p].slotCapUntil {
            if tallies[p].hasSchedule {
                let resolution = configuration.effectiveLimits(for: providers[p].name, at: date(now))
                tallies[p].slotCap = resolution.limits.maxConcurrent ?? .max
                tallies[p].slotCapUntil = resolution.validUntil.map { max(now + 1, nanos($0)) } ?? .max
            } else {
                tallies[p].slotCap = providers[p].base.maxConcurrent ?? .max
                tallies[p].slotCapUntil = .max
            }
        }
        return tallies[p].slotCap
    }

    /// The first instant after `time` at which the provider's schedule may change its limits,
    /// as the gate computes it (the resolution's `validUntil`, rounded up to a nanosecond).
    private func transition(after time: Int64, provider p: Int) -> Int64 {
        var at = time
        // Resolutions may end at the search horizon without a change; step over those.
        for _ in 0..<1_000 {
            let resolution = configuration.effectiveLimits(for: providers[p].name, at: date(at))
            guard let until = resolution.validUntil else { return .max }
            let next = max(at + 1, nanos(until))
            if next > time { return next }
            at = next
        }
        return .max
    }

    func date(_ nanos: Int64) -> Date {
        startDate.addingTimeInterval(Double(nanos) / 1e9)
    }

    /// The instant of `date`, rounded up (as the gate maps dates to its clock).
    func nanos(_ date: Date) -> Int64 {
        let nanos = (date.timeIntervalSince(startDate) * 1e9).rounded(.up)
        return nanos >= 9.2e18 ? .max : nanos <= 0 ? 0 : Int64(nanos)
    }

    // MARK: Sampling

    /// Takes the samples due before `time` (each after every event at or before its instant).
    private mutating func sample(before time: Int64) {
        while nextSample < time {
            let at = nextSample
            clock.set(at)
            for p in providers.indices { sample(p, at: at) }
            nextSample = at.clampedAdding(sampleInterval)
            if let count = providers.first?.timeline.time.count, count >= SimulationOptions.maximumSamples {
                thinSamples()
            }
        }
        clock.set(now)
    }

    private mutating func sample(_ p: Int, at time: Int64) {
        let limits: PolicyLimits
        var closed = false
        if providers[p].hasSchedule {
            let resolution = configuration.effectiveLimits(for: providers[p].name, at: date(time))
            limits = resolution.limits
            closed = resolution.isClosed
        } else {
            limits = providers[p].base
        }
        // The busiest key per window cap. Reading a key from the gate costs microseconds, so the
        // key with the highest bound for each cap is read first, then only keys whose bound
        // exceeds what was found: with thousands of users, a handful are read.
        var used = LimitCounts(repeating: 0)
        let windows = providers[p].windows
        var candidates = providers[p].keys.map(Int.init).filter { k in
            keys[k].inFlight > 0 || keys[k].waiting > 0 || keys[k].lastAdmission >= time - providers[p].horizon
        }
        func bound(_ k: Int, _ label: Int) -> Int {
            let added =
                switch label {
                case 0..<3: keys[k].addedRequests
                case 3..<6: keys[k].addedTokens
                case 6..<9: keys[k].addedInputTokens
                default: keys[k].addedOutputTokens
                }
            return keys[k].lastRead[label] + added
        }
        func read(_ k: Int) {
            var usage = InlineArray<12, Int>(repeating: 0)
            for window in gate.currentState(for: keyOf[k]).windows {
                usage[window.window.rawValue] = window.requests.used  // requests_per_minute/hour/day
                usage[window.window.rawValue + 3] = window.tokens.used  // tokens_per_minute/hour/day
                usage[window.window.rawValue + 6] = window.inputTokens?.used ?? 0  // input_tokens_per_…
                usage[window.window.rawValue + 9] = window.outputTokens?.used ?? 0  // output_tokens_per_…
            }
            for label in 0..<12 { used[label] = max(used[label], usage[label]) }
            keys[k].lastRead = usage
            keys[k].addedRequests = 0
            keys[k].addedTokens = 0
            keys[k].addedInputTokens = 0
            keys[k].addedOutputTokens = 0
        }
        for label in windows {
            guard let best = candidates.indices.max(by: { bound(candidates[$0], label) < bound(candidates[$1], label) }) else { break }
            read(candidates.remove(at: best))
        }
        for k in candidates where windows.contains(where: { bound(k, $0) > used[$0] }) {
            read(k)
        }
        let seconds = Double(time) / 1e9
        providers[p].timeline.time.append(seconds)
        providers[p].timeline.queued.append(tallies[p].queued)
        providers[p].timeline.inFlight.append(tallies[p].inFlight)
        providers[p].timeline.closed.append(closed)
        if providers[p].timeline.series.isEmpty {
            providers[p].timeline.series = providers[p].windows.map {
                UsageSeries(limit: SimulationLimit.names[$0], used: [], cap: [])
            }
        }
        for (s, label) in providers[p].windows.enumerated() {
            let cap = limits[SimulationLimit.kind(label)]
            providers[p].timeline.series[s].used.append(used[label])
            providers[p].timeline.series[s].cap.append(cap)
            if used[label] > providers[p].peakUsed[label] {
                providers[p].peakUsed[label] = used[label]
                providers[p].peakAt[label] = time
                providers[p].capAtPeak[label] = cap
            }
        }
    }

    /// Drops every other sample and doubles the interval, keeping the timeline bounded.
    private mutating func thinSamples() {
        func even<T>(_ values: [T]) -> [T] { values.enumerated().compactMap { $0.offset % 2 == 0 ? $0.element : nil } }
        for p in providers.indices {
            providers[p].timeline.time = even(providers[p].timeline.time)
            providers[p].timeline.queued = even(providers[p].timeline.queued)
            providers[p].timeline.inFlight = even(providers[p].timeline.inFlight)
            providers[p].timeline.closed = even(providers[p].timeline.closed)
            for s in providers[p].timeline.series.indices {
                providers[p].timeline.series[s].used = even(providers[p].timeline.series[s].used)
                providers[p].timeline.series[s].cap = even(providers[p].timeline.series[s].cap)
            }
        }
        sampleInterval *= 2
        let last = providers.first?.timeline.time.last ?? 0
        nextSample = Int64((last * 1e9).rounded()) + sampleInterval
    }

    // MARK: The report

    /// Each call's outcome, in the caller's order.
    func outcomes() -> [CallOutcome] {
        var result = Array(repeating: CallOutcome(.unfinished), count: calls.count)
        for c in calls.indices {
            result[order[c]] = CallOutcome(
                fate[c].kind, admittedAt: admittedAt[c] == .min ? nil : .nanoseconds(admittedAt[c]),
                limit: fate[c].limit == .max ? nil : SimulationLimit.names[Int(fate[c].limit)])
        }
        return result
    }

    /// Provider `p`'s calls grouped by where their caps came from: an override, a tier, or
    /// the provider's own.
    private func tierReports(_ p: Int) -> [TierReport] {
        let name = providers[p].name
        let overrides = configuration.scopeOverrides[name] ?? [:]
        struct Group {
            var keys = Set<Int32>()
            var calls = 0, admitted = 0, atOnce = 0, refused = 0, timedOut = 0
            var waits: [Int64] = []
        }
        var groups: [String: Group] = [:]
        for c in calls.indices where keys[Int(calls[c].key)].provider == p {
            let key = key(of: c)
            let source = overrides[key.scope] != nil ? "override" : key.tier.map { "tier \($0)" } ?? "provider"
            var group = groups[source] ?? Group()
            group.keys.insert(calls[c].key)
            group.calls += 1
            if admittedAt[c] != .min {
                group.admitted += 1
                let wait = admittedAt[c] - calls[c].at
                if wait == 0 { group.atOnce += 1 } else { group.waits.append(wait) }
            }
            switch fate[c].kind {
            case .rejected, .oversized, .invalid: group.refused += 1
            case .timedOut: group.timedOut += 1
            default: break
            }
            groups[source] = group
        }
        return groups.sorted { $0.key < $1.key }.map { source, group in
            TierReport(
                source: source, keys: group.keys.count, calls: group.calls, admitted: group.admitted,
                admittedAtOnce: group.atOnce, refused: group.refused, timedOut: group.timedOut,
                wait: WaitStatistics(zeroCount: group.atOnce, sortedNonZero: group.waits.sorted()))
        }
    }

    mutating func report(started: ContinuousClock.Instant) -> SimulationReport {
        let seconds = { (nanos: Int64) in Double(nanos) / 1e9 }
        var reports: [ProviderReport] = []
        for p in providers.indices {
            let track = providers[p]
            let tally = tallies[p]
            let sortedWaits = waits[p].sorted()
            func named(_ counts: LimitCounts) -> [String: Int] {
                var result: [String: Int] = [:]
                for i in 0..<SimulationLimit.count where counts[i] > 0 { result[SimulationLimit.names[i]] = counts[i] }
                return result
            }
            // The busiest key's peak, the first reached among equal ones.
            let busiest = track.keys.map { keys[Int($0)] }.min {
                ($0.peakInFlight, -$0.peakInFlightAt) > ($1.peakInFlight, -$1.peakInFlightAt)
            }
            let keyPeak = busiest?.peakInFlight ?? 0
            let keyPeakAt = busiest?.peakInFlightAt ?? 0
            let limits = track.limits.map { label -> LimitReport in
                let isConcurrency = label == SimulationLimit.concurrency
                let peak = isConcurrency ? keyPeak : track.peakUsed[label]
                let peakAt: Double?
                if isConcurrency {
                    peakAt = keyPeak > 0 ? seconds(keyPeakAt) : nil
                } else {
                    peakAt = track.peakAt[label] == .max ? nil : seconds(track.peakAt[label])
                }
                let cap = label == SimulationLimit.closed ? nil : track.base[SimulationLimit.kind(label)]
                return LimitReport(
                    limit: SimulationLimit.names[label], cap: cap, peakUsed: peak, peakAt: peakAt,
                    capAtPeak: isConcurrency
                        ? configuration.effectiveLimits(for: track.name, at: date(keyPeakAt)).limits.maxConcurrent
                        : track.capAtPeak[label],
                    firstHitAt: tally.firstHit[label] == .max ? nil : seconds(tally.firstHit[label]),
                    hits: tally.delayed[label] + tally.rejected[label] + tally.oversized[label])
            }
            reports.append(
                ProviderReport(
                    provider: track.name, isGated: track.isGated, keys: track.keys.count, calls: tally.calls,
                    admitted: tally.admitted, admittedAtOnce: tally.admittedAtOnce, delayed: named(tally.delayed),
                    rejected: named(tally.rejected), oversized: named(tally.oversized), invalid: tally.invalid,
                    timedOut: named(tally.timedOut), cancelled: tally.cancelled, cutShort: tally.cutShort,
                    unfinished: tally.unfinished,
                    wait: WaitStatistics(zeroCount: tally.admittedAtOnce, sortedNonZero: sortedWaits),
                    waitByPriority: hasBatch[p]
                        ? [
                            PolicyPriority.interactive.description: WaitStatistics(
                                zeroCount: tally.classAtOnce[0], sortedNonZero: classWaits[p][0].sorted()),
                            PolicyPriority.batch.description: WaitStatistics(
                                zeroCount: tally.classAtOnce[1], sortedNonZero: classWaits[p][1].sorted()),
                        ] : nil,
                    peakInFlight: tally.peakInFlight, peakInFlightAt: seconds(tally.peakInFlightAt),
                    peakQueued: tally.peakQueued, peakQueuedAt: seconds(tally.peakQueuedAt),
                    estimatedTokens: tally.estimatedTokens, committedTokens: tally.committedTokens,
                    estimatedInputTokens: tally.hadParts ? tally.estimatedInputTokens : nil,
                    estimatedOutputTokens: tally.hadParts ? tally.estimatedOutputTokens : nil,
                    committedInputTokens: tally.hadParts ? tally.committedInputTokens : nil,
                    committedOutputTokens: tally.hadParts ? tally.committedOutputTokens : nil,
                    limits: limits, timeline: track.timeline,
                    providerModel: models[p].map {
                        ProviderModelReport(
                            capacity: $0.capacity, adaptive: adaptive[p], throttled: tally.throttled, goodput: tally.completed)
                    },
                    tiers: track.isTiered ? tierReports(p) : nil))
        }
        reports.sort { $0.provider < $1.provider }
        let wall = started.duration(to: .now)
        let wallSeconds = Double(wall.components.seconds) + Double(wall.components.attoseconds) / 1e18
        return SimulationReport(
            startDate: Values.iso8601(startDate), simulatedSeconds: seconds(now), wallSeconds: wallSeconds,
            calls: calls.count, callsPerSecond: wallSeconds > 0 ? Double(calls.count) / wallSeconds : 0,
            sampleIntervalSeconds: seconds(sampleInterval), providers: reports)
    }
}
