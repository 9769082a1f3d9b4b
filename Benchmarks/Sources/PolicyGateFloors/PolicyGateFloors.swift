// Floors and gate costs measured in one run, printed as one table with the ratios.
//
//   swift run -c release --package-path Benchmarks PolicyGateFloors [--repetitions N] [--rep-ms M]
//
// Every case is timed with ContinuousClock in a plain loop. The iteration count is calibrated so
// one repetition lasts about `--rep-ms` (default 250 ms, never less than 200 ms); each case runs
// `--repetitions` times (default 7) and reports the median, the min and the max per operation.
// All loops run off the main actor (`@concurrent`), on the global concurrent executor.

import BenchmarkFixtures
import PolicyGate
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Floors

@concurrent
func atomicLoop(_ counter: Counter, _ n: Int) async -> Duration {
    let clock = ContinuousClock()
    let start = clock.now
    for _ in 0..<n {
        counter.bump()
    }
    return clock.now - start
}

@concurrent
func actorHopLoop(_ target: HopTarget, _ counter: Counter, _ n: Int) async -> Duration {
    let clock = ContinuousClock()
    let start = clock.now
    for _ in 0..<n {
        await target.noop()
        counter.bump()
    }
    return clock.now - start
}

@concurrent
func mutexLoop(_ locked: LockedCounter, _ n: Int) async -> Duration {
    let clock = ContinuousClock()
    let start = clock.now
    for _ in 0..<n {
        locked.value.withLock { $0 &+= 1 }
    }
    return clock.now - start
}

// MARK: - Gate

/// acquire + commitTokens + release, plus one relaxed atomic add, cycling over `keys`.
@concurrent
func gateLoop(_ gate: PolicyService, _ keys: [PolicyKey], _ counter: Counter, _ n: Int) async throws -> Duration {
    let clock = ContinuousClock()
    var index = 0
    let start = clock.now
    for _ in 0..<n {
        var permit = try await gate.acquire(keys[index], estimatedTokens: 100)
        try permit.commitTokens(90)
        permit.release()
        counter.bump()
        index += 1
        if index == keys.count { index = 0 }
    }
    return clock.now - start
}

/// The contended shapes (``BenchmarkFixtures``), timed.
@concurrent
func contendedLoop(_ gate: PolicyService, _ keys: [PolicyKey], tasks: Int, callsPerTask: Int) async throws -> Duration {
    let start = ContinuousClock.now
    try await contendedCalls(gate, keys, tasks: tasks, callsPerTask: callsPerTask)
    return ContinuousClock.now - start
}

@concurrent
func contendedYieldLoop(_ gate: PolicyService, _ keys: [PolicyKey], tasks: Int, callsPerTask: Int) async throws -> Duration {
    let start = ContinuousClock.now
    try await contendedYieldCalls(gate, keys, tasks: tasks, callsPerTask: callsPerTask)
    return ContinuousClock.now - start
}

@concurrent
func semaphoreLoop(_ semaphores: [FIFOSemaphore], tasks: Int, callsPerTask: Int) async -> Duration {
    let start = ContinuousClock.now
    await semaphoreCalls(semaphores, tasks: tasks, callsPerTask: callsPerTask)
    return ContinuousClock.now - start
}

// MARK: - Harness

struct Options {
    var repetitions = 7
    var repetitionTime = Duration.milliseconds(250)

    init(_ arguments: [String]) {
        var iterator = arguments.dropFirst().makeIterator()
        while let argument = iterator.next() {
            switch argument {
            case "--repetitions":
                if let value = iterator.next().flatMap(Int.init), value > 0 { repetitions = value }
            case "--rep-ms":
                if let value = iterator.next().flatMap(Int.init) { repetitionTime = .milliseconds(max(200, value)) }
            default:
                print("usage: PolicyGateFloors [--repetitions N] [--rep-ms M (>= 200)]")
            }
        }
    }
}

struct Stats {
    var name: String
    var samples: [Double]  // ns per operation, one per repetition, sorted
    var operations: Int  // per repetition

    var median: Double { percentile(0.5) }
    var min: Double { samples.first ?? .nan }
    var max: Double { samples.last ?? .nan }

    func percentile(_ p: Double) -> Double {
        guard !samples.isEmpty else { return .nan }
        let position = p * Double(samples.count - 1)
        let low = Int(position), high = Swift.min(low + 1, samples.count - 1)
        return samples[low] + (samples[high] - samples[low]) * (position - Double(low))
    }
}

extension Duration {
    var nanoseconds: Double {
        Double(components.seconds) * 1e9 + Double(components.attoseconds) / 1e9
    }
}

/// Calibrates `body(n)` (which performs `n` operations and returns the time they took, possibly
/// rounding `n`: it returns the count done) to the repetition time, then times the repetitions.
@concurrent
func measure(
    _ name: String, _ options: Options, _ body: (Int) async throws -> (elapsed: Duration, operations: Int)
) async rethrows -> Stats {
    let target = options.repetitionTime.nanoseconds * 1.05
    var n = 1_000
    // Calibration doubles as warm-up.
    while true {
        let (elapsed, done) = try await body(n)
        let ns = elapsed.nanoseconds
        if ns >= 20_000_000 {
            n = Int((Double(done) * target / ns).rounded(.up))
            break
        }
        n *= ns < 2_000_000 ? 10 : 4
    }
    var samples: [Double] = []
    var operations = n
    for _ in 0..<options.repetitions {
        var (elapsed, done) = try await body(n)
        // Never accept a repetition shorter than the minimum: scale up and redo it.
        while elapsed < options.repetitionTime {
            n = Int((Double(n) * target / Swift.max(elapsed.nanoseconds, 1)).rounded(.up))
            (elapsed, done) = try await body(n)
        }
        operations = done
        samples.append(elapsed.nanoseconds / Double(done))
    }
    let stats = Stats(name: name, samples: samples.sorted(), operations: operations)
    print(
        "  \(pad(name, 44)) \(format(stats.median)) ns  (min \(format(stats.min)), max \(format(stats.max)), "
            + "\(operations) ops/rep)")
    return stats
}

func format(_ value: Double, decimals: Int = 1) -> String {
    guard value.isFinite else { return "n/a" }
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let rounded = (value * scale).rounded() / scale
    if decimals == 0 { return "\(Int(rounded))" }
    var text = "\(rounded)"
    if let dot = text.firstIndex(of: ".") {
        let fraction = text[text.index(after: dot)...]
        if fraction.count < decimals { text += String(repeating: "0", count: decimals - fraction.count) }
    } else if decimals > 0 {
        text += "." + String(repeating: "0", count: decimals)
    }
    return text
}

func pad(_ text: String, _ width: Int, left: Bool = false) -> String {
    let padding = String(repeating: " ", count: Swift.max(0, width - text.count))
    return left ? padding + text : text + padding
}

// MARK: - Run

@concurrent
func runAll(_ options: Options) async throws {
    let cores = sysconf(Int32(_SC_NPROCESSORS_ONLN))
    print("PolicyGate floors — \(cores) cores, \(options.repetitions) repetitions of ≥ \(options.repetitionTime) per case")
    print("")
    print("Floors")
    let atomicCounter = Counter()
    let atomic = await measure("atomic add (relaxed) alone", options) { n in
        (await atomicLoop(atomicCounter, n), n)
    }
    let hopTarget = HopTarget()
    let hopCounter = Counter()
    let hop = await measure("actor hop + atomic add", options) { n in
        (await actorHopLoop(hopTarget, hopCounter, n), n)
    }
    let locked = LockedCounter()
    let mutex = await measure("Mutex<Int>.withLock { $0 &+= 1 }", options) { n in
        (await mutexLoop(locked, n), n)
    }

    print("")
    print("Gate (uncontended: acquire + commitTokens + release + atomic add)")
    let cappedGate = try PolicyService(limits: [
        "openai": typicalLimits(maxConcurrent: 16),
        "local": PolicyLimits(),
    ])
    let cappedKey = [PolicyKey(provider: "openai", scope: .user("u-42"))]
    let noopKey = [PolicyKey(provider: "local", scope: .user("u-42"))]
    let cappedCounter = Counter()
    let capped = try await measure("capped key (rpm+tpm+tpd+maxConcurrent)", options) { n in
        (try await gateLoop(cappedGate, cappedKey, cappedCounter, n), n)
    }
    let noopCounter = Counter()
    let noop = try await measure("no-op key (provider without caps)", options) { n in
        (try await gateLoop(cappedGate, noopKey, noopCounter, n), n)
    }
    // The same caps plus a 20-entry calendar schedule (Europe/Berlin); the plain capped case is
    // measured again right after, so the ratio compares neighbours in time.
    let scheduledGate = try PolicyService(
        configuration: PolicyConfiguration(
            limits: ["openai": typicalLimits(maxConcurrent: 16)], schedules: ["openai": try twentyEntrySchedule()]))
    let scheduledCounter = Counter()
    let scheduled = try await measure("capped key + 20-entry schedule", options) { n in
        (try await gateLoop(scheduledGate, cappedKey, scheduledCounter, n), n)
    }
    let cappedAgain = try await measure("capped key (again, beside the scheduled one)", options) { n in
        (try await gateLoop(cappedGate, cappedKey, cappedCounter, n), n)
    }

    // Nested limits: the same caps at the account, each org and each user; measured beside the
    // plain capped key so the ratio compares neighbours in time.
    let nestedGate = try PolicyService(
        limits: ["openai": typicalLimits(maxConcurrent: 16)],
        scopeLimits: ["openai": ["org": typicalLimits(maxConcurrent: 16), "user": typicalLimits(maxConcurrent: 16)]])
    let chainKey = [PolicyKey(provider: "openai", scope: .user("u-42"), within: [.org("acme")])]
    let nestedCounter = Counter()
    let nested = try await measure("three-level chain (account, org, user)", options) { n in
        (try await gateLoop(nestedGate, chainKey, nestedCounter, n), n)
    }
    let cappedBeside = try await measure("capped key (again, beside the chain)", options) { n in
        (try await gateLoop(cappedGate, cappedKey, cappedCounter, n), n)
    }

    print("")
    print("Gate (contended: 64 tasks, 8 keys, maxConcurrent 4 per key; wall time / calls)")
    let contendedGate = try PolicyService(limits: ["openai": typicalLimits(maxConcurrent: 4)])
    let contendedKeys = (0..<8).map { PolicyKey(provider: "openai", scope: .user("u-\($0)")) }
    let contended = try await measure("contended acquire + commit + release", options) { n in
        let perTask = Swift.max(1, n / 64)
        return (try await contendedLoop(contendedGate, contendedKeys, tasks: 64, callsPerTask: perTask), perTask * 64)
    }

    let contendedNestedGate = try PolicyService(
        limits: ["openai": typicalLimits(maxConcurrent: 64)],
        scopeLimits: ["openai": ["org": typicalLimits(maxConcurrent: 16), "user": typicalLimits(maxConcurrent: 4)]])
    let chainKeys = (0..<8).map { PolicyKey(provider: "openai", scope: .user("u-\($0)"), within: [.org("org-\($0 % 2)")]) }
    let contendedNested = try await measure("contended, 8 users in 2 orgs under one account", options) { n in
        let perTask = Swift.max(1, n / 64)
        return (try await contendedLoop(contendedNestedGate, chainKeys, tasks: 64, callsPerTask: perTask), perTask * 64)
    }

    print("")
    print("Contended, holder yields once (64 tasks, 8 keys, 4 slots per key; wall time / calls)")
    // Like with like: the gate's provider has only the slots, as the semaphore does. The two are
    // measured twice, interleaved, and the ratio taken of the medians of both runs.
    let slotsGate = try PolicyService(limits: ["openai": PolicyLimits(maxConcurrent: 4)])
    let semaphores = (0..<8).map { _ in FIFOSemaphore(slots: 4) }
    var semaphoreRuns: [Stats] = []
    var slotsRuns: [Stats] = []
    for _ in 0..<2 {
        semaphoreRuns.append(
            await measure("FIFO semaphore: wait + yield + signal", options) { n in
                let perTask = Swift.max(1, n / 64)
                return (await semaphoreLoop(semaphores, tasks: 64, callsPerTask: perTask), perTask * 64)
            })
        slotsRuns.append(
            try await measure("gate, maxConcurrent only: acquire + yield + release", options) { n in
                let perTask = Swift.max(1, n / 64)
                return (try await contendedYieldLoop(slotsGate, contendedKeys, tasks: 64, callsPerTask: perTask), perTask * 64)
            })
    }
    let semaphore = Stats(name: "semaphore", samples: semaphoreRuns.flatMap(\.samples).sorted(), operations: 0)
    let slots = Stats(name: "slots", samples: slotsRuns.flatMap(\.samples).sorted(), operations: 0)

    print("")
    print("Gate (100 000 active keys)")
    let keyCount = 100_000
    let manyGate = try PolicyService(limits: ["openai": typicalLimits(maxConcurrent: 16)])
    let manyKeys = (0..<keyCount).map { PolicyKey(provider: "openai", scope: .user("u-\($0)")) }
    let rssBefore = residentBytes()
    for key in manyKeys {
        var permit = try await manyGate.acquire(key, estimatedTokens: 100)
        try permit.commitTokens(90)
        permit.release()
    }
    let rssAfter = residentBytes()
    let stored = manyGate.storedKeyCount
    var bytesPerKey = Double.nan
    if let rssBefore, let rssAfter {
        bytesPerKey = Double(rssAfter - rssBefore) / Double(keyCount)
        print(
            "  \(pad("resident bytes per active key", 44)) \(format(bytesPerKey, decimals: 0)) B  "
                + "(RSS \(rssBefore / 1024) KiB → \(rssAfter / 1024) KiB, \(stored) keys stored)")
    } else {
        print("  resident bytes per key: n/a (no /proc/self/statm on this system)")
    }
    let manyCounter = Counter()
    let many = try await measure("cycling over 100 000 keys (+ atomic add)", options) { n in
        (try await gateLoop(manyGate, manyKeys, manyCounter, n), n)
    }
    if manyGate.storedKeyCount < keyCount {
        print("  note: only \(manyGate.storedKeyCount) keys stored after the run")
    }

    print("")
    print("Tiers (10 000 scopes over 3 tiers, 100 with overrides of their own; uncontended cycle)")
    // The same provider caps with and without tiers, the same 10 000 keys cycled through; the
    // three are measured twice, interleaved, and the ratios taken of the medians of both runs.
    let tierScopes = 10_000
    var tieredConfiguration = PolicyConfiguration(limits: ["openai": typicalLimits(maxConcurrent: 16)])
    tieredConfiguration.tiers["openai"] = [
        "free": PolicyLimits(requestsPerMinute: 1_000_000, tokensPerDay: 90_000_000_000),
        "pro": PolicyLimits(requestsPerMinute: 2_000_000, maxConcurrent: 32),
        "team": PolicyLimits(tokensPerMinute: 4_000_000_000),
    ]
    tieredConfiguration.scopeOverrides["openai"] = Dictionary(
        uniqueKeysWithValues: (0..<100).map { (PolicyScope.user("u-\($0 * 97)"), PolicyLimits(requestsPerMinute: 5_000_000)) })
    let tierNames = ["free", "pro", "team"]
    let untieredGate = try PolicyService(limits: ["openai": typicalLimits(maxConcurrent: 16)])
    let tieredGate = try PolicyService(configuration: tieredConfiguration)
    let resolvedGate = try PolicyService(configuration: tieredConfiguration)
    await resolvedGate.setTierResolver { scope in
        guard case .user(let id) = scope, let number = Int(id.dropFirst(2)) else { return nil }
        return tierNames[number % 3]
    }
    let plainKeys = (0..<tierScopes).map { PolicyKey(provider: "openai", scope: .user("u-\($0)")) }
    let namedKeys = (0..<tierScopes).map { PolicyKey(provider: "openai", scope: .user("u-\($0)"), tier: tierNames[$0 % 3]) }
    let tierCounter = Counter()
    var untieredRuns: [Stats] = []
    var namedRuns: [Stats] = []
    var resolvedRuns: [Stats] = []
    for _ in 0..<2 {
        untieredRuns.append(
            try await measure("10 000 keys, no tiers", options) { n in
                (try await gateLoop(untieredGate, plainKeys, tierCounter, n), n)
            })
        namedRuns.append(
            try await measure("10 000 keys, tier named on the key", options) { n in
                (try await gateLoop(tieredGate, namedKeys, tierCounter, n), n)
            })
        resolvedRuns.append(
            try await measure("10 000 keys, tier from the resolver (cached)", options) { n in
                (try await gateLoop(resolvedGate, plainKeys, tierCounter, n), n)
            })
    }
    let untiered = Stats(name: "untiered", samples: untieredRuns.flatMap(\.samples).sorted(), operations: 0)
    let namedTiers = Stats(name: "named", samples: namedRuns.flatMap(\.samples).sorted(), operations: 0)
    let resolvedTiers = Stats(name: "resolved", samples: resolvedRuns.flatMap(\.samples).sorted(), operations: 0)
    // Memory per key with tiers, measured as for the plain gate above (100 000 keys).
    let tieredManyGate = try PolicyService(configuration: tieredConfiguration)
    let tieredManyKeys = (0..<keyCount).map { PolicyKey(provider: "openai", scope: .user("t-\($0)"), tier: tierNames[$0 % 3]) }
    let tieredRSSBefore = residentBytes()
    for key in tieredManyKeys {
        var permit = try await tieredManyGate.acquire(key, estimatedTokens: 100)
        try permit.commitTokens(90)
        permit.release()
    }
    let tieredRSSAfter = residentBytes()
    var tieredBytesPerKey = Double.nan
    if let tieredRSSBefore, let tieredRSSAfter {
        tieredBytesPerKey = Double(tieredRSSAfter - tieredRSSBefore) / Double(keyCount)
        print("  \(pad("resident bytes per active key, tiered", 44)) \(format(tieredBytesPerKey, decimals: 0)) B")
    }

    // MARK: Summary
    let hopNet = hop.median - atomic.median
    struct Row {
        var name: String
        var value: String
        var spread: String
        var target: String
        var met: Bool?
    }
    func ratio(_ name: String, _ a: Stats, _ b: Stats, target: Double?) -> Row {
        let value = a.median / b.median
        // The spread of a ratio: the worst and best pairings of the two spreads.
        return Row(
            name: name, value: "\(format(value, decimals: 2))×",
            spread: "\(format(a.min / b.max, decimals: 2)) … \(format(a.max / b.min, decimals: 2))",
            target: target.map { "≤ \(format($0, decimals: 1))×" } ?? "", met: target.map { value <= $0 })
    }
    func time(_ name: String, _ stats: Stats) -> Row {
        Row(name: name, value: "\(format(stats.median)) ns", spread: "\(format(stats.min)) … \(format(stats.max))", target: "", met: nil)
    }
    let rows: [Row] = [
        ratio("uncontended capped acquire + commit + release / actor hop", capped, hop, target: 2.5),
        Row(name: "the same with the key resolved once up front", value: "n/a", spread: "no handle API", target: "≤ 1.5×", met: nil),
        ratio("no-op provider / actor hop", noop, hop, target: 1.0),
        ratio("64 tasks, 8 keys, 4 slots per key, holder yields once / bare FIFO async semaphore", slots, semaphore, target: 1.0),
        ratio("100 000 active keys / 1 key (capped)", many, capped, target: 1.5),
        Row(
            name: "memory per active key (three windows + slots)",
            value: bytesPerKey.isFinite ? "\(format(bytesPerKey, decimals: 0)) B" : "n/a",
            spread: "RSS growth / keys", target: "≤ 1024 B", met: bytesPerKey.isFinite ? bytesPerKey <= 1024 : nil),
        ratio("capped + 20-entry schedule / capped", scheduled, cappedAgain, target: 1.2),
        ratio("three-level chain / capped key", nested, cappedBeside, target: 2.0),
        Row(
            name: "contended (capped, no yield) per call / actor hop (net)", value: "\(format(contended.median / hopNet, decimals: 2))×",
            spread: "", target: "≤ 3.0×", met: contended.median / hopNet <= 3),
        ratio("contended chains / contended keys", contendedNested, contended, target: nil),
        ratio("10 000 scopes, 3 tiers, 100 overrides, tier on the key / no tiers", namedTiers, untiered, target: 1.1),
        ratio("the same, tier from the resolver (cached) / no tiers", resolvedTiers, untiered, target: 1.1),
        Row(
            name: "memory per active key, tiered / untiered",
            value: tieredBytesPerKey.isFinite && bytesPerKey.isFinite ? "\(format(tieredBytesPerKey / bytesPerKey, decimals: 2))×" : "n/a",
            spread: tieredBytesPerKey.isFinite ? "\(format(tieredBytesPerKey, decimals: 0)) B / \(format(bytesPerKey, decimals: 0)) B" : "",
            // RSS moves by a page here and there: within 2 % is "does not grow".
            target: "≤ 1.0×", met: tieredBytesPerKey.isFinite && bytesPerKey.isFinite ? tieredBytesPerKey <= bytesPerKey * 1.02 : nil),
        time("actor hop + atomic add (floor)", hop),
        time("atomic add alone", atomic),
        Row(name: "actor hop, net of the atomic", value: "\(format(hopNet)) ns", spread: "", target: "", met: nil),
        time("Mutex withLock", mutex),
        time("bare FIFO semaphore, contended, per call (floor)", semaphore),
        time("capped acquire + commit + release (+ atomic)", capped),
        time("no-op acquire + commit + release (+ atomic)", noop),
        time("contended gate, maxConcurrent only, per call", slots),
        time("100 000 keys, per call (+ atomic)", many),
        time("10 000 keys, no tiers, per call (+ atomic)", untiered),
        time("10 000 keys, tier on the key, per call (+ atomic)", namedTiers),
        time("10 000 keys, tier from the resolver, per call (+ atomic)", resolvedTiers),
    ]
    print("")
    print(
        "Summary (medians of \(options.repetitions) repetitions, \(cores) cores; spread = min … max; "
            + "ratios are to floors measured in this run)")
    print("")
    print("| | measured | spread | target | met |")
    print("|---|---:|---|---|---|")
    for row in rows {
        let met = row.met.map { $0 ? "yes" : "**no**" } ?? ""
        print("| \(row.name) | \(row.value) | \(row.spread) | \(row.target) | \(met) |")
    }
    print("")
    print("Floors are expectations, not checks: they show whether this machine and build are comparable.")
    // Keep every counter observable so no loop can be optimised away.
    let checksum =
        atomicCounter.value.load(ordering: .relaxed) &+ hopCounter.value.load(ordering: .relaxed)
        &+ locked.value.withLock { $0 } &+ cappedCounter.value.load(ordering: .relaxed)
        &+ noopCounter.value.load(ordering: .relaxed) &+ manyCounter.value.load(ordering: .relaxed)
        &+ scheduledCounter.value.load(ordering: .relaxed) &+ nestedCounter.value.load(ordering: .relaxed)
        &+ tierCounter.value.load(ordering: .relaxed)
    if checksum == 42 { print("") }
}

@main
struct PolicyGateFloors {
    static func main() async throws {
        try await runAll(Options(CommandLine.arguments))
    }
}
