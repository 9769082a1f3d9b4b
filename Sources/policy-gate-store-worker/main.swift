// One OS process of the many-processes tests: a gate on the shared PostgreSQL
// store, driven from the command line.
//
//   policy-gate-store-worker hammer --provider P --tasks M --seconds S [caps…]
//       M tasks acquire, hold a few milliseconds, commit and release, for S seconds; a task
//       stops when a cap refuses it for longer than the run has left. Prints
//       "admitted N refused K" at the end.
//   policy-gate-store-worker hold --provider P --count N [caps…]
//       acquires N permits, prints "held N" and sleeps until killed (the lease test).
//
// caps: --rpm N --tpm N --concurrent N --estimate N --lease-seconds N
// The database comes from POLICYGATE_POSTGRES_URL (or PGHOST…).
#if Postgres
import Foundation
import PolicyGate
import PolicyGatePostgres

var arguments = Array(CommandLine.arguments.dropFirst())
guard let mode = arguments.first else {
    FileHandle.standardError.write(Data("usage: policy-gate-store-worker hammer|hold [options]\n".utf8))
    exit(2)
}
arguments.removeFirst()
var parsed: [String: String] = [:]
while arguments.count >= 2 {
    parsed[String(arguments[0].drop { $0 == "-" })] = arguments[1]
    arguments.removeFirst(2)
}
let options = parsed
func int(_ name: String, _ fallback: Int) -> Int { options[name].flatMap(Int.init) ?? fallback }

let provider = options["provider"] ?? "shared"
var limits = PolicyLimits()
limits.requestsPerMinute = options["rpm"].flatMap(Int.init)
limits.tokensPerMinute = options["tpm"].flatMap(Int.init)
limits.maxConcurrent = options["concurrent"].flatMap(Int.init)
var configuration = PolicyConfiguration(limits: [provider: limits])
configuration.storage[provider] = PolicyStorage(store: .postgres)
var storeOptions = PostgresPolicyStore.Options()
storeOptions.lease = .seconds(int("lease-seconds", 30))
storeOptions.maxConnections = int("connections", 10)
let estimate = int("estimate", 100)

do {
    let store = try PostgresPolicyStore(options: storeOptions, holder: options["holder"])
    try await store.checkSchema()  // the test migrated the schema as its owner
    let gate = try PolicyService(configuration: configuration, store: store)
    let key = PolicyKey(provider: provider)
    switch mode {
    case "hammer":
        let end = ContinuousClock.now + .seconds(int("seconds", 10))
        let tasks = int("tasks", 4)
        let admitted = await withTaskGroup(of: (Int, Int).self) { group in
            for index in 0..<tasks {
                group.addTask {
                    var count = 0
                    var refused = 0
                    var generator = SystemRandomNumberGenerator()
                    while ContinuousClock.now < end {
                        let remaining = end - ContinuousClock.now
                        do {
                            var permit = try await gate.acquire(key, estimatedTokens: estimate, maxWait: remaining)
                            count += 1
                            try? await Task.sleep(for: .milliseconds(Int.random(in: 1...20, using: &generator)))
                            try permit.commitTokens(Int.random(in: 0...estimate, using: &generator))
                        } catch let error as PolicyError where error.code == .timedOut || error.code == .rateLimited {
                            refused += 1  // a cap refused it for longer than the run has left
                            break
                        } catch {
                            FileHandle.standardError.write(Data("task \(index): \(error)\n".utf8))
                            break
                        }
                    }
                    return (count, refused)
                }
            }
            var total = (0, 0)
            for await (count, refused) in group { total = (total.0 + count, total.1 + refused) }
            return total
        }
        await gate.flushStoreWrites()
        print("admitted \(admitted.0) refused \(admitted.1)")
    case "hold":
        // Permits cannot go in an array (they are ~Copyable): hold each in a frame.
        func hold(_ remaining: Int, of count: Int) async throws {
            guard remaining > 0 else {
                FileHandle.standardOutput.write(Data("held \(count)\n".utf8))
                while true { try await Task.sleep(for: .seconds(3_600)) }
            }
            let permit = try await gate.acquire(key, estimatedTokens: estimate)
            try await hold(remaining - 1, of: count)
            _ = consume permit
        }
        try await hold(int("count", 1), of: int("count", 1))
    default:
        FileHandle.standardError.write(Data("unknown mode \(mode)\n".utf8))
        exit(2)
    }
    store.close()
} catch {
    FileHandle.standardError.write(Data("policy-gate-store-worker: \(error)\n".utf8))
    exit(1)
}
#else
import Foundation
FileHandle.standardError.write(Data("policy-gate-store-worker needs the Postgres trait (swift build --traits Postgres)\n".utf8))
exit(2)
#endif
