#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

// The machinery behind `TOMLDecoder`. One `TOMLDecoderImpl` serves a whole decode: it is the
// `Decoder` and its own single-value container, and it swaps in the value and coding path of
// each nested value while that value's `init(from:)` runs, so nothing is allocated per value
// but one path node. Containers capture their own table or array and path node, so a
// container kept by user code stays valid after the decoder has moved on.

/// The coding path as a linked list: pushing a key is one node, and the `[any CodingKey]`
/// array the `Decoder` protocol wants is only built when someone asks for it (mostly errors).
indirect enum TOMLCodingPath {
    case root
    case key(any CodingKey, TOMLCodingPath)
    case index(Int, TOMLCodingPath)

    /// The path from the root, as `Decoder.codingPath` spells it.
    var codingKeys: [any CodingKey] {
        var keys: [any CodingKey] = []
        var node = self
        while true {
            switch node {
            case .root:
                return keys.reversed()
            case .key(let key, let parent):
                keys.append(key)
                node = parent
            case .index(let index, let parent):
                keys.append(TOMLIndexKey(index))
                node = parent
            }
        }
    }
}

/// The coding key of an array element. The error conversion recognises it, so that an index
/// stays an index even when the document has no array there.
struct TOMLIndexKey: CodingKey {
    let index: Int

    init(_ index: Int) { self.index = index }
    init?(stringValue: String) { nil }
    init?(intValue: Int) { self.index = intValue }

    // "Index N", as Foundation's decoders spell it.
    var stringValue: String { "Index \(index)" }
    var intValue: Int? { index }
}

/// A coding key made from a table key: dictionary entries and `super`.
struct TOMLStringKey: CodingKey {
    let stringValue: String

    init(_ stringValue: String) { self.stringValue = stringValue }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }

    var intValue: Int? { nil }

    static let `super` = TOMLStringKey("super")
}

/// Settings shared, unchanged, by every decoder of one `decode` call.
final class TOMLDecoderOptions {
    let userInfo: [CodingUserInfoKey: Any]
    let convertsFromSnakeCase: Bool

    init(userInfo: [CodingUserInfoKey: Any], convertsFromSnakeCase: Bool) {
        self.userInfo = userInfo
        self.convertsFromSnakeCase = convertsFromSnakeCase
    }
}

/// The `Decoder` handed to `init(from:)`, and its single-value container.
final class TOMLDecoderImpl: Decoder, SingleValueDecodingContainer {
    /// The value being decoded; `nil` when it is missing (a super decoder for an absent key).
    var value: TOMLValue?
    /// Where `value` is.
    var node: TOMLCodingPath
    let options: TOMLDecoderOptions

    init(value: TOMLValue?, node: TOMLCodingPath, options: TOMLDecoderOptions) {
        self.value = value
        self.node = node
        self.options = options
    }

    /// `.convertFromSnakeCase`: each coding key's snake_case spelling, if it converts back to
    /// the coding key. Memoized: the same coding keys come up in table after table.
    private var snakeCaseSpellings: [String: String?] = [:]

    func snakeCaseSpelling(of name: String) -> String? {
        // Most coding keys are one lower-case word (`name`, `port`): their own spelling, no
        // memo needed.
        var isOneWord = true
        for byte in name.utf8 where !(byte &- UInt8(ascii: "a") < 26 || byte &- UInt8(ascii: "0") < 10) {
            isOneWord = false
            break
        }
        if isOneWord { return name }
        if let known = snakeCaseSpellings[name] { return known }
        let spelling = TOMLDecoder.snakeCaseSpelling(of: name)
        snakeCaseSpellings[name] = .some(spelling)
        return spelling
    }

    var codingPath: [any CodingKey] { node.codingKeys }
    var userInfo: [CodingUserInfoKey: Any] { options.userInfo }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        try keyedContainer(keyedBy: Key.self, value: value, node: node)
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        try unkeyedContainer(value: value, node: node)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer { self }

    func keyedContainer<Key: CodingKey>(
        keyedBy type: Key.Type, value: TOMLValue?, node: TOMLCodingPath
    ) throws -> KeyedDecodingContainer<Key> {
        guard case .table(let table) = value else {
            throw TOMLUnwrap.mismatch([String: Any].self, expected: "a table", found: value, at: node)
        }
        return KeyedDecodingContainer(TOMLKeyedDecodingContainer<Key>(impl: self, table: table, node: node))
    }

    func unkeyedContainer(value: TOMLValue?, node: TOMLCodingPath) throws -> any UnkeyedDecodingContainer {
        guard case .array(let elements) = value else {
            throw TOMLUnwrap.mismatch([Any].self, expected: "an array", found: value, at: node)
        }
        return TOMLUnkeyedDecodingContainer(impl: self, elements: elements, node: node)
    }

    /// Decodes `value` (at `node`) as `T`: types with a TOML meaning of their own are read
    /// directly; any other type runs its `init(from:)` against this decoder, which takes on
    /// `value` and `node` for the duration.
    func unwrap<T: Decodable>(_ type: T.Type, value: TOMLValue?, node makeNode: @autoclosure () -> TOMLCodingPath) throws -> T {
        // Common leaves first: arrays of them decode through the generic path, and reading
        // them here saves a path node and an `init(from:)` round trip per element.
        if T.self == String.self { return try TOMLUnwrap.string(value, at: makeNode()) as! T }
        if T.self == Int.self { return try TOMLUnwrap.integer(value, as: Int.self, at: makeNode()) as! T }
        if T.self == Bool.self { return try TOMLUnwrap.bool(value, at: makeNode()) as! T }
        if T.self == Double.self { return try TOMLUnwrap.double(value, at: makeNode()) as! T }
        if T.self == Int64.self { return try TOMLUnwrap.integer(value, as: Int64.self, at: makeNode()) as! T }
        // Types whose own Codable form is not what a TOML document writes.
        if T.self == Date.self { return try TOMLUnwrap.date(value, at: makeNode()) as! T }
        if T.self == URL.self { return try TOMLUnwrap.url(value, at: makeNode()) as! T }
        if T.self == TOMLValue.self { return try TOMLUnwrap.any(value, at: makeNode()) as! T }
        if T.self == TOMLTable.self { return try TOMLUnwrap.table(value, at: makeNode()) as! T }
        if T.self == TOMLOffsetDateTime.self { return try TOMLUnwrap.offsetDateTime(value, at: makeNode()) as! T }
        if T.self == TOMLLocalDateTime.self { return try TOMLUnwrap.localDateTime(value, at: makeNode()) as! T }
        if T.self == TOMLLocalDate.self { return try TOMLUnwrap.localDate(value, at: makeNode()) as! T }
        if T.self == TOMLLocalTime.self { return try TOMLUnwrap.localTime(value, at: makeNode()) as! T }
        let node = makeNode()
        // Arrays and `[String: V]` fill themselves straight from the document (see
        // `TOMLCollectionDecodable`); one conformance check covers both.
        if let collection = T.self as? any TOMLCollectionDecodable.Type {
            return try collection.decodeTOML(from: value, at: node, impl: self) as! T
        }
        let savedValue = self.value, savedNode = self.node
        self.value = value
        self.node = node
        defer {
            self.value = savedValue
            self.node = savedNode
        }
        return try T(from: self)
    }

    // MARK: SingleValueDecodingContainer

    func decodeNil() -> Bool { value == nil }
    func decode(_ type: Bool.Type) throws -> Bool { try TOMLUnwrap.bool(value, at: node) }
    func decode(_ type: String.Type) throws -> String { try TOMLUnwrap.string(value, at: node) }
    func decode(_ type: Double.Type) throws -> Double { try TOMLUnwrap.double(value, at: node) }
    func decode(_ type: Float.Type) throws -> Float { try TOMLUnwrap.float(value, at: node) }
    func decode(_ type: Int.Type) throws -> Int { try TOMLUnwrap.integer(value, as: Int.self, at: node) }
    func decode(_ type: Int8.Type) throws -> Int8 { try TOMLUnwrap.integer(value, as: Int8.self, at: node) }
    func decode(_ type: Int16.Type) throws -> Int16 { try TOMLUnwrap.integer(value, as: Int16.self, at: node) }
    func decode(_ type: Int32.Type) throws -> Int32 { try TOMLUnwrap.integer(value, as: Int32.self, at: node) }
    func decode(_ type: Int64.Type) throws -> Int64 { try TOMLUnwrap.integer(value, as: Int64.self, at: node) }
    func decode(_ type: Int128.Type) throws -> Int128 { try TOMLUnwrap.integer(value, as: Int128.self, at: node) }
    func decode(_ type: UInt.Type) throws -> UInt { try TOMLUnwrap.integer(value, as: UInt.self, at: node) }
    func decode(_ type: UInt8.Type) throws -> UInt8 { try TOMLUnwrap.integer(value, as: UInt8.self, at: node) }
    func decode(_ type: UInt16.Type) throws -> UInt16 { try TOMLUnwrap.integer(value, as: UInt16.self, at: node) }
    func decode(_ type: UInt32.Type) throws -> UInt32 { try TOMLUnwrap.integer(value, as: UInt32.self, at: node) }
    func decode(_ type: UInt64.Type) throws -> UInt64 { try TOMLUnwrap.integer(value, as: UInt64.self, at: node) }
    func decode(_ type: UInt128.Type) throws -> UInt128 { try TOMLUnwrap.integer(value, as: UInt128.self, at: node) }
    func decode<T: Decodable>(_ type: T.Type) throws -> T { try unwrap(T.self, value: value, node: node) }
}

/// Collections the decoder fills directly instead of through their `init(from:)`, with the
/// same result: arrays skip the unkeyed container and its per-element dispatch and reserve
/// their capacity up front; `[String: V]` keeps the document's keys exactly as written, whatever
/// the key strategy, as JSONDecoder does.
protocol TOMLCollectionDecodable {
    static func decodeTOML(from value: TOMLValue?, at node: TOMLCodingPath, impl: TOMLDecoderImpl) throws -> Self
}

extension Array: TOMLCollectionDecodable where Element: Decodable {
    static func decodeTOML(from value: TOMLValue?, at node: TOMLCodingPath, impl: TOMLDecoderImpl) throws -> Self {
        guard case .array(let elements) = value else {
            throw TOMLUnwrap.mismatch([Any].self, expected: "an array", found: value, at: node)
        }
        var result: Self = []
        result.reserveCapacity(elements.count)
        for index in elements.indices {
            result.append(try impl.unwrap(Element.self, value: elements[index], node: .index(index, node)))
        }
        return result
    }
}

extension Dictionary: TOMLCollectionDecodable where Key == String, Value: Decodable {
    static func decodeTOML(from value: TOMLValue?, at node: TOMLCodingPath, impl: TOMLDecoderImpl) throws -> Self {
        guard case .table(let table) = value else {
            throw TOMLUnwrap.mismatch([String: Any].self, expected: "a table", found: value, at: node)
        }
        var result = Self(minimumCapacity: table.count)
        for key in table.keys {
            result[key] = try impl.unwrap(Value.self, value: table[key], node: .key(TOMLStringKey(key), node))
        }
        return result
    }
}

/// `Optional<Wrapped>`, recognised so that asking for `T?` with `decode` (not
/// `decodeIfPresent`) gives `nil` for a missing key: TOML has no null, so an absent key is
/// the only way a document can say "none".
protocol TOMLOptionalType {
    static var none: Self { get }
}

extension Optional: TOMLOptionalType {}

/// Reading TOML values as Swift values. Failures are `DecodingError`s, as user code in
/// `init(from:)` expects; `TOMLDecoder` turns them into `TOMLError`s at the end. Each message
/// is the whole sentence `TOMLError.message` will carry.
enum TOMLUnwrap {
    /// The Unix epoch in `Date`'s reference-date seconds (2001-01-01 is 978 307 200 s later).
    static let unixEpochToReferenceDate: Int64 = 978_307_200

    static func article(_ value: TOMLValue) -> String {
        switch value {
        case .integer, .array, .offsetDateTime: "an \(value.typeName)"
        default: "a \(value.typeName)"
        }
    }

    /// `typeMismatch` ("expected X, found Y"), or `valueNotFound` when there is no value.
    static func mismatch(
        _ type: Any.Type, expected: String, found value: TOMLValue?, at node: TOMLCodingPath, note: String = ""
    ) -> DecodingError {
        guard let value else {
            return .valueNotFound(type, .init(codingPath: node.codingKeys, debugDescription: "missing value, expected \(expected)"))
        }
        return .typeMismatch(
            type, .init(codingPath: node.codingKeys, debugDescription: "expected \(expected), found \(article(value))\(note)")
        )
    }

    static func invalid(_ message: String, at node: TOMLCodingPath) -> DecodingError {
        .dataCorrupted(.init(codingPath: node.codingKeys, debugDescription: message))
    }

    static func any(_ value: TOMLValue?, at node: @autoclosure () -> TOMLCodingPath) throws -> TOMLValue {
        guard let value else { throw mismatch(TOMLValue.self, expected: "a value", found: nil, at: node()) }
        return value
    }

    static func table(_ value: TOMLValue?, at node: @autoclosure () -> TOMLCodingPath) throws -> TOMLTable {
        guard case .table(let table) = value else { throw mismatch(TOMLTable.self, expected: "a table", found: value, at: node()) }
        return table
    }

    static func string(_ value: TOMLValue?, at node: @autoclosure () -> TOMLCodingPath) throws -> String {
        guard case .string(let string) = value else { throw mismatch(String.self, expected: "a string", found: value, at: node()) }
        return string
    }

    static func bool(_ value: TOMLValue?, at node: @autoclosure () -> TOMLCodingPath) throws -> Bool {
        guard case .boolean(let bool) = value else { throw mismatch(Bool.self, expected: "a boolean", found: value, at: node()) }
        return bool
    }

    static func integer<I: FixedWidthInteger>(
        _ value: TOMLValue?, as type: I.Type, at node: @autoclosure () -> TOMLCodingPath
    ) throws -> I {
        guard case .integer(let integer) = value else {
            throw mismatch(I.self, expected: "an integer", found: value, at: node())
        }
        guard let result = I(exactly: integer) else { throw invalid("integer \(integer) does not fit in \(I.self)", at: node()) }
        return result
    }

    /// A float, or an integer that the type holds exactly (`ratio = 1`). An integer that
    /// would be rounded is refused rather than silently changed: TOML integers are exact.
    static func double(_ value: TOMLValue?, at node: @autoclosure () -> TOMLCodingPath) throws -> Double {
        switch value {
        case .float(let double)?:
            return double
        case .integer(let integer)?:
            guard let double = Double(exactly: integer) else {
                throw invalid("integer \(integer) cannot be represented exactly as a Double", at: node())
            }
            return double
        default:
            throw mismatch(Double.self, expected: "a float", found: value, at: node())
        }
    }

    static func float(_ value: TOMLValue?, at node: @autoclosure () -> TOMLCodingPath) throws -> Float {
        switch value {
        case .float(let double)?:
            // Rounding to the nearest Float is what a float literal asks for; overflowing is not.
            let float = Float(double)
            guard float.isFinite || !double.isFinite else { throw invalid("float \(double) does not fit in Float", at: node()) }
            return float
        case .integer(let integer)?:
            guard let float = Float(exactly: integer) else {
                throw invalid("integer \(integer) cannot be represented exactly as a Float", at: node())
            }
            return float
        default:
            throw mismatch(Float.self, expected: "a float", found: value, at: node())
        }
    }

    static func date(_ value: TOMLValue?, at node: @autoclosure () -> TOMLCodingPath) throws -> Date {
        switch value {
        case .offsetDateTime(let dateTime)?:
            // Whole seconds from the reference date in integers, so only the fraction rounds.
            let seconds = dateTime.secondsSince1970 - unixEpochToReferenceDate
            return Date(timeIntervalSinceReferenceDate: Double(seconds) + Double(dateTime.local.time.nanosecond) / 1e9)
        case .localDateTime?, .localDate?, .localTime?:
            throw mismatch(
                Date.self, expected: "an offset date-time", found: value, at: node(),
                note: "; a Date is an instant, so it needs a UTC offset (Z or ±HH:MM, as in 1979-05-27T07:32:00Z)"
            )
        default:
            throw mismatch(Date.self, expected: "an offset date-time", found: value, at: node())
        }
    }

    static func url(_ value: TOMLValue?, at node: @autoclosure () -> TOMLCodingPath) throws -> URL {
        guard case .string(let string) = value else { throw mismatch(URL.self, expected: "a string", found: value, at: node()) }
        guard let url = URL(string: string) else { throw invalid("'\(string)' is not a valid URL", at: node()) }
        return url
    }

    static func offsetDateTime(_ value: TOMLValue?, at node: @autoclosure () -> TOMLCodingPath) throws -> TOMLOffsetDateTime {
        guard case .offsetDateTime(let dateTime) = value else {
            throw mismatch(TOMLOffsetDateTime.self, expected: "an offset date-time", found: value, at: node())
        }
        return dateTime
    }

    static func localDateTime(_ value: TOMLValue?, at node: @autoclosure () -> TOMLCodingPath) throws -> TOMLLocalDateTime {
        guard case .localDateTime(let dateTime) = value else {
            throw mismatch(TOMLLocalDateTime.self, expected: "a local date-time", found: value, at: node())
        }
        return dateTime
    }

    static func localDate(_ value: TOMLValue?, at node: @autoclosure () -> TOMLCodingPath) throws -> TOMLLocalDate {
        guard case .localDate(let date) = value else {
            throw mismatch(TOMLLocalDate.self, expected: "a local date", found: value, at: node())
        }
        return date
    }

    static func localTime(_ value: TOMLValue?, at node: @autoclosure () -> TOMLCodingPath) throws -> TOMLLocalTime {
        guard case .localTime(let time) = value else {
            throw mismatch(TOMLLocalTime.self, expected: "a local time", found: value, at: node())
        }
        return time
    }
}
