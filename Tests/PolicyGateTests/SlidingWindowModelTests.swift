import PolicyGate
import PolicyGateTestKit
import Testing

/// Replays long seeded random traces through the gate and through an exact sliding-log model,
/// and checks at every step that the gate never admits what the exact rule forbids, and never
/// refuses or delays what the exact rule allows by more than 1/60 of a window.
@Suite("Sliding windows against an exact model")
struct SlidingWindowModelTests {
    /// The exact rule: a log of admitted calls with their current token counts.
    struct Model {
        struct Call {
            let key: Int
            let at: Int64
            var tokens: Int
            var alive: Bool
            /// Its place in admission order.
            let number: Int
        }

        var limits: PolicyLimits
        var calls: [Int: Call] = [:]
        /// Per window, the first call number it counts: a window capped anew (by `setLimits`)
        /// starts empty; `Int.max` while no cap covers it.
        var trackedSince: [Int] = [0, 0, 0]

        init(limits: PolicyLimits) {
            self.limits = limits
            trackedSince = (0..<3).map { Self.tracks(limits, $0) ? 0 : .max }
        }

        static func tracks(_ limits: PolicyLimits, _ w: Int) -> Bool {
            limits[[.requestsPerMinute, .requestsPerHour, .requestsPerDay][w]] != nil
                || limits[[.tokensPerMinute, .tokensPerHour, .tokensPerDay][w]] != nil
        }

        /// Takes new limits as `setLimits` does: windows capped anew count from the next call.
        mutating func change(to new: PolicyLimits, nextNumber: Int) {
            for w in 0..<3 {
                if !Self.tracks(new, w) {
                    trackedSince[w] = .max
                } else if trackedSince[w] == .max {
                    trackedSince[w] = nextNumber
                }
            }
            limits = new
        }

        static let windows: [(PolicyWindow, Int64)] = [
            (.minute, 60_000_000_000), (.hour, 3_600_000_000_000), (.day, 86_400_000_000_000),
        ]

        /// Requests and tokens of `key` admitted in `(now - length - slack, now]`.
        func usage(key: Int, now: Int64, length: Int64, slack: Int64 = 0) -> (requests: Int, tokens: Int) {
            var requests = 0
            var tokens = 0
            let first = trackedSince[Self.windows.firstIndex { $0.1 == length } ?? 0]
            for call in calls.values
            where call.key == key && call.number >= first && call.at > now - length - slack && call.at <= now {
                requests += 1
                tokens += call.tokens
            }
            return (requests, tokens)
        }

        func inFlight(key: Int) -> Int { calls.values.filter { $0.key == key && $0.alive }.count }

        /// The caps a call of `tokens` would break under the exact rule (slack 0) or under the
        /// relaxed rule that also counts calls up to 1/60 of the window older (slack 1).
        func broken(key: Int, tokens: Int, now: Int64, relaxed: Bool) -> Set<PolicyLimitKind> {
            var result: Set<PolicyLimitKind> = []
            for (window, length) in Self.windows {
                let used = usage(key: key, now: now, length: length, slack: relaxed ? length / 60 : 0)
                let requestKind: PolicyLimitKind = [.requestsPerMinute, .requestsPerHour, .requestsPerDay][window.rawValue]
                let tokenKind: PolicyLimitKind = [.tokensPerMinute, .tokensPerHour, .tokensPerDay][window.rawValue]
                if let cap = limits[requestKind], used.requests + 1 > cap { result.insert(requestKind) }
                if let cap = limits[tokenKind], used.tokens + tokens > cap { result.insert(tokenKind) }
            }
            if let cap = limits.maxConcurrent, inFlight(key: key) >= cap { result.insert(.concurrency) }
            return result
        }

        mutating func forget(before now: Int64) {
            calls = calls.filter { $0.value.alive || $0.value.at > now - 86_400_000_000_000 - 1_440_000_000_000 }
        }
    }

    final class Permits {
        var boxes: [Int: PermitBox] = [:]
    }

    static func randomLimits(_ rng: inout SeededGenerator) -> PolicyLimits {
        var limits = PolicyLimits()
        // Small caps, so that every cap binds often.
        if Bool.random(using: &rng) { limits.requestsPerMinute = Int.random(in: 2...12, using: &rng) }
        if Bool.random(using: &rng) { limits.tokensPerMinute = Int.random(in: 200...2_000, using: &rng) }
        if Int.random(in: 0..<3, using: &rng) == 0 { limits.requestsPerHour = Int.random(in: 10...80, using: &rng) }
        if Int.random(in: 0..<3, using: &rng) == 0 { limits.tokensPerHour = Int.random(in: 1_000...10_000, using: &rng) }
        if Int.random(in: 0..<4, using: &rng) == 0 { limits.requestsPerDay = Int.random(in: 40...300, using: &rng) }
        if Int.random(in: 0..<4, using: &rng) == 0 { limits.tokensPerDay = Int.random(in: 5_000...40_000, using: &rng) }
        if Bool.random(using: &rng) { limits.maxConcurrent = Int.random(in: 1...4, using: &rng) }
        if limits.isUnlimited { limits.requestsPerMinute = 5 }
        return limits
    }

    static var seeds: [UInt64] {
        let extra = Environment.soak ? (100...139).map(UInt64.init) : []
        return [1, 2, 3, 4, 5, 6, 7, 8] + extra
    }

    @Test("random traces never over-admit and never delay beyond 1/60 of a window", .timeLimit(.minutes(5)), arguments: seeds)
    func replay(seed: UInt64) async throws {
        var rng = SeededGenerator(seed: seed)
        let limits = Self.randomLimits(&rng)
        let clock = ManualClock()
        let gate = try PolicyService(limits: ["p": limits], clock: clock)
        let keys = [PolicyKey(provider: "p", scope: .user("a")), PolicyKey(provider: "p", scope: .user("b"))]
        var model = Model(limits: limits)
        let permits = Permits()
        var nextID = 0
        var admissions = 0, rejections = 0, waits = 0, cancels = 0, retries = 0
        let steps = Environment.soak ? 6_000 : 1_500
        var maxTokens: Int {
            let caps = model.limits
            return [caps.tokensPerMinute, caps.tokensPerHour, caps.tokensPerDay].compactMap { $0 }.min() ?? 1_000
        }
        var changes = 0

        func now() -> Int64 { clock.now.offset.nanoseconds }

        /// Checks the gate's admission of `tokens` for key `k` at now against the model, records it.
        func admitted(_ box: PermitBox, k: Int, tokens: Int, context: String) {
            let broken = model.broken(key: k, tokens: tokens, now: now(), relaxed: false)
            #expect(broken.isEmpty, "seed \(seed): admitted \(context) at \(clock.now) although the exact rule forbids it: \(broken)")
            nextID += 1
            model.calls[nextID] = .init(key: k, at: now(), tokens: tokens, alive: true, number: nextID)
            permits.boxes[nextID] = box
            admissions += 1
        }

        func tryOnce(k: Int, tokens: Int) -> (PermitBox?, PolicyError?) {
            do {
                let permit = try gate.tryAcquire(keys[k], estimatedTokens: tokens)
                let box = PermitBox()
                box.store(permit)
                return (box, nil)
            } catch {
                return (nil, error)
            }
        }

        for _ in 0..<steps {
            if Int.random(in: 0..<100, using: &rng) < 3 {
                // The provider's limits change: one cap up, down, away or in, or all anew.
                var new = model.limits
                switch Int.random(in: 0..<6, using: &rng) {
                case 0: new = Self.randomLimits(&rng)
                case 1: new.maxConcurrent = Bool.random(using: &rng) ? Int.random(in: 1...4, using: &rng) : nil
                case 2: new.tokensPerMinute = new.tokensPerMinute.map { max(1, $0 / 2) } ?? Int.random(in: 200...2_000, using: &rng)
                case 3: new.tokensPerMinute = new.tokensPerMinute.map { $0 * 2 }
                case 4: new.requestsPerMinute = new.requestsPerMinute.map { max(1, $0 / 2) } ?? Int.random(in: 2...12, using: &rng)
                default: new.requestsPerHour = new.requestsPerHour == nil ? Int.random(in: 10...80, using: &rng) : nil
                }
                if new.isUnlimited { new.requestsPerMinute = 5 }
                try await gate.setLimits(new, for: "p")
                model.change(to: new, nextNumber: nextID + 1)
                changes += 1
            }
            let limits = model.limits
            let k = Int.random(in: 0..<2, using: &rng)
            var action = Int.random(in: 0..<100, using: &rng)
            if let cap = limits.maxConcurrent, model.inFlight(key: k) >= cap, Bool.random(using: &rng) {
                action = 99  // keep slots turning over, so that windows get to bind too
            }
            switch action {
            case 0..<25:  // time passes: mostly a little, sometimes a lot
                let jump: Duration =
                    switch Int.random(in: 0..<20, using: &rng) {
                    case 0: .seconds(Int.random(in: 600...90_000, using: &rng))
                    case 1..<4: .seconds(Int.random(in: 30...600, using: &rng))
                    default: .milliseconds(Int.random(in: 0...5_000, using: &rng))
                    }
                clock.advance(by: jump)
                model.forget(before: now())
            case 25..<65:  // a non-waiting attempt
                let tokens = Int.random(in: 1...max(1, maxTokens / 3), using: &rng)
                let (box, maybeError) = tryOnce(k: k, tokens: tokens)
                if let box {
                    admitted(box, k: k, tokens: tokens, context: "tryAcquire(\(tokens))")
                    continue
                }
                let error = try #require(maybeError)
                if error.code == .oversized {
                    // A token cap was lowered below this estimate.
                    #expect(tokens > maxTokens, "seed \(seed): \(tokens) tokens refused as oversized under \(limits)")
                    continue
                }
                #expect(error.code == .rateLimited, "seed \(seed): \(error)")
                let limit = try #require(error.limit)
                let relaxed = model.broken(key: k, tokens: tokens, now: now(), relaxed: true)
                #expect(
                    relaxed.contains(limit),
                    "seed \(seed): rejected \(tokens) at \(clock.now) for \(limit), but even counting 1/60 of a window more it fits: \(relaxed)"
                )
                rejections += 1
                // Retry exactly after `retryAfter`: it must succeed; 1 ns earlier it must not.
                if limit != .concurrency, let retryAfter = error.retryAfter, Bool.random(using: &rng) {
                    retries += 1
                    if retryAfter > .nanoseconds(1) {
                        clock.advance(by: retryAfter - .nanoseconds(1))
                        let (early, _) = tryOnce(k: k, tokens: tokens)
                        #expect(early == nil, "seed \(seed): admitted 1 ns before retryAfter \(retryAfter)")
                        if let early { admitted(early, k: k, tokens: tokens, context: "early retry"); continue }
                        clock.advance(by: .nanoseconds(1))
                    } else {
                        clock.advance(by: retryAfter)
                    }
                    let (late, lateError) = tryOnce(k: k, tokens: tokens)
                    #expect(late != nil, "seed \(seed): retry after \(retryAfter) failed: \(String(describing: lateError))")
                    if let late { admitted(late, k: k, tokens: tokens, context: "retry after \(retryAfter)") }
                }
            case 65..<72:  // a waiting acquire, admitted when the gate's own timer fires
                let tokens = Int.random(in: 1...max(1, maxTokens / 3), using: &rng)
                let broken = model.broken(key: k, tokens: tokens, now: now(), relaxed: false)
                guard !broken.isEmpty, !broken.contains(.concurrency),
                    model.broken(key: k, tokens: tokens, now: now(), relaxed: true).contains(where: { $0 != .concurrency })
                else { continue }
                waits += 1
                let (box, task) = startWaiter(gate, keys[k], tokens: tokens)
                await eventually("waiter queued") { gate.currentState(for: keys[k]).queued == 1 }
                var rounds = 0
                while !box.isDone && rounds < 200 {
                    rounds += 1
                    let before = now()
                    guard let next = clock.nextDeadline else {
                        await Task.yield()
                        continue
                    }
                    // Not admitted yet: the relaxed rule must still forbid it just before the timer.
                    if next.offset.nanoseconds - 1 > before {
                        clock.advance(to: ManualClock.Instant(offset: next.offset - .nanoseconds(1)))
                        #expect(
                            !model.broken(key: k, tokens: tokens, now: now(), relaxed: true).isEmpty,
                            "seed \(seed): waiter still waits at \(clock.now) though even the relaxed rule admits it")
                    }
                    clock.advance(to: next)
                    await eventually("timer handled") { box.isDone || clock.nextDeadline.map { $0 > next } ?? true }
                }
                await task.value
                #expect(box.hasPermit, "seed \(seed): waiter failed: \(String(describing: box.error))")
                if box.hasPermit { admitted(box, k: k, tokens: tokens, context: "waiter(\(tokens))") }
            case 72..<78:  // a waiter cancelled while it waits
                let tokens = Int.random(in: 1...max(1, maxTokens / 3), using: &rng)
                guard !model.broken(key: k, tokens: tokens, now: now(), relaxed: false).isEmpty,
                    !model.broken(key: k, tokens: tokens, now: now(), relaxed: true).isEmpty
                else { continue }
                let before = gate.currentState(for: keys[k])
                let (box, task) = startWaiter(gate, keys[k], tokens: tokens)
                await eventually("waiter queued") { gate.currentState(for: keys[k]).queued == 1 }
                task.cancel()
                await task.value
                #expect(box.error is CancellationError, "seed \(seed): \(String(describing: box.error))")
                let after = gate.currentState(for: keys[k])
                #expect(after.queued == 0 && after.inFlight == before.inFlight)
                #expect(after.windows.map(\.requests.used) == before.windows.map(\.requests.used))
                cancels += 1
            case 78..<90:  // commit above or below the estimate (or 0: the call failed)
                let alive = model.calls.filter { $0.value.alive }.keys.sorted()
                guard let id = alive.randomElement(using: &rng) else { continue }
                let estimate = model.calls[id]!.tokens
                let actual = Int.random(in: 0..<4, using: &rng) == 0 ? 0 : Int.random(in: 0...(estimate * 2), using: &rng)
                try permits.boxes[id]!.commit(actual)
                model.calls[id]!.tokens = actual
            default:  // release
                let alive = model.calls.filter { $0.value.alive }.keys.sorted()
                guard let id = alive.randomElement(using: &rng) else { continue }
                permits.boxes[id]!.release()
                permits.boxes[id] = nil
                model.calls[id]!.alive = false
            }
            // The readout agrees with the model: never below the exact counts, never above the relaxed ones.
            for (index, key) in keys.enumerated() {
                let state = gate.currentState(for: key)
                #expect(state.inFlight == model.inFlight(key: index))
                #expect(state.queued == 0)
                for entry in state.windows {
                    let length = entry.window.duration.nanoseconds
                    let exact = model.usage(key: index, now: now(), length: length)
                    let relaxed = model.usage(key: index, now: now(), length: length, slack: length / 60)
                    #expect(
                        entry.requests.used >= exact.requests && entry.requests.used <= relaxed.requests,
                        "seed \(seed): \(entry.window) requests \(entry.requests.used) not in \(exact.requests)...\(relaxed.requests)")
                    #expect(
                        entry.tokens.used >= exact.tokens && entry.tokens.used <= relaxed.tokens,
                        "seed \(seed): \(entry.window) tokens \(entry.tokens.used) not in \(exact.tokens)...\(relaxed.tokens)")
                }
            }
        }
        // The trace exercised every path.
        #expect(admissions > 50 && rejections > 20, "seed \(seed): \(admissions) admitted, \(rejections) rejected")
        #expect(cancels > 0 && waits + retries > 0, "seed \(seed): \(waits) waited, \(cancels) cancelled, \(retries) retried")
        print(
            "seed \(seed): \(limits) changes \(changes) admitted \(admissions) rejected \(rejections) waited \(waits) cancelled \(cancels) retried \(retries)"
        )
        for box in permits.boxes.values { box.release() }
    }
}

enum Environment {
    /// Long runs, opt-in: `POLICYGATE_SOAK=1 swift test`.
    static var soak: Bool {
        #if canImport(Glibc) || canImport(Darwin)
        return getenvString("POLICYGATE_SOAK") != nil
        #else
        return false
        #endif
    }
}
