// Fails when a public or open symbol of the named modules has no documentation comment of its
// own. Run by .ci/docs.sh with the Swift interpreter (nothing to install):
//
//     swift .ci/doc-coverage.swift <symbol-graph-dir> <Module>...
//
// It reads `<Module>.symbols.json` and `<Module>@<Other>.symbols.json` (extensions of other
// modules' types) as the compiler emits them. Skipped, since no source line could carry their
// comment: members a protocol extension supplies (`::SYNTHESIZED::`; documented by the
// protocol) and declarations the compiler makes (no source location: an enum's
// `init(rawValue:)`, a synthesized `init(from:)`). Implementations of another module's protocol
// requirements (`description`, `hash(into:)`…) are documented by that module, as DocC shows
// them; a comment of our own is still welcome there.
import Foundation

let arguments = CommandLine.arguments.dropFirst()
guard let directory = arguments.first, arguments.count >= 2 else {
    FileHandle.standardError.write("usage: swift doc-coverage.swift <symbol-graph-dir> <Module>...\n".data(using: .utf8)!)
    exit(2)
}
let modules = Set(arguments.dropFirst())
let files = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []

var missing: [String] = []
var checked = 0
var modulesSeen = Set<String>()
for file in files.sorted() where file.hasSuffix(".symbols.json") {
    let module = String(file.dropLast(".symbols.json".count).split(separator: "@", maxSplits: 1)[0])
    guard modules.contains(module) else { continue }
    modulesSeen.insert(module)
    let url = URL(fileURLWithPath: directory).appendingPathComponent(file)
    guard let data = try? Data(contentsOf: url),
        let graph = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
        let symbols = graph["symbols"] as? [[String: Any]]
    else {
        print("error: \(file): not a symbol graph")
        exit(1)
    }
    for symbol in symbols {
        let access = symbol["accessLevel"] as? String
        guard access == "public" || access == "open" else { continue }
        let precise = (symbol["identifier"] as? [String: Any])?["precise"] as? String ?? ""
        if precise.contains("::SYNTHESIZED::") { continue }
        guard let location = symbol["location"] as? [String: Any], let uri = location["uri"] as? String else { continue }
        checked += 1
        let comment = symbol["docComment"] as? [String: Any]
        if let owner = comment?["module"] as? String, owner != module { continue }  // inherited
        let lines = (comment?["lines"] as? [[String: Any]]) ?? []
        let text = lines.compactMap { $0["text"] as? String }.joined().trimmingCharacters(in: .whitespaces)
        if !text.isEmpty { continue }
        let path = (symbol["pathComponents"] as? [String] ?? []).joined(separator: ".")
        let line = ((location["position"] as? [String: Any])?["line"] as? Int ?? 0) + 1
        let place = (uri.components(separatedBy: "/Sources/").last.map { "Sources/" + $0 } ?? uri) + ":\(line)"
        missing.append("\(place): error: public symbol \(module).\(path) has no documentation comment")
    }
}

for module in modules.subtracting(modulesSeen).sorted() {
    missing.append("error: no symbol graph for \(module) in \(directory) (built with its trait?)")
}
for line in missing.sorted() { print(line) }
print("documentation coverage: \(checked) public symbols in \(modulesSeen.count) modules, \(missing.count) problems")
exit(missing.isEmpty ? 0 : 1)
