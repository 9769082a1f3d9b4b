import Foundation
import PolicyGate
import Testing

/// The documentation's code is compiled: every Swift block of every DocC catalog in `Sources/`
/// appears line for line (indentation aside) in a test source, where it is compiled and run
/// (`ArticleSnippetTests`, the README's tests…); and every TOML block reads as a configuration
/// without errors. A block of a manifest (its first line `// Package.swift`) is exempt: it
/// cannot compile inside a test.
@Suite("Documentation's code")
struct DocumentationSnippetTests {
    static let root = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Fenced blocks of `language` in the Markdown files under `Sources/*.docc`, with their file.
    static func blocks(_ language: String) throws -> [(file: String, lines: [String])] {
        var found: [(file: String, lines: [String])] = []
        let sources = root.appendingPathComponent("Sources")
        let enumerator = FileManager.default.enumerator(atPath: sources.path)
        while let relative = enumerator?.nextObject() as? String {
            guard relative.hasSuffix(".md"), relative.contains(".docc/") else { continue }
            let text = try String(contentsOf: sources.appendingPathComponent(relative), encoding: .utf8)
            var current: [String]?
            for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
                let trimmed = line.trimmingCharacters(in: .whitespaces)
                if current == nil, trimmed == "```" + language {
                    current = []
                } else if current != nil, trimmed == "```" {
                    found.append((relative, current!))
                    current = nil
                } else if current != nil {
                    current!.append(String(line))
                }
            }
        }
        return found
    }

    static func normalized(_ lines: [String]) -> String {
        lines.map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: "\n")
    }

    @Test("every Swift block of the articles is in a compiled test source")
    func swiftBlocksAreCompiled() throws {
        var tests = ""
        let testsDirectory = Self.root.appendingPathComponent("Tests")
        let enumerator = FileManager.default.enumerator(atPath: testsDirectory.path)
        while let relative = enumerator?.nextObject() as? String {
            guard relative.hasSuffix(".swift") else { continue }
            let text = try String(contentsOf: testsDirectory.appendingPathComponent(relative), encoding: .utf8)
            tests += "\n" + Self.normalized(text.components(separatedBy: "\n")) + "\n"
        }
        let blocks = try Self.blocks("swift")
        #expect(blocks.count >= 10, "the articles' Swift blocks were not found")
        for block in blocks {
            if block.lines.first?.hasPrefix("// Package.swift") == true { continue }
            let text = Self.normalized(block.lines)
            let compiled = tests.contains("\n" + text + "\n")
            #expect(compiled, "\(block.file): this block is in no test source; compile it in ArticleSnippetTests:\n\(text)")
        }
    }

    @Test("every TOML block of the articles reads without errors")
    func tomlBlocksRead() throws {
        let blocks = try Self.blocks("toml")
        #expect(blocks.count >= 5, "the articles' TOML blocks were not found")
        for block in blocks {
            #expect(throws: Never.self, "\(block.file)") {
                _ = try PolicyConfiguration(toml: block.lines.joined(separator: "\n"))
            }
        }
    }
}
