// Instruction counts per gate cycle, for callgrind (repeatable where timings are not):
//
//   bash Benchmarks/callgrind-cycles.sh
//
// which runs `CycleCount capped N` and `CycleCount noop N` under
// `valgrind --tool=callgrind` for two values of N and prints the difference per cycle, so that
// start-up and the first key's creation cancel out. One cycle is `tryAcquire` +
// `commitTokens` + release on one key: capped (requests per minute, tokens per minute and day,
// concurrency) or of a provider without caps; `split` is the capped cycle with the token caps
// on input and output apart, estimated and committed in parts; `nested` is the capped cycle on
// a three-level chain (the same caps at the account, the org and the user); `grouped` is the
// capped cycle for a model of a model group with the same caps (flat: the key, then the group);
// `tiered` is the capped cycle under a provider with three tiers and 100 per-scope overrides,
// the tier named on the key, and `resolved` the same with the tier from a (cached) resolver.

import BenchmarkFixtures
import PolicyGate

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

let arguments = CommandLine.arguments
guard arguments.count == 3, let iterations = Int(arguments[2]),
    ["capped", "noop", "split", "nested", "grouped", "tiered", "resolved", "nested-contended", "flat-contended"].contains(arguments[1])
else {
    print("usage: CycleCount capped|noop|split|nested|grouped|tiered|resolved|nested-contended|flat-contended ITERATIONS")
    exit(2)
}
if arguments[1].hasSuffix("-contended") {
    // 64 tasks on 8 keys, 4 slots each: 8 users in 2 orgs under one account, or 8 flat keys; for
    // timing and profiling the waiting path (not in the script's loop).
    let nested = arguments[1] == "nested-contended"
    let gate =
        nested
        ? try PolicyService(
            limits: ["n": typicalLimits(maxConcurrent: 64)],
            scopeLimits: ["n": ["org": typicalLimits(maxConcurrent: 16), "user": typicalLimits(maxConcurrent: 4)]])
        : try PolicyService(limits: ["n": typicalLimits(maxConcurrent: 4)])
    let keys = (0..<8).map { PolicyKey(provider: "n", scope: .user("u-\($0)"), within: nested ? [.org("o-\($0 % 2)")] : []) }
    try await withThrowingTaskGroup(of: Void.self) { group in
        for task in 0..<64 {
            group.addTask {
                for _ in 0..<(iterations / 64) {
                    var permit = try await gate.acquire(keys[task % 8], estimatedTokens: 100)
                    try permit.commitTokens(90)
                    permit.release()
                }
            }
        }
        try await group.waitForAll()
    }
    exit(0)
}
/// The tiered cases' configuration: the capped caps, three tiers that change some of them, and
/// 100 scopes with overrides (none of them the measured key's).
func tieredConfiguration(_ provider: String) -> PolicyConfiguration {
    var configuration = PolicyConfiguration(limits: [provider: typicalLimits(maxConcurrent: 8)])
    configuration.tiers[provider] = [
        "free": PolicyLimits(requestsPerMinute: 1_000_000, tokensPerDay: 90_000_000_000),
        "pro": PolicyLimits(requestsPerMinute: 2_000_000, maxConcurrent: 16),
        "team": PolicyLimits(tokensPerMinute: 4_000_000_000),
    ]
    configuration.scopeOverrides[provider] = Dictionary(
        uniqueKeysWithValues: (0..<100).map { (PolicyScope.user("o-\($0)"), PolicyLimits(requestsPerMinute: 5_000_000)) })
    return configuration
}

// The nested provider in a gate of its own, so that the other cases' provider table is the same
// as before it existed.
let gate =
    arguments[1] == "tiered" || arguments[1] == "resolved"
    ? try PolicyService(configuration: tieredConfiguration(arguments[1]))
    : arguments[1] == "nested"
        ? try PolicyService(
            limits: ["nested": typicalLimits(maxConcurrent: 8)],
            scopeLimits: ["nested": ["org": typicalLimits(maxConcurrent: 8), "user": typicalLimits(maxConcurrent: 8)]])
        : arguments[1] == "grouped"
            ? try PolicyService(
                limits: ["grouped": typicalLimits(maxConcurrent: 8)],
                modelGroups: ["grouped": ["g": PolicyModelGroup(match: ["model-*"], limits: typicalLimits(maxConcurrent: 8))]],
                clock: ContinuousClock())
            : try PolicyService(limits: ["capped": typicalLimits(maxConcurrent: 8), "split": typicalSplitLimits(maxConcurrent: 8)])
if arguments[1] == "resolved" { await gate.setTierResolver { _ in "pro" } }
let key = PolicyKey(
    provider: arguments[1], scope: .user("u-1"), within: arguments[1] == "nested" ? [.org("acme")] : [],
    tier: arguments[1] == "tiered" ? "pro" : nil)
var committed = 0
if arguments[1] == "split" {
    for _ in 0..<iterations {
        var permit = try gate.tryAcquire(key, estimatedInputTokens: 70, estimatedOutputTokens: 30)
        try permit.commitTokens(input: 60, output: 30)
        committed &+= permit.committedTokens
    }
} else if arguments[1] == "grouped" {
    for _ in 0..<iterations {
        var permit = try gate.tryAcquire(key, estimatedTokens: 100, model: "model-1")
        try permit.commitTokens(90)
        committed &+= permit.committedTokens
    }
} else {
    for _ in 0..<iterations {
        var permit = try gate.tryAcquire(key, estimatedTokens: 100)
        try permit.commitTokens(90)
        committed &+= permit.committedTokens
    }
}
print(committed)
