import Foundation
import PolicyGate
import PolicyGateTestKit
import Testing

/// Seeded random traces of spend budgets through the public API on a manual clock: calls of
/// several models (one without a price) estimated in parts or as a total, commits over and
/// under the estimate (in parts, with cache reads, or as a total), releases, waiters cancelled
/// in the queue, time moving by seconds to days across month boundaries of a zone with an
/// offset and summer time, and random changes of the caps (set, lowered, raised, removed).
/// A log written here, independently of the gate, checks at every step:
/// - **costs**: every permit counts exactly the cost computed here (rounded up once per call);
/// - **safety**: every admission fits every spend cap in force, counted exactly (a call's
///   current cost over the exact sliding hour and day, and the calendar month);
/// - **no spurious refusal**: a refusal names a cap the call does not fit even as the gate
///   counts at most (a window's buckets held up to 1/60 of its length longer), and a call that
///   fits every cap so counted is admitted;
/// - **readouts**: the hour and day spend between the exact and the bucketed sums, the month's
///   spend exact.
@Suite("Spend budgets against an exact model")
struct SpendModelTests {
    @Test("random calls, commits, cancellations and changes of caps never overspend")
    func replay() async throws {
        // With POLICYGATE_SOAK=1, 100 seeds of 5 000 steps.
        let seeds: [UInt64] = Environment.soak ? Array(1...100) : Array(1...6)
        var total = SpendHarness.Counts()
        for seed in seeds {
            let harness = try SpendHarness(seed: seed)
            try await harness.run(steps: Environment.soak ? 5_000 : 600)
            total.add(harness.counts)
        }
        #expect(
            total.admitted > 400 && total.refused > 100 && total.commits > 300 && total.overCommits > 50
                && total.cancelled > 5 && total.changes > 20 && total.months > 3 && total.unpriced > 10,
            "not every path was exercised: \(total)")
        print("spend model: \(seeds.count) seeds: \(total)")
    }
}

/// A splitmix64 generator: the same trace for the same seed.
private struct SpendRandom: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

private final class SpendHarness {
    struct Counts: CustomStringConvertible {
        var admitted = 0, refused = 0, commits = 0, overCommits = 0, cancelled = 0, changes = 0, months = 0, unpriced = 0
        mutating func add(_ other: Counts) {
            admitted += other.admitted; refused += other.refused; commits += other.commits; overCommits += other.overCommits
            cancelled += other.cancelled; changes += other.changes; months += other.months; unpriced += other.unpriced
        }
        var description: String {
            "admitted \(admitted), refused \(refused), commits \(commits) (\(overCommits) over), cancelled \(cancelled), "
                + "changes \(changes), months \(months), unpriced \(unpriced)"
        }
    }

    /// Prices in micro-units per million tokens: input, output, cache reads.
    static let prices: [String: (Int64, Int64, Int64)] = [
        "big": (3_000_000, 15_000_000, 300_000), "small": (150_000, 600_000, 75_000), "odd": (1_234_567, 7_654_321, 1),
    ]
    static let hour: Int64 = 3_600_000_000_000
    static let day: Int64 = 86_400_000_000_000
    static let key = PolicyKey(provider: "p", scope: .user("u"))

    struct Call {
        let at: Int64
        /// The admission's place: windows (re)started after it do not hold it.
        let index: Int
        var cost: Int64
        let model: String
    }

    var random: SpendRandom
    let clock = ManualClock()
    let gate: PolicyService
    let start = Date(timeIntervalSince1970: 1_769_868_000)  // 2026-01-31 14:00 UTC
    let zone = TimeZone(identifier: "America/New_York")!
    var calendar: Calendar
    var caps: [Int64?]  // hour, day, month
    /// For each cap, the admission index its window counts from (its latest start).
    var since = [0, 0, 0]
    var calls: [Call] = []
    /// A held permit (an array cannot hold a noncopyable value itself); dropped, it releases.
    final class Held {
        var permit: PolicyPermit
        let call: Int
        init(_ permit: consuming PolicyPermit, call: Int) {
            self.permit = permit
            self.call = call
        }
    }

    var permits: [Held] = []
    var counts = Counts()
    var lastMonth: Int?

    init(seed: UInt64) throws {
        random = SpendRandom(state: seed)
        calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = zone
        caps = [nil, nil, nil]
        caps = Self.randomCaps(&random)
        gate = try PolicyService(
            configuration: PolicyConfiguration(limits: ["p": Self.limits(caps, zone: zone)]), clock: clock, startDate: start)
    }

    static func randomCaps(_ random: inout SpendRandom) -> [Int64?] {
        var caps: [Int64?] = [
            Bool.random(using: &random) ? Int64.random(in: 200_000...3_000_000, using: &random) : nil,
            Bool.random(using: &random) ? Int64.random(in: 1_000_000...20_000_000, using: &random) : nil,
            Bool.random(using: &random) ? Int64.random(in: 5_000_000...60_000_000, using: &random) : nil,
        ]
        if caps.allSatisfy({ $0 == nil }) { caps[2] = 10_000_000 }
        return caps
    }

    static func limits(_ caps: [Int64?], zone: TimeZone) -> PolicyLimits {
        var prices: [String: PolicyModelPrice] = [:]
        for (name, price) in Self.prices {
            prices[name] = PolicyModelPrice(
                input: PolicyMoney(microUnits: price.0), output: PolicyMoney(microUnits: price.1),
                cacheRead: PolicyMoney(microUnits: price.2))
        }
        return PolicyLimits(
            costPerHour: caps[0].map(PolicyMoney.init(microUnits:)), costPerDay: caps[1].map(PolicyMoney.init(microUnits:)),
            costPerMonth: caps[2].map(PolicyMoney.init(microUnits:)), prices: prices, costTimeZone: zone)
    }

    var now: Int64 { Int64(clock.now.offset.components.seconds) * 1_000_000_000 + clock.now.offset.components.attoseconds / 1_000_000_000 }

    /// ⌈Σ tokens × price / 10⁶⌉, as the gate documents it.
    static func cost(_ terms: [(Int64, Int64)]) -> Int64 {
        let sum = terms.reduce(Int64(0)) { $0 + $1.0 * $1.1 }
        return (sum + 999_999) / 1_000_000
    }

    /// The calendar month of service instant `t`, as `[start, end)` service instants.
    func month(at t: Int64) -> (Int64, Int64) {
        let date = start.addingTimeInterval(Double(t) / 1e9)
        let interval = calendar.dateInterval(of: .month, for: date)!
        func nanos(_ d: Date) -> Int64 { Int64((d.timeIntervalSince(start) * 1e9).rounded(.up)) }
        return (nanos(interval.start), nanos(interval.end))
    }

    /// The spend over window `w` at `t`: exact (calls after `t − length`) or as the gate counts
    /// at most (buckets of length/60 kept until 61 have passed).
    func spent(_ w: Int, at t: Int64, bucketed: Bool) -> Int64 {
        if w == 2 {
            let (from, to) = month(at: t)
            return calls.filter { $0.index >= since[2] && $0.at >= from && $0.at < to }.reduce(0) { $0 + $1.cost }
        }
        let length = w == 0 ? Self.hour : Self.day
        let width = length / 60
        return calls.filter { call in
            call.index >= since[w] && (bucketed ? call.at / width >= t / width - 60 : call.at > t - length)
        }.reduce(0) { $0 + $1.cost }
    }

    func run(steps: Int) async throws {
        for _ in 0..<steps {
            let roll = Int.random(in: 0..<100, using: &random)
            switch roll {
            case 0..<45: try acquire()
            case 45..<65: try commit()
            case 65..<75: release()
            case 75..<92: advance()
            case 92..<97: try await change()
            default: try await cancelWaiter()
            }
            try checkReadouts()
        }
        permits.removeAll()
    }

    func acquire() throws {
        let model = ["big", "small", "odd", "unknown"].randomElement(using: &random)!
        let split = Bool.random(using: &random)
        let input = Int64.random(in: 1...200_000, using: &random)
        let output = Int64.random(in: 1...50_000, using: &random)
        let t = now
        var expected: Int64 = -1
        if let price = Self.prices[model] {
            if split {
                expected = Self.cost([(input, price.0), (output, price.1)])
            } else {
                let higher: Int64 = max(price.0, price.1)
                expected = Self.cost([(input + output, higher)])
            }
        }
        do {
            let permit = try admit(split: split, input: input, output: output, model: model)
            #expect(expected >= 0, "admitted a call without a price")
            #expect(permit.countedCost.microUnits == expected, "estimated cost")
            // Safety: the new call fits every cap, counted exactly.
            for w in 0..<3 {
                if let cap = caps[w] {
                    #expect(spent(w, at: t, bucketed: false) + expected <= cap, "admitted past cap \(w)")
                }
            }
            calls.append(Call(at: t, index: calls.count, cost: expected, model: model))
            permits.append(Held(permit, call: calls.count - 1))
            counts.admitted += 1
        } catch {
            if expected < 0 {
                #expect(error.code == .unpriced, "\(error)")
                counts.unpriced += 1
                return
            }
            counts.refused += 1
            let cap = try #require(error.costCap, "\(error)")
            let w = [PolicyCostCap.costPerHour, .costPerDay, .costPerMonth].firstIndex(of: cap)!
            let limit = try #require(caps[w], "refused by a cap not set")
            if error.code == .oversized {
                #expect(expected > limit)
            } else {
                #expect(error.code == .rateLimited)
                #expect(spent(w, at: t, bucketed: true) + expected > limit, "refused by \(cap) with room: \(error)")
                #expect(error.retryAfter != nil)
            }
            // No spurious refusal: fitting every cap as the gate counts at most means admission.
            let fitsAll = (0..<3).allSatisfy { w in caps[w].map { spent(w, at: t, bucketed: true) + expected <= $0 } ?? true }
            #expect(!fitsAll, "refused a call that fits: \(error)")
        }
    }

    func admit(split: Bool, input: Int64, output: Int64, model: String) throws(PolicyError) -> PolicyPermit {
        if split {
            return try gate.tryAcquire(Self.key, estimatedInputTokens: Int(input), estimatedOutputTokens: Int(output), model: model)
        }
        return try gate.tryAcquire(Self.key, estimatedTokens: Int(input + output), model: model)
    }

    func commit() throws {
        guard !permits.isEmpty else { return }
        let i = Int.random(in: 0..<permits.count, using: &random)
        let call = permits[i].call
        let price = Self.prices[calls[call].model]!
        let before = calls[call].cost
        let new: Int64
        switch Int.random(in: 0..<3, using: &random) {
        case 0:
            let total = Int64.random(in: 0...300_000, using: &random)
            try permits[i].permit.commitTokens(Int(total))
            new = Self.cost([(total, max(price.0, price.1))])
        default:
            let (input, output) = (Int64.random(in: 0...250_000, using: &random), Int64.random(in: 0...60_000, using: &random))
            let cache = Int64.random(in: 0...100_000, using: &random)
            try permits[i].permit.commitTokens(input: Int(input), output: Int(output), cacheReads: Int(cache))
            new = Self.cost([(input, price.0), (output, price.1), (cache, price.2)])
        }
        #expect(permits[i].permit.countedCost.microUnits == new, "settled cost")
        calls[call].cost = new
        counts.commits += 1
        if new > before { counts.overCommits += 1 }
    }

    func release() {
        guard !permits.isEmpty else { return }
        permits.remove(at: Int.random(in: 0..<permits.count, using: &random))
    }

    func advance() {
        let seconds: Int64 =
            switch Int.random(in: 0..<4, using: &random) {
            case 0: Int64.random(in: 1...60, using: &random)
            case 1: Int64.random(in: 60...3_600, using: &random)
            case 2: Int64.random(in: 3_600...40_000, using: &random)
            default: Int64.random(in: 40_000...200_000, using: &random)
            }
        clock.advance(by: .seconds(seconds))
        let m = calendar.component(.month, from: start.addingTimeInterval(Double(now) / 1e9))
        if let lastMonth, m != lastMonth { counts.months += 1 }
        lastMonth = m
    }

    func change() async throws {
        let next = Self.randomCaps(&random)
        try await gate.setLimits(Self.limits(next, zone: zone), for: "p")
        // A window whose cap is added starts empty; one whose cap is removed forgets.
        for w in 0..<3 where (caps[w] == nil) != (next[w] == nil) { since[w] = calls.count }
        caps = next
        counts.changes += 1
    }

    func cancelWaiter() async throws {
        // A call that does not fit now waits; cancelled, it spends nothing.
        let before = (0..<3).map { caps[$0] == nil ? 0 : spent($0, at: now, bucketed: false) }
        let (gate, key) = (self.gate, Self.key)
        let waiter = Task {
            _ = try await gate.acquire(key, estimatedInputTokens: 10_000_000, estimatedOutputTokens: 1, model: "small")
        }
        // 10 000 000 input tokens of "small" cost 1.5: over the hour's cap, or waiting, or in.
        var queued = false
        for _ in 0..<2_000 {
            if gate.currentState(for: Self.key).queued == 1 { queued = true; break }
            await Task.yield()
        }
        waiter.cancel()
        let result = await waiter.result
        if queued {
            #expect(throws: CancellationError.self) { try result.get() }
            counts.cancelled += 1
            let after = (0..<3).map { caps[$0] == nil ? 0 : spent($0, at: now, bucketed: false) }
            #expect(before == after)
        } else if case .success = result {
            // Admitted and released at once: its estimate stays spent, as any permit's.
            calls.append(Call(at: now, index: calls.count, cost: Self.cost([(10_000_000, 150_000), (1, 600_000)]), model: "small"))
        }
    }

    func checkReadouts() throws {
        let t = now
        let state = gate.currentState(for: Self.key)
        let caps: [PolicyCostCap] = [.costPerHour, .costPerDay, .costPerMonth]
        for (w, cap) in caps.enumerated() {
            let readout = state.spend.first { $0.cap == cap }
            guard let limit = self.caps[w] else {
                #expect(readout == nil)
                continue
            }
            let spend = try #require(readout, "no readout for \(cap)")
            #expect(spend.limit.microUnits == limit)
            if w == 2 {
                #expect(spend.spent.microUnits == spent(2, at: t, bucketed: false), "month's spend")
            } else {
                let (low, high) = (spent(w, at: t, bucketed: false), spent(w, at: t, bucketed: true))
                #expect(
                    spend.spent.microUnits >= low && spend.spent.microUnits <= high, "\(cap) spend \(spend.spent) not in \(low)...\(high)")
            }
        }
    }
}

/// The same trace over nested limits: users in orgs under one account, spend caps at every
/// level (random, changed at random), each level checked against its own exact log.
@Suite("Nested spend budgets against an exact model")
struct NestedSpendModelTests {
    @Test("random calls, commits and changes of caps never overspend any level")
    func replay() async throws {
        let soak = Environment.soak  // 60 seeds of 4 000 steps
        var admitted = 0, refusedPerLevel = [0, 0, 0]
        for seed in (soak ? Array(1...60) : Array(UInt64(1)...4)) {
            let harness = try NestedSpendHarness(seed: seed)
            try await harness.run(steps: soak ? 4_000 : 600)
            admitted += harness.admitted
            for l in 0..<3 { refusedPerLevel[l] += harness.refused[l] }
        }
        #expect(admitted > 500 && refusedPerLevel.allSatisfy { $0 > 10 }, "admitted \(admitted), refused per level \(refusedPerLevel)")
        print("nested spend model: admitted \(admitted), refused at account/org/user \(refusedPerLevel)")
    }
}

private final class NestedSpendHarness {
    final class Held {
        var permit: PolicyPermit
        let call: Int
        init(_ permit: consuming PolicyPermit, call: Int) {
            self.permit = permit
            self.call = call
        }
    }

    struct Call {
        let at: Int64
        let index: Int
        var cost: Int64
        let user: Int
        /// Admitted while some level had spend caps: only then is a call priced.
        let costed: Bool
    }

    static let hour: Int64 = 3_600_000_000_000
    static let day: Int64 = 86_400_000_000_000
    /// 3 units input, 15 output per million tokens.
    static let price = PolicyModelPrice(input: PolicyMoney(microUnits: 3_000_000), output: PolicyMoney(microUnits: 15_000_000))
    static let users = 6
    static func org(of user: Int) -> Int { user % 2 }
    static func key(_ user: Int) -> PolicyKey {
        PolicyKey(provider: "p", scope: .user("u\(user)"), within: [.org("o\(org(of: user))")])
    }

    var random: SpendRandom
    let clock = ManualClock()
    let gate: PolicyService
    let start = Date(timeIntervalSince1970: 1_769_868_000)
    let zone = TimeZone(identifier: "Asia/Kolkata")!  // UTC+5:30
    var calendar = Calendar(identifier: .gregorian)
    /// caps[level][window]: level 0 account, 1 org, 2 user.
    var caps: [[Int64?]]
    var since: [[Int]] = Array(repeating: [0, 0, 0], count: 3)
    var calls: [Call] = []
    var permits: [Held] = []
    var admitted = 0
    var refused = [0, 0, 0]

    init(seed: UInt64) throws {
        var generator = SpendRandom(state: seed &* 7_919)
        caps = [Self.randomCaps(level: 0, &generator), Self.randomCaps(level: 1, &generator), Self.randomCaps(level: 2, &generator)]
        random = generator
        let (account, kinds) = Self.limits(caps, zone: TimeZone(identifier: "Asia/Kolkata")!)
        var configuration = PolicyConfiguration(limits: ["p": account])
        configuration.scopeLimits = ["p": kinds]
        gate = try PolicyService(configuration: configuration, clock: clock, startDate: start)
        calendar.timeZone = zone
    }

    static func randomCaps(level: Int, _ random: inout SpendRandom) -> [Int64?] {
        let scale: Int64 = [4, 2, 1][level]
        return [
            Bool.random(using: &random) ? scale * Int64.random(in: 300_000...1_500_000, using: &random) : nil,
            Bool.random(using: &random) ? scale * Int64.random(in: 1_000_000...6_000_000, using: &random) : nil,
            Bool.random(using: &random) ? scale * Int64.random(in: 3_000_000...15_000_000, using: &random) : nil,
        ]
    }

    static func limits(_ caps: [[Int64?]], zone: TimeZone) -> (PolicyLimits, [String: PolicyLimits]) {
        func level(_ c: [Int64?]) -> PolicyLimits {
            PolicyLimits(
                costPerHour: c[0].map(PolicyMoney.init(microUnits:)), costPerDay: c[1].map(PolicyMoney.init(microUnits:)),
                costPerMonth: c[2].map(PolicyMoney.init(microUnits:)))
        }
        var account = level(caps[0])
        account.prices = ["m*": price]
        account.costTimeZone = zone
        account.requestsPerDay = 1_000_000  // the account is gated even with no spend cap of its own
        var org = level(caps[1]), user = level(caps[2])
        if !org.hasCostCaps { org.requestsPerDay = 1_000_000 }
        if !user.hasCostCaps { user.requestsPerDay = 1_000_000 }
        return (account, ["org": org, "user": user])
    }

    var now: Int64 { Int64(clock.now.offset.components.seconds) * 1_000_000_000 + clock.now.offset.components.attoseconds / 1_000_000_000 }

    func month(at t: Int64) -> (Int64, Int64) {
        let interval = calendar.dateInterval(of: .month, for: start.addingTimeInterval(Double(t) / 1e9))!
        func nanos(_ d: Date) -> Int64 { Int64((d.timeIntervalSince(start) * 1e9).rounded(.up)) }
        return (nanos(interval.start), nanos(interval.end))
    }

    /// Whether `call` counts at `level` for a call of `user`.
    func shares(_ call: Call, _ level: Int, _ user: Int) -> Bool {
        switch level {
        case 0: true
        case 1: Self.org(of: call.user) == Self.org(of: user)
        default: call.user == user
        }
    }

    func spent(_ level: Int, _ w: Int, user: Int, at t: Int64, bucketed: Bool) -> Int64 {
        let relevant = calls.filter { $0.index >= since[level][w] && shares($0, level, user) }
        if w == 2 {
            let (from, to) = month(at: t)
            return relevant.filter { $0.at >= from && $0.at < to }.reduce(0) { $0 + $1.cost }
        }
        let length = w == 0 ? Self.hour : Self.day
        let width = length / 60
        return relevant.filter { bucketed ? $0.at / width >= t / width - 60 : $0.at > t - length }.reduce(0) { $0 + $1.cost }
    }

    func run(steps: Int) async throws {
        for _ in 0..<steps {
            switch Int.random(in: 0..<100, using: &random) {
            case 0..<50: acquire()
            case 50..<70: try commit()
            case 70..<80: if !permits.isEmpty { permits.remove(at: Int.random(in: 0..<permits.count, using: &random)) }
            case 80..<96:
                clock.advance(
                    by: .seconds(Int64.random(in: 1...Int64([60, 3_600, 40_000, 200_000].randomElement(using: &random)!), using: &random)))
            default: try await change()
            }
            check()
        }
        permits.removeAll()
    }

    func acquire() {
        let user = Int.random(in: 0..<Self.users, using: &random)
        let (input, output) = (Int64.random(in: 1...150_000, using: &random), Int64.random(in: 1...40_000, using: &random))
        // Without any spend cap the provider prices nothing: the call counts for 0.
        let costed = caps.contains { $0.contains { $0 != nil } }
        let cost = costed ? (input * 3_000_000 + output * 15_000_000 + 999_999) / 1_000_000 : 0
        let t = now
        do {
            let permit = try gate.tryAcquire(
                Self.key(user), estimatedInputTokens: Int(input), estimatedOutputTokens: Int(output), model: "m1")
            #expect(permit.countedCost.microUnits == cost)
            for level in 0..<3 {
                for w in 0..<3 {
                    if let cap = caps[level][w] {
                        #expect(spent(level, w, user: user, at: t, bucketed: false) + cost <= cap, "admitted past level \(level) cap \(w)")
                    }
                }
            }
            calls.append(Call(at: t, index: calls.count, cost: cost, user: user, costed: costed))
            permits.append(Held(permit, call: calls.count - 1))
            admitted += 1
        } catch {
            let level = error.level.map { $0.scope == .global ? 0 : ($0.parents.isEmpty ? 1 : 2) } ?? -1
            guard let cap = error.costCap, level >= 0 else {
                Issue.record("refused without a cost cap and level: \(error)")
                return
            }
            refused[level] += 1
            let w = [PolicyCostCap.costPerHour, .costPerDay, .costPerMonth].firstIndex(of: cap)!
            guard let limit = caps[level][w] else {
                Issue.record("refused by a cap not set: \(error)")
                return
            }
            #expect(error.code == .oversized ? cost > limit : spent(level, w, user: user, at: t, bucketed: true) + cost > limit, "\(error)")
            let fitsAll = (0..<3).allSatisfy { l in
                (0..<3).allSatisfy { w in caps[l][w].map { spent(l, w, user: user, at: t, bucketed: true) + cost <= $0 } ?? true }
            }
            #expect(!fitsAll, "refused a call that fits every level: \(error)")
        }
    }

    func commit() throws {
        guard !permits.isEmpty else { return }
        let held = permits[Int.random(in: 0..<permits.count, using: &random)]
        let (input, output) = (Int64.random(in: 0...200_000, using: &random), Int64.random(in: 0...60_000, using: &random))
        try held.permit.commitTokens(input: Int(input), output: Int(output))
        let cost = calls[held.call].costed ? (input * 3_000_000 + output * 15_000_000 + 999_999) / 1_000_000 : 0
        #expect(held.permit.countedCost.microUnits == cost)
        calls[held.call].cost = cost
    }

    func change() async throws {
        let next = (0..<3).map { Self.randomCaps(level: $0, &random) }
        let (account, kinds) = Self.limits(next, zone: zone)
        var configuration = PolicyConfiguration(limits: ["p": account])
        configuration.scopeLimits = ["p": kinds]
        try await gate.apply(configuration)
        for level in 0..<3 {
            for w in 0..<3 where (caps[level][w] == nil) != (next[level][w] == nil) { since[level][w] = calls.count }
        }
        caps = next
    }

    func check() {
        let t = now
        let user = Int.random(in: 0..<Self.users, using: &random)
        let levels = gate.currentState(for: Self.key(user)).levels
        guard levels.count == 3 else {
            Issue.record("levels: \(levels.count)")
            return
        }
        for level in 0..<3 {
            for (w, cap) in [PolicyCostCap.costPerHour, .costPerDay, .costPerMonth].enumerated() {
                let readout = levels[level].spend.first { $0.cap == cap }
                guard caps[level][w] != nil else {
                    #expect(readout == nil)
                    continue
                }
                // A level not in the tree (never used, or forgotten idle) reads nothing.
                let spent = readout?.spent.microUnits ?? 0
                if w == 2 {
                    #expect(spent == self.spent(level, 2, user: user, at: t, bucketed: false), "level \(level) month")
                } else {
                    let (low, high) = (
                        self.spent(level, w, user: user, at: t, bucketed: false), self.spent(level, w, user: user, at: t, bucketed: true)
                    )
                    #expect(spent >= low && spent <= high, "level \(level) \(cap): \(spent) not in \(low)...\(high)")
                }
            }
        }
    }
}
