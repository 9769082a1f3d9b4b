/// Why a TOML document could not be read or decoded, and where.
public struct TOMLError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What kind of problem it is.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        let name: String

        /// The document is not valid TOML (a syntax error, a duplicate key, a bad escape…).
        public static let syntax = Code(name: "syntax")
        /// The bytes are not valid UTF-8.
        public static let invalidUTF8 = Code(name: "invalidUTF8")
        /// Tables, arrays or inline tables are nested deeper than
        /// ``TOMLTable/maximumNestingDepth``.
        public static let limitExceeded = Code(name: "limitExceeded")
        /// Decoding: a value has a different type than the one requested.
        public static let typeMismatch = Code(name: "typeMismatch")
        /// Decoding: a required key is missing.
        public static let keyNotFound = Code(name: "keyNotFound")
        /// Decoding: a value is missing where one was required.
        public static let valueNotFound = Code(name: "valueNotFound")
        /// Decoding: a value has the right type but cannot be represented (an integer out of
        /// the requested type's range, an unknown enumeration case…).
        public static let invalidValue = Code(name: "invalidValue")

        /// The code's name.
        public var description: String { name }
    }

    /// What kind of problem it is.
    public var code: Code
    /// What is wrong, in a sentence without the location.
    public var message: String
    /// Where: the offending character for a syntax error, the key or value for a decoding
    /// error. `nil` only when nothing in the document can be pointed at.
    public var position: TOMLPosition?
    /// The path of the key concerned (`limits.openai.tokens_per_minute`); empty when the
    /// problem is not inside a key/value pair.
    public var keyPath: [TOMLPathComponent]

    /// Creates an error.
    public init(_ code: Code, _ message: String, at position: TOMLPosition?, keyPath: [TOMLPathComponent] = []) {
        self.code = code
        self.message = message
        self.position = position
        self.keyPath = keyPath
    }

    /// `line 3, column 21: limits.openai.tokens_per_minute: expected an integer, found a string`.
    public var description: String {
        var parts: [String] = []
        if let position { parts.append(position.description) }
        if !keyPath.isEmpty { parts.append(keyPath.dottedKey) }
        parts.append(message)
        return parts.joined(separator: ": ")
    }
}
