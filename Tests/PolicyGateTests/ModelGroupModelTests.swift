import Foundation
import PolicyGateTestKit
import Testing

@testable import PolicyGate

/// Seeded random traces through the tree with model groups, in both shapes: nested (the groups
/// count for the whole account, between the organisations and the account) and flat (the
/// provider's caps and its groups count per key). Calls name one of five models — two of group
/// `a`, one of group `b`, one of no group, or none — while every level's caps change, group `a`
/// (the first by name, so `b`'s number shifts) is removed and added back, and calls are queued,
/// cancelled, timed out, committed above and below their estimate and released in any order.
/// An exact log per level checks at every step that every admission fits every cap in force at
/// every level of its chain (the group's included), that readouts are never below the exact
/// count, that waiters of one key and class are served in order, and that nobody is stranded.
@Suite("Model groups against an exact model")
struct ModelGroupModelTests {
    @Test("random traces with model groups never break a cap at any level and never strand a waiter", arguments: [false, true])
    func replay(flat: Bool) {
        let seeds: [UInt64] = Environment.soak ? Array(1...200) : Array(1...12)
        var total = GroupHarness.Counts()
        for seed in seeds {
            let harness = GroupHarness(seed: seed, flat: flat)
            harness.run(steps: Environment.soak ? 20_000 : 1_500)
            total.add(harness.counts)
        }
        #expect(
            total.admitted > 1_500 && total.waited > 300 && total.timedOut > 30 && total.cancelled > 80
                && total.changes > 200 && total.groupRefusals > 20 && total.groupsRemoved > 10 && total.inGroup > 500,
            "not every path was exercised: \(total)")
        print("model groups (\(flat ? "flat" : "nested")): \(seeds.count) seeds: \(total)")
    }
}

private final class GroupHarness {
    typealias Machine = ChainStateMachine<Int>
    static let second: Int64 = 1_000_000_000
    static let lengths: [Int64] = [60 * second, 3_600 * second]
    static let users = 5
    static let orgs = 2
    /// Model names and the group each belongs to (by name) while groups `a` and `b` exist.
    static let models: [(name: String?, group: String?)] = [
        ("claude-sonnet-4-5", "a"), ("claude-sonnet-4-0", "a"), ("claude-haiku-4", "b"), ("gpt-4o", nil), (nil, nil),
    ]

    /// A level of the model: the account (0), an org (1), a user (2), or group `id` with its
    /// epoch (3; per user too when flat).
    struct Level: Hashable, CustomStringConvertible {
        let kind: Int
        let id: Int
        var user = -1
        var epoch = 0
        var description: String { "level(\(kind), \(id)\(user >= 0 ? ", user \(user)" : ""))" }
    }

    struct Call {
        let user: Int
        let levels: [Level]
        let at: Int64
        var tokens: Int64
        var alive: Bool
        let admission: Admission
        let leaf: Int32
    }

    struct Waiter {
        let user: Int
        let model: Int
        let levels: [Level]
        let tokens: Int64
        let deadline: Int64
        let arrival: Int
        let leaf: Int32
    }

    struct Counts: CustomStringConvertible {
        var admitted = 0, waited = 0, timedOut = 0, cancelled = 0, changes = 0, groupRefusals = 0, groupsRemoved = 0, inGroup = 0

        mutating func add(_ o: Counts) {
            admitted += o.admitted; waited += o.waited; timedOut += o.timedOut; cancelled += o.cancelled
            changes += o.changes; groupRefusals += o.groupRefusals; groupsRemoved += o.groupsRemoved; inGroup += o.inGroup
        }

        var description: String {
            "admitted \(admitted) (\(inGroup) in a group), waited \(waited), timed out \(timedOut), cancelled \(cancelled), "
                + "changes \(changes), refused by a group \(groupRefusals), groups removed \(groupsRemoved)"
        }
    }

    let flat: Bool
    let seed: UInt64
    var rng: SeededRandomNumberGenerator
    var machine: Machine
    var now: Int64 = 0
    var generation: UInt64 = 1
    /// Caps of the account (the provider's), orgs, users, groups `a` and `b`.
    var caps: [PolicyLimits] = Array(repeating: PolicyLimits(), count: 5)
    /// Whether group `a` exists now, and each group's epoch (bumped when it is added back).
    var hasA = true
    var epochs = [0, 0]
    var calls: [Call] = []
    var waiters: [Int: Waiter] = [:]
    var nextID = 0
    var arrivals = 0
    var timerAt: Int64 = .max
    var lastSequence: UInt64 = 0
    /// Per level: the first admission sequence each window counts (a window capped for the
    /// first time starts counting at the change).
    var trackedFrom: [Level: [UInt64]] = [:]
    var counts = Counts()

    init(seed: UInt64, flat: Bool) {
        self.seed = seed
        self.flat = flat
        rng = SeededRandomNumberGenerator(seed: seed &* 6_151 &+ (flat ? 7 : 3))
        machine = Machine(
            provider: "p", account: CompiledLimits(.unlimited, generation: 0), kinds: [:], flat: flat, now: 0)
        for index in 0..<5 { caps[index] = randomCaps(index) }
        apply(machine.setLimits(account: compiledAccount(), kinds: compiledKinds(), groups: compiledGroups(), now: now))
    }

    func randomCaps(_ index: Int) -> PolicyLimits {
        let scale = flat ? [3, 1, 1, 1, 1][index] : [4, 2, 1, 2, 2][index]
        func maybe(_ value: Int) -> Int? { Int.random(in: 0..<5, using: &rng) == 0 ? nil : value }
        return PolicyLimits(
            requestsPerMinute: maybe(Int.random(in: 1...3, using: &rng) * scale),
            requestsPerHour: Int.random(in: 0..<3, using: &rng) == 0 ? Int.random(in: 5...40, using: &rng) * scale : nil,
            tokensPerMinute: maybe(Int.random(in: 300...1_500, using: &rng) * scale),
            maxConcurrent: maybe(Int.random(in: 1...3, using: &rng) * scale))
    }

    func compiledAccount() -> CompiledLimits { CompiledLimits(caps[0], generation: generation) }
    func compiledKinds() -> [String: CompiledLimits] {
        // Flat, the provider's caps are each key's and there are no per-scope tables.
        flat ? [:] : ["org": CompiledLimits(caps[1], generation: generation), "user": CompiledLimits(caps[2], generation: generation)]
    }
    func compiledGroups() -> [ModelGroupCaps] {
        var groups: [ModelGroupCaps] = []
        if hasA {
            groups.append(
                ModelGroupCaps(
                    name: "a", patterns: [ModelPattern("claude-sonnet-4*")!], limits: CompiledLimits(caps[3], generation: generation)))
        }
        groups.append(
            ModelGroupCaps(
                name: "b", patterns: [ModelPattern("claude-haiku-4")!, ModelPattern("*-haiku-*")!],
                limits: CompiledLimits(caps[4], generation: generation)))
        return groups
    }

    func key(_ user: Int) -> PolicyKey {
        flat
            ? PolicyKey(provider: "p", scope: .user("u\(user)"))
            : PolicyKey(provider: "p", scope: .user("u\(user)"), within: [.org("o\(user % Self.orgs)")])
    }

    /// The levels a call of `user` for `model` counts in now, with the caps index of each.
    func levels(user: Int, model: Int) -> [Level] {
        var result: [Level] =
            flat
            ? [Level(kind: 0, id: 0), Level(kind: 2, id: user)]
            : [Level(kind: 0, id: 0), Level(kind: 1, id: user % Self.orgs), Level(kind: 2, id: user)]
        if let group = Self.models[model].group, group == "b" || hasA {
            let id = group == "a" ? 0 : 1
            result.append(Level(kind: 3, id: id, user: flat ? user : -1, epoch: epochs[id]))
        }
        return result
    }

    /// The caps of `level` in force now (flat: the provider's caps are each user's; its account has none).
    func limits(_ level: Level) -> PolicyLimits {
        switch level.kind {
        case 0: flat ? PolicyLimits() : caps[0]
        case 1: caps[1]
        case 2: flat ? caps[0] : caps[2]
        default:
            // A group removed (or an earlier epoch of one added back) no longer caps anything.
            level.epoch == epochs[level.id] && (level.id == 1 || hasA) ? caps[3 + level.id] : PolicyLimits()
        }
    }

    func tracked(_ level: Level, _ w: Int) -> UInt64 { trackedFrom[level]?[w] ?? 1 }

    static func tracks(_ limits: PolicyLimits, _ w: Int) -> Bool {
        w == 0
            ? limits.requestsPerMinute != nil || limits.tokensPerMinute != nil
            : limits.requestsPerHour != nil || limits.tokensPerHour != nil
    }

    // MARK: Checks

    func checkAdmission(_ call: Call) {
        for level in call.levels {
            let limits = limits(level)
            let inFlight = calls.filter { $0.alive && $0.levels.contains(level) }.count
            if let cap = limits.maxConcurrent {
                #expect(inFlight < cap, "seed \(seed): \(level) admitted with \(inFlight) in flight, cap \(cap) at \(now)")
            }
            for (w, length) in Self.lengths.enumerated() {
                let inWindow = calls.filter {
                    $0.levels.contains(level) && $0.admission.sequence >= tracked(level, w) && $0.at > now - length
                }
                if let cap = w == 0 ? limits.requestsPerMinute : limits.requestsPerHour {
                    #expect(inWindow.count + 1 <= cap, "seed \(seed) flat \(flat): \(level) over its request cap at \(now)")
                }
                if let cap = w == 0 ? limits.tokensPerMinute : limits.tokensPerHour {
                    let tokens = inWindow.reduce(0) { $0 + $1.tokens } + call.tokens
                    #expect(tokens <= Int64(cap), "seed \(seed) flat \(flat): \(level) over its token cap: \(tokens) > \(cap)")
                }
            }
        }
    }

    /// The readouts of the chain of a call of `user` for `model`: never below the exact
    /// count, never above the count over a window 1/60 longer.
    func checkReadouts(user: Int, model: Int) {
        guard machine.existingLeaf(for: key(user)) != nil else { return }
        let leaf = machine.leaf(for: key(user), model: Self.models[model].name, now: now)
        let chain = machine.chain(of: leaf).filter { b in
            if case .route = machine.buckets[Int(b)].role { return false }
            return true
        }
        // Chain order: user, org (nested), group, account; the model's: account, …, group.
        var expected = levels(user: user, model: model)
        let group = expected.last?.kind == 3 ? expected.removeLast() : nil
        expected.reverse()
        if let group { expected.insert(group, at: expected.count - 1) }
        #expect(chain.count == expected.count, "seed \(seed): chain \(chain) for levels \(expected)")
        for (b, level) in zip(chain, expected) where b != 0 || !flat {
            let usage = machine.usage(of: b, now: now)
            for (w, length) in Self.lengths.enumerated() {
                guard let used = usage.first(where: { $0.window == PolicyWindow.at(w) }) else { continue }
                let counted = calls.filter { $0.levels.contains(level) && $0.admission.sequence >= tracked(level, w) }
                let exact = counted.filter { $0.at > now - length }
                let relaxed = counted.filter { $0.at > now - length - length / 60 }
                #expect(
                    used.requests >= Int64(exact.count) && used.requests <= Int64(relaxed.count),
                    "seed \(seed) flat \(flat): \(level) window \(w) counts \(used.requests), exact \(exact.count)...\(relaxed.count)")
                let exactTokens = exact.reduce(0) { $0 + $1.tokens }
                let relaxedTokens = relaxed.reduce(0) { $0 + $1.tokens }
                #expect(
                    used.tokens >= exactTokens && used.tokens <= relaxedTokens,
                    "seed \(seed) flat \(flat): \(level) window \(w) tokens \(used.tokens), exact \(exactTokens)...\(relaxedTokens)")
            }
        }
    }

    // MARK: Driving

    func admitted(_ user: Int, levels: [Level], tokens: Int64, admission: Admission, leaf: Int32) {
        let call = Call(user: user, levels: levels, at: admission.time, tokens: tokens, alive: true, admission: admission, leaf: leaf)
        checkAdmission(call)
        lastSequence = max(lastSequence, admission.sequence)
        calls.append(call)
        counts.admitted += 1
        if levels.last?.kind == 3 { counts.inGroup += 1 }
    }

    func apply(_ effects: Machine.Effects) {
        for resume in effects.resumes.items ?? [] {
            guard let waiter = waiters.removeValue(forKey: resume.payload) else {
                Issue.record("seed \(seed): waiter \(resume.payload) resumed twice or never queued")
                continue
            }
            switch resume.result {
            case .success(let admission):
                let earlier = waiters.values.filter { $0.user == waiter.user && $0.arrival < waiter.arrival }
                #expect(earlier.isEmpty, "seed \(seed): waiter of user \(waiter.user) admitted past an earlier one")
                // The levels it counts in are those of its route (fixed when it arrived).
                admitted(waiter.user, levels: waiter.levels, tokens: waiter.tokens, admission: admission, leaf: waiter.leaf)
                counts.waited += 1
            case .failure(let error):
                if error.code == .timedOut || error.code == .rateLimited {
                    #expect(waiter.deadline <= now, "seed \(seed): told to give up before its deadline")
                    counts.timedOut += 1
                } else if error.code != .oversized {
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
            case 72..<75: changeLimits()
            case 75..<77: toggleGroupA()
            default: advance(to: now + Int64.random(in: 0...(20 * Self.second), using: &rng))
            }
            checkReadouts(user: Int.random(in: 0..<Self.users, using: &rng), model: Int.random(in: 0..<Self.models.count, using: &rng))
        }
        drain()
    }

    func arrive() {
        let user = Int.random(in: 0..<Self.users, using: &rng)
        let model = Int.random(in: 0..<Self.models.count, using: &rng)
        let tokens = Int64.random(in: 1...700, using: &rng)
        let leaf = machine.leaf(for: key(user), model: Self.models[model].name, now: now)
        let levels = levels(user: user, model: model)
        if Bool.random(using: &rng) {
            let (result, effects) = machine.tryAdmit(leaf: leaf, tokens: TokenCounts(total: tokens), account: compiledAccount(), now: now)
            apply(effects)
            switch result {
            case .success(let admission):
                admitted(user, levels: levels, tokens: tokens, admission: admission, leaf: leaf)
            case .failure(let refusal):
                if refusal.level.scope.kind == PolicyModelGroup.scopeKind { counts.groupRefusals += 1 }
            }
            return
        }
        let id = nextID
        nextID += 1
        arrivals += 1
        let deadline = Bool.random(using: &rng) ? Int64.max : now + Int64.random(in: 0...(90 * Self.second), using: &rng)
        waiters[id] = Waiter(user: user, model: model, levels: levels, tokens: tokens, deadline: deadline, arrival: arrivals, leaf: leaf)
        switch machine.enqueue(
            id: UInt64(id), leaf: leaf, tokens: TokenCounts(total: tokens), account: compiledAccount(), deadline: deadline,
            payload: id, now: now)
        {
        case .admitted(let admission, let effects):
            waiters[id] = nil
            apply(effects)
            admitted(user, levels: levels, tokens: tokens, admission: admission, leaf: leaf)
        case .rejected(_, let effects):
            waiters[id] = nil
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

    /// Marks windows capped for the first time by `next` at `level`s as counting from now.
    func track(_ next: PolicyLimits, replacing old: PolicyLimits, at levels: [Level]) {
        for level in levels {
            for w in 0..<2 where Self.tracks(next, w) && !Self.tracks(old, w) {
                trackedFrom[level, default: [1, 1]][w] = lastSequence + 1
            }
        }
    }

    /// Every level of the model that `caps[index]` sets.
    func levels(ofCaps index: Int) -> [Level] {
        let all = Set(calls.flatMap(\.levels) + waiters.values.flatMap(\.levels))
        let users = (0..<Self.users).flatMap { user in (0..<Self.models.count).flatMap { levels(user: user, model: $0) } }
        return Array(all.union(users)).filter { level in
            switch index {
            case 0: flat ? level.kind == 2 : level.kind == 0
            case 1: level.kind == 1
            case 2: !flat && level.kind == 2
            default: level.kind == 3 && level.id == index - 3
            }
        }
    }

    func changeLimits() {
        let index = Int.random(in: 0..<5, using: &rng)
        let next = randomCaps(index)
        track(next, replacing: caps[index], at: levels(ofCaps: index))
        caps[index] = next
        generation += 1
        counts.changes += 1
        apply(machine.setLimits(account: compiledAccount(), kinds: compiledKinds(), groups: compiledGroups(), now: now))
    }

    /// Removes group `a` (its buckets retire; `b` is renumbered) or adds it back (a new epoch:
    /// its new buckets count from now).
    func toggleGroupA() {
        hasA.toggle()
        if hasA {
            epochs[0] += 1
            caps[3] = randomCaps(3)
        } else {
            counts.groupsRemoved += 1
        }
        generation += 1
        counts.changes += 1
        apply(machine.setLimits(account: compiledAccount(), kinds: compiledKinds(), groups: compiledGroups(), now: now))
    }

    func releaseAll() {
        while let i = calls.firstIndex(where: \.alive) {
            calls[i].alive = false
            if machine.release(leaf: calls[i].leaf) { apply(machine.tick(now: now)) }
        }
    }

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
