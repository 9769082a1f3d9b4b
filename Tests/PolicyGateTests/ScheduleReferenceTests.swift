import Foundation
import PolicyGate
import PolicyGateTestKit
import Testing

/// An instant written in ISO 8601 with `Z`.
private func utc(_ text: String) throws -> Date {
    try Date(text, strategy: .iso8601)
}

@Suite("Schedule: validUntil and transitions against a minute-by-minute reference")
struct ScheduleReferenceTests {
    /// Eight days around a daylight-saving change (or a month end, for UTC and fixed zones).
    static let windows: [(zone: String, start: String)] = [
        ("Europe/Berlin", "2026-03-26T00:00:00Z"),
        ("Europe/Berlin", "2026-10-21T00:00:00Z"),
        ("America/New_York", "2026-03-04T00:00:00Z"),
        ("America/New_York", "2026-10-28T00:00:00Z"),
        ("Australia/Lord_Howe", "2026-04-01T00:00:00Z"),  // clocks go back by 30 minutes
        ("Australia/Lord_Howe", "2026-10-01T00:00:00Z"),
        ("Asia/Kathmandu", "2026-02-25T00:00:00Z"),  // +05:45 all year
        ("UTC", "2028-02-25T00:00:00Z"),  // a leap day
    ]
    static let windowMinutes = 8 * 1_440

    /// A local minute as the reference reads it: through `Calendar`, not the schedule's arithmetic.
    struct LocalMinute {
        let date: LocalDate
        let hour: Int
        let minute: Int
    }

    fileprivate static func randomSchedule(
        zone: TimeZone, days: [LocalDate], using random: inout SeededGenerator
    ) throws -> PolicySchedule {
        let minutes = ["*", "*", "*/15", "10-50/10", "0", "30-59", "0-29,45"]
        let hours = ["*", "9-17", "22-23,0-5", "2", "1-2", "0-5", "*/3", "12"]
        let daysOfMonth = ["*", "*", "*", "1", "25-31", "1-7", "*/2", "29", "3,5"]
        let months = ["*", "*", "*", "3", "10,11", "mar-apr", "feb", "jan"]
        let weekdays = ["*", "*", "*", "mon-fri", "sat,sun", "0", "7", "3", "wed-thu"]
        var entries: [PolicyScheduleEntry] = []
        for index in 0..<Int.random(in: 1...4, using: &random) {
            var cron: CronExpression? = try CronExpression(
                [minutes, hours, daysOfMonth, months, weekdays]
                    .map { $0.randomElement(using: &random)! }.joined(separator: " "))
            var dates: [LocalDate]?
            if Int.random(in: 0..<10, using: &random) < 3 {
                dates = (0..<Int.random(in: 1...3, using: &random)).map { _ in days.randomElement(using: &random)! }
                if Bool.random(using: &random) { cron = nil }
            }
            entries.append(
                PolicyScheduleEntry(
                    name: "e\(index)", cron: cron, dates: dates,
                    limits: PolicyLimits(requestsPerMinute: 10 * (index + 1)),
                    isClosed: Int.random(in: 0..<4, using: &random) == 0))
        }
        return PolicySchedule(timeZone: zone, entries: entries)
    }

    /// The index of the first entry applying during a local minute.
    static func reference(_ schedule: PolicySchedule, _ local: LocalMinute) -> Int? {
        schedule.entries.firstIndex { entry in
            (entry.cron?.matches(local.date, hour: local.hour, minute: local.minute) ?? true)
                && (entry.dates?.contains(local.date) ?? true)
        }
    }

    @Test("random schedules and instants (seeded) agree with the reference", arguments: 0..<windows.count)
    func agreesWithReference(window: Int) throws {
        let zone = try PolicySchedule.timeZone(named: Self.windows[window].zone)
        let start = try utc(Self.windows[window].start)
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = zone
        // Minute -1 is the one before the window, for the first transition.
        let locals = try (-1..<Self.windowMinutes).map { index in
            let fields = calendar.dateComponents(
                [.year, .month, .day, .hour, .minute], from: start.addingTimeInterval(Double(index * 60)))
            return LocalMinute(
                date: try LocalDate(year: fields.year!, month: fields.month!, day: fields.day!),
                hour: fields.hour!, minute: fields.minute!)
        }
        let days = Array(Set(locals.map(\.date))).sorted()
        let base = PolicyLimits(requestsPerMinute: 1)
        var random = SeededGenerator(seed: 0x5EED_0000 + UInt64(window))
        var sawDaylightChange = false
        var samplesWithChange = 0
        for _ in 0..<25 {
            let schedule = try Self.randomSchedule(zone: zone, days: days, using: &random)
            let states = locals.map { Self.reference(schedule, $0) }  // states[i + 1] is minute i
            func name(_ state: Int?) -> String? { state.map { schedule.entries[$0].name } }
            // nextChange[i]: the first minute after minute i whose state differs, if in the window.
            var nextChange = [Int?](repeating: nil, count: Self.windowMinutes)
            for index in stride(from: Self.windowMinutes - 2, through: 0, by: -1) {
                nextChange[index] = states[index + 2] != states[index + 1] ? index + 1 : nextChange[index + 1]
            }

            for _ in 0..<60 {
                let minute = Int.random(in: 0..<Self.windowMinutes, using: &random)
                let second = [0, 0.5, Double(Int.random(in: 0..<60, using: &random)), 59.999][Int.random(in: 0..<4, using: &random)]
                let instant = start.addingTimeInterval(Double(minute * 60) + second)
                let resolution = schedule.resolve(base: base, at: instant)
                let state = states[minute + 1]
                #expect(resolution.entry == name(state), "\(schedule.entries) at \(instant)")
                if let change = nextChange[minute] {
                    samplesWithChange += 1
                    #expect(
                        resolution.validUntil == start.addingTimeInterval(Double(change * 60)),
                        "\(schedule.entries.map { "\($0.cron.map(String.init(describing:)) ?? "-") \($0.dates ?? [])" }) at \(instant)")
                } else {
                    let end = start.addingTimeInterval(Double(Self.windowMinutes * 60))
                    #expect(resolution.validUntil.map { $0 >= end } ?? true, "\(schedule.entries) at \(instant)")
                }
            }

            let expected = (0..<Self.windowMinutes).filter { states[$0 + 1] != states[$0] }.map {
                "\(start.addingTimeInterval(Double($0 * 60)).formatted(.iso8601)) \(name(states[$0 + 1]) ?? "base")"
            }
            let transitions = schedule.transitions(
                base: base, from: start, to: start.addingTimeInterval(Double(Self.windowMinutes * 60)))
            #expect(
                transitions.map { "\($0.date.formatted(.iso8601)) \($0.resolution.entry ?? "base")" } == expected,
                "\(schedule.entries)")
            for transition in transitions {
                #expect(transition.resolution == schedule.resolve(base: base, at: transition.date))
            }
        }
        // Most samples must see a change within the window, or the comparison proves little.
        #expect(samplesWithChange > 25 * 60 / 2, "\(samplesWithChange) of \(25 * 60)")
        // The windows are chosen around real offset changes (except the fixed zones).
        for index in 1..<Self.windowMinutes {
            let instant = start.addingTimeInterval(Double(index * 60))
            if zone.secondsFromGMT(for: instant) != zone.secondsFromGMT(for: instant.addingTimeInterval(-60)) {
                sawDaylightChange = true
            }
        }
        #expect(sawDaylightChange == ["Asia/Kathmandu", "UTC"].allSatisfy { $0 != Self.windows[window].zone })
    }

    @Test("resolve with 20 entries (timing is printed, not asserted)")
    func timing() throws {
        var random = SeededGenerator(seed: 42)
        let zone = try PolicySchedule.timeZone(named: "Europe/Berlin")
        var entries: [PolicyScheduleEntry] = []
        for index in 0..<18 {
            let hour = index % 24
            entries.append(
                PolicyScheduleEntry(
                    name: "slot\(index)", cron: try CronExpression("*/5 \(hour)-\(min(hour + 2, 23)) * * \(index % 7)"),
                    limits: PolicyLimits(requestsPerMinute: 100 + index)))
        }
        entries.append(PolicyScheduleEntry(name: "leap", cron: try CronExpression("* * 29 2 *"), isClosed: true))
        entries.append(
            PolicyScheduleEntry(
                name: "holidays", dates: try ["2026-12-25", "2026-12-26", "2027-01-01"].map { try LocalDate($0) },
                isClosed: true))
        let schedule = PolicySchedule(timeZone: zone, entries: entries)
        let base = PolicyLimits(requestsPerMinute: 500)
        let start = try utc("2026-01-01T00:00:00Z")
        let instants = (0..<20_000).map { _ in start.addingTimeInterval(Double.random(in: 0..<(365 * 86_400), using: &random)) }

        let clock = ContinuousClock()
        var checksum = 0
        let elapsed = clock.measure {
            for instant in instants {
                let resolution = schedule.resolve(base: base, at: instant)
                checksum &+= resolution.limits.requestsPerMinute ?? 0
            }
        }
        var count = 0
        let weekElapsed = clock.measure {
            count = schedule.transitions(base: base, from: start, to: start.addingTimeInterval(7 * 86_400)).count
        }
        // Twenty rare entries, none applying for months: each search runs towards the horizon.
        let rare = PolicySchedule(
            timeZone: zone,
            entries: try (0..<20).map { index in
                let cron = ["* * 29 2 *", "0 0 31 12 *", "* 3 1 1 *", "*/7 4 15 jun-jul sun"][index % 4]
                return PolicyScheduleEntry(
                    name: "rare\(index)", cron: index % 5 == 4 ? nil : try CronExpression(cron),
                    dates: index % 5 == 4 ? [try LocalDate("2027-12-\(10 + index)")] : nil)
            })
        let rareInstants = instants.filter { (2...5).contains(LocalDate($0, in: zone).month) }
        var rareChecksum = 0.0
        let rareElapsed = clock.measure {
            for instant in rareInstants {
                rareChecksum += rare.resolve(base: base, at: instant).validUntil?.timeIntervalSince1970 ?? 0
            }
        }
        print(
            "schedule timing: resolve with 20 entries \(elapsed / instants.count) per call "
                + "(20 rare entries: \(rareElapsed / rareInstants.count) per call); "
                + "transitions over 7 days: \(count) in \(weekElapsed) (checksums \(checksum), \(rareChecksum))")
        #expect(count > 0 && rareChecksum > 0)
    }
}
