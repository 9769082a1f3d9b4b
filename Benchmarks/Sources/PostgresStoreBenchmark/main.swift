// The shared PostgreSQL store under load: admissions per second and acquire latency (p50, p99)
// for 1 and for 4 processes, uncontended (each task has its own key and no cap is reached),
// and how many statements each acquire sent (pg_stat_statements, through psql).
//
//   eval "$(bash .ci/postgres.sh start)"
//   swift run -c release --package-path Benchmarks --traits Postgres PostgresStoreBenchmark [--seconds 10] [--tasks 8]
//
// It runs copies of itself as the processes (`--child`), so all of them are this same binary.
#if Postgres
import Foundation
import PolicyGate
import PolicyGatePostgres

let arguments = Array(CommandLine.arguments.dropFirst())
func option(_ name: String, _ fallback: Int) -> Int {
    guard let index = arguments.firstIndex(of: "--\(name)"), index + 1 < arguments.count else { return fallback }
    return Int(arguments[index + 1]) ?? fallback
}
let seconds = option("seconds", 10)
let tasks = option("tasks", 8)
let url = ProcessInfo.processInfo.environment["POLICYGATE_POSTGRES_URL"] ?? "postgres://policygate@127.0.0.1:55432/postgres"

/// One process's run: `tasks` tasks, each acquiring and releasing on its own key.
func child() async throws {
    let provider = "bench"
    var configuration = PolicyConfiguration(limits: [
        provider: PolicyLimits(requestsPerMinute: 1_000_000_000, tokensPerMinute: 1_000_000_000_000, maxConcurrent: 1_000)
    ])
    configuration.storage[provider] = PolicyStorage(store: .postgres)
    let store = try PostgresPolicyStore(settings: PolicyPostgresSettings(url: url))
    let gate = try PolicyService(configuration: configuration, store: store)
    let end = ContinuousClock.now + .seconds(seconds)
    let start = ContinuousClock.now
    let latencies = await withTaskGroup(of: [Int64].self) { group in
        for index in 0..<tasks {
            group.addTask {
                let key = PolicyKey(provider: provider, scope: .custom(kind: "bench", id: "\(getpid())-\(index)"))
                var samples: [Int64] = []
                while ContinuousClock.now < end {
                    let before = ContinuousClock.now
                    guard let permit = try? await gate.acquire(key, estimatedTokens: 100) else { break }
                    let taken = ContinuousClock.now - before
                    samples.append(taken.components.seconds * 1_000_000 + taken.components.attoseconds / 1_000_000_000_000)
                    _ = consume permit
                }
                return samples
            }
        }
        var all: [Int64] = []
        for await samples in group { all += samples }
        return all.sorted()
    }
    let elapsed = ContinuousClock.now - start
    await gate.flushStoreWrites()
    store.close()
    let duration = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    let p50 = latencies.isEmpty ? 0 : latencies[latencies.count / 2]
    let p99 = latencies.isEmpty ? 0 : latencies[min(latencies.count - 1, latencies.count * 99 / 100)]
    print("\(latencies.count) \(duration) \(p50) \(p99)")
}

/// Runs `psql -Atc sql` and returns its output.
func psql(_ sql: String) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["psql", url, "-Atc", sql]
    let pipe = Pipe()
    process.standardOutput = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
}

struct Result { let admissions: Int, seconds: Double, p50: Int, p99: Int }

func run(processes: Int) throws -> [Result] {
    let children = try (0..<processes).map { _ in
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CommandLine.arguments[0])
        process.arguments = ["--child", "--seconds", "\(seconds)", "--tasks", "\(tasks)"]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        return (process, pipe)
    }
    return children.map { process, pipe in
        let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        let fields = text.split(whereSeparator: \.isWhitespace)
        guard fields.count == 4 else { return Result(admissions: 0, seconds: 1, p50: 0, p99: 0) }
        return Result(admissions: Int(fields[0]) ?? 0, seconds: Double(fields[1]) ?? 1, p50: Int(fields[2]) ?? 0, p99: Int(fields[3]) ?? 0)
    }
}

if arguments.contains("--child") {
    try await child()
} else {
    let store = try PostgresPolicyStore(settings: PolicyPostgresSettings(url: url))
    try await store.migrate()
    store.close()
    let statements = (try? psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")) != nil
    print("PostgresStoreBenchmark: \(tasks) tasks per process, \(seconds) s per run, uncontended (one key per task)")
    print("processes | admissions/s per process | total admissions/s | p50 acquire | p99 acquire | statements per acquire")
    for processes in [1, 4] {
        if statements { _ = try? psql("SELECT pg_stat_statements_reset()") }
        let results = try run(processes: processes)
        let perProcess = results.map { Double($0.admissions) / $0.seconds }
        let admissions = results.map(\.admissions).reduce(0, +)
        var perAcquire = "n/a (pg_stat_statements not loaded)"
        if statements, let admits = Double(try psql(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query ILIKE '%policygate.admit(%'")),
            admissions > 0
        {
            perAcquire = String(format: "%.3f", admits / Double(admissions))
        }
        let p50 = results.map(\.p50).max() ?? 0
        let p99 = results.map(\.p99).max() ?? 0
        print(String(
            format: "%9d | %24.0f | %18.0f | %8d µs | %8d µs | %@", processes,
            perProcess.reduce(0, +) / Double(max(1, perProcess.count)), perProcess.reduce(0, +), p50, p99, perAcquire))
    }
    print("(p50/p99: the worst process's; release statements are written in the background and not timed)")
}
#else
print("PostgresStoreBenchmark needs the Postgres trait: swift run -c release --package-path Benchmarks --traits Postgres PostgresStoreBenchmark")
#endif
