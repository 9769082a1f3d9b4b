import Testing

@testable import PolicyGate

@Suite("Model patterns")
struct ModelPatternTests {
    @Test("exact names, prefixes, suffixes and middles match as globs")
    func matching() throws {
        let exact = try #require(ModelPattern("gpt-4o"))
        #expect(exact.matches("gpt-4o"))
        #expect(!exact.matches("gpt-4o-mini"))
        #expect(!exact.matches("GPT-4o"))
        let prefix = try #require(ModelPattern("claude-sonnet-4*"))
        #expect(prefix.matches("claude-sonnet-4"))
        #expect(prefix.matches("claude-sonnet-4-5-20250929"))
        #expect(!prefix.matches("claude-sonnet-3-7"))
        let middle = try #require(ModelPattern("claude-*-4*"))
        #expect(middle.matches("claude-opus-4-1"))
        #expect(middle.matches("claude-haiku-4"))
        #expect(!middle.matches("claude-3-5-haiku"))
        let overlapping = try #require(ModelPattern("ab*ab"))
        #expect(!overlapping.matches("ab"))
        #expect(!overlapping.matches("aba"))
        #expect(overlapping.matches("abab"))
        #expect(try #require(ModelPattern("*mini")).matches("gpt-4o-mini"))
        #expect(ModelPattern("") == nil)
        #expect(ModelPattern("**") == nil)
    }

    @Test("the most specific pattern wins, whatever the order given")
    func specificity() throws {
        let patterns = ["claude-*", "claude-sonnet-4*", "claude-sonnet-4-5", "*"].compactMap(ModelPattern.init)
        for seed in 0..<6 {
            var rotated = patterns
            rotated.rotate(by: seed)
            let table = ModelTable(rotated.map { ($0, $0.text) })
            #expect(table.match("claude-sonnet-4-5")?.value == "claude-sonnet-4-5")
            #expect(table.match("claude-sonnet-4-0")?.value == "claude-sonnet-4*")
            #expect(table.match("claude-opus-4")?.value == "claude-*")
            #expect(table.match("gpt-4o") == nil)  // "*" alone is not a pattern
        }
    }
}

extension Array {
    fileprivate mutating func rotate(by count: Int) {
        guard !isEmpty else { return }
        let k = count % self.count
        self = Array(self[k...] + self[..<k])
    }
}
