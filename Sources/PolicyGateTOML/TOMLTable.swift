/// A TOML table: keys in the order the document wrote them, each with its value and where
/// the key was written.
///
/// Equality compares keys and values only, not order or positions.
public struct TOMLTable: Sendable, Hashable, CustomStringConvertible {
    /// One key's value and where it was defined.
    public struct Entry: Sendable {
        /// The value.
        public var value: TOMLValue
        /// Where the key was written: the key of a key/value pair, or the header that
        /// defined a sub-table (`[a.b]`), or the first dotted key that created it implicitly.
        public var position: TOMLPosition

        /// Creates an entry.
        public init(value: TOMLValue, position: TOMLPosition) {
            self.value = value
            self.position = position
        }
    }

    /// The keys, in document order.
    public private(set) var keys: [String] = []
    private var entries: [String: Entry] = [:]
    /// Where the table itself was defined: its header, its inline table's `{`, or line 1,
    /// column 1 for the document's root table.
    public var position: TOMLPosition

    /// Creates an empty table defined at `position`.
    public init(position: TOMLPosition = TOMLPosition(line: 1, column: 1)) {
        self.position = position
    }

    /// The number of keys.
    public var count: Int { keys.count }

    /// Whether the table has no keys.
    public var isEmpty: Bool { keys.isEmpty }

    /// The value of `key`, or `nil`. Setting a value keeps an existing key's position and
    /// order; a new key is appended at ``position``.
    public subscript(key: String) -> TOMLValue? {
        get { entries[key]?.value }
        set {
            guard let newValue else {
                if entries.removeValue(forKey: key) != nil { keys.removeAll { $0 == key } }
                return
            }
            if entries[key] != nil {
                entries[key]!.value = newValue
            } else {
                setValue(newValue, forKey: key, at: position)
            }
        }
    }

    /// The value and position of `key`, or `nil`.
    public func entry(_ key: String) -> Entry? { entries[key] }

    /// Where `key` was written, or `nil` if the table has no such key.
    public func position(of key: String) -> TOMLPosition? { entries[key]?.position }

    /// Sets `key` to `value`, recording where it was written. A new key goes last.
    public mutating func setValue(_ value: TOMLValue, forKey key: String, at position: TOMLPosition) {
        if entries.updateValue(Entry(value: value, position: position), forKey: key) == nil {
            keys.append(key)
        }
    }

    /// Makes room for `capacity` keys, so that filling a table whose size is known (as the
    /// parser does) never rehashes.
    mutating func reserveCapacity(_ capacity: Int) {
        keys.reserveCapacity(capacity)
        entries.reserveCapacity(capacity)
    }

    /// The closest known position of the value at `path` below this table: the position of
    /// the deepest key on the path that exists (array elements that are tables have their
    /// own), or this table's position if the first key is missing.
    public func position(at path: [TOMLPathComponent]) -> TOMLPosition {
        var best = position
        var current: TOMLValue = .table(self)
        for component in path {
            switch (component, current) {
            case (.key(let key), .table(let table)):
                guard let entry = table.entries[key] else { return best }
                best = entry.position
                current = entry.value
            case (.index(let index), .array(let elements)):
                guard elements.indices.contains(index) else { return best }
                current = elements[index]
                if case .table(let table) = current { best = table.position }
            default:
                return best
            }
        }
        return best
    }

    /// Equal when both have the same keys with equal values.
    public static func == (lhs: TOMLTable, rhs: TOMLTable) -> Bool {
        guard lhs.entries.count == rhs.entries.count else { return false }
        for (key, entry) in lhs.entries {
            guard let other = rhs.entries[key], other.value == entry.value else { return false }
        }
        return true
    }

    /// Hashes the keys and values (order-independently).
    public func hash(into hasher: inout Hasher) {
        hasher.combine(entries.count)
        var combined = 0
        for (key, entry) in entries {
            var inner = Hasher()
            inner.combine(key)
            inner.combine(entry.value)
            combined ^= inner.finalize()
        }
        hasher.combine(combined)
    }

    /// A short rendering, `{key = value, ...}`, for debugging.
    public var description: String {
        "{" + keys.map { "\($0) = \(entries[$0]!.value)" }.joined(separator: ", ") + "}"
    }
}

/// One step of a path through a document: a table key or an array index.
public enum TOMLPathComponent: Sendable, Hashable, CustomStringConvertible {
    /// A key of a table.
    case key(String)
    /// An index into an array (from 0).
    case index(Int)

    /// The key (quoted when it is not a bare key) or `[index]`.
    public var description: String {
        switch self {
        case .key(let key): TOMLPathComponent.render(key: key)
        case .index(let index): "[\(index)]"
        }
    }

    /// A key as TOML would write it: bare when it can be, else a basic string with escapes.
    static func render(key: String) -> String {
        let isBare =
            !key.isEmpty
            && key.unicodeScalars.allSatisfy {
                ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "_" || $0 == "-"
            }
        if isBare { return key }
        var quoted = "\""
        for scalar in key.unicodeScalars {
            switch scalar {
            case "\"": quoted += "\\\""
            case "\\": quoted += "\\\\"
            case "\n": quoted += "\\n"
            case "\t": quoted += "\\t"
            case "\r": quoted += "\\r"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F {
                    let hex = String(scalar.value, radix: 16, uppercase: true)
                    quoted += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    quoted.unicodeScalars.append(scalar)
                }
            }
        }
        return quoted + "\""
    }
}

extension Array where Element == TOMLPathComponent {
    /// The path as a TOML-style dotted key: `limits."azure-openai".max_concurrent`,
    /// `servers[1].name`. Empty for the root.
    public var dottedKey: String {
        var text = ""
        for component in self {
            switch component {
            case .key:
                if !text.isEmpty { text += "." }
                text += component.description
            case .index:
                text += component.description
            }
        }
        return text
    }
}
