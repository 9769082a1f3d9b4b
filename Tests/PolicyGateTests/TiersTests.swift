import Foundation
import PolicyGate
import PolicyGateTestKit
import Synchronization
import Testing

/// Tiers and per-scope overrides through the public API: configured, named on the key or by
/// a resolver, changed at runtime, composed with schedules.
@Suite("Tiers and per-scope overrides", .timeLimit(.minutes(5)))
struct TiersTests {
    let clock = ManualClock()

    static let toml = """
        [limits.openai]
        requests_per_minute = 3
        max_concurrent      = 8

        [limits.openai.tiers.free]
        requests_per_minute = 2

        [limits.openai.tiers.pro]
        requests_per_minute = 5
        tokens_per_day      = 5_000_000

        [limits.openai.scopes."org:acme"]
        requests_per_minute = 10
        """

    /// How many calls `key` gets before the first refusal (a fresh minute each time).
    func admittedInAMinute(_ gate: PolicyService, _ key: PolicyKey, upTo limit: Int = 50) -> Int {
        var admitted = 0
        while admitted < limit {
            do { _ = try gate.tryAcquire(key, estimatedTokens: 1) } catch { break }
            admitted += 1
        }
        return admitted
    }

    @Test("the file's tiers and overrides are read, encoded and read back the same")
    func readsAndRoundTrips() throws {
        let configuration = try PolicyConfiguration(toml: Self.toml)
        #expect(configuration.tiers["openai"]?["free"] == PolicyLimits(requestsPerMinute: 2))
        #expect(configuration.tiers["openai"]?["pro"] == PolicyLimits(requestsPerMinute: 5, tokensPerDay: 5_000_000))
        #expect(configuration.scopeOverrides["openai"]?[.org("acme")] == PolicyLimits(requestsPerMinute: 10))
        let json = try JSONDecoder().decode(PolicyConfiguration.self, from: JSONEncoder().encode(configuration))
        #expect(json == configuration)
    }

    @Test("bad tier and override tables are refused with their place in the file")
    func refusesBadTables() throws {
        let cases: [(String, String, Int)] = [
            ("[limits.p]\nrequests_per_minute = 1\n[limits.p.tiers.free]\nmax_wait_ms = 5\n", "unknown key", 4),
            ("[limits.p]\nrequests_per_minute = 1\n[limits.p.tiers.free]\nrequests_per_minute = 0\n", "must be positive", 4),
            ("[limits.p]\nrequests_per_minute = 1\n[limits.p.scopes.acme]\nrequests_per_minute = 4\n", "kind:id", 3),
            (
                "[limits.p]\nrequests_per_minute = 1\n[limits.p.models.big]\nmatch = \"gpt-5*\"\nrequests_per_minute = 4\n[limits.p.tiers.free]\nrequests_per_minute = 2\n",
                "model groups", 0
            ),
            (
                "[store]\ndefault = \"postgres\"\n[limits.p]\nrequests_per_minute = 1\n[limits.p.scopes.\"org:a\"]\ninput_tokens_per_minute = 2\n",
                "input and output token caps", 0
            ),
        ]
        for (text, message, line) in cases {
            let error = try #require(throws: PolicyConfigurationError.self) { try PolicyConfiguration(toml: text) }
            let match = error.diagnostics.first { $0.message.contains(message) }
            #expect(match != nil, "\(message): \(error)")
            if line > 0, let match { #expect(match.line == line, "\(message): \(match)") }
        }
    }

    @Test("a scope gets its tier's caps, its override's over its tier, or the provider's; an unknown tier is refused")
    func capsPerScope() throws {
        let gate = try PolicyService(configuration: PolicyConfiguration(toml: Self.toml), clock: clock)
        #expect(admittedInAMinute(gate, PolicyKey(provider: "openai", scope: .user("a"), tier: "free")) == 2)
        #expect(admittedInAMinute(gate, PolicyKey(provider: "openai", scope: .user("b"), tier: "pro")) == 5)
        #expect(admittedInAMinute(gate, PolicyKey(provider: "openai", scope: .user("c"))) == 3)
        // The override wins over the tier the key names.
        #expect(admittedInAMinute(gate, PolicyKey(provider: "openai", scope: .org("acme"), tier: "free")) == 10)
        let error = try #require(throws: PolicyError.self) {
            _ = try gate.tryAcquire(PolicyKey(provider: "openai", scope: .user("d"), tier: "gold"))
        }
        #expect(error.code == .invalidArgument)
        #expect(gate.currentState(for: PolicyKey(provider: "openai", scope: .user("d"))).windows.first?.requests.used ?? 0 == 0)
        let state = gate.currentState(for: PolicyKey(provider: "openai", scope: .user("b"), tier: "pro"))
        #expect(state.tier == "pro" && !state.hasScopeOverride)
        #expect(state.limits.requestsPerMinute == 5 && state.limits.maxConcurrent == 8 && state.limits.tokensPerDay == 5_000_000)
        let acme = gate.currentState(for: PolicyKey(provider: "openai", scope: .org("acme")))
        #expect(acme.hasScopeOverride && acme.limits.requestsPerMinute == 10)
    }

    @Test("a key that names another tier on a later call moves to that tier's caps, keeping its usage")
    func keyChangesTier() throws {
        let gate = try PolicyService(configuration: PolicyConfiguration(toml: Self.toml), clock: clock)
        let free = PolicyKey(provider: "openai", scope: .user("u"), tier: "free")
        #expect(admittedInAMinute(gate, free) == 2)
        // Same counters: pro allows 5 in the minute, 2 are used.
        #expect(admittedInAMinute(gate, free.inTier("pro")) == 3)
        #expect(gate.currentState(for: free).windows.first?.requests.used == 5)
        #expect((try? gate.tryAcquire(free)) == nil)
    }

    @Test("the resolver decides the tier of keys that name none, once per key")
    func resolver() async throws {
        let gate = try PolicyService(configuration: PolicyConfiguration(toml: Self.toml), clock: clock)
        let asked = Mutex(0)
        await gate.setTierResolver { scope in
            asked.withLock { $0 += 1 }
            return scope == .user("paying") ? "pro" : "free"
        }
        #expect(admittedInAMinute(gate, PolicyKey(provider: "openai", scope: .user("paying"))) == 5)
        #expect(admittedInAMinute(gate, PolicyKey(provider: "openai", scope: .user("other"))) == 2)
        #expect(asked.withLock { $0 } == 2)
        // The key's own tier wins over the resolver's.
        #expect(admittedInAMinute(gate, PolicyKey(provider: "openai", scope: .user("third"), tier: "pro")) == 5)
    }

    @Test("a new resolver moves held keys at once, and a waiter that now fits is admitted")
    func newResolverWakesWaiters() async throws {
        let toml =
            "[limits.p]\nmax_concurrent = 3\n[limits.p.tiers.small]\nmax_concurrent = 1\n[limits.p.tiers.large]\nmax_concurrent = 2\n"
        let gate = try PolicyService(configuration: PolicyConfiguration(toml: toml), clock: clock)
        await gate.setTierResolver { _ in "small" }
        let key = PolicyKey(provider: "p", scope: .user("u"))
        let held = try gate.tryAcquire(key)
        let (box, task) = startWaiter(gate, key, tokens: 0)
        await eventually("queued") { gate.currentState(for: key).queued == 1 }
        await gate.setTierResolver { _ in "large" }
        await task.value
        #expect(box.hasPermit)
        #expect(gate.currentState(for: key).inFlight == 2 && gate.currentState(for: key).tier == "large")
        _ = consume held
        box.release()
    }

    @Test("an override set at runtime raises or lowers one scope's caps, is reported, shown, and kept by apply only if asked")
    func runtimeOverride() async throws {
        let telemetry = TelemetryRecorder()
        let configuration = try PolicyConfiguration(toml: Self.toml)
        let gate = try PolicyService(configuration: configuration, clock: clock, telemetry: telemetry)
        let key = PolicyKey(provider: "openai", scope: .org("beta"), tier: "free")
        #expect(admittedInAMinute(gate, key) == 2)
        try await gate.setScopeOverride(PolicyLimits(requestsPerMinute: 4), for: .org("beta"), provider: "openai")
        #expect(admittedInAMinute(gate, key) == 2)
        #expect(gate.currentState(for: key).hasScopeOverride)
        #expect(gate.scopeOverrides(for: "openai")[.org("beta")] == PolicyLimits(requestsPerMinute: 4))
        #expect(gate.configuration.scopeOverrides["openai"]?[.org("beta")] == PolicyLimits(requestsPerMinute: 4))
        let event = try #require(telemetry.limitChanges.last)
        #expect(event.scope == .org("beta") && event.previous.requestsPerMinute == 3 && event.current.requestsPerMinute == 4)
        // Invalid: refused, nothing changed.
        await #expect(throws: PolicyError.self) {
            try await gate.setScopeOverride(PolicyLimits(requestsPerMinute: -1), for: .org("beta"), provider: "openai")
        }
        await #expect(throws: PolicyError.self) {
            try await gate.setScopeOverride(PolicyLimits(reservedForInteractive: 0.2), for: .org("beta"), provider: "openai")
        }
        await #expect(throws: PolicyError.self) {
            try await gate.setScopeOverride(PolicyLimits(requestsPerMinute: 1), for: .org("beta"), provider: "ungated")
        }
        #expect(gate.scopeOverrides(for: "openai")[.org("beta")] == PolicyLimits(requestsPerMinute: 4))
        // A reload keeping runtime overrides keeps it; one that does not drops it.
        try await gate.apply(configuration, keepingScopeOverrides: true)
        #expect(gate.scopeOverrides(for: "openai")[.org("beta")] != nil)
        #expect(gate.scopeOverrides(for: "openai")[.org("acme")] != nil)
        try await gate.apply(configuration)
        #expect(gate.scopeOverrides(for: "openai")[.org("beta")] == nil)
        #expect(!gate.currentState(for: key).hasScopeOverride)
        // Removing one: back to the tier (4 used, free allows 2).
        try await gate.setScopeOverride(nil, for: .org("acme"), provider: "openai")
        #expect(gate.scopeOverrides(for: "openai").isEmpty)
        #expect(telemetry.limitChanges.last?.scope == .org("acme"))
    }

    @Test("lowering a scope's concurrency admits nobody past it; raising it admits its waiters")
    func overrideWithPermitsInFlight() async throws {
        let gate = try PolicyService(
            configuration: PolicyConfiguration(toml: "[limits.p]\nmax_concurrent = 2\n"), clock: clock)
        let key = PolicyKey(provider: "p", scope: .org("o"))
        let first = try gate.tryAcquire(key)
        let second = try gate.tryAcquire(key)
        try await gate.setScopeOverride(PolicyLimits(maxConcurrent: 1), for: .org("o"), provider: "p")
        let (box, task) = startWaiter(gate, key, tokens: 0)
        await eventually("queued") { gate.currentState(for: key).queued == 1 }
        _ = consume first
        // One in flight, cap 1: the waiter stays queued.
        #expect(gate.currentState(for: key).inFlight == 1 && gate.currentState(for: key).queued == 1)
        try await gate.setScopeOverride(PolicyLimits(maxConcurrent: 3), for: .org("o"), provider: "p")
        await task.value
        #expect(box.hasPermit && gate.currentState(for: key).inFlight == 2)
        _ = consume second
        box.release()
    }

    @Test("with a shared store, each scope's caps are its tier's or override's, across processes")
    func sharedStore() async throws {
        let store = FakeQuotaStore(clock: clock)
        let toml = """
            [limits.openai]
            max_concurrent = 3
            store = "postgres"
            [limits.openai.tiers.free]
            max_concurrent = 1
            [limits.openai.tiers.pro]
            max_concurrent = 2
            [limits.openai.scopes."org:acme"]
            max_concurrent = 4
            """
        let configuration = try PolicyConfiguration(toml: toml)
        let gates = try (0..<2).map { _ in try PolicyService(configuration: configuration, store: store, clock: clock) }
        /// How many permits of `key` both processes hold at once, taking turns.
        func held(_ key: PolicyKey, gate only: Int? = nil) async -> Int {
            let boxes = (0..<8).map { _ in PermitBox() }
            var count = 0
            for (attempt, box) in boxes.enumerated() {
                do {
                    box.store(try await gates[only ?? attempt % 2].acquire(key, maxWait: .zero))
                    count += 1
                } catch {
                    break
                }
            }
            for box in boxes { box.release() }
            return count
        }
        #expect(await held(PolicyKey(provider: "openai", scope: .user("a"), tier: "free")) == 1)
        #expect(await held(PolicyKey(provider: "openai", scope: .user("b"), tier: "pro")) == 2)
        #expect(await held(PolicyKey(provider: "openai", scope: .user("c"))) == 3)
        #expect(await held(PolicyKey(provider: "openai", scope: .org("acme"), tier: "free")) == 4)
        await #expect(throws: PolicyError.self) {
            _ = try await gates[0].acquire(PolicyKey(provider: "openai", scope: .user("d"), tier: "gold"))
        }
        // An override set in one process: that process hands the store its caps.
        try await gates[1].setScopeOverride(PolicyLimits(maxConcurrent: 5), for: .user("e"), provider: "openai")
        #expect(await held(PolicyKey(provider: "openai", scope: .user("e")), gate: 1) == 5)
        #expect(store.requests.last?.maxConcurrent == 5)
    }

    static let nestedTOML = """
        [limits.p]
        requests_per_minute = 100

        [limits.p.per.org]
        max_concurrent = 4

        [limits.p.per.user]
        max_concurrent = 2

        [limits.p.tiers.free]
        max_concurrent = 1

        [limits.p.tiers.pro]
        max_concurrent = 3

        [limits.p.scopes."org:big"]
        max_concurrent = 10
        """

    /// How many permits of `key` can be held at once (given back at the end), with `others`
    /// held meanwhile.
    func heldAtOnce(_ gate: PolicyService, _ key: PolicyKey, upTo limit: Int = 12) -> [PermitBox] {
        var boxes: [PermitBox] = []
        while boxes.count < limit {
            let permit: PolicyPermit
            do { permit = try gate.tryAcquire(key) } catch { break }
            let box = PermitBox()
            box.store(permit)
            boxes.append(box)
        }
        return boxes
    }

    @Test("nested: a tier sets the caps of its level, inside its parents'; an override sets its scope's level")
    func nested() async throws {
        let gate = try PolicyService(configuration: PolicyConfiguration(toml: Self.nestedTOML), clock: clock)
        func user(_ id: String, in org: String, tier: String?) -> PolicyKey {
            PolicyKey(provider: "p", scope: .user(id), within: [.org(org)], tier: tier)
        }
        let free = heldAtOnce(gate, user("u1", in: "a", tier: "free"))
        #expect(free.count == 1)
        // Pro gets 3 at its own level, but org:a (4) already counts u1's permit.
        let pro = heldAtOnce(gate, user("u2", in: "a", tier: "pro"))
        #expect(pro.count == 3)
        #expect(heldAtOnce(gate, user("u3", in: "a", tier: nil)).isEmpty)
        // org:big's own caps (10) bound four pro users (3 each).
        var big: [PermitBox] = []
        for id in 0..<4 { big += heldAtOnce(gate, user("b\(id)", in: "big", tier: "pro")) }
        #expect(big.count == 10)
        let state = gate.currentState(for: user("u2", in: "a", tier: "pro"))
        #expect(state.tier == "pro" && state.limits.maxConcurrent == 3)
        #expect(state.levels.map(\.limits.maxConcurrent) == [nil, 4, 3])
        #expect(gate.currentState(for: PolicyKey(provider: "p", scope: .org("big"))).hasScopeOverride)
        // The resolver puts org:c in free: the org's level gets 1, whatever its users' tiers.
        await gate.setTierResolver { $0 == .org("c") ? "free" : nil }
        #expect(heldAtOnce(gate, user("c1", in: "c", tier: "pro")).count == 1)
        // An unknown tier is refused, at any level.
        #expect(throws: PolicyError.self) { _ = try gate.tryAcquire(user("x", in: "a", tier: "gold")) }
        // A runtime override of a parent level applies to every chain through it.
        for box in free + pro { box.release() }
        try await gate.setScopeOverride(PolicyLimits(maxConcurrent: 2), for: .org("a"), provider: "p")
        #expect(heldAtOnce(gate, user("u2", in: "a", tier: "pro")).count == 2)
        for box in big { box.release() }
    }

    @Test("nested: moving a level to another tier admits its waiters when they now fit")
    func nestedRetierWakesWaiters() async throws {
        let gate = try PolicyService(configuration: PolicyConfiguration(toml: Self.nestedTOML), clock: clock)
        await gate.setTierResolver { $0 == .org("a") ? "free" : nil }
        let key = PolicyKey(provider: "p", scope: .user("u"), within: [.org("a")])
        let held = try gate.tryAcquire(key)
        let (box, task) = startWaiter(gate, key, tokens: 0)
        await eventually("queued") { gate.currentState(for: key).queued == 1 }
        // org:a leaves the free tier (1) for its kind's caps (4): the waiter fits at once.
        await gate.setTierResolver { _ in nil }
        await task.value
        #expect(box.hasPermit)
        _ = consume held
        box.release()
    }

    @Test("nested, in a shared store: each level is handed its tier's or override's caps")
    func nestedShared() async throws {
        let store = FakeQuotaStore(clock: clock)
        let toml = Self.nestedTOML.replacingOccurrences(of: "requests_per_minute = 100", with: "max_concurrent = 50\nstore = \"postgres\"")
        let gates = try (0..<2).map { _ in try PolicyService(configuration: PolicyConfiguration(toml: toml), store: store, clock: clock) }
        func held(_ key: PolicyKey) async -> [PermitBox] {
            var boxes: [PermitBox] = []
            for attempt in 0..<12 {
                guard let permit = try? await gates[attempt % 2].acquire(key, maxWait: .zero) else { break }
                let box = PermitBox()
                box.store(permit)
                boxes.append(box)
            }
            return boxes
        }
        let free = await held(PolicyKey(provider: "p", scope: .user("u1"), within: [.org("a")], tier: "free"))
        #expect(free.count == 1)
        let pro = await held(PolicyKey(provider: "p", scope: .user("u2"), within: [.org("a")], tier: "pro"))
        #expect(pro.count == 3)
        var big: [PermitBox] = []
        for id in 0..<4 { big += await held(PolicyKey(provider: "p", scope: .user("b\(id)"), within: [.org("big")], tier: "pro")) }
        #expect(big.count == 10)
        for box in free + pro + big { box.release() }
    }

    @Test("a schedule entry's caps apply under the tiers; a closed entry closes every tier")
    func schedules() throws {
        let toml = """
            [limits.p]
            requests_per_minute = 3
            tokens_per_minute = 1_000
            timezone = "UTC"

            [[limits.p.schedule]]
            name = "night"
            cron = "* 0-5 * * *"
            tokens_per_minute = 100

            [limits.p.schedule.tiers.pro]
            requests_per_minute = 4

            [[limits.p.schedule]]
            name = "maintenance"
            cron = "* 6 * * *"
            closed = true

            [limits.p.tiers.pro]
            requests_per_minute = 6
            """
        // 00:30 UTC: night.
        let start = Date(timeIntervalSince1970: 1_800)
        let gate = try PolicyService(configuration: PolicyConfiguration(toml: toml), clock: clock, startDate: start)
        let key = PolicyKey(provider: "p", scope: .user("u"), tier: "pro")
        let state = gate.currentState(for: key)
        // The entry's caps under the tier's, its caps for the tier over both.
        #expect(state.limits.requestsPerMinute == 4 && state.limits.tokensPerMinute == 100 && state.scheduleEntry == "night")
        #expect(admittedInAMinute(gate, key) == 4)
        #expect(gate.currentState(for: PolicyKey(provider: "p", scope: .user("x"))).limits.requestsPerMinute == 3)
        #expect(throws: PolicyError.self) {
            _ = try gate.tryAcquire(PolicyKey(provider: "p", scope: .user("v"), tier: "pro"), estimatedTokens: 101)
        }
        // 06:00: closed for every tier.
        clock.advance(by: .seconds(6 * 3_600 - 1_800))
        let closed = try #require(throws: PolicyError.self) {
            _ = try gate.tryAcquire(PolicyKey(provider: "p", scope: .user("w"), tier: "pro"), estimatedTokens: 1)
        }
        #expect(closed.closedBy == "maintenance", "\(closed)")
        // 07:00: the base caps, the tier's over them.
        clock.advance(by: .seconds(3_600))
        #expect(admittedInAMinute(gate, PolicyKey(provider: "p", scope: .user("w"), tier: "pro")) == 6)
        let configured = try PolicyConfiguration(toml: toml)
        #expect(configured.schedules["p"]?.entries.first?.tierLimits["pro"] == PolicyLimits(requestsPerMinute: 4))
        let json = try JSONDecoder().decode(PolicyConfiguration.self, from: JSONEncoder().encode(configured))
        #expect(json == configured)
        let unknown = try #require(throws: PolicyConfigurationError.self) {
            try PolicyConfiguration(toml: toml.replacingOccurrences(of: "schedule.tiers.pro", with: "schedule.tiers.gold"))
        }
        #expect(unknown.diagnostics.contains { $0.message.contains("names tier 'gold'") && $0.line == 11 }, "\(unknown)")
    }
}
