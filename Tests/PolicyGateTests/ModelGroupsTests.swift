import Foundation
import PolicyGate
import PolicyGateTestKit
import Synchronization
import Testing

/// Model groups through the public API: caps shared by a family of models, inside the
/// provider's own, for a flat provider (per key) and a nested one (for the whole account).
@Suite("Model groups", .timeLimit(.minutes(5)))
struct ModelGroupsTests {
    static let toml = """
        [limits.anthropic]
        requests_per_minute = 6
        tokens_per_minute   = 10_000

        [limits.anthropic.models.sonnet]
        match               = ["claude-sonnet-4*", "claude-3-7-sonnet*"]
        requests_per_minute = 2
        max_concurrent      = 2

        [limits.anthropic.models.haiku]
        match               = "claude-haiku-4-5"
        tokens_per_minute   = 1_000
        """

    let clock = ManualClock()
    let key = PolicyKey(provider: "anthropic")
    let sonnet = PolicyKey(provider: "anthropic", scope: .custom(kind: "model", id: "sonnet"))

    func gate(_ toml: String = Self.toml) throws -> PolicyService {
        try PolicyService(configuration: PolicyConfiguration(toml: toml), clock: clock)
    }

    @Test("the file's model tables are read, written back, and checked with did-you-mean, line and column")
    func configuration() throws {
        let configuration = try PolicyConfiguration(toml: Self.toml)
        #expect(
            configuration.modelGroups["anthropic"]?["sonnet"]
                == PolicyModelGroup(
                    match: ["claude-sonnet-4*", "claude-3-7-sonnet*"], limits: PolicyLimits(requestsPerMinute: 2, maxConcurrent: 2)))
        #expect(configuration.modelGroups["anthropic"]?["haiku"]?.match == ["claude-haiku-4-5"])
        #expect(try PolicyConfiguration(json: JSONEncoder().encode(configuration)) == configuration)
        let error = try #require(throws: PolicyConfigurationError.self) {
            try PolicyConfiguration(
                toml: """
                    [limits.a.models.x]
                    match = "gpt-4o*"
                    request_per_minute = 2
                    [limits.a.models.y]
                    requests_per_minute = 1
                    [limits.a.models.z]
                    match = ["**", "gpt-4o*"]
                    [limits.a.per.model]
                    requests_per_minute = 1
                    """)
        }
        let found = Dictionary(error.diagnostics.map { ($0.keyPath, $0) }, uniquingKeysWith: { first, _ in first })
        #expect(found["limits.a.models.x.request_per_minute"]?.suggestion == "requests_per_minute", "\(error)")
        #expect(found["limits.a.models.x.request_per_minute"]?.line == 3)
        #expect(found["limits.a.models.y"]?.message.contains("match") == true, "\(error)")
        #expect(found["limits.a.models.z.match"] != nil, "\(error)")  // "**", and gpt-4o* is in x too
        #expect(error.diagnostics.filter { $0.keyPath == "limits.a.models.z.match" }.count == 2, "\(error)")
        #expect(found["limits.a.per.model"] != nil, "\(error)")
        // Refused rather than half-applied: a shared store, feedback kept per key.
        let shared = try #require(throws: PolicyConfigurationError.self) {
            try PolicyConfiguration(
                toml: """
                    [limits.a]
                    store = "postgres"
                    feedback_scope = "key"
                    [limits.a.models.x]
                    match = "m*"
                    requests_per_minute = 1
                    """)
        }
        #expect(shared.diagnostics.contains { $0.keyPath == "limits.a.models" }, "\(shared)")
        #expect(shared.diagnostics.contains { $0.keyPath == "limits.a.feedback_scope" }, "\(shared)")
        #expect(throws: PolicyError.self) {
            _ = try PolicyService(
                modelGroups: ["a": ["x": PolicyModelGroup(match: ["*"], limits: PolicyLimits(requestsPerMinute: 1))]], clock: clock)
        }
        #expect(throws: PolicyError.self) {
            _ = try PolicyService(
                modelGroups: [
                    "a": [
                        "x": PolicyModelGroup(match: ["m*"], limits: PolicyLimits(requestsPerMinute: 1)),
                        "y": PolicyModelGroup(match: ["m*"], limits: PolicyLimits(requestsPerMinute: 1)),
                    ]
                ], clock: clock)
        }
    }

    @Test("a group's models share its caps inside the provider's; other models and calls without one count only there")
    func sharedCaps() throws {
        let gate = try gate()
        let a = try gate.tryAcquire(key, estimatedTokens: 10, model: "claude-sonnet-4-5")
        let b = try gate.tryAcquire(key, estimatedTokens: 10, model: "claude-3-7-sonnet-latest")
        do {
            _ = try gate.tryAcquire(key, estimatedTokens: 10, model: "claude-sonnet-4-0")
            Issue.record("admitted over the group's cap")
        } catch {
            #expect(error.code == .rateLimited && error.limit == .requestsPerMinute, "\(error)")
            #expect(error.level == sonnet, "\(error)")
            #expect(error.key == key)
        }
        // Not in the group: only the provider's caps (6 a minute; 2 used).
        let c = try gate.tryAcquire(key, estimatedTokens: 10, model: "claude-opus-4-1")
        let d = try gate.tryAcquire(key, estimatedTokens: 10)
        let e = try gate.tryAcquire(key, estimatedTokens: 10, model: "claude-haiku-4-5")
        let f = try gate.tryAcquire(key, estimatedTokens: 10, model: "claude-haiku-4-5-20251001")  // exact match only: no group
        do {
            _ = try gate.tryAcquire(key, estimatedTokens: 10, model: "claude-opus-4-1")
            Issue.record("admitted over the provider's cap")
        } catch {
            #expect(error.limit == .requestsPerMinute && error.level != sonnet, "\(error)")
        }
        let state = gate.currentState(for: key, model: "claude-sonnet-4-5")
        #expect(state.key == key && state.inFlight == 6, "\(state)")
        #expect(state.levels.map(\.key) == [sonnet, key], "\(state.levels)")
        #expect(state.levels[0].windows.first?.requests.used == 2 && state.levels[0].windows.first?.requests.cap == 2)
        #expect(state.levels[0].inFlight == 2 && state.levels[0].limits.maxConcurrent == 2)
        #expect(gate.activeKeys() == [key])
        _ = consume a
        _ = consume b
        _ = consume c
        _ = consume d
        _ = consume e
        _ = consume f
        #expect(gate.currentState(for: key, model: "claude-sonnet-4-5").levels[0].inFlight == 0)
    }

    @Test("commits correct the group and the provider; a waiter for a group's model is woken by the group's release")
    func commitsAndWaiting() async throws {
        let gate = try gate()
        var haiku = try gate.tryAcquire(key, estimatedTokens: 900, model: "claude-haiku-4-5")
        #expect(throws: PolicyError.self) { _ = try gate.tryAcquire(key, estimatedTokens: 200, model: "claude-haiku-4-5") }
        try haiku.commitTokens(100)
        let state = gate.currentState(for: key, model: "claude-haiku-4-5")
        #expect(state.levels.map { $0.windows.first?.tokens.used ?? -1 } == [100, 100], "\(state.levels)")
        let second = try gate.tryAcquire(key, estimatedTokens: 200, model: "claude-haiku-4-5")
        _ = consume second
        _ = consume haiku
        // Concurrency: two sonnet permits held, a third waits for one of them, not for the minute.
        let one = try gate.tryAcquire(key, estimatedTokens: 1, model: "claude-sonnet-4-5")
        clock.advance(by: .seconds(61))
        let two = try gate.tryAcquire(key, estimatedTokens: 1, model: "claude-sonnet-4-5")
        let admitted = Admitted()
        let waiter = Task {
            let permit = try await gate.acquire(key, estimatedTokens: 1, model: "claude-sonnet-4-0")
            admitted.set()
            _ = consume permit
        }
        try await waitUntil { gate.currentState(for: key, model: "claude-sonnet-4-0").levels[0].queued == 1 }
        #expect(!admitted.isSet)
        _ = consume one
        try await waiter.value
        #expect(admitted.isSet)
        _ = consume two
    }

    @Test("flat, every key has its own groups; nested, a group counts for the whole account across organisations")
    func shapes() throws {
        let flat = try gate()
        let other = PolicyKey(provider: "anthropic", scope: .user("u2"))
        let a = try flat.tryAcquire(key, estimatedTokens: 1, model: "claude-sonnet-4")
        let b = try flat.tryAcquire(key, estimatedTokens: 1, model: "claude-sonnet-4")
        let c = try flat.tryAcquire(other, estimatedTokens: 1, model: "claude-sonnet-4")  // its own group bucket
        #expect(
            flat.currentState(for: other, model: "claude-sonnet-4").levels.first?.key
                == PolicyKey(provider: "anthropic", scope: .custom(kind: "model", id: "sonnet"), within: [.user("u2")]))
        _ = consume a
        _ = consume b
        _ = consume c
        let nested = try gate(
            Self.toml + """

                [limits.anthropic.per.org]
                requests_per_minute = 5
                """)
        let acme = PolicyKey(provider: "anthropic", scope: .org("acme"))
        let globex = PolicyKey(provider: "anthropic", scope: .org("globex"))
        let x = try nested.tryAcquire(acme, estimatedTokens: 1, model: "claude-sonnet-4")
        let y = try nested.tryAcquire(globex, estimatedTokens: 1, model: "claude-sonnet-4")
        do {
            _ = try nested.tryAcquire(globex, estimatedTokens: 1, model: "claude-sonnet-4")
            Issue.record("admitted over the account's group cap")
        } catch {
            #expect(error.level == sonnet, "\(error)")
        }
        let state = nested.currentState(for: acme, model: "claude-sonnet-4")
        #expect(state.levels.map(\.key) == [key, sonnet, acme], "\(state.levels)")
        #expect(state.key == acme && state.levels.map(\.inFlight) == [2, 2, 1])
        _ = consume x
        _ = consume y
    }

    @Test("a reload changes a group's caps, adds and removes groups, keeping the usage of groups that stay")
    func reload() async throws {
        let gate = try gate()
        let a = try gate.tryAcquire(key, estimatedTokens: 1, model: "claude-sonnet-4")
        // Lower sonnet to one a minute and add a group sorting before it (renumbering sonnet).
        try await gate.apply(
            PolicyConfiguration(
                toml: Self.toml.replacingOccurrences(of: "requests_per_minute = 2", with: "requests_per_minute = 1") + """

                    [limits.anthropic.models.alpha]
                    match = "alpha-*"
                    requests_per_minute = 1
                    """))
        do {
            _ = try gate.tryAcquire(key, estimatedTokens: 1, model: "claude-sonnet-4")
            Issue.record("the group's usage was lost in the reload")
        } catch {
            #expect(error.level == sonnet && error.limit == .requestsPerMinute, "\(error)")
        }
        let b = try gate.tryAcquire(key, estimatedTokens: 1, model: "alpha-1")
        #expect(throws: PolicyError.self) { _ = try gate.tryAcquire(key, estimatedTokens: 1, model: "alpha-2") }
        // Without groups, the provider's caps only: sonnet calls are no longer limited to one.
        try await gate.apply(
            PolicyConfiguration(
                toml: """
                    [limits.anthropic]
                    requests_per_minute = 6
                    """))
        let c = try gate.tryAcquire(key, estimatedTokens: 1, model: "claude-sonnet-4")
        #expect(gate.currentState(for: key, model: "claude-sonnet-4").levels.isEmpty)  // the flat path again
        _ = consume a
        _ = consume b
        _ = consume c
    }

    @Test("spend caps with model groups: per key on a flat provider, for the account with per tables")
    func spend() throws {
        let price = PolicyModelPrice(input: try PolicyMoney(parsing: "3"), output: try PolicyMoney(parsing: "15"))
        var provider = PolicyLimits(requestsPerMinute: 100)
        provider.costPerHour = try PolicyMoney(parsing: "0.50")
        provider.prices = ["claude-*": price]
        let groups = ["anthropic": ["sonnet": PolicyModelGroup(match: ["claude-sonnet-4*"], limits: PolicyLimits(requestsPerMinute: 50))]]
        let flat = try PolicyService(limits: ["anthropic": provider], modelGroups: groups, clock: clock)
        let other = PolicyKey(provider: "anthropic", scope: .user("u2"))
        // 100 000 in at 3 + 10 000 out at 15 per million: 0.30 + 0.15 = 0.45 of each key's 0.50.
        let a = try flat.tryAcquire(key, estimatedInputTokens: 100_000, estimatedOutputTokens: 10_000, model: "claude-sonnet-4-5")
        #expect(a.countedCost == (try PolicyMoney(parsing: "0.45")))
        do {
            _ = try flat.tryAcquire(key, estimatedInputTokens: 100_000, estimatedOutputTokens: 10_000, model: "claude-sonnet-4-5")
            Issue.record("admitted over the key's spend cap")
        } catch {
            #expect(error.costCap == .costPerHour, "\(error)")
        }
        // Another key has a budget of its own, whatever the model.
        let b = try flat.tryAcquire(other, estimatedInputTokens: 100_000, estimatedOutputTokens: 10_000, model: "claude-opus-4-1")
        #expect(flat.currentState(for: other).spend.first?.spent == (try PolicyMoney(parsing: "0.45")))
        _ = consume a
        _ = consume b
        // With per tables the provider's budget is the account's: the second key is refused.
        let nested = try PolicyService(
            limits: ["anthropic": provider], scopeLimits: ["anthropic": ["user": PolicyLimits(requestsPerMinute: 10)]],
            modelGroups: groups, clock: clock)
        let c = try nested.tryAcquire(other, estimatedInputTokens: 100_000, estimatedOutputTokens: 10_000, model: "claude-sonnet-4-0")
        #expect(throws: PolicyError.self) {
            _ = try nested.tryAcquire(
                PolicyKey(provider: "anthropic", scope: .user("u3")), estimatedInputTokens: 100_000, estimatedOutputTokens: 10_000,
                model: "claude-sonnet-4-0")
        }
        _ = consume c
        // A group cannot carry spend caps of its own yet: refused, not ignored.
        var groupBudget = PolicyLimits(requestsPerMinute: 5)
        groupBudget.costPerHour = try PolicyMoney(parsing: "1")
        #expect(throws: PolicyError.self) {
            _ = try PolicyService(
                limits: ["anthropic": provider],
                modelGroups: ["anthropic": ["sonnet": PolicyModelGroup(match: ["claude-sonnet-4*"], limits: groupBudget)]], clock: clock)
        }
    }

    private func waitUntil(_ condition: () -> Bool) async throws {
        for _ in 0..<2_000 where !condition() { try await Task.sleep(for: .milliseconds(1)) }
        #expect(condition())
    }
}

private final class Admitted: Sendable {
    private let flag = Mutex(false)
    func set() { flag.withLock { $0 = true } }
    var isSet: Bool { flag.withLock { $0 } }
}
