import Foundation
import PolicyGate
import PolicyGateTestKit
import Testing

/// Spend budgets through the public API: costs reserved from estimates and settled by commits,
/// exactly; each cap (hour, day, calendar month in the provider's time zone); calls without a
/// price; limit changes; readouts.
@Suite("Spend budgets", .timeLimit(.minutes(5)))
struct SpendBudgetTests {
    let key = PolicyKey(provider: "openai", scope: .user("u"))

    static func money(_ text: String) -> PolicyMoney {
        // Test amounts are literals known to parse.
        (try? PolicyMoney(parsing: text)) ?? .zero
    }

    /// gpt-4o prices (input 2.50, output 10.00, cache reads 1.25 per million) and a cheaper model.
    static let prices: [String: PolicyModelPrice] = [
        "gpt-4o*": PolicyModelPrice(input: money("2.50"), output: money("10.00"), cacheRead: money("1.25")),
        "gpt-4o-mini*": PolicyModelPrice(input: money("0.15"), output: money("0.60")),
    ]

    func limits(hour: String? = nil, day: String? = nil, month: String? = nil, zone: TimeZone? = nil) -> PolicyLimits {
        PolicyLimits(
            costPerHour: hour.map(Self.money), costPerDay: day.map(Self.money), costPerMonth: month.map(Self.money),
            prices: Self.prices, costTimeZone: zone)
    }

    @Test("an acquire reserves its estimated cost and a commit settles the actual cost, to the micro-unit")
    func reserveAndSettle() throws {
        let gate = try PolicyService(limits: ["openai": limits(hour: "5")], clock: ManualClock())
        // 100 000 in at 2.50 + 10 000 out at 10.00 per million: 0.25 + 0.10.
        var permit = try gate.tryAcquire(key, estimatedInputTokens: 100_000, estimatedOutputTokens: 10_000, model: "gpt-4o-2024-08-06")
        #expect(permit.countedCost == Self.money("0.35"))
        #expect(gate.currentState(for: key).spend.first?.spent == Self.money("0.35"))
        // 50 000 in + 5 000 out + 40 000 cache reads at 1.25: 0.125 + 0.05 + 0.05.
        try permit.commitTokens(input: 50_000, output: 5_000, cacheReads: 40_000)
        #expect(permit.countedCost == Self.money("0.225"))
        #expect(gate.currentState(for: key).spend.first?.spent == Self.money("0.225"))
        // A total alone is priced at the higher of input and output: 1 000 × 10.00 per million.
        try permit.commitTokens(1_000)
        #expect(permit.countedCost == Self.money("0.01"))
        let spend = try #require(gate.currentState(for: key).spend.first)
        #expect(spend.cap == .costPerHour && spend.spent == Self.money("0.01") && spend.limit == Self.money("5"))
        #expect(spend.remaining == Self.money("4.99"))
        // The more specific pattern wins: gpt-4o-mini at 0.15 / 0.60.
        let mini = try gate.tryAcquire(key, estimatedInputTokens: 1_000_000, estimatedOutputTokens: 1_000_000, model: "gpt-4o-mini")
        #expect(mini.countedCost == Self.money("0.75"))
        _ = consume permit
        _ = consume mini
        // Releasing keeps the spend: money spent stays spent.
        #expect(gate.currentState(for: key).spend.first?.spent == Self.money("0.76"))
    }

    @Test("telemetry carries the reserved cost, the settled cost, and refusals naming the cost cap")
    func telemetry() throws {
        let telemetry = TelemetryRecorder()
        let gate = try PolicyService(limits: ["openai": limits(hour: "0.50")], clock: ManualClock(), telemetry: telemetry)
        var permit = try gate.tryAcquire(key, estimatedInputTokens: 100_000, estimatedOutputTokens: 10_000, model: "gpt-4o")
        try permit.commitTokens(input: 100_000, output: 20_000)
        #expect(telemetry.acquires.first?.estimatedCost == Self.money("0.35"))
        #expect(telemetry.commits.first?.previousCost == Self.money("0.35") && telemetry.commits.first?.actualCost == Self.money("0.45"))
        #expect(throws: PolicyError.self) {
            _ = try gate.tryAcquire(key, estimatedInputTokens: 0, estimatedOutputTokens: 10_000, model: "gpt-4o")
        }
        #expect(telemetry.rejects.last?.error.costCap == .costPerHour)
        _ = consume permit
    }

    @Test("a call's cost is rounded up to the next micro-unit, once per call")
    func roundingUp() throws {
        let prices = ["m": PolicyModelPrice(input: Self.money("0.5"), output: Self.money("0.000001"), cacheRead: Self.money("0"))]
        let gate = try PolicyService(
            limits: ["openai": PolicyLimits(costPerDay: Self.money("1"), prices: prices)], clock: ManualClock())
        // 3 input tokens at 0.5 per million: 1.5 micro-units → 2. 1 output token: 10⁻⁶ micro-units → 1.
        var permit = try gate.tryAcquire(key, estimatedInputTokens: 3, estimatedOutputTokens: 1, model: "m")
        #expect(permit.countedCost.microUnits == 2)
        // 3 in + 1 out together: 1.500001 → 2 (rounded once, not per part).
        try permit.commitTokens(input: 3, output: 1)
        #expect(permit.countedCost.microUnits == 2)
        try permit.commitTokens(input: 0, output: 0, cacheReads: 1_000_000)
        #expect(permit.countedCost.microUnits == 0)
        // 2 000 001 input tokens: 1.0000005 units → 1_000_001 micro-units.
        try permit.commitTokens(input: 2_000_001, output: 0)
        #expect(permit.countedCost.microUnits == 1_000_001)
    }

    @Test("cost_per_hour refuses the call that would pass it, naming the cap, until the spend leaves the hour")
    func hourCap() throws {
        let clock = ManualClock()
        let gate = try PolicyService(limits: ["openai": limits(hour: "1.00")], clock: clock)
        let a = try gate.tryAcquire(key, estimatedInputTokens: 100_000, estimatedOutputTokens: 10_000, model: "gpt-4o")  // 0.35
        let b = try gate.tryAcquire(key, estimatedInputTokens: 100_000, estimatedOutputTokens: 10_000, model: "gpt-4o")  // 0.70
        clock.advance(by: .seconds(600))
        do {
            _ = try gate.tryAcquire(key, estimatedInputTokens: 100_000, estimatedOutputTokens: 10_000, model: "gpt-4o")
            Issue.record("admitted past cost_per_hour")
        } catch {
            #expect(error.code == .rateLimited && error.costCap == .costPerHour && error.limit == nil)
            // The first two leave the hour 3 000 s from now (within one bucket, 60 s, more).
            let after = try #require(error.retryAfter)
            #expect(after >= .seconds(3_000) && after <= .seconds(3_060), "\(after)")
        }
        #expect(gate.currentState(for: key).blockedByCost == nil)  // a small call still fits
        // 0.30 fits exactly: 1.00.
        let c = try gate.tryAcquire(key, estimatedInputTokens: 0, estimatedOutputTokens: 30_000, model: "gpt-4o")
        #expect(gate.currentState(for: key).spend.first?.spent == Self.money("1"))
        #expect(gate.currentState(for: key).blockedByCost == .costPerHour)
        _ = consume a
        _ = consume b
        _ = consume c
        clock.advance(by: .seconds(3_061))
        #expect(gate.currentState(for: key).spend.first?.spent == Self.money("0.3"))
        _ = try gate.tryAcquire(key, estimatedInputTokens: 100_000, estimatedOutputTokens: 10_000, model: "gpt-4o")
    }

    @Test("cost_per_day counts 24 h; a waiter is admitted when the spend leaves the day")
    func dayCapWaits() async throws {
        let clock = ManualClock()
        let gate = try PolicyService(limits: ["openai": limits(day: "0.50")], clock: clock)
        do {
            let first = try gate.tryAcquire(key, estimatedInputTokens: 100_000, estimatedOutputTokens: 10_000, model: "gpt-4o")
            _ = consume first
        }
        do {
            _ = try gate.tryAcquire(key, estimatedInputTokens: 100_000, estimatedOutputTokens: 10_000, model: "gpt-4o")
            Issue.record("admitted past cost_per_day")
        } catch {
            #expect(error.costCap == .costPerDay)
            let after = try #require(error.retryAfter)
            #expect(after >= .seconds(86_400) && after <= .seconds(86_400 + 1_440), "\(after)")
        }
        let waiter = Task {
            let permit = try await gate.acquire(
                key, estimatedInputTokens: 100_000, estimatedOutputTokens: 10_000, model: "gpt-4o", maxWait: .seconds(90_000))
            return permit.countedCost
        }
        await eventually("waiting") { gate.currentState(for: key).queued == 1 }
        clock.advance(by: .seconds(86_400 + 1_440))
        #expect(try await waiter.value == Self.money("0.35"))
    }

    @Test("a commit over its estimate holds later calls back; one under it frees room at once")
    func commitsOverAndUnder() async throws {
        let clock = ManualClock()
        let gate = try PolicyService(limits: ["openai": limits(hour: "1.00")], clock: clock)
        var a = try gate.tryAcquire(key, estimatedInputTokens: 0, estimatedOutputTokens: 50_000, model: "gpt-4o")  // 0.50
        try a.commitTokens(input: 0, output: 90_000)  // 0.90: over its estimate
        #expect(gate.currentState(for: key).spend.first?.spent == Self.money("0.9"))
        #expect(throws: PolicyError.self) {
            _ = try gate.tryAcquire(key, estimatedInputTokens: 0, estimatedOutputTokens: 20_000, model: "gpt-4o")
        }
        let waiter = Task {
            let permit = try await gate.acquire(
                key, estimatedInputTokens: 0, estimatedOutputTokens: 20_000, model: "gpt-4o", maxWait: .seconds(7_200))
            return permit.countedCost
        }
        await eventually("waiting") { gate.currentState(for: key).queued == 1 }
        try a.commitTokens(input: 0, output: 10_000)  // 0.10: the waiter's 0.20 now fits
        #expect(try await waiter.value == Self.money("0.2"))
        #expect(gate.currentState(for: key).spend.first?.spent == Self.money("0.3"))
        _ = consume a
    }

    @Test("a cancelled or timed-out waiter spends nothing")
    func cancelledSpendsNothing() async throws {
        let clock = ManualClock()
        let gate = try PolicyService(limits: ["openai": limits(hour: "0.50")], clock: clock)
        let a = try gate.tryAcquire(key, estimatedInputTokens: 0, estimatedOutputTokens: 40_000, model: "gpt-4o")  // 0.40
        let cancelled = Task {
            _ = try await gate.acquire(key, estimatedInputTokens: 0, estimatedOutputTokens: 20_000, model: "gpt-4o")
        }
        await eventually("waiting") { gate.currentState(for: key).queued == 1 }
        cancelled.cancel()
        await #expect(throws: CancellationError.self) { _ = try await cancelled.value }
        await #expect(throws: PolicyError.self) {
            _ = try await gate.acquire(key, estimatedInputTokens: 0, estimatedOutputTokens: 20_000, model: "gpt-4o", maxWait: .seconds(5))
        }
        #expect(gate.currentState(for: key).spend.first?.spent == Self.money("0.4"))
        _ = consume a
    }

    @Test("the month is the calendar month of the provider's time zone, not UTC's")
    func monthInAZoneWithAnOffset() throws {
        let tokyo = try PolicySchedule.timeZone(named: "Asia/Tokyo")  // UTC+9, no DST
        // 2026-01-31 23:00 in Tokyo.
        let start = try Date("2026-01-31T14:00:00Z", strategy: .iso8601)
        for (zone, untilNextMonth) in [(tokyo, Duration.seconds(3_600)), (TimeZone.gmt, Duration.seconds(10 * 3_600))] {
            let clock = ManualClock()
            let gate = try PolicyService(
                configuration: PolicyConfiguration(limits: ["openai": limits(month: "1.00", zone: zone)]), clock: clock, startDate: start)
            for _ in 0..<2 {
                _ = try gate.tryAcquire(key, estimatedInputTokens: 100_000, estimatedOutputTokens: 10_000, model: "gpt-4o")  // 0.35
            }
            let spend = try #require(gate.currentState(for: key).spend.first)
            #expect(spend.cap == .costPerMonth && spend.spent == Self.money("0.7"))
            #expect(spend.resetsAt == start.addingTimeInterval(Double(untilNextMonth.components.seconds)))
            do {
                _ = try gate.tryAcquire(key, estimatedInputTokens: 100_000, estimatedOutputTokens: 10_000, model: "gpt-4o")
                Issue.record("admitted past cost_per_month")
            } catch {
                #expect(error.costCap == .costPerMonth && error.retryAfter == untilNextMonth, "\(error)")
            }
            clock.advance(by: untilNextMonth - .nanoseconds(1))
            #expect(throws: PolicyError.self) {
                _ = try gate.tryAcquire(key, estimatedInputTokens: 100_000, estimatedOutputTokens: 10_000, model: "gpt-4o")
            }
            clock.advance(by: .nanoseconds(1))
            _ = try gate.tryAcquire(key, estimatedInputTokens: 100_000, estimatedOutputTokens: 10_000, model: "gpt-4o")
            #expect(gate.currentState(for: key).spend.first?.spent == Self.money("0.35"))
        }
    }

    @Test("a provider's schedule time zone is its months' zone when none is set for costs")
    func monthZoneFromSchedule() throws {
        let tokyo = try PolicySchedule.timeZone(named: "Asia/Tokyo")
        let schedule = PolicySchedule(
            timeZone: tokyo,
            entries: [
                PolicyScheduleEntry(name: "night", cron: try CronExpression("* 0-5 * * *"), limits: PolicyLimits(requestsPerMinute: 100))
            ])
        let start = try Date("2026-01-31T14:00:00Z", strategy: .iso8601)
        let gate = try PolicyService(
            configuration: PolicyConfiguration(limits: ["openai": limits(month: "1.00")], schedules: ["openai": schedule]),
            clock: ManualClock(), startDate: start)
        _ = try gate.tryAcquire(key, estimatedInputTokens: 100_000, estimatedOutputTokens: 10_000, model: "gpt-4o")
        #expect(gate.currentState(for: key).spend.first?.resetsAt == start.addingTimeInterval(3_600))
    }

    @Test("a call without a price is refused with a typed error, never admitted uncounted; a \"*\" price covers the rest")
    func unpricedCalls() async throws {
        let gate = try PolicyService(limits: ["openai": limits(hour: "1")], clock: ManualClock())
        for model in [nil, "o3"] as [String?] {
            do {
                _ = try gate.tryAcquire(key, estimatedTokens: 100, model: model)
                Issue.record("admitted without a price")
            } catch {
                #expect(error.code == .unpriced && error.key == key, "\(error)")
            }
        }
        #expect(gate.currentState(for: key).spend.first?.spent ?? .zero == .zero)
        var prices = Self.prices
        prices["*"] = PolicyModelPrice(input: Self.money("20"), output: Self.money("80"))
        try await gate.setLimits(PolicyLimits(costPerHour: Self.money("1"), prices: prices), for: "openai")
        let unnamed = try gate.tryAcquire(key, estimatedTokens: 1_000)  // at the higher price, 80
        #expect(unnamed.countedCost == Self.money("0.08"))
        let other = try gate.tryAcquire(key, estimatedInputTokens: 1_000, estimatedOutputTokens: 0, model: "o3")
        #expect(other.countedCost == Self.money("0.02"))
    }

    @Test("an estimated cost above a spend cap can never be admitted: oversized, naming the cap")
    func oversizedCost() async throws {
        let gate = try PolicyService(limits: ["openai": limits(hour: "10", day: "0.10")], clock: ManualClock())
        do {
            _ = try await gate.acquire(key, estimatedInputTokens: 0, estimatedOutputTokens: 20_000, model: "gpt-4o")
            Issue.record("admitted above the day's cap")
        } catch let error as PolicyError {
            #expect(error.code == .oversized && error.costCap == .costPerDay && error.retryAfter == nil, "\(error)")
        }
    }

    @Test("a change of limits keeps the spend of windows still capped and wakes waiters that now fit")
    func limitChange() async throws {
        let clock = ManualClock()
        let gate = try PolicyService(limits: ["openai": limits(hour: "0.50", month: "10")], clock: clock)
        let a = try gate.tryAcquire(key, estimatedInputTokens: 0, estimatedOutputTokens: 40_000, model: "gpt-4o")  // 0.40
        let waiter = Task {
            let permit = try await gate.acquire(
                key, estimatedInputTokens: 0, estimatedOutputTokens: 20_000, model: "gpt-4o", maxWait: .seconds(7_200))
            return permit.countedCost
        }
        await eventually("waiting") { gate.currentState(for: key).queued == 1 }
        try await gate.setLimits(limits(hour: "1.00", month: "10"), for: "openai")
        #expect(try await waiter.value == Self.money("0.2"))
        let spend = gate.currentState(for: key).spend
        #expect(spend.map(\.cap) == [.costPerHour, .costPerMonth])
        #expect(spend.map(\.spent) == [Self.money("0.6"), Self.money("0.6")])
        // Lowered below the spend: nothing more is admitted until it leaves the hour.
        try await gate.setLimits(limits(hour: "0.50", month: "10"), for: "openai")
        #expect(throws: PolicyError.self) {
            _ = try gate.tryAcquire(key, estimatedInputTokens: 0, estimatedOutputTokens: 1, model: "gpt-4o")
        }
        // A new cap starts empty; one taken away forgets its spend.
        try await gate.setLimits(limits(day: "5"), for: "openai")
        #expect(gate.currentState(for: key).spend.map(\.spent) == [.zero])
        _ = consume a
    }

    @Test("a key keeps its month's spend while idle: it is not forgotten with it")
    func idleKeyKeepsSpend() throws {
        let clock = ManualClock()
        let gate = try PolicyService(limits: ["openai": limits(month: "1.00")], clock: clock)
        do {
            let permit = try gate.tryAcquire(key, estimatedInputTokens: 0, estimatedOutputTokens: 90_000, model: "gpt-4o")
            _ = consume permit
        }
        // Other keys come and go (the registry sweeps idle keys as it creates new ones).
        clock.advance(by: .seconds(2 * 86_400))
        for i in 0..<50 {
            _ = try gate.tryAcquire(
                PolicyKey(provider: "openai", scope: .user("other\(i)")), estimatedInputTokens: 0, estimatedOutputTokens: 1, model: "gpt-4o"
            )
        }
        #expect(gate.currentState(for: key).spend.first?.spent == Self.money("0.9"))
        #expect(throws: PolicyError.self) {
            _ = try gate.tryAcquire(key, estimatedInputTokens: 0, estimatedOutputTokens: 20_000, model: "gpt-4o")
        }
    }

    @Test("nested levels: a call is admitted only when every level's spend caps fit; refusals name the level; commits correct all")
    func nestedLevels() throws {
        let clock = ManualClock()
        let gate = try PolicyService(
            limits: ["openai": limits(day: "1.00")],
            scopeLimits: [
                "openai": [
                    "org": PolicyLimits(costPerDay: Self.money("0.50")), "user": PolicyLimits(costPerHour: Self.money("0.30")),
                ]
            ],
            clock: clock)
        func user(_ name: String, _ org: String) -> PolicyKey { PolicyKey(provider: "openai", scope: .user(name), within: [.org(org)]) }
        func call(_ key: PolicyKey, _ output: Int) throws(PolicyError) -> PolicyPermit {
            try gate.tryAcquire(key, estimatedInputTokens: 0, estimatedOutputTokens: output, model: "gpt-4o")  // 10.00 per million
        }
        var a = try call(user("u1", "acme"), 20_000)  // 0.20
        do {
            _ = try call(user("u1", "acme"), 20_000)
            Issue.record("past the user's hour")
        } catch {
            #expect(error.costCap == .costPerHour && error.level == user("u1", "acme"), "\(error)")
        }
        let b = try call(user("u2", "acme"), 20_000)  // org 0.40
        do {
            _ = try call(user("u3", "acme"), 20_000)
            Issue.record("past the org's day")
        } catch {
            #expect(error.costCap == .costPerDay && error.level == PolicyKey(provider: "openai", scope: .org("acme")), "\(error)")
        }
        let c = try call(user("u4", "beta"), 30_000)  // account 0.70
        let d = try call(user("u5", "gamma"), 20_000)  // account 0.90
        do {
            _ = try call(user("u6", "delta"), 20_000)
            Issue.record("past the account's day")
        } catch {
            #expect(error.costCap == .costPerDay && error.level == PolicyKey(provider: "openai"), "\(error)")
        }
        // A commit under the estimate corrects every level at once.
        try a.commitTokens(input: 0, output: 5_000)  // 0.05
        let state = gate.currentState(for: user("u1", "acme"))
        #expect(state.levels.map { $0.spend.first?.spent } == [Self.money("0.75"), Self.money("0.25"), Self.money("0.05")])
        #expect(state.levels.map { $0.spend.first?.cap } == [.costPerDay, .costPerDay, .costPerHour])
        let e = try call(user("u6", "delta"), 10_000)  // account 0.85
        #expect(e.countedCost == Self.money("0.1"))
        _ = consume a
        _ = consume b
        _ = consume c
        _ = consume d
        _ = consume e
        // Levels with a month's or a day's spend are kept while idle, then forgotten.
        clock.advance(by: .seconds(86_400 + 1_500))
        #expect(gate.currentState(for: user("u1", "acme")).levels.map { $0.spend.first?.spent } == [.zero, .zero, .zero])
    }
}
