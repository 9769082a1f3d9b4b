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

/// `tasks` tasks, task `t` on `keys[t % keys.count]`, each looping acquire/commit/release.
@concurrent
func contendedLoop(_ gate: PolicyService, _ keys: [PolicyKey], tasks: Int, callsPerTask: Int) async throws -> Duration {
    let clock = ContinuousClock()
    let start = clock.now
    try await withThrowingTaskGroup(of: Void.self) { group in
        for task in 0..<tasks {
            let key = keys[task % keys.count]
            group.addTask {
                for _ in 0..<callsPerTask {
                    var permit = try await gate.acquire(key, estimatedTokens: 100)
                    try permit.commitTokens(90)
                    permit.release()
                }
            }
        }
        try await group.waitForAll()
    }
    return clock.now - start
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

    // MARK: Summary
    let hopNet = hop.median - atomic.median
    struct Row {
        var name: String, value: Double, unit: String, target: String, pass: Bool?
    }
    let rows: [Row] = [
        Row(name: "atomic add alone", value: atomic.median, unit: "ns", target: "≈ 5", pass: nil),
        Row(name: "actor hop + atomic add", value: hop.median, unit: "ns", target: "≈ 63", pass: nil),
        Row(name: "actor hop (net of atomic)", value: hopNet, unit: "ns", target: "≈ 58", pass: nil),
        Row(name: "Mutex withLock", value: mutex.median, unit: "ns", target: "≈ 10", pass: nil),
        Row(name: "capped acquire+commit+release (+ atomic)", value: capped.median, unit: "ns", target: "", pass: nil),
        Row(name: "no-op acquire+commit+release (+ atomic)", value: noop.median, unit: "ns", target: "", pass: nil),
        Row(name: "capped + schedule, acquire+commit+release", value: scheduled.median, unit: "ns", target: "", pass: nil),
        Row(name: "contended, per call (64 tasks, 8 keys)", value: contended.median, unit: "ns", target: "", pass: nil),
        Row(name: "three-level chain, acquire+commit+release", value: nested.median, unit: "ns", target: "", pass: nil),
        Row(name: "contended chains, per call (64 tasks)", value: contendedNested.median, unit: "ns", target: "", pass: nil),
        Row(name: "100 000 keys, per call (+ atomic)", value: many.median, unit: "ns", target: "", pass: nil),
        Row(
            name: "capped / actor hop (both + atomic)", value: capped.median / hop.median, unit: "×", target: "≤ 2.5",
            pass: capped.median / hop.median <= 2.5),
        Row(
            name: "scheduled / capped (20-entry schedule)", value: scheduled.median / cappedAgain.median, unit: "×",
            target: "≤ 1.2", pass: scheduled.median / cappedAgain.median <= 1.2),
        Row(
            name: "no-op / actor hop (both + atomic)", value: noop.median / hop.median, unit: "×", target: "≤ 1.0",
            pass: noop.median / hop.median <= 1.0),
        Row(
            name: "contended per call / actor hop (net)", value: contended.median / hopNet, unit: "×", target: "≤ 3",
            pass: contended.median / hopNet <= 3),
        Row(
            name: "three-level chain / capped key", value: nested.median / cappedBeside.median, unit: "×", target: "≤ 2",
            pass: nested.median / cappedBeside.median <= 2),
        Row(
            name: "contended chains / contended keys", value: contendedNested.median / contended.median, unit: "×",
            target: "", pass: nil),
        Row(
            name: "100 000 keys / 1 key (capped)", value: many.median / capped.median, unit: "×", target: "≤ 1.5",
            pass: many.median / capped.median <= 1.5),
        Row(
            name: "resident bytes per key", value: bytesPerKey, unit: "B", target: "≤ 2048",
            pass: bytesPerKey.isFinite ? bytesPerKey <= 2048 : nil),
    ]
    print("")
    print("Summary (medians of \(options.repetitions) repetitions; spread = min … max per operation)")
    let spread: [String: String] = [
        "atomic add alone": "\(format(atomic.min)) … \(format(atomic.max))",
        "actor hop + atomic add": "\(format(hop.min)) … \(format(hop.max))",
        "Mutex withLock": "\(format(mutex.min)) … \(format(mutex.max))",
        "capped acquire+commit+release (+ atomic)": "\(format(capped.min)) … \(format(capped.max))",
        "no-op acquire+commit+release (+ atomic)": "\(format(noop.min)) … \(format(noop.max))",
        "capped + schedule, acquire+commit+release": "\(format(scheduled.min)) … \(format(scheduled.max))",
        "contended, per call (64 tasks, 8 keys)": "\(format(contended.min)) … \(format(contended.max))",
        "100 000 keys, per call (+ atomic)": "\(format(many.min)) … \(format(many.max))",
        "three-level chain, acquire+commit+release": "\(format(nested.min)) … \(format(nested.max))",
        "contended chains, per call (64 tasks)": "\(format(contendedNested.min)) … \(format(contendedNested.max))",
    ]
    let line = String(repeating: "-", count: 98)
    print(line)
    print("| \(pad("measure", 42)) | \(pad("median", 10, left: true)) | \(pad("spread", 17)) | \(pad("target", 8)) | \(pad("ok", 4)) |")
    print(line)
    for row in rows {
        let decimals = row.unit == "×" ? 2 : (row.unit == "B" ? 0 : 1)
        let value = "\(format(row.value, decimals: decimals)) \(row.unit)"
        let ok = row.pass.map { $0 ? "yes" : "NO" } ?? ""
        print(
            "| \(pad(row.name, 42)) | \(pad(value, 10, left: true)) | \(pad(spread[row.name] ?? "", 17)) | "
                + "\(pad(row.target, 8)) | \(pad(ok, 4)) |")
    }
    print(line)
    print("Floors are expectations, not checks: they show whether this machine and build are comparable.")
    // Keep every counter observable so no loop can be optimised away.
    let checksum =
        atomicCounter.value.load(ordering: .relaxed) &+ hopCounter.value.load(ordering: .relaxed)
        &+ locked.value.withLock { $0 } &+ cappedCounter.value.load(ordering: .relaxed)
        &+ noopCounter.value.load(ordering: .relaxed) &+ manyCounter.value.load(ordering: .relaxed)
        &+ scheduledCounter.value.load(ordering: .relaxed) &+ nestedCounter.value.load(ordering: .relaxed)
    if checksum == 42 { print("") }
}

@main
struct PolicyGateFloors {
    static func main() async throws {
        try await runAll(Options(CommandLine.arguments))
    }
}
