import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where the command writes text: standard output or error, or a buffer in tests.
///
/// Sinks are shared with the simulation's progress callback, which may run on another thread,
/// so they must be `Sendable`.
package protocol TextSink: Sendable {
    /// Writes `text` as is (no newline is added).
    func write(_ text: String)
    /// Whether the sink is an interactive terminal (progress bars redraw only there).
    var isTerminal: Bool { get }
}

extension TextSink {
    /// Writes `text` and a newline.
    package func line(_ text: String = "") { write(text + "\n") }
}

/// Standard output or standard error of the process.
package struct StandardStream: TextSink {
    private let descriptor: Int32

    /// The process's standard output.
    package static let output = StandardStream(descriptor: 1)
    /// The process's standard error.
    package static let error = StandardStream(descriptor: 2)

    /// Writes straight to the file descriptor: no buffering to flush before `exit`, and the
    /// two streams stay in order when both go to one terminal.
    package func write(_ text: String) {
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { buffer in
                #if canImport(Glibc)
                Glibc.write(descriptor, buffer.baseAddress! + offset, buffer.count - offset)
                #else
                Darwin.write(descriptor, buffer.baseAddress! + offset, buffer.count - offset)
                #endif
            }
            if written < 0 {
                if errno == EINTR { continue }
                return  // a closed pipe: nothing useful left to do with the text
            }
            offset += written
        }
    }

    /// Whether the descriptor is a terminal (`isatty`).
    package var isTerminal: Bool { isatty(descriptor) == 1 }
}

/// Collects everything written, for tests and for callers that post-process the output.
package final class TextBuffer: TextSink {
    private let storage = Mutex("")
    /// What `isTerminal` reports: lets tests exercise the terminal progress bar.
    package let isTerminal: Bool

    /// Creates an empty buffer.
    package init(isTerminal: Bool = false) { self.isTerminal = isTerminal }

    /// Appends `text`.
    package func write(_ text: String) { storage.withLock { $0 += text } }

    /// Everything written so far.
    package var text: String { storage.withLock { $0 } }
}
