import Foundation
import PolicyGateTestKit
import Testing

@testable import PolicyGate

/// Seeded random traces through the nested-limits machine: many users in few organisations
/// under one account cap, every level's caps (requests and tokens per minute and hour,
/// concurrency) raised, lowered, removed and added at random points; calls admitted at once or
/// queued with and without deadlines, cancelled, committed above and below their estimate and
/// released in any order. An exact sliding log per level, written here independently of the
/// machine, checks at every step:
/// - **safety**: every admission fits every cap in force at its instant at *every* level of its
///   chain, counted exactly, and finds fewer permits in flight than each level's concurrency cap;
/// - **all or nothing**: each level's readout is never below its exact count and never above
///   the count over a window 1/60 longer (the gate's bucket granularity), so a call is in all of
///   its levels or none, and commits corrected every level;
/// - **FIFO per bucket**: waiters of one user are admitted in arrival order, and a call is never
///   admitted at once past a waiter of its own user;
/// - **no lost wake-up**: with only the machine's own wake-ups (the shell's timer) and releases
///   driving it, every waiter is eventually admitted or told, once; deadlines are not missed.
@Suite("Nested limits against an exact model")
struct NestedModelTests {
    @Test("random traces over three levels never break a cap at any level and never strand a waiter")
    func replay() {
        let seeds: [UInt64] = Environment.soak ? Array(1...200) : Array(1...16)
        var total = NestedHarness.Counts()
        for seed in seeds {
            let harness = NestedHarness(seed: seed)
            harness.run(steps: Environment.soak ? 20_000 : 1_500)
            total.add(harness.counts)
        }
        #expect(
            total.admitted > 2_000 && total.waited > 500 && total.timedOut > 50 && total.cancelled > 100
                && total.oversized > 5 && total.changes > 300 && total.refusedAt.count == 3 && total.batchAdmitted > 100,
            "not every path was exercised: \(total)")
        print("nested model: \(seeds.count) seeds: \(total)")
    }
}

private final class NestedHarness {
    typealias Machine = ChainStateMachine<Int>
    static let second: Int64 = 1_000_000_000
    static let lengths: [Int64] = [60 * second, 3_600 * second]
    static let users = 6
    static let orgs = 3

    struct Call {
        let user: Int
        let at: Int64
        var tokens: Int64
        var alive: Bool
        let admission: Admission
        let leaf: Int32
    }

    struct Waiter {
        let user: Int
        let tokens: Int64
        let deadline: Int64
        let arrival: Int
        /// Queued as a batch call (promoted after `aging`).
        var batch = false
    }

    /// Batch calls' aging in the model's provider.
    static let aging: Int64 = 30 * second

    struct Counts: CustomStringConvertible {
        var admitted = 0, waited = 0, timedOut = 0, cancelled = 0, oversized = 0, changes = 0, batchAdmitted = 0
        var refusedAt: Set<Int> = []

        mutating func add(_ o: Counts) {
            admitted += o.admitted; waited += o.waited; timedOut += o.timedOut; cancelled += o.cancelled
            oversized += o.oversized; changes += o.changes; batchAdmitted += o.batchAdmitted; refusedAt.formUnion(o.refusedAt)
        }

        var description: String {
            "admitted \(admitted), waited \(waited), timed out \(timedOut), cancelled \(cancelled), oversized \(oversized), "
                + "changes \(changes), batch admitted after waiting \(batchAdmitted), refused at levels \(refusedAt.sorted())"
        }
    }

    var rng: SeededRandomNumberGenerator
    var machine: Machine
    var now: Int64 = 0
    var generation: UInt64 = 1
    /// Caps per model level: 0 the account, 1... the organisations' kind, 2 the users' kind.
    var caps: [PolicyLimits]
    var calls: [Call] = []
    var waiters: [Int: Waiter] = [:]
    var nextID = 0
    var arrivals = 0
    var timerAt: Int64 = .max
    /// Per level kind and window: the first admission sequence the window counts (a window
    /// capped for the first time starts counting at the change, as documented).
    var trackedFrom: [[UInt64]] = [[1, 1], [1, 1], [1, 1]]
    var lastSequence: UInt64 = 0
    var counts = Counts()
    let seed: UInt64

    init(seed: UInt64) {
        self.seed = seed
        rng = SeededRandomNumberGenerator(seed: seed &* 7_919 &+ 13)
        caps = [PolicyLimits(), PolicyLimits(), PolicyLimits()]
        machine = Machine(provider: "p", account: CompiledLimits(.unlimited, generation: 0), kinds: [:], now: 0)
        for level in 0..<3 { caps[level] = randomCaps(level) }
        apply(machine.setLimits(account: compiledAccount(), kinds: compiledKinds(), now: now))
    }

    func randomCaps(_ level: Int) -> PolicyLimits {
        let scale = [4, 2, 1][level]
        func maybe(_ value: Int) -> Int? { Int.random(in: 0..<5, using: &rng) == 0 ? nil : value }
        return PolicyLimits(
            requestsPerMinute: maybe(Int.random(in: 1...3, using: &rng) * scale),
            requestsPerHour: Int.random(in: 0..<3, using: &rng) == 0 ? Int.random(in: 5...40, using: &rng) * scale : nil,
            tokensPerMinute: maybe(Int.random(in: 300...1_500, using: &rng) * scale),
            maxConcurrent: maybe(Int.random(in: 1...3, using: &rng) * scale))
    }

    static func tracks(_ limits: PolicyLimits, _ w: Int) -> Bool {
        w == 0
            ? limits.requestsPerMinute != nil || limits.tokensPerMinute != nil
            : limits.requestsPerHour != nil || limits.tokensPerHour != nil
    }

    /// Whether `call` counts in `level`'s window `w`.
    func counted(_ call: Call, _ level: (kind: Int, id: Int), _ w: Int) -> Bool {
        shares(call, level) && call.admission.sequence >= trackedFrom[level.kind][w]
    }

    func compiledAccount() -> CompiledLimits { CompiledLimits(caps[0], generation: generation) }
    func compiledKinds() -> [String: CompiledLimits] {
        ["org": CompiledLimits(caps[1], generation: generation), "user": CompiledLimits(caps[2], generation: generation)]
    }

    func key(_ user: Int) -> PolicyKey {
        PolicyKey(provider: "p", scope: .user("u\(user)"), within: [.org("o\(user % Self.orgs)")])
    }

    /// The model levels of `user`'s chain: (level kind index, id).
    func levels(_ user: Int) -> [(kind: Int, id: Int)] { [(0, 0), (1, user % Self.orgs), (2, user)] }

    func shares(_ call: Call, _ level: (kind: Int, id: Int)) -> Bool {
        switch level.kind {
        case 0: true
        case 1: call.user % Self.orgs == level.id
        default: call.user == level.id
        }
    }

    // MARK: Checks

    /// Every admission fits every level's caps in force, counted exactly.
    func checkAdmission(_ call: Call) {
        if ProcessInfo.processInfo.environment["NESTED_DEBUG"] != nil {
            print(
                "admit user \(call.user) tokens \(call.tokens) at \(now) leaf \(call.leaf) caps \(caps) alive \(calls.filter { $0.alive }.map(\.user))"
            )
        }
        for level in levels(call.user) {
            let limits = caps[level.kind]
            let inFlight = calls.filter { $0.alive && shares($0, level) }.count
            if let cap = limits.maxConcurrent {
                #expect(inFlight < cap, "seed \(seed): level \(level) admitted with \(inFlight) in flight, cap \(cap) at \(now)")
            }
            for (w, length) in Self.lengths.enumerated() {
                let inWindow = calls.filter { counted($0, level, w) && $0.at > now - length }
                let requestCap = w == 0 ? limits.requestsPerMinute : limits.requestsPerHour
                let tokenCap = w == 0 ? limits.tokensPerMinute : limits.tokensPerHour
                if let requestCap {
                    #expect(inWindow.count + 1 <= requestCap, "seed \(seed): level \(level) over its request cap at \(now)")
                }
                if let tokenCap {
                    let tokens = inWindow.reduce(0) { $0 + $1.tokens } + call.tokens
                    #expect(tokens <= Int64(tokenCap), "seed \(seed): level \(level) over its token cap: \(tokens) > \(tokenCap)")
                }
            }
        }
    }

    /// Each level's readout between the exact count and the count over a window 1/60 longer.
    func checkReadouts(user: Int) {
        let leaf = machine.existingLeaf(for: key(user))
        guard let leaf else { return }
        let chain = Array(machine.chain(of: leaf).reversed())
        for (index, level) in levels(user).enumerated() where index < chain.count {
            let usage = machine.usage(of: chain[index], now: now)
            for (w, length) in Self.lengths.enumerated() {
                guard let used = usage.first(where: { $0.window == PolicyWindow.at(w) }) else { continue }
                let exact = calls.filter { counted($0, level, w) && $0.at > now - length }
                let relaxed = calls.filter { counted($0, level, w) && $0.at > now - length - length / 60 }
                #expect(
                    used.requests >= Int64(exact.count) && used.requests <= Int64(relaxed.count),
                    "seed \(seed): level \(level) window \(w) counts \(used.requests), exact \(exact.count)...\(relaxed.count)")
                let exactTokens = exact.reduce(0) { $0 + $1.tokens }
                let relaxedTokens = relaxed.reduce(0) { $0 + $1.tokens }
                #expect(
                    used.tokens >= exactTokens && used.tokens <= relaxedTokens,
                    "seed \(seed): level \(level) window \(w) tokens \(used.tokens), exact \(exactTokens)...\(relaxedTokens)")
            }
        }
    }

    // MARK: Driving

    /// Carries out effects as the shell does: resumptions, and the timer.
    func apply(_ effects: Machine.Effects) {
        for resume in effects.resumes.items ?? [] {
            guard let waiter = waiters.removeValue(forKey: resume.payload) else {
                Issue.record("seed \(seed): waiter \(resume.payload) resumed twice or never queued")
                continue
            }
            switch resume.result {
            case .success(let admission):
                // FIFO per user within each class: nobody of the same user and class who arrived
                // earlier is still waiting (batch calls are promoted in arrival order).
                let earlier = waiters.values.filter {
                    $0.user == waiter.user && $0.arrival < waiter.arrival && $0.batch == waiter.batch
                }
                #expect(earlier.isEmpty, "seed \(seed): waiter of user \(waiter.user) admitted past an earlier one of its class")
                if waiter.batch { counts.batchAdmitted += 1 }
                let leaf = machine.existingLeaf(for: key(waiter.user)) ?? -1
                let call = Call(user: waiter.user, at: admission.time, tokens: waiter.tokens, alive: true, admission: admission, leaf: leaf)
                checkAdmission(call)
                lastSequence = max(lastSequence, admission.sequence)
                calls.append(call)
                counts.admitted += 1
                counts.waited += 1
            case .failure(let error):
                if error.code == .timedOut || error.code == .rateLimited {
                    #expect(waiter.deadline <= now, "seed \(seed): told to give up before its deadline")
                    counts.timedOut += 1
                } else if error.code == .oversized {
                    counts.oversized += 1
                } else {
                    Issue.record("seed \(seed): unexpected \(error)")
                }
            }
        }
        if !machine.hasWaiters {
            timerAt = .max
        } else if let wake = effects.wake, wake < timerAt {
            timerAt = wake
        }
    }

    /// Moves time to `target`, firing the timer on the way as the shell would.
    func advance(to target: Int64) {
        while timerAt <= target {
            now = max(now, timerAt)
            timerAt = .max
            apply(machine.tick(now: now))
        }
        now = target
    }

    func run(steps: Int) {
        for _ in 0..<steps {
            switch Int.random(in: 0..<100, using: &rng) {
            case 0..<40: arrive()
            case 40..<55: releaseOne()
            case 55..<65: commitOne()
            case 65..<72: cancelOne()
            case 72..<76: changeLimits()
            default: advance(to: now + Int64.random(in: 0...(20 * Self.second), using: &rng))
            }
            checkReadouts(user: Int.random(in: 0..<Self.users, using: &rng))
        }
        drain()
    }

    func arrive() {
        let user = Int.random(in: 0..<Self.users, using: &rng)
        let tokens = Int64.random(in: 1...700, using: &rng)
        let leaf = machine.leaf(for: key(user), now: now)
        if Bool.random(using: &rng) {
            let (result, effects) = machine.tryAdmit(
                leaf: leaf, tokens: TokenCounts(total: tokens), account: compiledAccount(), now: now)
            apply(effects)
            switch result {
            case .success(let admission):
                #expect(!waiters.values.contains { $0.user == user }, "seed \(seed): admitted at once past a waiter of its user")
                let call = Call(user: user, at: admission.time, tokens: tokens, alive: true, admission: admission, leaf: leaf)
                checkAdmission(call)
                lastSequence = max(lastSequence, admission.sequence)
                calls.append(call)
                counts.admitted += 1
            case .failure(let refusal):
                let level = refusal.level.scope == .global ? 0 : refusal.level.parents.isEmpty ? 1 : 2
                counts.refusedAt.insert(level)
            }
            return
        }
        let id = nextID
        nextID += 1
        arrivals += 1
        let deadline = Bool.random(using: &rng) ? Int64.max : now + Int64.random(in: 0...(90 * Self.second), using: &rng)
        let batch = Int.random(in: 0..<10, using: &rng) < 3
        waiters[id] = Waiter(user: user, tokens: tokens, deadline: deadline, arrival: arrivals, batch: batch)
        switch machine.enqueue(
            id: UInt64(id), leaf: leaf, tokens: TokenCounts(total: tokens), account: compiledAccount(), deadline: deadline, payload: id,
            now: now,
            priority: batch ? .batch : .interactive, aging: Self.aging)
        {
        case .admitted(let admission, let effects):
            waiters[id] = nil
            apply(effects)
            #expect(!waiters.values.contains { $0.user == user }, "seed \(seed): admitted at once past a waiter of its user")
            let call = Call(user: user, at: admission.time, tokens: tokens, alive: true, admission: admission, leaf: leaf)
            checkAdmission(call)
            lastSequence = max(lastSequence, admission.sequence)
            calls.append(call)
            counts.admitted += 1
        case .rejected(let error, let effects):
            waiters[id] = nil
            if error.code == .oversized { counts.oversized += 1 }
            apply(effects)
        case .enqueued(let effects):
            apply(effects)
        }
    }

    func releaseOne() {
        let alive = calls.indices.filter { calls[$0].alive }
        guard let i = alive.randomElement(using: &rng) else { return }
        calls[i].alive = false
        if machine.release(leaf: calls[i].leaf) { apply(machine.tick(now: now)) }
    }

    func commitOne() {
        let alive = calls.indices.filter { calls[$0].alive }
        guard let i = alive.randomElement(using: &rng) else { return }
        let new = Int64.random(in: 0...900, using: &rng)
        do {
            let freed = try machine.commit(
                leaf: calls[i].leaf, calls[i].admission, from: TokenCounts(total: calls[i].tokens), to: TokenCounts(total: new))
            // The model counts the new amount only while the call is still in some window; the
            // machine adjusts only windows still holding it, and the model's windows filter by time.
            calls[i].tokens = new
            if freed { apply(machine.tick(now: now)) }
        } catch {
            Issue.record("seed \(seed): commit failed: \(error)")
        }
    }

    func cancelOne() {
        guard let id = waiters.keys.sorted().randomElement(using: &rng) else { return }
        let (payload, effects) = machine.cancel(id: UInt64(id), now: now)
        #expect(payload == id, "seed \(seed): a queued waiter was not found")
        waiters[id] = nil
        counts.cancelled += 1
        apply(effects)
    }

    func changeLimits() {
        let level = Int.random(in: 0..<3, using: &rng)
        let next = randomCaps(level)
        for w in 0..<2 where Self.tracks(next, w) && !Self.tracks(caps[level], w) { trackedFrom[level][w] = lastSequence + 1 }
        caps[level] = next
        generation += 1
        counts.changes += 1
        apply(machine.setLimits(account: compiledAccount(), kinds: compiledKinds(), now: now))
    }

    /// Releases every call in flight, and those a release admits, until none is left.
    func releaseAll() {
        while let i = calls.firstIndex(where: \.alive) {
            calls[i].alive = false
            if machine.release(leaf: calls[i].leaf) { apply(machine.tick(now: now)) }
        }
    }

    /// Releases everything and lets only the machine's wake-ups run for two days: every waiter
    /// must have been admitted (then released) or told by then.
    func drain() {
        releaseAll()
        let end = now + 2 * 86_400 * Self.second
        while !waiters.isEmpty, timerAt <= end {
            advance(to: timerAt)
            releaseAll()
        }
        #expect(waiters.isEmpty, "seed \(seed): \(waiters.count) waiters stranded (timer at \(timerAt), now \(now))")
        advance(to: end)
        let idle = machine.isIdle(now: now)
        #expect(idle, "seed \(seed): the tree is not idle after everything ended: \(machine.debugSummary)")
    }
}
