#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Decodes `Decodable` values from TOML documents.
///
/// ```swift
/// struct Limits: Decodable {
///     var requestsPerMinute: Int
///     var burst: Double?
/// }
///
/// var decoder = TOMLDecoder()
/// decoder.keyDecodingStrategy = .convertFromSnakeCase
/// let limits = try decoder.decode([String: Limits].self, from: """
///     [openai]
///     requests_per_minute = 500
///     """)
/// ```
///
/// Values map as follows:
/// - `String`, `Bool`, every fixed-width integer type (checked against the type's range),
///   `Double` and `Float` (which also accept an integer the type holds exactly, so
///   `ratio = 1` reads as `1.0`), `URL` (from a string).
/// - `Date` from an offset date-time; a local date-time, date or time has no instant and is
///   refused. ``TOMLOffsetDateTime``, ``TOMLLocalDateTime``, ``TOMLLocalDate`` and
///   ``TOMLLocalTime`` decode from their own kind of value.
/// - ``TOMLValue`` and ``TOMLTable`` decode as the document's value itself, so a type can
///   keep a sub-tree raw.
/// - Arrays and sets from arrays; structs and `[String: T]` from tables (dictionary keys are
///   used as written, whatever the ``keyDecodingStrategy``).
/// - TOML has no null: an optional is `nil` exactly when its key is missing.
///
/// Every decoding failure is thrown as a ``TOMLError`` with the key path and the position of
/// the value concerned; this includes `DecodingError`s thrown by `init(from:)`
/// implementations. Any other error thrown by an `init(from:)` passes through unchanged.
public struct TOMLDecoder: Sendable {
    /// How the decoder matches the document's keys to coding keys.
    public enum KeyDecodingStrategy: Sendable, Hashable {
        /// Keys are matched as written.
        case useDefaultKeys
        /// Keys are converted from `snake_case` to `camelCase` before matching, as
        /// `JSONDecoder`'s strategy of the same name does: `requests_per_minute` matches
        /// `requestsPerMinute`, leading and trailing underscores are kept, and a key without
        /// underscores is left alone. Keys of `[String: T]` dictionaries are not converted.
        case convertFromSnakeCase
    }

    /// Values made available to `init(from:)` implementations through `Decoder.userInfo`.
    public var userInfo: [CodingUserInfoKey: any Sendable] = [:]

    /// How keys are matched; ``KeyDecodingStrategy/useDefaultKeys`` unless set.
    public var keyDecodingStrategy: KeyDecodingStrategy = .useDefaultKeys

    /// Creates a decoder with default keys and no user info.
    public init() {}

    /// Parses `text` as a TOML document and decodes a `T` from its root table.
    ///
    /// - Throws: ``TOMLError`` for a syntax or decoding error; any other error an
    ///   `init(from:)` throws, unchanged.
    public func decode<T: Decodable>(_ type: T.Type, from text: String) throws -> T {
        try decode(type, from: TOMLTable(parsing: text))
    }

    /// Parses `data` as a UTF-8 TOML document and decodes a `T` from its root table.
    ///
    /// - Throws: ``TOMLError`` (``TOMLError/Code/invalidUTF8`` when the bytes are not UTF-8);
    ///   any other error an `init(from:)` throws, unchanged.
    public func decode<T: Decodable>(_ type: T.Type, from data: Data) throws -> T {
        try decode(type, from: TOMLTable(parsingUTF8: data))
    }

    /// Decodes a `T` from an already parsed table.
    ///
    /// - Throws: ``TOMLError`` for a decoding error, located with the table's positions; any
    ///   other error an `init(from:)` throws, unchanged.
    public func decode<T: Decodable>(_ type: T.Type, from table: TOMLTable) throws -> T {
        let convertsFromSnakeCase = keyDecodingStrategy == .convertFromSnakeCase
        let options = TOMLDecoderOptions(userInfo: userInfo, convertsFromSnakeCase: convertsFromSnakeCase)
        let root = TOMLValue.table(table)
        let impl = TOMLDecoderImpl(value: root, node: .root, options: options)
        do {
            return try impl.unwrap(T.self, value: root, node: .root)
        } catch let error as DecodingError {
            throw Self.tomlError(from: error, root: table, convertsFromSnakeCase: convertsFromSnakeCase)
        }
    }
}

// MARK: - Errors

extension TOMLDecoder {
    /// `error` as a ``TOMLError``: its coding path becomes a document key path (the
    /// document's spelling of each key), located with `root`'s positions.
    static func tomlError(from error: DecodingError, root: TOMLTable, convertsFromSnakeCase: Bool) -> TOMLError {
        func located(_ code: TOMLError.Code, _ message: String, _ codingPath: [any CodingKey]) -> TOMLError {
            let keyPath = documentPath(codingPath, in: root, convertsFromSnakeCase: convertsFromSnakeCase)
            return TOMLError(code, message, at: root.position(at: keyPath), keyPath: keyPath)
        }
        switch error {
        case .typeMismatch(let type, let context):
            return located(.typeMismatch, message(context, or: "expected a value of type \(type)"), context.codingPath)
        case .valueNotFound(let type, let context):
            return located(.valueNotFound, message(context, or: "missing value of type \(type)"), context.codingPath)
        case .keyNotFound(let key, let context):
            // The path names the missing key; `position(at:)` then stops at the table that
            // lacks it, which is where the key belongs.
            var error = located(.keyNotFound, "", context.codingPath + [key])
            let name: String =
                switch error.keyPath.last {
                case .key(let name)?: name
                case let component?: component.description
                case nil: key.stringValue
                }
            error.message = "missing key '\(name)'"
            return error
        case .dataCorrupted(let context):
            return located(.invalidValue, message(context, or: "invalid value"), context.codingPath)
        @unknown default:
            return TOMLError(.invalidValue, String(describing: error), at: nil)
        }
    }

    private static func message(_ context: DecodingError.Context, or fallback: String) -> String {
        context.debugDescription.isEmpty ? fallback : context.debugDescription
    }

    /// Follows `codingPath` through the document: a coding key in a table becomes the key the
    /// document wrote (which differs under `.convertFromSnakeCase`), one in an array an index.
    /// Past the end of what exists, keys are spelled as the document would have to write them.
    static func documentPath(
        _ codingPath: [any CodingKey], in root: TOMLTable, convertsFromSnakeCase: Bool
    ) -> [TOMLPathComponent] {
        var path: [TOMLPathComponent] = []
        path.reserveCapacity(codingPath.count)
        var current: TOMLValue? = .table(root)
        for codingKey in codingPath {
            switch current {
            case .table(let table)?:
                let name = codingKey.stringValue
                // Struct keys are matched as the key strategy says; dictionary keys
                // (`TOMLStringKey`) and anything not found that way, as written.
                var documentKey: String?
                if convertsFromSnakeCase && !(codingKey is TOMLStringKey) {
                    documentKey = snakeCaseEntry(for: name, spelling: snakeCaseSpelling(of: name), in: table)?.key
                }
                if documentKey == nil && table[name] != nil { documentKey = name }
                if let documentKey {
                    path.append(.key(documentKey))
                    current = table[documentKey]
                } else {
                    path.append(.key(convertsFromSnakeCase ? convertToSnakeCase(name) : name))
                    current = nil
                }
            case .array(let elements)? where codingKey.intValue != nil:
                let index = codingKey.intValue!
                path.append(.index(index))
                current = elements.indices.contains(index) ? elements[index] : nil
            default:
                if codingKey is TOMLIndexKey, let index = codingKey.intValue {
                    path.append(.index(index))
                } else {
                    path.append(.key(convertsFromSnakeCase ? convertToSnakeCase(codingKey.stringValue) : codingKey.stringValue))
                }
                current = nil
            }
        }
        return path
    }
}

// MARK: - Key conversion

extension TOMLDecoder {
    /// `snake_case` to `camelCase` exactly as `JSONDecoder.KeyDecodingStrategy.convertFromSnakeCase`
    /// converts: leading and trailing underscores stay, the first word is lowercased, the
    /// others capitalized, and a key without inner underscores is returned as is.
    static func convertFromSnakeCase(_ key: String) -> String {
        // Most keys of a camelCase-minded document have no underscore at all.
        guard key.utf8.contains(UInt8(ascii: "_")) else { return key }
        guard let firstNonUnderscore = key.firstIndex(where: { $0 != "_" }) else { return key }
        var lastNonUnderscore = key.index(before: key.endIndex)
        while lastNonUnderscore > firstNonUnderscore && key[lastNonUnderscore] == "_" {
            key.formIndex(before: &lastNonUnderscore)
        }
        let words = key[firstNonUnderscore...lastNonUnderscore].split(separator: "_")
        let joined =
            words.count == 1
            ? String(key[firstNonUnderscore...lastNonUnderscore])
            : ([words[0].lowercased()] + words.dropFirst().map { $0.capitalized }).joined()
        return String(key[..<firstNonUnderscore]) + joined + String(key[key.index(after: lastNonUnderscore)...])
    }

    /// The key of `table` that `.convertFromSnakeCase` matches to the coding key `name`, and
    /// its value. `spelling` is `snakeCaseSpelling(of: name)`.
    ///
    /// Rather than converting every key of every table (what JSONDecoder does, and most of
    /// its cost), this looks up the spellings that can match. Should two keys of one table
    /// convert to the same name, the snake_case one wins; JSONDecoder takes the first.
    static func snakeCaseEntry(for name: String, spelling: String?, in table: TOMLTable) -> (key: String, value: TOMLValue)? {
        // The spelling of a snake_case document: `requests_per_minute`.
        if let spelling, let value = table[spelling] { return (spelling, value) }
        // A key that converts to itself: no inner underscores (`port`, `maxTokens`).
        if spelling != name, let value = table[name], convertFromSnakeCase(name) == name { return (name, value) }
        // Any other spelling that converts to `name` (`URL_path` for `urlPath`): rare, so a
        // scan, with a cheap test before each conversion.
        for key in table.keys where key != spelling && key != name && mayConvert(key, to: name) {
            if convertFromSnakeCase(key) == name, let value = table[key] { return (key, value) }
        }
        return nil
    }

    /// The snake_case spelling of the coding key `name` if it converts back to `name`.
    static func snakeCaseSpelling(of name: String) -> String? {
        let spelling = convertToSnakeCase(name)
        return convertFromSnakeCase(spelling) == name ? spelling : nil
    }

    /// False only if `key` certainly does not convert to `name`: conversion drops underscores
    /// and changes case, so the two must agree once underscores and ASCII case are ignored.
    /// Non-ASCII text is left to the real conversion.
    static func mayConvert(_ key: String, to name: String) -> Bool {
        let underscore = UInt8(ascii: "_")
        func isLetter(_ byte: UInt8) -> Bool { (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte | 0x20) }
        var keyBytes = key.utf8.makeIterator()
        for byte in name.utf8 where byte != underscore {
            guard byte < 0x80 else { return true }
            var other: UInt8
            repeat {
                guard let next = keyBytes.next() else { return false }
                other = next
            } while other == underscore
            guard other < 0x80 else { return true }
            guard other == byte || (isLetter(byte) && other | 0x20 == byte | 0x20) else { return false }
        }
        while let next = keyBytes.next() {
            if next != underscore { return next >= 0x80 }
        }
        return true
    }

    /// `camelCase` to `snake_case` as `JSONEncoder` converts (`myURLValue` → `my_url_value`):
    /// how a document would spell a key that is missing, for error messages.
    static func convertToSnakeCase(_ key: String) -> String {
        let characters = Array(key)
        var result = ""
        for (offset, character) in characters.enumerated() {
            if offset > 0, character.isUppercase {
                let previous = characters[offset - 1]
                let next = offset + 1 < characters.count ? characters[offset + 1] : nil
                // A word starts at an upper-case letter after a lower-case one, or at the last
                // capital of a run that a lower-case letter follows (`URLValue`: `url`, `value`).
                if previous.isLowercase || previous.isNumber || (previous.isUppercase && next?.isLowercase == true) {
                    result += "_"
                }
            }
            result += character.lowercased()
        }
        return result
    }
}

// MARK: - TOMLValue and TOMLTable as Decodable

extension TOMLValue: Decodable {
    /// Decodes the value as written. From a ``TOMLDecoder`` this is the document's value
    /// itself; from another decoder, the nearest TOML value: a table for a keyed container,
    /// an array for an unkeyed one, else a boolean, integer, float or string.
    ///
    /// - Throws: `DecodingError.valueNotFound` for a null, which TOML cannot represent.
    public init(from decoder: any Decoder) throws {
        if let decoder = decoder as? TOMLDecoderImpl {
            self = try TOMLUnwrap.any(decoder.value, at: decoder.node)
            return
        }
        if let container = try? decoder.container(keyedBy: TOMLStringKey.self) {
            var table = TOMLTable()
            for key in container.allKeys {
                table[key.stringValue] = try container.decode(TOMLValue.self, forKey: key)
            }
            self = .table(table)
        } else if var container = try? decoder.unkeyedContainer() {
            var elements: [TOMLValue] = []
            while !container.isAtEnd { elements.append(try container.decode(TOMLValue.self)) }
            self = .array(elements)
        } else {
            let container = try decoder.singleValueContainer()
            if container.decodeNil() {
                throw DecodingError.valueNotFound(
                    TOMLValue.self, .init(codingPath: decoder.codingPath, debugDescription: "TOML has no null value")
                )
            } else if let bool = try? container.decode(Bool.self) {
                self = .boolean(bool)
            } else if let integer = try? container.decode(Int64.self) {
                self = .integer(integer)
            } else if let double = try? container.decode(Double.self) {
                self = .float(double)
            } else {
                self = .string(try container.decode(String.self))
            }
        }
    }
}

extension TOMLTable: Decodable {
    /// Decodes a table as written. From a ``TOMLDecoder`` this is the document's table
    /// itself, positions included; from another decoder, a keyed container's values as
    /// ``TOMLValue`` decodes them.
    public init(from decoder: any Decoder) throws {
        if let decoder = decoder as? TOMLDecoderImpl {
            self = try TOMLUnwrap.table(decoder.value, at: decoder.node)
            return
        }
        let container = try decoder.container(keyedBy: TOMLStringKey.self)
        self.init()
        for key in container.allKeys {
            self[key.stringValue] = try container.decode(TOMLValue.self, forKey: key)
        }
    }
}
