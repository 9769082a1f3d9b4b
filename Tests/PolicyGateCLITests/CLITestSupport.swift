import Foundation
import PolicyGateCLI

/// What one in-process run of `policy-gate` printed and returned.
struct ToolRun {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs `policy-gate` with `arguments` in-process, capturing both streams.
func runTool(_ arguments: [String], terminal: Bool = false) -> ToolRun {
    let stdout = TextBuffer(isTerminal: terminal)
    let stderr = TextBuffer(isTerminal: terminal)
    let status = PolicyGateTool.run(arguments: arguments, stdout: stdout, stderr: stderr)
    return ToolRun(status: status, stdout: stdout.text, stderr: stderr.text)
}

/// A fresh directory for a test's files, removed when the value goes away.
final class TemporaryDirectory {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("policy-gate-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: url) }

    /// Writes `contents` to `name` in the directory and returns its path.
    func write(_ name: String, _ contents: String) throws -> String {
        let file = url.appendingPathComponent(name)
        try contents.write(to: file, atomically: true, encoding: .utf8)
        return file.path
    }

    /// The path of `name` in the directory (which need not exist).
    func path(_ name: String) -> String { url.appendingPathComponent(name).path }
}

/// Parses JSON text into Foundation objects (as a script would), or `nil` when it is not JSON.
func parseJSON(_ text: String) -> [String: Any]? {
    (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any]
}
