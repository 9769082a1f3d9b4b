/// A table under construction. A reference type so that a header or a dotted key can reach a
/// table deep in the tree and add to it in place: a tree of `TOMLTable` values would copy a
/// whole branch on every write.
///
/// Keys are kept in an array and found by a linear search on a cheap hash the parser computed
/// while reading the key; only a table with many keys gets a dictionary (seeded hashing, so a
/// hostile document cannot make lookups quadratic). The final `TOMLTable` is filled once, at
/// its exact size. A profile of the 1 MB benchmark showed dictionary growth and rehashing
/// as the largest cost before this.
final class TOMLTableBuilder {
    /// How the table came to exist, which decides what may still add to it (TOML 1.0.0, "Table"
    /// and "Keys": a table is defined once, by a header or by dotted keys, never both).
    enum Origin: Equatable {
        /// The document's root or an inline table's own builder.
        case root
        /// Created as a parent of a header (`a` for `[a.b]`): a later `[a]` may still define it,
        /// and dotted keys may extend it.
        case implicit
        /// Defined by its own header, `[a]` or `[[a]]`: never again by a header, never by dotted
        /// keys.
        case header
        /// Created by dotted keys (`a.b = 1`) in one section — a table's body or one inline
        /// table — identified by its number: only dotted keys of that section may extend it.
        case dotted(section: Int)
    }

    /// What a key holds while the document is being read.
    enum Slot {
        /// A finished value: a scalar, a static array or an inline table, all immutable.
        case value(TOMLValue)
        /// A table that headers or dotted keys may still extend.
        case table(TOMLTableBuilder)
        /// An array of tables (`[[a]]`), which later headers may append to.
        case arrayOfTables(TOMLArrayOfTablesBuilder)
    }

    /// One key, in document order.
    struct Entry {
        var key: String
        /// ``TOMLParser/KeyPart/hash`` of the key.
        var hash: Int
        var slot: Slot
        var position: TOMLPosition
    }

    /// Up to this many keys, lookups scan ``entries``; beyond, they use `index`.
    static let linearSearchLimit = 32

    /// The keys in document order.
    private(set) var entries: [Entry] = []
    private var index: [String: Int] = [:]
    /// Where the table was defined (see ``TOMLTable/position``).
    var position: TOMLPosition
    /// How it was defined.
    var origin: Origin

    init(position: TOMLPosition, origin: Origin) {
        self.position = position
        self.origin = origin
    }

    /// The index of `key` in ``entries``, if present; `hash` is its ``TOMLParser/KeyPart/hash``.
    func find(_ key: String, hash: Int) -> Int? {
        if entries.count > Self.linearSearchLimit { return index[key] }
        return entries.withUnsafeBufferPointer { entries in
            for i in entries.indices where entries[i].hash == hash && entries[i].key == key { return i }
            return nil
        }
    }

    /// Adds a key the table does not have yet.
    func append(_ key: String, hash: Int, _ slot: Slot, at position: TOMLPosition) {
        // Most tables have a handful of keys: one allocation instead of growing 1, 2, 4, 8.
        if entries.isEmpty { entries.reserveCapacity(8) }
        entries.append(Entry(key: key, hash: hash, slot: slot, position: position))
        let count = entries.count
        if count > Self.linearSearchLimit + 1 {
            index[key] = count - 1
        } else if count == Self.linearSearchLimit + 1 {
            index.reserveCapacity(4 * count)
            for (i, entry) in entries.enumerated() { index[entry.key] = i }
        }
    }

    /// Moves an existing key's recorded position (an implicit table defined by its header).
    func setPosition(_ position: TOMLPosition, at index: Int) {
        entries[index].position = position
    }

    /// The finished table. Recursion depth is bounded by ``TOMLTable/maximumNestingDepth``.
    func build() -> TOMLTable {
        var table = TOMLTable(position: position)
        table.reserveCapacity(entries.count)
        for entry in entries {
            let value: TOMLValue =
                switch entry.slot {
                case .value(let value): value
                case .table(let builder): .table(builder.build())
                case .arrayOfTables(let array): .array(array.elements.map { .table($0.build()) })
                }
            table.setValue(value, forKey: entry.key, at: entry.position)
        }
        return table
    }
}

/// An array of tables under construction; a class so that `[[a]]` appends in place.
final class TOMLArrayOfTablesBuilder {
    /// The elements, one per `[[a]]` header so far.
    var elements: [TOMLTableBuilder]

    init(first: TOMLTableBuilder) {
        elements = [first]
    }
}
