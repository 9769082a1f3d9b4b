import Foundation
import PolicyGate
import PolicyGateTestKit
import Synchronization
import Testing

@testable import PolicyGate

/// Seeded random runs through the public API while tiers, overrides, the resolver and the
/// tier a key's calls name all change, with permits in flight and waiters queued. A model
/// beside the gate knows which caps each scope is under (its override's, else its tier's, else
/// the provider's, cap by cap) and checks after every step:
/// - **safety**: no scope has more permits in flight than its concurrency cap in force,
///   except permits admitted before the cap was lowered (their number only falls);
/// - **liveness**: once every permit is given back, every waiter still waiting is admitted
///   without the clock moving (nobody was left parked on caps that no longer apply);
/// - refusals name the cause the model expects (an unknown tier), and nothing traps.
@Suite("Tiers and overrides against a model while they change", .timeLimit(.minutes(5)))
struct TiersModelTests {
    @Test(
        "random changes of tiers, overrides and resolvers never over-admit and never strand a waiter", arguments: Array(1...6) as [UInt64])
    func replay(seed: UInt64) async throws {
        try await replay(seed: seed, nested: false)
    }

    @Test("the same with nested limits: users' levels inside their organisations'", arguments: Array(1...6) as [UInt64])
    func replayNested(seed: UInt64) async throws {
        try await replay(seed: seed, nested: true)
    }

    func replay(seed: UInt64, nested: Bool) async throws {
        let harness = try Harness(seed: seed, nested: nested)
        try await harness.run(steps: Environment.soak ? 3_000 : 400)
        let c = harness.counts
        #expect(
            c.admitted > (nested ? 10 : 25) && c.refused > 20 && c.waited > 10 && c.timedOut > 0 && c.overrides > 10 && c.reloads > 5
                && c.resolvers > 5 && c.tierSwitches > 10 && c.unknownTier > 0 && c.aboveCap > 0,
            "not every path was exercised: \(c)")
        print("tiers model\(nested ? " (nested)" : "") seed \(seed): \(c)")
    }
}

private final class Harness {
    struct Counts: CustomStringConvertible {
        var admitted = 0, refused = 0, waited = 0, timedOut = 0, overrides = 0, reloads = 0, resolvers = 0, tierSwitches = 0
        var unknownTier = 0
        /// Steps that found a scope above its cap in force (a cap lowered under permits in flight).
        var aboveCap = 0
        var description: String {
            "admitted \(admitted), refused \(refused), waited \(waited), timed out \(timedOut), overrides \(overrides), "
                + "reloads \(reloads), resolvers \(resolvers), tier switches \(tierSwitches), unknown tier \(unknownTier), "
                + "above cap \(aboveCap)"
        }
    }

    static let provider = "p"
    static let tierNames = ["a", "b", "c"]
    /// The scopes calls are made for.
    let scopes: [PolicyScope]
    /// Nested: the organisations the users are in (user `i` in organisation `i % 2`).
    let orgs: [PolicyScope] = [.org("a"), .org("b")]
    let nested: Bool
    /// Every scope whose caps the model knows: the calls' scopes, and nested, their parents.
    var levelScopes: [PolicyScope] { nested ? scopes + orgs : scopes }

    var random: SeededRandomNumberGenerator
    let clock = ManualClock()
    let gate: PolicyService
    var counts = Counts()
    /// What the last steps did, for a failure's message.
    var log: [String] = []

    // The model.
    var base: Int
    /// Nested: the organisations' caps (`base` is the users').
    var orgBase: Int
    var tiers: [String: Int]
    var overrides: [PolicyScope: Int] = [:]
    var resolver: [PolicyScope: String] = [:]
    /// Scopes whose calls name their tier (the others leave it to the resolver), and the tier
    /// their latest call named.
    var named: [PolicyScope: String]
    /// What the latest call of a scope that reached the gate named (a call refused for an
    /// unknown tier moves nothing): the tier its level is in, unless the resolver decides.
    var reached: [PolicyScope: String?] = [:]
    var held: [PolicyScope: [PermitBox]] = [:]
    var waiters: [(scope: PolicyScope, box: PermitBox, task: Task<Void, Never>)] = []
    /// Permits in flight after the last step, per scope.
    var inFlight: [PolicyScope: Int] = [:]

    init(seed: UInt64, nested: Bool) throws {
        self.nested = nested
        scopes = nested ? (0..<5).map { .user("\($0)") } : [.user("0"), .user("1"), .org("2"), .org("3"), .project("4")]
        random = SeededRandomNumberGenerator(seed: seed)
        base = Int.random(in: 1...3, using: &random)
        orgBase = Int.random(in: 2...5, using: &random)
        tiers = Dictionary(uniqueKeysWithValues: Self.tierNames.prefix(2).map { ($0, 0) })
        named = [:]
        for name in tiers.keys { tiers[name] = Int.random(in: 1...4, using: &random) }
        for scope in scopes where Bool.random(using: &random) { named[scope] = Self.tierNames.prefix(2).randomElement(using: &random) }
        gate = try PolicyService(
            configuration: Self.configuration(base: base, orgBase: orgBase, tiers: tiers, nested: nested), clock: clock)
    }

    func configuration() -> PolicyConfiguration { Self.configuration(base: base, orgBase: orgBase, tiers: tiers, nested: nested) }

    static func configuration(base: Int, orgBase: Int, tiers: [String: Int], nested: Bool) -> PolicyConfiguration {
        var configuration = PolicyConfiguration(limits: [provider: PolicyLimits(maxConcurrent: nested ? 100 : base)])
        if nested {
            configuration.scopeLimits[provider] = ["user": PolicyLimits(maxConcurrent: base), "org": PolicyLimits(maxConcurrent: orgBase)]
        }
        configuration.tiers[provider] = tiers.mapValues { PolicyLimits(maxConcurrent: $0) }
        return configuration
    }

    func parent(of scope: PolicyScope) -> PolicyScope? {
        guard nested, case .user(let id) = scope, let number = Int(id) else { return nil }
        return orgs[number % 2]
    }

    /// The concurrency cap the model says the level of `scope` is under now: as the next
    /// call sees it (`asCalled`, what readouts show), or as the gate holds it.
    func cap(_ scope: PolicyScope, asCalled: Bool = false) -> Int {
        if let override = overrides[scope] { return override }
        let tier = (asCalled ? named[scope] : reached[scope] ?? nil) ?? resolver[scope]
        return tier.flatMap { tiers[$0] } ?? (scope.kind == "org" && nested ? orgBase : base)
    }

    /// A `tryAcquire` of `scope`, its permit held; the refusal, if refused.
    func tryCall(_ scope: PolicyScope) -> PolicyError? {
        do {
            let permit = try gate.tryAcquire(key(scope))
            let box = PermitBox()
            box.store(permit)
            held[scope, default: []].append(box)
            counts.admitted += 1
            called(scope, tier: named[scope], error: nil)
            return nil
        } catch {
            called(scope, tier: named[scope], error: error)
            return error
        }
    }

    /// A call of `scope` reached the gate (`error` is how it ended, if refused).
    func called(_ scope: PolicyScope, tier: String?, error: (any Error)?) {
        if (error as? PolicyError)?.code != .invalidArgument { reached[scope] = .some(tier) }
    }

    func key(_ scope: PolicyScope) -> PolicyKey {
        PolicyKey(provider: Self.provider, scope: scope, within: parent(of: scope).map { [$0] } ?? [], tier: named[scope])
    }

    /// Whether the level of `scope` is in a tier the provider lacks.
    func levelNamesUnknownTier(_ scope: PolicyScope) -> Bool {
        guard overrides[scope] == nil, let tier = named[scope] ?? resolver[scope] else { return false }
        return tiers[tier] == nil
    }

    /// Whether calls of `scope` are refused for a tier the provider lacks (at any level).
    func namesUnknownTier(_ scope: PolicyScope) -> Bool {
        levelNamesUnknownTier(scope) || parent(of: scope).map(levelNamesUnknownTier) == true
    }

    func run(steps: Int) async throws {
        for _ in 0..<steps {
            var released: [PolicyScope: Int] = [:]
            switch Int.random(in: 0..<100, using: &random) {
            case 0..<30:
                let scope = scopes.randomElement(using: &random)!
                log.append("try \(scope)")
                if let error = tryCall(scope) {
                    if error.code == .invalidArgument {
                        #expect(namesUnknownTier(scope), "\(scope) refused as naming an unknown tier: \(error)")
                        counts.unknownTier += 1
                    } else {
                        #expect(!namesUnknownTier(scope), "\(scope) should be refused for its tier: \(error)")
                        counts.refused += 1
                    }
                }
            case 30..<45:
                let scope = scopes.randomElement(using: &random)!
                log.append("wait \(scope)")
                let maxWait = Duration.seconds(Int.random(in: 1...30, using: &random))
                let key = key(scope)
                let stateBefore = gate.currentState(for: key)
                let presentBefore = stateBefore.queued + stateBefore.inFlight
                let box = PermitBox()
                let task = Task { [gate] in
                    do { box.store(try await gate.acquire(key, maxWait: maxWait)) } catch { box.fail(error) }
                }
                waiters.append((scope, box, task))
                counts.waited += 1
                // Let it reach the queue (or be admitted, or refused) before the next step: the
                // model dates every admission to the step it happened in.
                var reached = false
                for _ in 0..<100_000 where !reached {
                    let state = gate.currentState(for: key)
                    reached = box.isDone || state.queued + state.inFlight > presentBefore
                    if !reached { await Task.yield() }
                }
                #expect(reached, "a waiter of \(scope) never reached the gate")
                called(scope, tier: key.tier, error: box.error)
            case 45..<65:
                // Give back a permit: a held one, or one a waiter got.
                let scope = scopes.randomElement(using: &random)!
                log.append("release \(scope)")
                if var boxes = held[scope], !boxes.isEmpty {
                    boxes.removeFirst().release()
                    held[scope] = boxes
                    released[scope, default: 0] += 1
                } else if let index = waiters.firstIndex(where: { $0.scope == scope && $0.box.hasPermit }) {
                    waiters[index].box.release()
                    released[scope, default: 0] += 1
                }
            case 65..<75:
                let scope = levelScopes.randomElement(using: &random)!
                let value = Bool.random(using: &random) ? Int.random(in: 1...5, using: &random) : nil
                try await gate.setScopeOverride(value.map { PolicyLimits(maxConcurrent: $0) }, for: scope, provider: Self.provider)
                overrides[scope] = value
                counts.overrides += 1
                log.append("override \(scope) \(value ?? -1)")
            case 75..<82:
                // A reload: tiers' caps change, a tier may come or go; runtime overrides kept.
                base = Int.random(in: 1...4, using: &random)
                orgBase = Int.random(in: 2...5, using: &random)
                for name in Self.tierNames {
                    if Int.random(in: 0..<4, using: &random) == 0 {
                        tiers[name] = tiers[name] == nil ? Int.random(in: 1...4, using: &random) : nil
                    } else if tiers[name] != nil {
                        tiers[name] = Int.random(in: 1...4, using: &random)
                    }
                }
                if tiers.isEmpty { tiers["a"] = 1 }
                try await gate.apply(configuration(), keepingScopeOverrides: true)
                counts.reloads += 1
                log.append("reload")
            case 82..<88:
                var map: [PolicyScope: String] = [:]
                for scope in levelScopes where Bool.random(using: &random) { map[scope] = Self.tierNames.randomElement(using: &random) }
                resolver = map
                let answers = map
                await gate.setTierResolver { answers[$0] }
                counts.resolvers += 1
                log.append("resolver")
            case 88..<94:
                // A scope's calls name another tier (or start or stop naming one).
                let scope = scopes.randomElement(using: &random)!
                named[scope] = Bool.random(using: &random) ? Self.tierNames.randomElement(using: &random) : nil
                counts.tierSwitches += 1
                log.append("switch \(scope)")
                // The change takes effect with the scope's next call.
                _ = tryCall(scope)
            default:
                clock.advance(by: .seconds(Int.random(in: 1...15, using: &random)))
                for _ in 0..<20 { await Task.yield() }
            }
            log.append("step: named \(named), resolver \(resolver), overrides \(overrides), tiers \(tiers), base \(base)")
            while log.count > 12 { log.removeFirst() }
            check(released: released)
        }
        try await drain()
    }

    /// Safety after a step: at most the cap in force, or no more than before (less what
    /// was given back) when a lowered cap left more in flight.
    func check(released: [PolicyScope: Int]) {
        var released = released
        for (scope, count) in released { if let org = parent(of: scope) { released[org, default: 0] += count } }
        for scope in levelScopes {
            let level: PolicyState
            if scopes.contains(scope) {
                level = gate.currentState(for: key(scope))
            } else {
                // An organisation's level, as its first user's chain shows it.
                let user = scopes.first { parent(of: $0) == scope }!
                guard let found = gate.currentState(for: key(user)).levels.first(where: { $0.key.scope == scope }) else { continue }
                level = found
            }
            let state = level
            let before = inFlight[scope] ?? 0
            let capNow = cap(scope)
            let allowed = max(capNow, before - (released[scope] ?? 0))
            #expect(
                state.inFlight <= allowed,
                "\(scope): \(state.inFlight) in flight, cap \(capNow), \(before) before; machine \(machineCap(scope)); \(log.joined(separator: "\n"))"
            )
            if state.inFlight > capNow { counts.aboveCap += 1 }
            let shown = cap(scope, asCalled: true)
            #expect(state.limits.maxConcurrent == shown, "\(scope): readout \(state.limits.maxConcurrent ?? -1), model \(shown)")
            inFlight[scope] = state.inFlight
        }
    }

    func machineCap(_ scope: PolicyScope) -> String {
        let key = key(scope)
        return gate.core.shard(for: key).table.withLock { table in
            table.lookup(key).map {
                "cap \($0.machine.limits.maxConcurrent) variant \($0.machine.limits.variant) gen \($0.machine.limits.generation) inFlight \($0.machine.inFlight) queued \($0.machine.queued)"
            } ?? "none"
        }
    }

    /// Gives every permit back, again and again, without moving the clock: every waiter must
    /// be admitted (or have been refused or timed out before).
    func drain() async throws {
        for boxes in held.values { for box in boxes { box.release() } }
        held = [:]
        for _ in 0..<2_000 {
            for waiter in waiters where waiter.box.hasPermit { waiter.box.release() }
            if waiters.allSatisfy({ $0.box.isDone && !$0.box.hasPermit }) { break }
            await Task.yield()
        }
        for waiter in waiters {
            #expect(waiter.box.isDone, "a waiter of \(waiter.scope) was stranded")
            if let error = waiter.box.error as? PolicyError, error.code == .timedOut { counts.timedOut += 1 }
            waiter.task.cancel()
            await waiter.task.value
        }
        for scope in scopes { #expect(gate.currentState(for: key(scope)).inFlight == 0) }
    }
}
