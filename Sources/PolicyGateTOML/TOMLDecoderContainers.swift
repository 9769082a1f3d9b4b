// The keyed and unkeyed containers of `TOMLDecoder`. Both read leaves (strings, numbers,
// booleans) straight from their table or array and only involve the shared decoder for
// values that decode themselves.

/// A table seen through `Key`.
///
/// A class, not a struct: `KeyedDecodingContainer` keeps it in a generic box, which copies
/// the stored value for every call; copying one reference is one retain where a struct would
/// retain each of its fields.
final class TOMLKeyedDecodingContainer<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let impl: TOMLDecoderImpl
    let table: TOMLTable
    let node: TOMLCodingPath
    let convertsFromSnakeCase: Bool

    init(impl: TOMLDecoderImpl, table: TOMLTable, node: TOMLCodingPath) {
        self.impl = impl
        self.table = table
        self.node = node
        self.convertsFromSnakeCase = impl.options.convertsFromSnakeCase
    }

    var codingPath: [any CodingKey] { node.codingKeys }

    /// The keys `Key` accepts, in document order.
    var allKeys: [Key] {
        guard convertsFromSnakeCase else { return table.keys.compactMap { Key(stringValue: $0) } }
        var seen = Set<String>()
        return table.keys.compactMap { key in
            let convertedKey = TOMLDecoder.convertFromSnakeCase(key)
            return seen.insert(convertedKey).inserted ? Key(stringValue: convertedKey) : nil
        }
    }

    @inline(__always)
    func lookup(_ name: String) -> TOMLValue? {
        guard convertsFromSnakeCase else { return table[name] }
        return TOMLDecoder.snakeCaseEntry(for: name, spelling: impl.snakeCaseSpelling(of: name), in: table)?.value
    }

    func contains(_ key: Key) -> Bool { lookup(key.stringValue) != nil }

    /// TOML has no null: only a missing key reads as nil.
    func decodeNil(forKey key: Key) -> Bool { lookup(key.stringValue) == nil }

    func require(_ key: Key) throws -> TOMLValue {
        guard let value = lookup(key.stringValue) else { throw keyNotFound(key) }
        return value
    }

    func keyNotFound(_ key: any CodingKey) -> DecodingError {
        .keyNotFound(key, .init(codingPath: codingPath, debugDescription: "missing key '\(key.stringValue)'"))
    }

    func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool { try TOMLUnwrap.bool(require(key), at: .key(key, node)) }
    func decode(_ type: String.Type, forKey key: Key) throws -> String { try TOMLUnwrap.string(require(key), at: .key(key, node)) }
    func decode(_ type: Double.Type, forKey key: Key) throws -> Double { try TOMLUnwrap.double(require(key), at: .key(key, node)) }
    func decode(_ type: Float.Type, forKey key: Key) throws -> Float { try TOMLUnwrap.float(require(key), at: .key(key, node)) }
    func decode(_ type: Int.Type, forKey key: Key) throws -> Int { try integer(Int.self, key) }
    func decode(_ type: Int8.Type, forKey key: Key) throws -> Int8 { try integer(Int8.self, key) }
    func decode(_ type: Int16.Type, forKey key: Key) throws -> Int16 { try integer(Int16.self, key) }
    func decode(_ type: Int32.Type, forKey key: Key) throws -> Int32 { try integer(Int32.self, key) }
    func decode(_ type: Int64.Type, forKey key: Key) throws -> Int64 { try integer(Int64.self, key) }
    func decode(_ type: Int128.Type, forKey key: Key) throws -> Int128 { try integer(Int128.self, key) }
    func decode(_ type: UInt.Type, forKey key: Key) throws -> UInt { try integer(UInt.self, key) }
    func decode(_ type: UInt8.Type, forKey key: Key) throws -> UInt8 { try integer(UInt8.self, key) }
    func decode(_ type: UInt16.Type, forKey key: Key) throws -> UInt16 { try integer(UInt16.self, key) }
    func decode(_ type: UInt32.Type, forKey key: Key) throws -> UInt32 { try integer(UInt32.self, key) }
    func decode(_ type: UInt64.Type, forKey key: Key) throws -> UInt64 { try integer(UInt64.self, key) }
    func decode(_ type: UInt128.Type, forKey key: Key) throws -> UInt128 { try integer(UInt128.self, key) }

    @inline(__always)
    func integer<I: FixedWidthInteger>(_ type: I.Type, _ key: Key) throws -> I {
        try TOMLUnwrap.integer(require(key), as: I.self, at: .key(key, node))
    }

    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
        guard let value = lookup(key.stringValue) else {
            if let optional = T.self as? any TOMLOptionalType.Type { return optional.none as! T }
            throw keyNotFound(key)
        }
        return try impl.unwrap(T.self, value: value, node: .key(key, node))
    }

    // `decodeIfPresent` would otherwise look the key up three times (contains, decodeNil,
    // decode); configuration structs are mostly optionals, so each type gets one lookup.

    func decodeIfPresent(_ type: Bool.Type, forKey key: Key) throws -> Bool? {
        try lookup(key.stringValue).map { try TOMLUnwrap.bool($0, at: .key(key, node)) }
    }
    func decodeIfPresent(_ type: String.Type, forKey key: Key) throws -> String? {
        try lookup(key.stringValue).map { try TOMLUnwrap.string($0, at: .key(key, node)) }
    }
    func decodeIfPresent(_ type: Double.Type, forKey key: Key) throws -> Double? {
        try lookup(key.stringValue).map { try TOMLUnwrap.double($0, at: .key(key, node)) }
    }
    func decodeIfPresent(_ type: Float.Type, forKey key: Key) throws -> Float? {
        try lookup(key.stringValue).map { try TOMLUnwrap.float($0, at: .key(key, node)) }
    }
    func decodeIfPresent(_ type: Int.Type, forKey key: Key) throws -> Int? { try integerIfPresent(Int.self, key) }
    func decodeIfPresent(_ type: Int8.Type, forKey key: Key) throws -> Int8? { try integerIfPresent(Int8.self, key) }
    func decodeIfPresent(_ type: Int16.Type, forKey key: Key) throws -> Int16? { try integerIfPresent(Int16.self, key) }
    func decodeIfPresent(_ type: Int32.Type, forKey key: Key) throws -> Int32? { try integerIfPresent(Int32.self, key) }
    func decodeIfPresent(_ type: Int64.Type, forKey key: Key) throws -> Int64? { try integerIfPresent(Int64.self, key) }
    func decodeIfPresent(_ type: Int128.Type, forKey key: Key) throws -> Int128? { try integerIfPresent(Int128.self, key) }
    func decodeIfPresent(_ type: UInt.Type, forKey key: Key) throws -> UInt? { try integerIfPresent(UInt.self, key) }
    func decodeIfPresent(_ type: UInt8.Type, forKey key: Key) throws -> UInt8? { try integerIfPresent(UInt8.self, key) }
    func decodeIfPresent(_ type: UInt16.Type, forKey key: Key) throws -> UInt16? { try integerIfPresent(UInt16.self, key) }
    func decodeIfPresent(_ type: UInt32.Type, forKey key: Key) throws -> UInt32? { try integerIfPresent(UInt32.self, key) }
    func decodeIfPresent(_ type: UInt64.Type, forKey key: Key) throws -> UInt64? { try integerIfPresent(UInt64.self, key) }
    func decodeIfPresent(_ type: UInt128.Type, forKey key: Key) throws -> UInt128? { try integerIfPresent(UInt128.self, key) }

    @inline(__always)
    func integerIfPresent<I: FixedWidthInteger>(_ type: I.Type, _ key: Key) throws -> I? {
        guard let value = lookup(key.stringValue) else { return nil }
        return try TOMLUnwrap.integer(value, as: I.self, at: .key(key, node))
    }

    func decodeIfPresent<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T? {
        guard let value = lookup(key.stringValue) else { return nil }
        return try impl.unwrap(T.self, value: value, node: .key(key, node))
    }

    func nestedContainer<NestedKey: CodingKey>(
        keyedBy type: NestedKey.Type, forKey key: Key
    ) throws -> KeyedDecodingContainer<NestedKey> {
        try impl.keyedContainer(keyedBy: NestedKey.self, value: require(key), node: .key(key, node))
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        try impl.unkeyedContainer(value: require(key), node: .key(key, node))
    }

    /// The value of the key `super`, as JSONDecoder does.
    func superDecoder() throws -> any Decoder {
        TOMLDecoderImpl(value: lookup(TOMLStringKey.super.stringValue), node: .key(TOMLStringKey.super, node), options: impl.options)
    }

    /// A decoder for the key's value; a missing key gives a decoder whose value is missing
    /// (`decodeNil()` is true), so the caller decides whether that is an error.
    func superDecoder(forKey key: Key) throws -> any Decoder {
        TOMLDecoderImpl(value: lookup(key.stringValue), node: .key(key, node), options: impl.options)
    }
}

/// An array, read element by element.
struct TOMLUnkeyedDecodingContainer: UnkeyedDecodingContainer {
    let impl: TOMLDecoderImpl
    let elements: [TOMLValue]
    let node: TOMLCodingPath
    private(set) var currentIndex = 0

    init(impl: TOMLDecoderImpl, elements: [TOMLValue], node: TOMLCodingPath) {
        self.impl = impl
        self.elements = elements
        self.node = node
    }

    var codingPath: [any CodingKey] { node.codingKeys }
    var count: Int? { elements.count }
    var isAtEnd: Bool { currentIndex >= elements.count }

    /// The current element; at the end, `valueNotFound` (the index is not advanced either way).
    func current(_ type: Any.Type) throws -> TOMLValue {
        guard currentIndex < elements.count else {
            throw DecodingError.valueNotFound(
                type,
                .init(
                    codingPath: TOMLCodingPath.index(currentIndex, node).codingKeys,
                    debugDescription: elements.isEmpty
                        ? "expected an element, but the array is empty"
                        : "expected another element, but the array has only \(elements.count)"
                )
            )
        }
        return elements[currentIndex]
    }

    /// Elements are never null in TOML; at the end this throws, as the protocol says.
    func decodeNil() throws -> Bool {
        _ = try current(Never.self)
        return false
    }

    /// Reads the current element with `read` (given the element and its path, built only if
    /// `read` needs it) and moves on only if that succeeded.
    @inline(__always)
    mutating func next<T>(_ type: T.Type, _ read: (TOMLValue, () -> TOMLCodingPath) throws -> T) throws -> T {
        let index = currentIndex, node = self.node
        let result = try read(current(T.self)) { .index(index, node) }
        currentIndex += 1
        return result
    }

    mutating func decode(_ type: Bool.Type) throws -> Bool { try next(Bool.self) { try TOMLUnwrap.bool($0, at: $1()) } }
    mutating func decode(_ type: String.Type) throws -> String { try next(String.self) { try TOMLUnwrap.string($0, at: $1()) } }
    mutating func decode(_ type: Double.Type) throws -> Double { try next(Double.self) { try TOMLUnwrap.double($0, at: $1()) } }
    mutating func decode(_ type: Float.Type) throws -> Float { try next(Float.self) { try TOMLUnwrap.float($0, at: $1()) } }
    mutating func decode(_ type: Int.Type) throws -> Int { try integer(Int.self) }
    mutating func decode(_ type: Int8.Type) throws -> Int8 { try integer(Int8.self) }
    mutating func decode(_ type: Int16.Type) throws -> Int16 { try integer(Int16.self) }
    mutating func decode(_ type: Int32.Type) throws -> Int32 { try integer(Int32.self) }
    mutating func decode(_ type: Int64.Type) throws -> Int64 { try integer(Int64.self) }
    mutating func decode(_ type: Int128.Type) throws -> Int128 { try integer(Int128.self) }
    mutating func decode(_ type: UInt.Type) throws -> UInt { try integer(UInt.self) }
    mutating func decode(_ type: UInt8.Type) throws -> UInt8 { try integer(UInt8.self) }
    mutating func decode(_ type: UInt16.Type) throws -> UInt16 { try integer(UInt16.self) }
    mutating func decode(_ type: UInt32.Type) throws -> UInt32 { try integer(UInt32.self) }
    mutating func decode(_ type: UInt64.Type) throws -> UInt64 { try integer(UInt64.self) }
    mutating func decode(_ type: UInt128.Type) throws -> UInt128 { try integer(UInt128.self) }

    @inline(__always)
    mutating func integer<I: FixedWidthInteger>(_ type: I.Type) throws -> I {
        try next(I.self) { try TOMLUnwrap.integer($0, as: I.self, at: $1()) }
    }

    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T {
        let impl = self.impl
        return try next(T.self) { try impl.unwrap(T.self, value: $0, node: $1()) }
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
        let impl = self.impl
        return try next(KeyedDecodingContainer<NestedKey>.self) {
            try impl.keyedContainer(keyedBy: NestedKey.self, value: $0, node: $1())
        }
    }

    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
        let impl = self.impl
        return try next((any UnkeyedDecodingContainer).self) { try impl.unkeyedContainer(value: $0, node: $1()) }
    }

    /// A decoder for the current element, which is then consumed.
    mutating func superDecoder() throws -> any Decoder {
        let options = impl.options
        return try next((any Decoder).self) { TOMLDecoderImpl(value: $0, node: $1(), options: options) }
    }
}
