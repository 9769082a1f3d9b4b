// The shared PostgreSQL store under load: full calls (acquire, commitTokens, release written)
// per second and their latency (p50, p99) for 1 and 4 processes, over many keys (one per task)
// and over one hot key (every task of every process), with the statements and NOTIFYs each call
// cost; and, in the same run, pgbench's rate for one single-row INSERT-and-COMMIT transaction
// per call on the same server with as many clients: the floor of a durable write.
//
//   POLICYGATE_PG_FSYNC=on eval "$(bash .ci/postgres.sh start)"   # fsync on, as a real server
//   swift run -c release --package-path Benchmarks --traits Postgres PostgresStoreBenchmark [--seconds 10] [--tasks 8]
//
// It runs copies of itself as the processes (`--child`), so all of them are this same binary.
// Statements are counted with pg_stat_statements (top-level statements naming `policygate.`),
// NOTIFYs by a LISTEN connection of the parent's.
#if Postgres
import Foundation
import PolicyGate
import PolicyGatePostgres
import Synchronization

let arguments = Array(CommandLine.arguments.dropFirst())
func option(_ name: String, _ fallback: Int) -> Int {
    guard let index = arguments.firstIndex(of: "--\(name)"), index + 1 < arguments.count else { return fallback }
    return Int(arguments[index + 1]) ?? fallback
}
func textOption(_ name: String) -> String? {
    guard let index = arguments.firstIndex(of: "--\(name)"), index + 1 < arguments.count else { return nil }
    return arguments[index + 1]
}
let seconds = option("seconds", 10)
let tasks = option("tasks", 8)
let url = ProcessInfo.processInfo.environment["POLICYGATE_POSTGRES_URL"] ?? "postgres://policygate@127.0.0.1:55432/postgres"
/// For psql and pgbench (the floor's table, pg_stat_statements): a superuser's URL when
/// `.ci/postgres.sh` exports one, since the application's role may only call the schema's functions.
let adminURL = ProcessInfo.processInfo.environment["POLICYGATE_POSTGRES_ADMIN_URL"] ?? url

/// One process's run: `tasks` tasks making full calls, each on its own key or all on `hot`.
func child() async throws {
    let provider = "bench"
    var configuration = PolicyConfiguration(limits: [
        provider: PolicyLimits(requestsPerMinute: 1_000_000_000, tokensPerMinute: 1_000_000_000_000, maxConcurrent: 1_000)
    ])
    configuration.storage[provider] = PolicyStorage(store: .postgres)
    let store = try PostgresPolicyStore(settings: PolicyPostgresSettings(url: url))
    let gate = try PolicyService(configuration: configuration, store: store)
    let hot = textOption("hot")
    let end = ContinuousClock.now + .seconds(seconds)
    let start = ContinuousClock.now
    let latencies = await withTaskGroup(of: [Int64].self) { group in
        for index in 0..<tasks {
            group.addTask {
                let key = PolicyKey(provider: provider, scope: .custom(kind: "bench", id: hot ?? "\(getpid())-\(index)"))
                var samples: [Int64] = []
                while ContinuousClock.now < end {
                    let before = ContinuousClock.now
                    guard var permit = try? await gate.acquire(key, estimatedTokens: 100) else { break }
                    try? permit.commitTokens(42)
                    _ = consume permit
                    // The call ends when its release is written (this waits for the writes
                    // issued before it, the other tasks' included).
                    await gate.flushStoreWrites()
                    let taken = ContinuousClock.now - before
                    samples.append(taken.components.seconds * 1_000_000 + taken.components.attoseconds / 1_000_000_000_000)
                }
                return samples
            }
        }
        var all: [Int64] = []
        for await samples in group { all += samples }
        return all.sorted()
    }
    let elapsed = ContinuousClock.now - start
    store.close()
    let duration = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    let p50 = latencies.isEmpty ? 0 : latencies[latencies.count / 2]
    let p99 = latencies.isEmpty ? 0 : latencies[min(latencies.count - 1, latencies.count * 99 / 100)]
    print("\(latencies.count) \(duration) \(p50) \(p99)")
}

/// Runs `executable arguments` and returns its standard output.
func run(_ executable: String, _ arguments: [String]) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = FileHandle.nullDevice
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
}

/// PostgreSQL's client programs (psql, pgbench): on PATH, or in Debian's server directory.
func tool(_ name: String) -> String? {
    let directories =
        (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
        + ((try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []).sorted().reversed()
        .map { "/usr/lib/postgresql/\($0)/bin" }
    return directories.map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
}

func psql(_ sql: String) throws -> String {
    guard let psql = tool("psql") else { throw CocoaError(.executableNotLoadable) }
    return try run(psql, [adminURL, "-Atc", sql])
}

/// pgbench's transactions per second for `clients` clients (`threads` threads), each
/// transaction one single-row INSERT, committed: rows counted over `seconds` after a second of
/// warm-up (pgbench 15 was seen not to stop at its `-T` on this machine, so it is killed here).
func pgbenchFloor(clients: Int, threads: Int) async throws -> Double? {
    guard let pgbench = tool("pgbench") else { return nil }
    _ = try psql("CREATE TABLE IF NOT EXISTS public.policygate_bench_floor (id bigserial PRIMARY KEY, v integer NOT NULL)")
    let script = FileManager.default.temporaryDirectory.appendingPathComponent("policygate-floor-\(getpid()).sql")
    try "INSERT INTO public.policygate_bench_floor (v) VALUES (1);\n".write(to: script, atomically: true, encoding: .utf8)
    defer { try? FileManager.default.removeItem(at: script) }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: pgbench)
    process.arguments = ["-n", "-c", "\(clients)", "-j", "\(threads)", "-T", "\(seconds + 5)", "-f", script.path, adminURL]
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    try process.run()
    defer {
        // SIGKILL: pgbench 15 was seen to ignore SIGTERM here as well.
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        _ = try? psql("TRUNCATE public.policygate_bench_floor")
    }
    try await Task.sleep(for: .seconds(1))
    let count = { Double(try psql("SELECT count(*) FROM public.policygate_bench_floor")) ?? 0 }
    let (before, start) = (try count(), ContinuousClock.now)
    try await Task.sleep(for: .seconds(seconds))
    let (after, elapsed) = (try count(), ContinuousClock.now - start)
    return (after - before) / (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
}

/// A count shared with a callback.
final class Counter: Sendable {
    private let count = Mutex(0)
    var value: Int { count.withLock { $0 } }
    func add() { count.withLock { $0 += 1 } }
}

struct Result { let calls: Int, seconds: Double, p50: Int, p99: Int }

func runChildren(processes: Int, hot: String?) throws -> [Result] {
    let children = try (0..<processes).map { _ in
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CommandLine.arguments[0])
        process.arguments = ["--child", "--seconds", "\(seconds)", "--tasks", "\(tasks)"] + (hot.map { ["--hot", $0] } ?? [])
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        return (process, pipe)
    }
    return children.map { process, pipe in
        let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        let fields = text.split(whereSeparator: \.isWhitespace)
        guard fields.count == 4 else { return Result(calls: 0, seconds: 1, p50: 0, p99: 0) }
        return Result(calls: Int(fields[0]) ?? 0, seconds: Double(fields[1]) ?? 1, p50: Int(fields[2]) ?? 0, p99: Int(fields[3]) ?? 0)
    }
}

if arguments.contains("--child") {
    try await child()
} else {
    // Migrated as the schema's owner (`.ci/postgres.sh` exports its URL and password), granting
    // the application's role the store runs as; one role for both on a server set up by hand.
    let environment = ProcessInfo.processInfo.environment
    if let ownerURL = environment["POLICYGATE_POSTGRES_OWNER_URL"] {
        let owner = try PostgresPolicyStore(
            settings: PolicyPostgresSettings(
                url: ownerURL,
                passwordEnvironmentVariable: environment["POLICYGATE_POSTGRES_OWNER_PASSWORD"] != nil
                    ? "POLICYGATE_POSTGRES_OWNER_PASSWORD" : nil))
        try await owner.migrate(runtimeRole: URLComponents(string: url)?.user)
        owner.close()
    }
    let store = try PostgresPolicyStore(settings: PolicyPostgresSettings(url: url))
    if environment["POLICYGATE_POSTGRES_OWNER_URL"] == nil { try await store.migrate() }
    // Counts the NOTIFYs sent on the channel (a nil is the listener's own "look again").
    let notifications = Counter()
    store.observeChanges { name in if name != nil { notifications.add() } }
    try await Task.sleep(for: .seconds(1))  // LISTEN issued
    let statements = (try? psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements SCHEMA public")) != nil
    let fsync = (try? psql("SHOW fsync")) ?? "?"
    let commit = (try? psql("SHOW synchronous_commit")) ?? "?"
    let version = (try? psql("SHOW server_version")) ?? "?"
    print(
        "PostgresStoreBenchmark: PostgreSQL \(version), fsync = \(fsync), synchronous_commit = \(commit); "
            + "\(tasks) tasks per process, \(seconds) s per run; a call = acquire + commitTokens + release written")
    print(
        "keys | processes | calls/s per process | calls/s in all | p50 call | p99 call | statements/call | NOTIFYs/call | floor tx/s (pgbench, same clients) | calls / floor"
    )
    for hot in [false, true] {
        for processes in [1, 4] {
            if statements { _ = try? psql("SELECT pg_stat_statements_reset()") }
            let before = notifications.value
            let results = try runChildren(processes: processes, hot: hot ? "hot-\(getpid())-\(processes)" : nil)
            try await Task.sleep(for: .milliseconds(300))  // the last notifications arrive
            let notified = notifications.value - before
            let perProcess = results.map { Double($0.calls) / $0.seconds }
            let calls = results.map(\.calls).reduce(0, +)
            var perCall = "n/a"
            if statements, calls > 0,
                let sent = Double(
                    try psql(
                        """
                        SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
                        WHERE query ILIKE '%policygate.%' AND query NOT ILIKE '%pg_stat_statements%'
                        """))
            {
                perCall = String(format: "%.3f", sent / Double(calls))
            }
            let floor = try await pgbenchFloor(clients: processes * tasks, threads: processes)
            let total = perProcess.reduce(0, +)
            print(
                String(
                    format: "%@ | %d × %d | %.0f | %.0f | %.1f ms | %.1f ms | %@ | %.3f | %@ | %@",
                    hot ? "one hot key" : "one per task", processes, tasks, total / Double(max(1, perProcess.count)), total,
                    Double(results.map(\.p50).max() ?? 0) / 1_000, Double(results.map(\.p99).max() ?? 0) / 1_000, perCall,
                    Double(notified) / Double(max(1, calls)), floor.map { String(format: "%.0f", $0) } ?? "n/a (no pgbench)",
                    floor.map { String(format: "%.0f %%", 100 * total / $0) } ?? "n/a"))
        }
    }
    store.close()
    print("(p50/p99: the worst process's; statements: pg_stat_statements' top-level statements naming policygate.,")
    print(" renewals and the listener's included; NOTIFYs: received by a LISTEN connection)")
}
#else
print(
    "PostgresStoreBenchmark needs the Postgres trait: swift run -c release --package-path Benchmarks --traits Postgres PostgresStoreBenchmark"
)
#endif
