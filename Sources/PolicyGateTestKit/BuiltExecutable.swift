import Foundation

/// The path of an executable product of this package, built beside the test bundle, or `nil`.
///
/// `swift test` builds every product, so executables sit in the same build directory as the
/// test bundle; this looks upwards from the bundle a few levels (for macOS's nested `.xctest`
/// bundles). Tests that run a product as a separate process use it.
public func builtExecutable(named name: String) -> URL? {
    var starts: [String] = Array(CommandLine.arguments.prefix(1))
    if let path = Bundle.main.executablePath { starts.append(path) }
    starts += [Bundle.main.bundlePath] + Bundle.allBundles.map(\.bundlePath)
    for start in starts {
        var directory = URL(fileURLWithPath: start).deletingLastPathComponent()
        for _ in 0..<5 {
            let candidate = directory.appendingPathComponent(name)
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
            directory.deleteLastPathComponent()
        }
    }
    return nil
}
