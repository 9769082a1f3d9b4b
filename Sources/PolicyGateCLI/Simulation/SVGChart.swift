import Foundation

/// Draws a ``SimulationReport``'s timelines as one self-contained SVG: per provider, one panel
/// per window cap (the busiest key's usage against the cap in force, closed periods shaded, the
/// first hit marked) and one panel of calls queued and in flight.
///
/// Every series is a `<path>` with `data-provider` and `data-series` attributes (`used`, `cap`,
/// `queued`, `in_flight`) and a `<title>`, so it can be found by scripts and read as a tooltip.
package enum SVGChart {
    static let width = 1_200
    static let panelWidth = 380
    static let panelHeight = 190
    static let columns = 3
    static let plotLeft = 58
    static let plotTop = 30
    static let plotWidth = 300
    static let plotHeight = 120

    /// The SVG document.
    package static func render(_ report: SimulationReport) -> String {
        var body = ""
        var y = 70
        for provider in report.providers {
            body += providerSection(provider, report: report, top: y)
            let panels = provider.timeline.series.count + 1
            y += 34 + ((panels + columns - 1) / columns) * panelHeight
        }
        let height = y + 20
        var svg = """
            <?xml version="1.0" encoding="UTF-8"?>
            <svg xmlns="http://www.w3.org/2000/svg" width="\(width)" height="\(height)" viewBox="0 0 \(width) \(height)" \
            font-family="Helvetica, Arial, sans-serif" font-size="11">
            <style>
            .used { fill: none; stroke: #1f77b4; stroke-width: 1.4; }
            .cap { fill: none; stroke: #d62728; stroke-width: 1.2; stroke-dasharray: 5 3; }
            .queued { fill: none; stroke: #ff7f0e; stroke-width: 1.4; }
            .in_flight { fill: none; stroke: #2ca02c; stroke-width: 1.4; }
            .closed { fill: #000; fill-opacity: 0.08; }
            .hit { stroke: #d62728; stroke-width: 1; stroke-opacity: 0.6; }
            .grid { stroke: #ddd; stroke-width: 1; }
            .axis { stroke: #555; stroke-width: 1; }
            .label { fill: #333; }
            .title { font-size: 13px; font-weight: bold; fill: #222; }
            .heading { font-size: 16px; font-weight: bold; fill: #111; }
            </style>
            <rect width="100%" height="100%" fill="#fff"/>
            <text class="heading" x="20" y="28">PolicyGate simulation: \(escape(duration(report.simulatedSeconds))) of traffic from \
            \(escape(report.startDate)), \(grouped(report.calls)) calls</text>
            <text class="label" x="20" y="48">Usage is the busiest key's count in each sliding window (sampled every \
            \(escape(duration(report.sampleIntervalSeconds)))); dashed red: the cap in force; shaded: closed by schedule; \
            red line: first call held back by the cap.</text>

            """
        svg += body
        svg += "</svg>\n"
        return svg
    }

    private static func providerSection(_ provider: ProviderReport, report: SimulationReport, top: Int) -> String {
        let timeline = provider.timeline
        let span = max(report.simulatedSeconds, timeline.time.last ?? 0, 1)
        var out = """
            <g class="provider" data-provider="\(escape(provider.provider))">
            <text class="heading" x="20" y="\(top + 18)">\(escape(provider.provider))</text>
            <text class="label" x="\(30 + provider.provider.count * 10)" y="\(top + 18)">\(escape(summary(provider)))</text>

            """
        var panel = 0
        func origin() -> (x: Int, y: Int) {
            (20 + (panel % columns) * panelWidth, top + 30 + (panel / columns) * panelHeight)
        }
        for series in timeline.series {
            let (x, y) = origin()
            let caps = series.cap.compactMap { $0 }
            let top = Double(max(series.used.max() ?? 0, caps.max() ?? 0, 1)) * 1.1
            var content = closedShading(timeline, span: span, x: x, y: y)
            content += axes(x: x, y: y, span: span, top: top)
            let hit = provider[limit: series.limit]?.firstHitAt
            if let hit {
                let hx = Double(x + plotLeft) + hit / span * Double(plotWidth)
                content += """
                    <line class="hit" x1="\(f(hx))" y1="\(y + plotTop)" x2="\(f(hx))" y2="\(y + plotTop + plotHeight)">\
                    <title>\(escape(series.limit)) first held a call back at +\(escape(duration(hit)))</title></line>

                    """
            }
            content += path(
                "used", provider: provider.provider, series: series.limit,
                points: zip(timeline.time, series.used).map { ($0, Double($1)) }, step: false,
                x: x, y: y, span: span, top: top,
                title: "\(series.limit): busiest key's usage (peak \(series.used.max() ?? 0))")
            content += path(
                "cap", provider: provider.provider, series: series.limit,
                points: zip(timeline.time, series.cap).compactMap { time, cap in cap.map { (time, Double($0)) } },
                step: true, x: x, y: y, span: span, top: top,
                title: "\(series.limit) cap in force")
            out += panelFrame(title: series.limit.replacingOccurrences(of: "_", with: " "), x: x, y: y, content: content)
            panel += 1
        }
        let (x, y) = origin()
        let top = Double(max(timeline.queued.max() ?? 0, timeline.inFlight.max() ?? 0, 1)) * 1.1
        var content = closedShading(timeline, span: span, x: x, y: y)
        content += axes(x: x, y: y, span: span, top: top)
        content += path(
            "in_flight", provider: provider.provider, series: "in_flight",
            points: zip(timeline.time, timeline.inFlight).map { ($0, Double($1)) }, step: false,
            x: x, y: y, span: span, top: top, title: "calls in flight (peak \(provider.peakInFlight))")
        content += path(
            "queued", provider: provider.provider, series: "queued",
            points: zip(timeline.time, timeline.queued).map { ($0, Double($1)) }, step: false,
            x: x, y: y, span: span, top: top, title: "calls queued (peak \(provider.peakQueued))")
        content += """
            <text x="\(x + plotLeft + 4)" y="\(y + plotTop + 12)" fill="#2ca02c">in flight</text>
            <text x="\(x + plotLeft + 60)" y="\(y + plotTop + 12)" fill="#ff7f0e">queued</text>

            """
        out += panelFrame(title: "queue and calls in flight", x: x, y: y, content: content)
        out += "</g>\n"
        return out
    }

    private static func summary(_ provider: ProviderReport) -> String {
        var parts = ["\(grouped(provider.calls)) calls", "\(grouped(provider.admitted)) admitted"]
        let timedOut = provider.timedOut.values.reduce(0, +)
        if provider.refused > 0 { parts.append("\(grouped(provider.refused)) refused") }
        if timedOut > 0 { parts.append("\(grouped(timedOut)) timed out") }
        if provider.cancelled > 0 { parts.append("\(grouped(provider.cancelled)) cancelled") }
        parts.append("wait p50 \(duration(provider.wait.p50)), p99 \(duration(provider.wait.p99)), max \(duration(provider.wait.max))")
        if !provider.isGated { parts.append("not gated") }
        return parts.joined(separator: " · ")
    }

    private static func panelFrame(title: String, x: Int, y: Int, content: String) -> String {
        """
        <g class="panel">
        <text class="title" x="\(x + plotLeft)" y="\(y + 18)">\(escape(title))</text>
        \(content)</g>

        """
    }

    private static func axes(x: Int, y: Int, span: Double, top: Double) -> String {
        let left = x + plotLeft
        let bottom = y + plotTop + plotHeight
        var out = ""
        for value in niceTicks(upTo: top) {
            let ty = Double(bottom) - value / top * Double(plotHeight)
            out += """
                <line class="grid" x1="\(left)" y1="\(f(ty))" x2="\(left + plotWidth)" y2="\(f(ty))"/>\
                <text class="label" x="\(left - 4)" y="\(f(ty + 3.5))" text-anchor="end">\(compact(value))</text>

                """
        }
        for seconds in timeTicks(span) {
            let tx = Double(left) + seconds / span * Double(plotWidth)
            out += """
                <line class="axis" x1="\(f(tx))" y1="\(bottom)" x2="\(f(tx))" y2="\(bottom + 4)"/>\
                <text class="label" x="\(f(tx))" y="\(bottom + 15)" text-anchor="middle">\(escape(duration(seconds)))</text>

                """
        }
        out += """
            <line class="axis" x1="\(left)" y1="\(bottom)" x2="\(left + plotWidth)" y2="\(bottom)"/>\
            <line class="axis" x1="\(left)" y1="\(y + plotTop)" x2="\(left)" y2="\(bottom)"/>

            """
        return out
    }

    private static func closedShading(_ timeline: Timeline, span: Double, x: Int, y: Int) -> String {
        var out = ""
        var start: Double?
        let times = timeline.time
        for (i, closed) in timeline.closed.enumerated() {
            if closed, start == nil { start = i > 0 ? times[i - 1] : times[i] }
            if !closed, let from = start {
                out += shade(from: from, to: times[i], span: span, x: x, y: y)
                start = nil
            }
        }
        if let from = start { out += shade(from: from, to: times.last ?? from, span: span, x: x, y: y) }
        return out
    }

    private static func shade(from: Double, to: Double, span: Double, x: Int, y: Int) -> String {
        let left = Double(x + plotLeft) + from / span * Double(plotWidth)
        let right = Double(x + plotLeft) + to / span * Double(plotWidth)
        return """
            <rect class="closed" x="\(f(left))" y="\(y + plotTop)" width="\(f(max(1, right - left)))" height="\(plotHeight)">\
            <title>closed by schedule</title></rect>

            """
    }

    private static func path(
        _ style: String, provider: String, series: String, points: [(Double, Double)], step: Bool,
        x: Int, y: Int, span: Double, top: Double, title: String
    ) -> String {
        guard !points.isEmpty else { return "" }
        let left = Double(x + plotLeft)
        let bottom = Double(y + plotTop + plotHeight)
        var d = ""
        var previousY: Double?
        for (time, value) in points {
            let px = left + time / span * Double(plotWidth)
            let py = bottom - value / top * Double(plotHeight)
            if let previousY, step {
                d += " L\(f(px)),\(f(previousY))"
            }
            d += (d.isEmpty ? "M" : " L") + "\(f(px)),\(f(py))"
            previousY = py
        }
        return """
            <path class="\(style)" data-provider="\(escape(provider))" data-series="\(escape(series))" d="\(d)">\
            <title>\(escape(provider)) \(escape(title))</title></path>

            """
    }

    // MARK: Formatting

    static func f(_ value: Double) -> String {
        String(format: "%.1f", value)
    }

    /// `0`, `250`, `1.5k`, `900k`, `2M`.
    static func compact(_ value: Double) -> String {
        func trimmed(_ number: Double, _ suffix: String) -> String {
            let text = number >= 10 || number == number.rounded() ? String(Int(number.rounded())) : String(format: "%.1f", number)
            return text + suffix
        }
        switch value {
        case 1e9...: return trimmed(value / 1e9, "G")
        case 1e6...: return trimmed(value / 1e6, "M")
        case 1e3...: return trimmed(value / 1e3, "k")
        default: return trimmed(value, "")
        }
    }

    /// `984,296`.
    static func grouped(_ value: Int) -> String {
        let digits = String(value.magnitude)
        var out = ""
        for (i, digit) in digits.enumerated() {
            if i > 0 && (digits.count - i) % 3 == 0 { out += "," }
            out.append(digit)
        }
        return (value < 0 ? "-" : "") + out
    }

    /// `0`, `45s`, `5m`, `1h30m`, `2d4h`.
    static func duration(_ seconds: Double) -> String {
        if seconds == 0 { return "0" }
        if seconds < 60 {
            return seconds == seconds.rounded() ? "\(Int(seconds))s" : String(format: "%.1fs", seconds)
        }
        let total = Int(seconds.rounded())
        let (days, hours, minutes, rest) = (total / 86_400, total % 86_400 / 3_600, total % 3_600 / 60, total % 60)
        var text = ""
        if days > 0 { text += "\(days)d" }
        if hours > 0 { text += "\(hours)h" }
        if minutes > 0 && days == 0 { text += "\(minutes)m" }
        if rest > 0 && days == 0 && hours == 0 { text += "\(rest)s" }
        return text
    }

    private static func niceTicks(upTo top: Double) -> [Double] {
        let raw = top / 4
        let magnitude = pow(10, (log10(raw)).rounded(.down))
        // Counts are whole numbers: no step of 2.5 below 10.
        let factors: [Double] = magnitude < 10 ? [1, 2, 5, 10] : [1, 2, 2.5, 5, 10]
        let step = max(1, factors.map { $0 * magnitude }.first { $0 >= raw } ?? raw)
        return Swift.stride(from: 0, through: top, by: step).map { $0 }
    }

    private static func timeTicks(_ span: Double) -> [Double] {
        let steps: [Double] = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1_800, 3_600, 7_200, 10_800, 21_600, 43_200, 86_400]
        let step = steps.first { span / $0 <= 6 } ?? (span / 6 / 86_400).rounded(.up) * 86_400
        return Swift.stride(from: 0, through: span, by: step).map { $0 }
    }

    static func escape(_ text: String) -> String {
        var out = ""
        for character in text {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            default: out.append(character)
            }
        }
        return out
    }
}
