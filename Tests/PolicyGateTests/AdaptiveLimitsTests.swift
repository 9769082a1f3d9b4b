import Foundation
import PolicyGate
import PolicyGateTestKit
import Testing

/// Adaptive caps through the public API, on a manual clock: a 429 lowers them to 0.7, once per
/// congestion event; they grow back by 5 % of the configured caps every 5 s, to exactly the
/// configured caps; limit changes keep the factor; waiters are never stranded.
@Suite("Adaptive caps", .timeLimit(.minutes(5)))
struct AdaptiveLimitsTests {
    let clock = ManualClock()
    let a = PolicyKey(provider: "openai", scope: .user("a"))
    let b = PolicyKey(provider: "openai", scope: .user("b"))
    static let caps = PolicyLimits(requestsPerMinute: 100, tokensPerMinute: 10_000, maxConcurrent: 10)

    func gate(_ limits: PolicyLimits = caps, telemetry: (any PolicyTelemetry)? = nil) throws -> PolicyService {
        var configuration = PolicyConfiguration(limits: ["openai": limits])
        configuration.adaptive = ["openai"]
        return try PolicyService(configuration: configuration, clock: clock, telemetry: telemetry)
    }

    func adaptive(_ gate: PolicyService) throws -> PolicyState.Adaptive {
        try #require(gate.currentState(for: a).adaptive)
    }

    @Test("read from the provider's table with did-you-mean, refused with feedback_scope = \"key\", written back")
    func configuration() throws {
        let configuration = try PolicyConfiguration(
            toml: """
                [limits.openai]
                requests_per_minute = 100
                adaptive = true

                [limits.anthropic]
                requests_per_minute = 50
                adaptive = false
                """)
        #expect(configuration.adaptive == ["openai"])
        let again = try PolicyConfiguration(json: try JSONEncoder().encode(configuration))
        #expect(again == configuration)
        let error = try #require(throws: PolicyConfigurationError.self) {
            try PolicyConfiguration(
                toml: """
                    [limits.a]
                    requests_per_minute = 1
                    adaptiv = true
                    [limits.b]
                    requests_per_minute = 1
                    adaptive = "yes"
                    [limits.c]
                    requests_per_minute = 1
                    adaptive = true
                    feedback_scope = "key"
                    """)
        }
        let found = Dictionary(uniqueKeysWithValues: error.diagnostics.map { ($0.keyPath, $0) })
        #expect(found.keys.sorted() == ["limits.a.adaptiv", "limits.b.adaptive", "limits.c.adaptive"], "\(error)")
        #expect(found["limits.a.adaptiv"]?.suggestion == "adaptive")
        #expect(found["limits.b.adaptive"]?.message.contains("true or false") == true)
        #expect(found["limits.c.adaptive"]?.message.contains("feedback_scope") == true)
        // Built in code, the same combination is refused by the gate.
        var code = PolicyConfiguration(limits: ["c": PolicyLimits(requestsPerMinute: 1)])
        code.adaptive = ["c"]
        code.feedbackScope = ["c": .key]
        #expect(throws: PolicyError.self) { _ = try PolicyService(configuration: code, clock: clock) }
        // The gate reports it in its configuration.
        let gate = try gate()
        #expect(gate.configuration.adaptive == ["openai"])
    }

    @Test("a 429 lowers every cap to 0.7, and the gate enforces the lowered caps")
    func decrease() throws {
        let telemetry = TelemetryRecorder()
        let gate = try gate(telemetry: telemetry)
        #expect(try adaptive(gate).factor == 1 && adaptive(gate).limits == Self.caps)
        gate.reportThrottled(a, retryAfter: .seconds(1))
        let state = try adaptive(gate)
        #expect(state.factor == 0.7)
        #expect(state.limits == PolicyLimits(requestsPerMinute: 70, tokensPerMinute: 7_000, maxConcurrent: 7))
        #expect(state.nextIncreaseIn == .seconds(6))  // 5 s after the pause ends
        #expect(gate.currentState(for: b).windows.first?.requests.cap == 70)
        let event = try #require(telemetry.adaptations.first)
        #expect(event.provider == "openai" && event.previousFactor == 1 && event.factor == 0.7 && event.isDecrease)
        #expect(event.limits == state.limits && event.configured == Self.caps)
        // Enforced: 7 permits at once, 7 000 tokens a minute.
        clock.advance(by: .seconds(1))  // the pause is over
        let box = PermitBox()
        var held: [PermitBox] = []
        for _ in 0..<7 {
            let one = PermitBox()
            one.store(try gate.tryAcquire(a, estimatedTokens: 900))
            held.append(one)
        }
        #expect(throws: PolicyError.self) { _ = try gate.tryAcquire(a, estimatedTokens: 1) }
        held.forEach { $0.release() }
        let error = try #require(throws: PolicyError.self) { _ = try gate.tryAcquire(a, estimatedTokens: 800) }
        #expect(error.limit == .tokensPerMinute, "\(error)")
        box.store(try gate.tryAcquire(a, estimatedTokens: 700))
        box.release()
    }

    @Test("429s within the quiet period are one event; a retry-after header counts as a 429")
    func oneEventPerBurst() throws {
        let telemetry = TelemetryRecorder()
        let gate = try gate(telemetry: telemetry)
        gate.reportThrottled(a, retryAfter: .milliseconds(500))
        gate.reportThrottled(b, retryAfter: .milliseconds(500))
        clock.advance(by: .seconds(1))
        gate.observe(headers: ["retry-after": "1"], for: a)
        #expect(try adaptive(gate).factor == 0.7)
        clock.advance(by: .seconds(1))  // 2 s after the decrease: a new event
        gate.observe(headers: ["Retry-After": "3"], for: b)
        #expect(try adaptive(gate).factor == 0.49)
        // The quiet period lasts as long as the pause that came with it (3 s here).
        clock.advance(by: .milliseconds(2_500))
        gate.reportThrottled(a)
        #expect(try adaptive(gate).factor == 0.49)
        clock.advance(by: .milliseconds(500))
        gate.reportThrottled(a)
        #expect(try adaptive(gate).factor == 0.343)
        #expect(telemetry.adaptations.map(\.factor) == [0.7, 0.49, 0.343])
        // Headers without a retry time change nothing.
        clock.advance(by: .seconds(4))
        gate.observe(headers: ["x-ratelimit-remaining-requests": "10", "x-ratelimit-reset-requests": "1s"], for: a)
        #expect(try adaptive(gate).factor == 0.343)
    }

    @Test("the floor: a tenth of the configured caps, each at least 1")
    func floor() throws {
        let gate = try gate(PolicyLimits(requestsPerMinute: 5, tokensPerDay: 1_000_000))
        for _ in 0..<12 {
            gate.reportThrottled(a, retryAfter: .zero)
            clock.advance(by: .seconds(2))
        }
        let state = try adaptive(gate)
        #expect(state.factor >= 0.1 && state.factor < 0.2)
        #expect(state.limits.requestsPerMinute == 1)
        #expect(state.limits.tokensPerDay.map { $0 >= 100_000 } == true)
    }

    @Test("the caps grow back by 5 % of the configured ones every 5 s, to exactly the configured caps")
    func recovery() throws {
        let telemetry = TelemetryRecorder()
        let gate = try gate(PolicyLimits(requestsPerMinute: 333, tokensPerMinute: 99_999), telemetry: telemetry)
        gate.reportThrottled(a, retryAfter: .zero)
        #expect(try adaptive(gate).limits == PolicyLimits(requestsPerMinute: 233, tokensPerMinute: 69_999))
        clock.advance(by: .seconds(5) - .nanoseconds(1))
        #expect(try adaptive(gate).factor == 0.7)
        clock.advance(by: .nanoseconds(1))
        #expect(try adaptive(gate).factor == 0.75)
        #expect(try adaptive(gate).limits == PolicyLimits(requestsPerMinute: 249, tokensPerMinute: 74_999))
        clock.advance(by: .seconds(25))
        let state = try adaptive(gate)
        #expect(state.factor == 1 && state.limits == PolicyLimits(requestsPerMinute: 333, tokensPerMinute: 99_999))
        #expect(state.nextIncreaseIn == nil)
        clock.advance(by: .seconds(60))
        #expect(try adaptive(gate).limits == PolicyLimits(requestsPerMinute: 333, tokensPerMinute: 99_999))
        // Admissions follow: all 333 requests of a minute, not one more.
        for _ in 0..<333 { _ = try gate.tryAcquire(a, estimatedTokens: 1) }
        #expect(throws: PolicyError.self) { _ = try gate.tryAcquire(a, estimatedTokens: 1) }
        // Each step was reported once, in order.
        let factors = telemetry.adaptations.map(\.factor)
        #expect(factors.first == 0.7 && factors.last == 1 && factors == factors.sorted() && Set(factors).count == factors.count)
    }

    @Test("a change of the configured caps keeps the factor: setLimits, a reload, adaptive turned off and on")
    func limitChanges() async throws {
        let gate = try gate()
        gate.reportThrottled(a, retryAfter: .zero)
        try await gate.setLimits(PolicyLimits(requestsPerMinute: 200, maxConcurrent: 20), for: "openai")
        #expect(try adaptive(gate).limits == PolicyLimits(requestsPerMinute: 140, maxConcurrent: 14))
        #expect(gate.currentState(for: a).limits == PolicyLimits(requestsPerMinute: 200, maxConcurrent: 20))
        var reload = PolicyConfiguration(limits: ["openai": PolicyLimits(requestsPerMinute: 50)])
        reload.adaptive = ["openai"]
        try await gate.apply(reload)
        #expect(try adaptive(gate).limits == PolicyLimits(requestsPerMinute: 35))
        clock.advance(by: .seconds(30))
        #expect(try adaptive(gate).limits == PolicyLimits(requestsPerMinute: 50))  // never above
        gate.reportThrottled(a, retryAfter: .zero)
        try await gate.apply(PolicyConfiguration(limits: ["openai": PolicyLimits(requestsPerMinute: 50)]))
        #expect(gate.currentState(for: a).adaptive == nil)
        #expect(gate.currentState(for: a).windows.first?.requests.cap == 50)
        try await gate.apply(reload)
        #expect(try adaptive(gate).factor == 1)
    }

    @Test("a waiter whose estimate exceeds the lowered token cap waits for the caps to grow back, then is admitted on time")
    func waiterAboveAdaptedCap() async throws {
        let gate = try gate(PolicyLimits(tokensPerMinute: 1_000))
        gate.reportThrottled(a, retryAfter: .zero)
        // 700 tokens a minute now; 800 is within the configured cap: not oversized, not now.
        let error = try #require(throws: PolicyError.self) { _ = try gate.tryAcquire(a, estimatedTokens: 800) }
        #expect(error.code == .rateLimited && error.limit == .tokensPerMinute && error.retryAfter == .seconds(5))
        #expect(throws: PolicyError.self) { _ = try gate.tryAcquire(a, estimatedTokens: 1_001) }
        let (box, task) = startWaiter(gate, b, tokens: 800)
        await eventually("waiting") { gate.currentState(for: b).queued == 1 }
        clock.advance(by: .seconds(5))  // 750: not yet
        for _ in 0..<500 { await Task.yield() }
        #expect(!box.isDone)
        clock.advance(by: .seconds(5))  // 800: the gate's own timer admits it, no other call needed
        await eventually("admitted when the caps grew back") { box.isDone }
        #expect(box.hasPermit)
        box.release()
        await task.value
    }

    @Test("input and output caps adapt too; an input estimate above the lowered cap waits for it to grow back")
    func inputOutputAdapt() async throws {
        let gate = try gate(PolicyLimits(inputTokensPerMinute: 1_000, outputTokensPerMinute: 200))
        gate.reportThrottled(a, retryAfter: .zero)
        let window = try #require(gate.currentState(for: a).windows.first)
        #expect(window.inputTokens?.cap == 700 && window.outputTokens?.cap == 140)
        // 800 input tokens fit the configured cap, not the lowered one: rateLimited, not oversized.
        let error = try #require(throws: PolicyError.self) {
            _ = try gate.tryAcquire(a, estimatedInputTokens: 800, estimatedOutputTokens: 10)
        }
        #expect(error.code == .rateLimited && error.limit == .inputTokensPerMinute && error.retryAfter == .seconds(5))
        // Far above the configured cap: oversized at once, naming the input cap.
        let oversized = try #require(throws: PolicyError.self) {
            _ = try gate.tryAcquire(a, estimatedInputTokens: 5_000, estimatedOutputTokens: 10)
        }
        #expect(oversized.code == .oversized && oversized.limit == .inputTokensPerMinute)
        let box = PermitBox()
        let task = Task {
            do {
                box.store(try await gate.acquire(b, estimatedInputTokens: 800, estimatedOutputTokens: 10))
            } catch {
                box.fail(error)
            }
        }
        await eventually("waiting") { gate.currentState(for: b).queued == 1 }
        clock.advance(by: .seconds(10))  // 800: admitted by the gate's own timer
        await eventually("admitted when the caps grew back") { box.isDone }
        #expect(box.hasPermit)
        box.release()
        await task.value
    }

    @Test("lowered under load: permits in flight run on, nobody new is admitted past the lowered cap, waiters are not stranded")
    func underLoad() async throws {
        let gate = try gate(PolicyLimits(maxConcurrent: 10))
        var held: [PermitBox] = []
        for _ in 0..<10 {
            let box = PermitBox()
            box.store(try gate.tryAcquire(a))
            held.append(box)
        }
        let (waiter, task) = startWaiter(gate, a, tokens: 0)
        await eventually("waiting") { gate.currentState(for: a).queued == 1 }
        gate.reportThrottled(a, retryAfter: .zero)  // 7 slots now
        for box in held.prefix(3) { box.release() }
        for _ in 0..<500 { await Task.yield() }
        #expect(!waiter.isDone)  // 7 in flight: full
        held[3].release()
        await eventually("admitted below the lowered cap") { waiter.isDone }
        #expect(waiter.hasPermit && gate.currentState(for: a).inFlight == 7)
        waiter.release()
        for box in held.dropFirst(4) { box.release() }
        await task.value
    }
}

/// A seeded random mix of 429s, retry-after headers, successes, limit changes, waiters and
/// cancellations through the public API. A model of adaptive caps written here from the
/// documented rule gives the caps in force at every instant; at every instant where the gate
/// admitted something, the exact count of admissions in the last 60 s, their tokens and the
/// permits in flight are within those caps. Waiters all finish once the load stops.
@Suite("Adaptive caps against a model", .timeLimit(.minutes(5)))
struct AdaptiveLimitsModelTests {
    /// The documented rule: ×0.7 per congestion event (429s within 2 s of a decrease or
    /// before its pause ends are the same event), floor 0.1, +0.05 every 5 s from the end of
    /// the pause.
    struct Model {
        var base = 1_000
        var since: Int64 = 0
        var quietUntil: Int64 = .min
        var decreased = false

        func factor(_ now: Int64) -> Int {
            guard decreased, now > since else { return decreased ? base : 1_000 }
            return min(1_000, base + 50 * Int((now - since) / 5_000_000_000))
        }

        mutating func throttled(_ now: Int64, pause: Int64) {
            guard now >= quietUntil else { return }
            base = max(100, factor(now) * 700 / 1_000)
            since = now + pause  // growth starts when the pause ends
            decreased = true
            quietUntil = max(now + 2_000_000_000, now + pause)
        }

        static func cap(_ configured: Int, _ factor: Int) -> Int { max(1, configured * factor / 1_000) }
    }

    @Test("admissions never exceed the adapted caps; waiters are never stranded")
    func replay() async throws {
        let seeds: [UInt64] = ProcessInfo.processInfo.environment["POLICYGATE_SOAK"] == "1" ? Array(1...200) : Array(1...10)
        var totals = (admitted: 0, waited: 0, decreases: 0, cancelled: 0, refused: 0)
        for seed in seeds {
            let counts = try await run(seed: seed)
            totals.admitted += counts.admitted
            totals.waited += counts.waited
            totals.decreases += counts.decreases
            totals.cancelled += counts.cancelled
            totals.refused += counts.refused
        }
        #expect(
            totals.admitted > 200 && totals.waited > 100 && totals.decreases > 100 && totals.cancelled > 40 && totals.refused > 700,
            "not every path was exercised: \(totals)")
        print("adaptive model: \(seeds.count) seeds: \(totals)")
    }

    func run(seed: UInt64) async throws -> (admitted: Int, waited: Int, decreases: Int, cancelled: Int, refused: Int) {
        var random = SeededRandomNumberGenerator(seed: seed)
        let clock = ManualClock()
        let key = PolicyKey(provider: "p", scope: .global)
        var configured = (requests: 200, tokens: 20_000, slots: 8)
        var configuration = PolicyConfiguration(limits: [
            "p": PolicyLimits(requestsPerMinute: configured.requests, tokensPerMinute: configured.tokens, maxConcurrent: configured.slots)
        ])
        configuration.adaptive = ["p"]
        let gate = try PolicyService(configuration: configuration, clock: clock)
        var model = Model()
        var admissions: [(at: Int64, tokens: Int)] = []
        var held: [PermitBox] = []
        var waiters: [(box: PermitBox, task: Task<Void, Never>, tokens: Int, counted: Bool)] = []
        var counts = (admitted: 0, waited: 0, decreases: 0, cancelled: 0, refused: 0)
        func now() -> Int64 {
            let offset = clock.now.offset.components
            return offset.seconds * 1_000_000_000 + offset.attoseconds / 1_000_000_000
        }
        func fail(_ what: String) { Issue.record("seed \(seed), at \(Duration.nanoseconds(now())): \(what)") }
        /// Waits until every admitted waiter holds its permit, then counts the new admissions.
        func settle() async {
            await eventually("waiters settle") {
                gate.currentState(for: key).queued + waiters.filter(\.box.isDone).count == waiters.count
            }
            var admittedNow = false
            for i in waiters.indices where waiters[i].box.isDone && !waiters[i].counted {
                waiters[i].counted = true
                if waiters[i].box.hasPermit {
                    admissions.append((now(), waiters[i].tokens))
                    held.append(waiters[i].box)
                    counts.waited += 1
                    admittedNow = true
                }
            }
            if admittedNow { check() }
        }
        /// The caps at this instant hold for everything admitted up to it.
        func check() {
            let t = now()
            let factor = model.factor(t)
            let recent = admissions.filter { $0.at > t - 60_000_000_000 }
            let requestCap = Model.cap(configured.requests, factor)
            let tokenCap = Model.cap(configured.tokens, factor)
            let slotCap = Model.cap(configured.slots, factor)
            if recent.count > requestCap { fail("\(recent.count) requests in the last minute, cap \(requestCap)") }
            let tokens = recent.reduce(0) { $0 + $1.tokens }
            if tokens > tokenCap { fail("\(tokens) tokens in the last minute, cap \(tokenCap)") }
            // The gate's own count: a waiter its timer admitted may not have reached the test yet.
            let inFlight = max(held.filter(\.hasPermit).count, gate.currentState(for: key).inFlight)
            if inFlight > slotCap { fail("\(inFlight) in flight, cap \(slotCap)") }
        }

        for _ in 0..<600 {
            let t = now()
            let gateFactor = gate.currentState(for: key).adaptive?.factor
            if gateFactor != Double(model.factor(t)) / 1_000 {
                fail("factor \(gateFactor.map(String.init(describing:)) ?? "nil"), the model says \(model.factor(t))")
            }
            switch Int.random(in: 0..<100, using: &random) {
            case 0..<25:
                clock.advance(by: .milliseconds(Int.random(in: 0...3_000, using: &random)))
                for _ in 0..<300 { await Task.yield() }  // timers the advance made due run
                await settle()
            case 25..<55:
                let tokens = Int.random(in: 1...400, using: &random)
                do {
                    let box = PermitBox()
                    box.store(try gate.tryAcquire(key, estimatedTokens: tokens))
                    held.append(box)
                    admissions.append((now(), tokens))
                    counts.admitted += 1
                    check()
                } catch {
                    counts.refused += 1
                }
            case 55..<75:
                // A call succeeds: its permit is released (waiters may go).
                if let i = held.indices.randomElement(using: &random) {
                    held[i].release()
                    held.remove(at: i)
                    await settle()
                }
            case 75..<80:
                // A 429, as a permit or a header reports it.
                let pause = Int64.random(in: 0...3, using: &random) * 1_000_000_000
                let before = model.factor(t)
                model.throttled(t, pause: pause)
                if model.factor(t) != before { counts.decreases += 1 }
                if Bool.random(using: &random) {
                    gate.reportThrottled(key, retryAfter: .nanoseconds(pause))
                } else {
                    gate.observe(headers: ["retry-after": "\(pause / 1_000_000_000)"], for: key)
                }
                await settle()
            case 80..<85:
                let tokens = Int.random(in: 1...400, using: &random)
                let (box, task) = startWaiter(gate, key, tokens: tokens)
                waiters.append((box, task, tokens, false))
                await eventually("queued or admitted") {
                    box.isDone || gate.currentState(for: key).queued + waiters.filter(\.box.isDone).count == waiters.count
                }
                await settle()
            case 85..<93:
                if let i = waiters.indices.filter({ !waiters[$0].box.isDone }).randomElement(using: &random) {
                    waiters[i].task.cancel()
                    await eventually("cancelled") { waiters[i].box.isDone }
                    if !waiters[i].box.hasPermit { counts.cancelled += 1 }
                    await settle()
                }
            default:
                configured = (
                    Int.random(in: 20...300, using: &random), Int.random(in: 2_000...40_000, using: &random),
                    Int.random(in: 2...12, using: &random)
                )
                try await gate.setLimits(
                    PolicyLimits(
                        requestsPerMinute: configured.requests, tokensPerMinute: configured.tokens, maxConcurrent: configured.slots),
                    for: "p")
                await settle()
            }
        }
        // The load stops: every permit is released, and time passes; nobody is left waiting.
        for box in held { box.release() }
        held.removeAll()
        for _ in 0..<40 {
            clock.advance(by: .seconds(5))
            await settle()
            for box in held { box.release() }
            held.removeAll()
        }
        for waiter in waiters {
            if !waiter.box.isDone { fail("a waiter was stranded") }
            waiter.task.cancel()
            await waiter.task.value
        }
        return counts
    }
}
