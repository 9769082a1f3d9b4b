import Foundation
import PolicyGate

/// The text `simulate` prints: a headline, then per provider what happened to its calls, how
/// long they queued, its peaks, and a table of its caps against what was used.
package enum SimulationSummary {
    /// Renders `report` for people. `source` names where the calls came from
    /// (`trace calls.jsonl`, `synthetic workload, seed 1`).
    package static func text(_ report: SimulationReport, source: String) -> String {
        var lines: [String] = []
        let simulated = Values.readable(Self.duration(report.simulatedSeconds))
        let start = Values.parseInstant(report.startDate).map { Values.readable($0) } ?? report.startDate
        lines.append("Simulated \(simulated) of traffic from \(start): \(plural(report.calls, "call")) (\(source)).")
        lines.append(
            "Replayed in \(Values.readable(Self.duration(report.wallSeconds))) of wall time, "
                + "\(Values.count(Int(report.callsPerSecond.rounded()))) calls/s.")
        if report.providers.isEmpty { lines.append("No calls: nothing to report.") }
        for provider in report.providers {
            lines.append("")
            lines += Self.provider(provider)
        }
        if let comparison = report.adaptiveComparison, !comparison.isEmpty {
            lines.append("")
            lines += Self.adaptiveComparison(comparison)
        }
        return lines.joined(separator: "\n") + "\n"
    }

    private static func provider(_ provider: ProviderReport) -> [String] {
        let n = Values.count
        let keys = provider.keys == 1 ? "1 key" : "\(n(provider.keys)) keys"
        let headline = "\(provider.provider): \(plural(provider.calls, "call")), \(keys)"
        guard provider.isGated else { return [headline + ", not gated (no caps): all admitted at once"] }

        var rows: [(String, String)] = []
        let waited = provider.admitted - provider.admittedAtOnce
        rows.append(
            (
                "admitted", "\(n(provider.admitted)) (\(n(provider.admittedAtOnce)) at once, \(n(waited)) after waiting)"
            ))
        if !provider.delayed.isEmpty {
            rows.append(("had to wait", total(provider.delayed) + ": " + breakdown(provider.delayed)))
        }
        var refusals: [String] = []
        if !provider.rejected.isEmpty { refusals.append("rejected: \(breakdown(provider.rejected))") }
        if !provider.oversized.isEmpty { refusals.append("oversized: \(breakdown(provider.oversized))") }
        if provider.invalid > 0 { refusals.append("invalid token count: \(n(provider.invalid))") }
        let reasons = refusals.isEmpty ? "" : " (" + refusals.joined(separator: "; ") + ")"
        rows.append(("refused", n(provider.refused) + reasons))
        if !provider.timedOut.isEmpty {
            rows.append(("timed out", total(provider.timedOut) + ": " + breakdown(provider.timedOut)))
        }
        if provider.cancelled > 0 || provider.cutShort > 0 {
            rows.append(("cancelled", "\(n(provider.cancelled)) while waiting, \(n(provider.cutShort)) while running"))
        }
        if provider.unfinished > 0 { rows.append(("unfinished", "\(n(provider.unfinished)) still waiting at the end")) }
        let wait = provider.wait
        rows.append(
            (
                "queue wait",
                "p50 \(seconds(wait.p50))  p95 \(seconds(wait.p95))  p99 \(seconds(wait.p99))  max \(seconds(wait.max))  "
                    + "mean \(seconds(wait.mean))"
            ))
        for priority in PolicyPriority.allCases {
            guard let wait = provider.waitByPriority?[priority.description] else { continue }
            rows.append(
                (
                    "  \(priority)",
                    "p50 \(seconds(wait.p50))  p95 \(seconds(wait.p95))  p99 \(seconds(wait.p99))  max \(seconds(wait.max))  "
                        + "mean \(seconds(wait.mean))"
                ))
        }
        func peak(_ count: Int, _ what: String, at time: Double) -> String {
            "\(n(count)) \(what)" + (count > 0 ? " (at \(offset(time)))" : "")
        }
        rows.append(
            (
                "peaks",
                peak(provider.peakInFlight, "in flight", at: provider.peakInFlightAt) + ", "
                    + peak(provider.peakQueued, "queued", at: provider.peakQueuedAt)
            ))
        // Which cap bites first, and then which: the question the simulation is run for.
        let hits = provider.limits.compactMap { limit in limit.firstHitAt.map { (name: limit.limit, at: $0) } }
            .sorted { ($0.at, $0.name) < ($1.at, $1.name) }
        let order = hits.map { "\($0.name) at \(offset($0.at))" }.joined(separator: ", then ")
        rows.append(("caps hit", hits.isEmpty ? "none" : order))
        // With parts, each total is followed by its input and output as the gate counted them.
        func parts(_ input: Int?, _ output: Int?) -> String {
            guard let input, let output else { return "" }
            return " (\(n(input)) in, \(n(output)) out)"
        }
        rows.append(
            (
                "tokens",
                "\(n(provider.estimatedTokens)) estimated\(parts(provider.estimatedInputTokens, provider.estimatedOutputTokens)), "
                    + "\(n(provider.committedTokens)) committed\(parts(provider.committedInputTokens, provider.committedOutputTokens))"
            ))
        if let model = provider.providerModel {
            rows.append(
                (
                    "provider",
                    "\(n(model.throttled)) answered 429 (capacity \(model.capacity.description)), goodput \(n(model.goodput)) "
                        + "completed; adaptive caps \(model.adaptive ? "on" : "off")"
                ))
        }

        var lines = [headline]
        let width = rows.map(\.0.count).max() ?? 0
        for (label, value) in rows {
            lines.append("  " + label + String(repeating: " ", count: width - label.count + 2) + value)
        }
        if let tiers = provider.tiers, !tiers.isEmpty {
            lines.append("")
            lines += tierTable(tiers)
        }
        if !provider.limits.isEmpty {
            lines.append("")
            lines += limitTable(provider.limits, tiered: provider.tiers != nil)
            if provider.tiers != nil {
                lines.append("  (cap: the provider's own; its tiers and overrides set their own caps over it)")
            }
        }
        return lines
    }

    /// The calls grouped by where their caps came from: a tier, an override, the provider's.
    private static func tierTable(_ tiers: [TierReport]) -> [String] {
        var table = TextTable([
            ("caps from", .left), ("keys", .right), ("calls", .right), ("admitted", .right), ("at once", .right),
            ("refused", .right), ("timed out", .right), ("wait p95", .right), ("max", .right),
        ])
        for tier in tiers {
            table.append(
                [tier.source] + [tier.keys, tier.calls, tier.admitted, tier.admittedAtOnce, tier.refused, tier.timedOut].map(Values.count)
                    + [seconds(tier.wait.p95), seconds(tier.wait.max)])
        }
        return table.render(indent: 2)
    }

    /// The same calls with adaptive caps off and on, against the provider model.
    private static func adaptiveComparison(_ comparison: [AdaptiveComparison]) -> [String] {
        var table = TextTable([
            ("provider", .left), ("capacity", .left), ("adaptive", .left), ("429s", .right), ("goodput", .right),
        ])
        for entry in comparison {
            table.append([
                entry.provider, entry.capacity.description, "off", Values.count(entry.off.throttled), Values.count(entry.off.goodput),
            ])
            table.append(["", "", "on", Values.count(entry.on.throttled), Values.count(entry.on.goodput)])
        }
        return ["Adaptive caps against the provider model (the same calls, replayed both ways):"] + table.render(indent: 2)
    }

    /// Each cap against the most used of it, when that was, and when it first held a call back.
    /// With tiers (`tiered`), the busiest key may be under other caps than the provider's: no
    /// share of the provider's cap is shown.
    private static func limitTable(_ limits: [LimitReport], tiered: Bool = false) -> [String] {
        var table = TextTable([
            ("limit", .left), ("cap", .right), ("peak used", .right), ("", .right), ("at", .left),
            ("first hit", .left), ("calls held", .right),
        ])
        for limit in limits {
            let hit = [limit.firstHitAt.map(offset) ?? "never", Values.count(limit.hits)]
            // A closing schedule entry has no cap or usage, only its hits.
            guard limit.limit != "closed" else {
                table.append([limit.limit, "", "", "", ""] + hit)
                continue
            }
            let cap = limit.capAtPeak ?? limit.cap
            // Rounded down, so that 100% means the cap was reached.
            let share = tiered ? "" : cap.map { $0 > 0 ? "\(limit.peakUsed * 100 / $0)%" : "" } ?? ""
            let peak = [Values.count(limit.peakUsed), share, limit.peakAt.map(offset) ?? "-"]
            table.append([limit.limit, cap.map(Values.count) ?? "-"] + peak + hit)
        }
        var lines = table.render(indent: 2)
        // A schedule can change a cap; the table shows the one in force at the peak.
        let changed = limits.compactMap { limit -> String? in
            guard let base = limit.cap, let atPeak = limit.capAtPeak, base != atPeak else { return nil }
            return "\(limit.limit) \(Values.count(base))"
        }
        if !changed.isEmpty {
            let bases = changed.joined(separator: ", ")
            lines.append("  (cap: in force at the peak, set by the schedule; base caps: \(bases))")
        }
        return lines
    }

    /// The sum of the counts, with thousands separated.
    private static func total(_ counts: [String: Int]) -> String { Values.count(counts.values.reduce(0, +)) }

    /// `requests_per_minute 8, max_concurrent 2`: the most frequent first.
    private static func breakdown(_ counts: [String: Int]) -> String {
        counts.sorted { ($1.value, $0.key) < ($0.value, $1.key) }
            .map { "\($0.key) \(Values.count($0.value))" }.joined(separator: ", ")
    }

    private static func duration(_ seconds: Double) -> Duration {
        .nanoseconds(Int64((seconds * 1e9).rounded()))
    }

    private static func seconds(_ value: Double) -> String { Values.readable(duration(value)) }

    private static func offset(_ value: Double) -> String { Values.offset(duration(value)) }
}
