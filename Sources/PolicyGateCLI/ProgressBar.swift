import Synchronization

/// Shows how far a simulation has got, on standard error so that standard output stays clean
/// for the summary and JSON.
///
/// On a terminal it is one line redrawn in place (`[#######.........]  45%`); elsewhere (a pipe,
/// a CI log) it prints a plain line at every quarter, since carriage returns would pile up there.
package final class ProgressBar: Sendable {
    private let sink: any TextSink
    private let label: String
    private let terminal: Bool
    /// The last percentage drawn (terminal) or quarter printed (plain); redraws only on change.
    private let shown = Mutex(-1)

    private static let width = 30

    /// Creates a bar writing to `sink`; it redraws in place when `sink` is a terminal.
    package init(sink: any TextSink, label: String) {
        self.sink = sink
        self.label = label
        self.terminal = sink.isTerminal
    }

    /// Reports progress from 0 to 1 (values outside are clamped); safe from any thread.
    package func update(_ fraction: Double) {
        let clamped = fraction.isNaN ? 0 : min(1, max(0, fraction))
        let percent = Int(clamped * 100)
        if terminal {
            guard
                shown.withLock({ last in
                    defer { last = max(last, percent) }
                    return percent > last
                })
            else { return }
            let filled = Int(clamped * Double(Self.width))
            let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: Self.width - filled)
            let number = String(repeating: " ", count: 3 - String(percent).count) + "\(percent)%"
            sink.write("\r\(label) [\(bar)] \(number)")
        } else {
            let quarter = percent / 25
            guard quarter > 0,
                shown.withLock({ last in
                    defer { last = max(last, quarter) }
                    return quarter > last
                })
            else { return }
            sink.line("\(label): \(quarter * 25)%")
        }
    }

    /// Ends the bar: on a terminal the line is cleared, so the summary starts on a clean line.
    package func finish() {
        if terminal {
            sink.write("\r\u{1B}[2K")
        } else {
            update(1)
        }
    }
}
