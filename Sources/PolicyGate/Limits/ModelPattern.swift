/// A model name or a pattern of them, as the configuration names models: `gpt-4o` matches that
/// name only, `claude-sonnet-4*` every name starting `claude-sonnet-4`. A `*` stands for any run
/// of characters (none included) and may appear anywhere, several times; matching is exact
/// otherwise (case-sensitive, as providers' model names are).
struct ModelPattern: Hashable, Sendable, CustomStringConvertible {
    /// The pattern as written.
    let text: String
    /// The literal runs between the `*`s (the first and last may be empty).
    private let pieces: [Substring]

    /// Reads `text`; `nil` when it is empty or only `*`s.
    init?(_ text: String) {
        guard text.contains(where: { $0 != "*" }) else { return nil }
        self.text = text
        pieces = text.split(separator: "*", omittingEmptySubsequences: false)
    }

    var description: String { text }

    /// Whether the pattern has no `*`: an exact name.
    var isExact: Bool { pieces.count == 1 }

    /// How specific a match is: exact names first, then patterns with more literal characters.
    /// Where several patterns match a name, the most specific wins (ties: the smaller text).
    var specificity: Int { isExact ? .max : text.utf8.count - (pieces.count - 1) }

    /// Whether `model` matches.
    func matches(_ model: String) -> Bool {
        let name = Substring(model)
        if isExact { return name == pieces[0] }
        guard name.hasPrefix(pieces[0]), let last = pieces.last else { return false }
        var rest = name.dropFirst(pieces[0].count)
        guard rest.count >= last.count, rest.hasSuffix(last) else { return false }
        rest = rest.dropLast(last.count)
        // Middle pieces, leftmost first: a greedy scan is exact for `*` alone.
        for piece in pieces.dropFirst().dropLast() where !piece.isEmpty {
            guard let found = rest.firstRange(of: piece) else { return false }
            rest = rest[found.upperBound...]
        }
        return true
    }

    /// Whether `self` should win over `other` where both match a name.
    func isMoreSpecific(than other: ModelPattern) -> Bool {
        specificity != other.specificity ? specificity > other.specificity : text < other.text
    }
}

/// Values keyed by model patterns, looked up by model name (most specific pattern wins).
struct ModelTable<Value: Sendable>: Sendable {
    /// Most specific first, so the first match is the answer.
    private(set) var entries: [(pattern: ModelPattern, value: Value)]

    init(_ entries: [(pattern: ModelPattern, value: Value)] = []) {
        self.entries = entries.sorted { $0.pattern.isMoreSpecific(than: $1.pattern) }
    }

    var isEmpty: Bool { entries.isEmpty }

    /// The value of the most specific pattern matching `model`, with that pattern.
    func match(_ model: String) -> (pattern: ModelPattern, value: Value)? {
        entries.first { $0.pattern.matches(model) }
    }
}
