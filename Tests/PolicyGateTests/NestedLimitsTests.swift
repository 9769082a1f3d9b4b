import Foundation
import PolicyGate
import PolicyGateTestKit
import Synchronization
import Testing

/// Nested limits through the public API: an account, its organisations and their users, each a
/// level with its own caps; a call admitted in all of them at once or in none.
@Suite("Nested limits", .timeLimit(.minutes(5)))
struct NestedLimitsTests {
    static let toml = """
        [limits.openai]                      # the account (scope .global)
        requests_per_minute = 500
        tokens_per_minute   = 2_000

        [limits.openai.per.org]              # every org, inside the account's caps
        tokens_per_minute   = 1_000
        max_concurrent      = 2

        [limits.openai.per.user]             # every user, inside its org's and the account's caps
        requests_per_minute = 2
        tokens_per_day      = 1_000_000
        """

    let clock = ManualClock()
    let account = PolicyKey(provider: "openai")
    let acme = PolicyKey(provider: "openai", scope: .org("acme"))
    func user(_ id: String, in org: String = "acme") -> PolicyKey {
        PolicyKey(provider: "openai", scope: .user(id), within: [.org(org)])
    }

    func gate(telemetry: (any PolicyTelemetry)? = nil) throws -> PolicyService {
        try PolicyService(configuration: PolicyConfiguration(toml: Self.toml), clock: clock, telemetry: telemetry)
    }

    @Test("the file's per tables are read, written back, and checked with did-you-mean, line and column")
    func configuration() throws {
        let configuration = try PolicyConfiguration(toml: Self.toml)
        #expect(configuration.scopeLimits["openai"]?["org"] == PolicyLimits(tokensPerMinute: 1_000, maxConcurrent: 2))
        #expect(configuration.scopeLimits["openai"]?["user"] == PolicyLimits(requestsPerMinute: 2, tokensPerDay: 1_000_000))
        #expect(try PolicyConfiguration(json: JSONEncoder().encode(configuration)) == configuration)
        let error = try #require(throws: PolicyConfigurationError.self) {
            try PolicyConfiguration(
                toml: """
                    [limits.a.per.user]
                    request_per_minute = 2
                    [limits.a.per.global]
                    requests_per_minute = 1
                    [limits.b]
                    per = 3
                    """)
        }
        let found = Dictionary(uniqueKeysWithValues: error.diagnostics.map { ($0.keyPath, $0) })
        #expect(found["limits.a.per.user.request_per_minute"]?.suggestion == "requests_per_minute", "\(error)")
        #expect(found["limits.a.per.user.request_per_minute"]?.line == 2)
        #expect(found["limits.a.per.global"]?.message.contains("kind of scope") == true, "\(error)")
        #expect(found["limits.b.per"] != nil, "\(error)")
        // Nested limits may be kept in a shared store, but not with input or output caps at a
        // level (the store counts one token total per call).
        let sharedNested = try PolicyConfiguration(
            toml: """
                [store]
                default = "postgres"
                [limits.a]
                requests_per_minute = 5
                [limits.a.per.user]
                requests_per_minute = 2
                """)
        #expect(sharedNested.scopeLimits["a"]?["user"] == PolicyLimits(requestsPerMinute: 2))
        let shared = try #require(throws: PolicyConfigurationError.self) {
            try PolicyConfiguration(
                toml: """
                    [store]
                    default = "postgres"
                    [limits.a]
                    requests_per_minute = 5
                    [limits.a.per.user]
                    input_tokens_per_minute = 2
                    """)
        }
        #expect(shared.diagnostics.contains { $0.keyPath == "limits.a.per.user.input_tokens_per_minute" }, "\(shared)")
        #expect(throws: PolicyError.self) {
            _ = try PolicyService(limits: [:], scopeLimits: ["a": ["user": PolicyLimits(requestsPerMinute: 0)]], clock: clock)
        }
        // Priority's reserve is not applied inside a tree yet: refused rather than ignored.
        let reserved = try #require(throws: PolicyConfigurationError.self) {
            try PolicyConfiguration(
                toml: """
                    [limits.a]
                    requests_per_minute = 5
                    reserved_for_interactive = 0.2
                    [limits.a.per.user]
                    requests_per_minute = 2
                    """)
        }
        #expect(reserved.diagnostics.contains { $0.keyPath == "limits.a.reserved_for_interactive" }, "\(reserved)")
        var withReserve = PolicyLimits(requestsPerMinute: 5)
        withReserve.reservedForInteractive = 0.2
        #expect(throws: PolicyError.self) {
            _ = try PolicyService(
                limits: ["a": withReserve], scopeLimits: ["a": ["user": PolicyLimits(requestsPerMinute: 2)]], clock: clock)
        }
    }

    @Test("a call refused at one level is recorded at none, and the refusal names the level and the cap")
    func allOrNothing() throws {
        let gate = try gate()
        let first = try gate.tryAcquire(user("u1"), estimatedTokens: 700)
        do {
            _ = try gate.tryAcquire(user("u2"), estimatedTokens: 400)  // 700 + 400 > the org's 1 000
            Issue.record("admitted over the org's cap")
        } catch {
            #expect(error.code == .rateLimited && error.limit == .tokensPerMinute)
            #expect(error.level == acme, "\(error)")
            #expect(error.key == user("u2"))
            #expect(error.retryAfter.map { $0 > .zero && $0 <= .seconds(61) } == true)
        }
        let state = gate.currentState(for: user("u2"))
        #expect(state.levels.map(\.key) == [account, acme, user("u2")])
        #expect(state.levels.map { $0.windows.first?.tokens.used ?? -1 } == [700, 700, 0], "\(state.levels)")
        #expect(state.levels[2].windows.first?.requests.used == 0)
        // Another org is untouched by acme's cap, inside the account's.
        let other = try gate.tryAcquire(user("v1", in: "globex"), estimatedTokens: 900)
        do {
            _ = try gate.tryAcquire(user("w1", in: "initech"), estimatedTokens: 500)  // account: 1 600 + 500 > 2 000
            Issue.record("admitted over the account's cap")
        } catch {
            #expect(error.level == account && error.limit == .tokensPerMinute, "\(error)")
        }
        // The user's own cap: two requests a minute.
        let second = try gate.tryAcquire(user("u1"), estimatedTokens: 10)
        do {
            _ = try gate.tryAcquire(user("u1"), estimatedTokens: 10)
            Issue.record("admitted over the user's cap")
        } catch {
            #expect(error.level == user("u1") && error.limit == .requestsPerMinute, "\(error)")
        }
        _ = consume first
        _ = consume other
        _ = consume second
    }

    @Test("commits correct every level, and a release frees every level's slot")
    func commitAndRelease() throws {
        let gate = try gate()
        var permit = try gate.tryAcquire(user("u1"), estimatedTokens: 900)
        try permit.commitTokens(300)
        let levels = gate.currentState(for: user("u1")).levels
        // (The user level has no token cap per minute, but its windows count tokens too.)
        #expect(levels.map { $0.windows.first?.tokens.used ?? -1 } == [300, 300, 300], "\(levels)")
        #expect(levels.map(\.inFlight) == [1, 1, 1])
        let a = try gate.tryAcquire(user("u2"), estimatedTokens: 10)
        // The org's two slots are taken.
        #expect(throws: PolicyError.self) { _ = try gate.tryAcquire(user("u3"), estimatedTokens: 10) }
        permit.release()
        let b = try gate.tryAcquire(user("u3"), estimatedTokens: 10)
        #expect(gate.currentState(for: user("u3")).levels.map(\.inFlight) == [2, 2, 1])
        _ = consume a
        _ = consume b
        #expect(gate.currentState(for: user("u3")).levels.map(\.inFlight) == [0, 0, 0])
    }

    @Test("a user at its own cap does not hold up its organisation; a waiter is woken by a release at any level")
    func waiting() async throws {
        let gate = try gate()
        let held = try gate.tryAcquire(user("u1"), estimatedTokens: 10)
        let second = try gate.tryAcquire(user("u1"), estimatedTokens: 10)
        // u1's third call waits for its own minute cap…
        let (slow, slowTask) = startWaiter(gate, user("u1"), tokens: 10)
        await eventually("u1 queued") { gate.currentState(for: user("u1")).queued == 1 }
        // …and u2 of the same org waits only for the org's slots (both held by u1).
        let (quick, quickTask) = startWaiter(gate, user("u2"), tokens: 10)
        await eventually("u2 queued at the org") { gate.currentState(for: acme).queued == 1 }
        #expect(!quick.isDone && !slow.isDone)
        held.release()
        await eventually("u2 admitted by u1's release") { quick.hasPermit }
        #expect(!slow.isDone)
        _ = consume second
        quick.release()
        clock.advance(by: .seconds(61))
        await eventually("u1 admitted once its minute passed") { slow.hasPermit }
        slow.release()
        await slowTask.value
        await quickTask.value
    }

    /// Starts a task waiting in `acquire` with `priority`.
    func waiter(_ gate: PolicyService, _ key: PolicyKey, _ priority: PolicyPriority) -> (PermitBox, Task<Void, Never>) {
        let box = PermitBox()
        let task = Task {
            do { box.store(try await gate.acquire(key, estimatedTokens: 10, priority: priority)) } catch { box.fail(error) }
        }
        return (box, task)
    }

    @Test("in every bucket an interactive waiter goes before a batch one; a batch waiter is promoted after its aging")
    func priorityClasses() async throws {
        let gate = try gate()
        var a = try gate.tryAcquire(user("u1"), estimatedTokens: 10)
        let b = try gate.tryAcquire(user("u2"), estimatedTokens: 10)  // the org's two slots
        let (batch, batchTask) = waiter(gate, user("u3"), .batch)
        await eventually("the batch call waits at the org") { gate.currentState(for: acme).queued == 1 }
        let (interactive, interactiveTask) = waiter(gate, user("u4"), .interactive)
        await eventually("the interactive call waits at the org too") { gate.currentState(for: acme).queued == 2 }
        a.release()
        await eventually("the interactive call went first") { interactive.hasPermit }
        #expect(!batch.isDone)
        interactive.release()
        await eventually("then the batch call") { batch.hasPermit }
        batch.release()
        await batchTask.value
        await interactiveTask.value

        // Aging: a batch call waiting past 30 s (the default) queues as an interactive one.
        a = try gate.tryAcquire(user("u1"), estimatedTokens: 10)
        let (old, oldTask) = waiter(gate, user("u5"), .batch)
        await eventually("the batch call waits") { gate.currentState(for: acme).queued == 1 }
        await eventually("its promotion timer is armed") { clock.sleeperCount >= 1 }
        clock.advance(by: .seconds(31))
        for _ in 0..<1_000 { await Task.yield() }
        let (late, lateTask) = waiter(gate, user("u6"), .interactive)
        await eventually("an interactive call queues behind it") { gate.currentState(for: acme).queued == 2 }
        b.release()
        await eventually("the promoted batch call went first") { old.hasPermit }
        #expect(!late.isDone)
        old.release()
        await eventually("then the interactive one") { late.hasPermit }
        late.release()
        await oldTask.value
        await lateTask.value
        _ = consume a
    }

    @Test("a cancelled or timed-out waiter records nothing at any level and leaves no queue behind")
    func cancellation() async throws {
        let gate = try gate()
        let a = try gate.tryAcquire(user("u1"), estimatedTokens: 10)
        let b = try gate.tryAcquire(user("u2"), estimatedTokens: 10)
        // u3 passes its own level and waits at the org's.
        let (box, task) = startWaiter(gate, user("u3"), tokens: 10)
        await eventually("u3 waits at the org") { gate.currentState(for: acme).queued == 1 }
        #expect(gate.currentState(for: user("u3")).queued == 1)
        task.cancel()
        await task.value
        #expect(box.error is CancellationError)
        let levels = gate.currentState(for: user("u3")).levels
        #expect(levels.map(\.queued) == [0, 0, 0] && levels.map { $0.windows.first?.requests.used ?? -1 } == [2, 2, 0], "\(levels)")
        // With a deadline: told so at the deadline, naming the org's concurrency cap.
        let (timed, timedTask) = startWaiter(gate, user("u3"), tokens: 10, maxWait: .seconds(5))
        await eventually("u3 waits again") { gate.currentState(for: acme).queued == 1 }
        clock.advance(by: .seconds(5))
        await timedTask.value
        let error = try #require(timed.error as? PolicyError)
        #expect(error.code == .timedOut && error.level == acme && error.limit == .concurrency, "\(error)")
        #expect(gate.currentState(for: user("u3")).levels.map(\.queued) == [0, 0, 0])
        _ = consume a
        _ = consume b
    }

    @Test("a reload changes every level's caps and wakes waiters that now fit")
    func reload() async throws {
        let gate = try gate()
        let a = try gate.tryAcquire(user("u1"), estimatedTokens: 10)
        let b = try gate.tryAcquire(user("u2"), estimatedTokens: 10)
        let (box, task) = startWaiter(gate, user("u3"), tokens: 10)
        await eventually("u3 waits at the org") { gate.currentState(for: acme).queued == 1 }
        var configuration = try PolicyConfiguration(toml: Self.toml)
        configuration.scopeLimits["openai"]?["org"]?.maxConcurrent = 3
        try await gate.apply(configuration)
        await eventually("u3 admitted under the new org cap") { box.hasPermit }
        #expect(gate.configuration.scopeLimits == configuration.scopeLimits)
        // Lowering a user's caps binds the next call at once.
        configuration.scopeLimits["openai"]?["user"] = PolicyLimits(requestsPerMinute: 1)
        try await gate.apply(configuration)
        box.release()
        await task.value
        do {
            _ = try gate.tryAcquire(user("u1"), estimatedTokens: 10)
            Issue.record("admitted over the lowered user cap")
        } catch {
            #expect(error.level == user("u1") && error.limit == .requestsPerMinute, "\(error)")
        }
        // Dropping the nested tables makes the provider flat again: every key on its own.
        configuration.scopeLimits = [:]
        try await gate.apply(configuration)
        let c = try gate.tryAcquire(user("u1"), estimatedTokens: 1_900)
        #expect(gate.currentState(for: user("u1")).levels.isEmpty)
        _ = consume a
        _ = consume b
        _ = consume c
    }

    @Test("a key without parents counts at the account and its own level; a flat provider ignores parents")
    func shapes() throws {
        let gate = try PolicyService(
            limits: ["n": PolicyLimits(requestsPerMinute: 3), "flat": PolicyLimits(requestsPerMinute: 1)],
            scopeLimits: ["n": ["user": PolicyLimits(requestsPerMinute: 1)]], clock: clock)
        let a = try gate.tryAcquire(PolicyKey(provider: "n", scope: .user("x")))
        let b = try gate.tryAcquire(PolicyKey(provider: "n", scope: .project("p")))  // no caps for projects
        let c = try gate.tryAcquire(PolicyKey(provider: "n"))
        #expect(throws: PolicyError.self) { _ = try gate.tryAcquire(PolicyKey(provider: "n", scope: .user("y"))) }
        #expect(gate.currentState(for: PolicyKey(provider: "n")).windows.first?.requests.used == 3)
        let flatA = try gate.tryAcquire(PolicyKey(provider: "flat", scope: .user("x"), within: [.org("o")]))
        let flatB = try gate.tryAcquire(PolicyKey(provider: "flat", scope: .user("x")))
        #expect(gate.currentState(for: PolicyKey(provider: "flat", scope: .user("x"))).levels.isEmpty)
        #expect(PolicyKey(provider: "flat", scope: .user("x"), within: [.org("o")]).description == "flat/org:o/user:x")
        _ = consume a
        _ = consume b
        _ = consume c
        _ = consume flatA
        _ = consume flatB
    }

    @Test("telemetry sees acquires, commits, rejections and releases of nested keys")
    func telemetry() throws {
        let recorder = TelemetryRecorder()
        let gate = try gate(telemetry: recorder)
        var permit = try gate.tryAcquire(user("u1"), estimatedTokens: 700)
        try permit.commitTokens(650)
        #expect(throws: PolicyError.self) { _ = try gate.tryAcquire(user("u2"), estimatedTokens: 400) }
        permit.release()
        #expect(recorder.acquires.map(\.key) == [user("u1")])
        #expect(recorder.commits.map(\.actualTokens) == [650])
        #expect(recorder.rejects.first?.error.level == acme)
        #expect(recorder.releases.map(\.key) == [user("u1")])
    }

    @Test("a nested permit held past the hold warning is reported once, with its key")
    func holdWarning() async throws {
        let recorder = TelemetryRecorder()
        let gate = try gate(telemetry: recorder)
        try gate.setPermitHoldWarning(.seconds(60))
        var held = try gate.tryAcquire(user("u1"), estimatedTokens: 100)
        try held.commitTokens(70)
        await eventually("the timer armed") { clock.sleeperCount >= 1 }
        clock.advance(by: .seconds(60))
        await eventually("reported") { recorder.longHolds.count == 1 }
        #expect(recorder.longHolds.first?.key == user("u1") && recorder.longHolds.first?.committedTokens == 70)
        held.release()
        clock.advance(by: .seconds(300))
        #expect(recorder.longHolds.count == 1)
    }
}

@Suite("Nested limits with feedback, schedules and key bookkeeping", .timeLimit(.minutes(5)))
struct NestedLimitsLifecycleTests {
    let clock = ManualClock()
    func user(_ id: String) -> PolicyKey { PolicyKey(provider: "openai", scope: .user(id), within: [.org("acme")]) }

    @Test("a 429 pauses the whole account; waiters wake when the pause ends")
    func throttled() async throws {
        let gate = try PolicyService(configuration: PolicyConfiguration(toml: NestedLimitsTests.toml), clock: clock)
        let permit = try gate.tryAcquire(user("u1"), estimatedTokens: 10)
        permit.reportThrottled(retryAfter: .seconds(3))
        do {
            _ = try gate.tryAcquire(user("u2"), estimatedTokens: 10)
            Issue.record("admitted during a pause")
        } catch {
            #expect(error.providerCause == "paused the gate" && error.level == PolicyKey(provider: "openai"), "\(error)")
        }
        let (box, task) = startWaiter(gate, user("u2"), tokens: 10)
        await eventually("u2 waits") { gate.currentState(for: user("u2")).queued == 1 }
        clock.advance(by: .seconds(3))
        await eventually("u2 admitted when the pause ended") { box.hasPermit }
        #expect(gate.currentState(for: user("u2")).levels.first?.providerFeedback?.pausedFor == nil)
        box.release()
        await task.value
        _ = consume permit
    }

    @Test("a schedule closes the account for every level; a closed call names the entry")
    func scheduled() throws {
        let configuration = try PolicyConfiguration(
            toml: """
                [limits.openai]
                requests_per_minute = 10
                timezone = "UTC"

                [[limits.openai.schedule]]
                name = "maintenance"
                dates = ["2026-12-24"]
                closed = true

                [limits.openai.per.user]
                requests_per_minute = 1
                """)
        let start = try #require(ISO8601DateFormatter().date(from: "2026-12-23T23:59:00Z"))
        let gate = try PolicyService(configuration: configuration, clock: clock, startDate: start)
        let a = try gate.tryAcquire(user("u1"))
        clock.advance(by: .seconds(60))
        do {
            _ = try gate.tryAcquire(user("u2"))
            Issue.record("admitted while closed")
        } catch {
            #expect(error.closedBy == "maintenance", "\(error)")
        }
        _ = consume a
    }

    @Test("a graceful shutdown refuses a tree's waiters and new calls, and waits for its permits")
    func shutDown() async throws {
        let gate = try PolicyService(configuration: PolicyConfiguration(toml: NestedLimitsTests.toml), clock: clock)
        var a = try gate.tryAcquire(user("u1"), estimatedTokens: 10)
        let b = try gate.tryAcquire(user("u2"), estimatedTokens: 10)
        let (waiter, waiterTask) = startWaiter(gate, user("u3"), tokens: 10)  // the org's two slots are taken
        await eventually("u3 waits at the org") { gate.currentState(for: PolicyKey(provider: "openai", scope: .org("acme"))).queued == 1 }
        let done = Locked(false)
        let shutdown = Task {
            await gate.shutDown(gracePeriod: .seconds(30))
            done.withLock { $0 = true }
        }
        await waiterTask.value
        #expect((waiter.error as? PolicyError)?.code == .shutDown)
        #expect(gate.currentState(for: user("u3")).levels.map(\.queued) == [0, 0, 0])
        #expect(throws: PolicyError.self) { _ = try gate.tryAcquire(user("u4"), estimatedTokens: 10) }
        try a.commitTokens(5)
        a.release()
        for _ in 0..<1_000 { await Task.yield() }
        #expect(!done.withLock { $0 })  // b is still held
        _ = consume b
        await shutdown.value
        #expect(done.withLock { $0 })
    }

    @Test("active keys list every level in use, and idle levels are dropped")
    func bookkeeping() throws {
        let gate = try PolicyService(configuration: PolicyConfiguration(toml: NestedLimitsTests.toml), clock: clock)
        let a = try gate.tryAcquire(user("u1"), estimatedTokens: 10)
        let keys = Set(gate.activeKeys())
        #expect(keys == [PolicyKey(provider: "openai"), PolicyKey(provider: "openai", scope: .org("acme")), user("u1")], "\(keys)")
        #expect(gate.storedKeyCount == 2)
        _ = consume a
        clock.advance(by: .seconds(86_400 + 3_600))
        #expect(gate.activeKeys().isEmpty)
        #expect(gate.storedKeyCount == 0)
    }
}
