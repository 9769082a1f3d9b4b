extension TOMLTable {
    /// How many tables and arrays a value may sit inside, the root table not counted (an
    /// element of an array of tables counts twice: the array and its table).
    ///
    /// Deeper documents are rejected with ``TOMLError/Code/limitExceeded``: parsing, building
    /// and destroying the value tree recurse once per level, and a hostile document of a
    /// hundred thousand `[` must not overflow the stack.
    public static let maximumNestingDepth = 128

    /// Parses a whole TOML 1.0.0 document.
    ///
    /// A leading byte order mark is skipped. Newlines in multi-line strings are read as `\n`,
    /// whether the document wrote LF or CRLF, so values do not depend on the editor.
    public init(parsing text: String) throws(TOMLError) {
        var text = text
        // Parse the string's own UTF-8 storage: no copy for a native string.
        let result = text.withUTF8 { bytes in
            var parser = TOMLParser(bytes: bytes)
            return Result { () throws(TOMLError) -> TOMLTable in try parser.parseDocument() }
        }
        self = try result.get()
    }

    /// Parses UTF-8 bytes; invalid UTF-8 is a `.invalidUTF8` error with its position.
    public init(parsingUTF8 bytes: some Collection<UInt8>) throws(TOMLError) {
        // The standard library's validator is fast; only a failure needs the slow walk that
        // finds the line and column.
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw TOMLParser.invalidUTF8Error(in: bytes)
        }
        try self.init(parsing: text)
    }
}

/// The bytes the grammar names.
enum TOMLByte {
    static let tab: UInt8 = 0x09
    static let lf: UInt8 = 0x0A
    static let cr: UInt8 = 0x0D
    static let space: UInt8 = 0x20
    static let quote: UInt8 = 0x22
    static let hash: UInt8 = 0x23
    static let apostrophe: UInt8 = 0x27
    static let plus: UInt8 = 0x2B
    static let comma: UInt8 = 0x2C
    static let minus: UInt8 = 0x2D
    static let dot: UInt8 = 0x2E
    static let zero: UInt8 = 0x30
    static let nine: UInt8 = 0x39
    static let colon: UInt8 = 0x3A
    static let equals: UInt8 = 0x3D
    static let leftBracket: UInt8 = 0x5B
    static let backslash: UInt8 = 0x5C
    static let rightBracket: UInt8 = 0x5D
    static let underscore: UInt8 = 0x5F
    static let leftBrace: UInt8 = 0x7B
    static let rightBrace: UInt8 = 0x7D
    static let delete: UInt8 = 0x7F

    /// `0`–`9`.
    @inline(__always) static func isDigit(_ byte: UInt8) -> Bool { byte &- zero < 10 }

    /// `A-Za-z0-9_-`: the characters of a bare key.
    @inline(__always) static func isBareKey(_ byte: UInt8) -> Bool {
        (byte | 0x20) &- 0x61 < 26 || byte &- zero < 10 || byte == underscore || byte == minus
    }

    /// A control character TOML forbids in comments and strings: all but tab (newlines are
    /// handled by the callers before asking).
    @inline(__always) static func isForbiddenControl(_ byte: UInt8) -> Bool {
        (byte < space && byte != tab) || byte == delete
    }
}

/// A one-pass TOML 1.0.0 parser over UTF-8 bytes.
///
/// It keeps the current line's number and start offset as it goes; a column (in Unicode
/// scalars) is counted only when a position is needed, from the last one counted on the same
/// line, so long lines stay linear.
struct TOMLParser {
    /// A key's components: the text, where each starts, and a cheap hash of the text.
    struct KeyPart {
        var name: String
        var offset: Int
        /// FNV-1a of the UTF-8 bytes: compared before the strings when a builder looks a key
        /// up (never used alone, so collisions cost only a string comparison).
        var hash: Int
    }

    /// FNV-1a of `bytes`.
    @inline(__always) static func hash(_ bytes: UnsafeBufferPointer<UInt8>) -> Int {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
        return Int(truncatingIfNeeded: hash)
    }

    let bytes: UnsafeBufferPointer<UInt8>
    /// The next byte to read.
    var index = 0
    /// The line of `index`, from 1, and the offset where that line starts.
    var line = 1
    var lineStart = 0
    /// The last column counted on the current line, and its offset.
    private var columnOffset = 0
    private var column = 1

    let root = TOMLTableBuilder(position: TOMLPosition(line: 1, column: 1), origin: .root)
    /// The table the current section's key/value pairs go to.
    var current: TOMLTableBuilder
    /// The number of the current section (see ``TOMLTableBuilder/Origin/dotted(section:)``).
    var section = 0
    var nextSection = 1
    /// How many tables and arrays enclose the current position, the root not counted.
    var depth = 0
    /// The path of the key being read, for errors.
    var keyPath: [TOMLPathComponent] = []
    /// Reused buffer for strings with escapes.
    var scratch: [UInt8] = []
    /// Reused buffer for the components of the key being read (see ``parseKey()``).
    var keyParts: [KeyPart] = []

    init(bytes: UnsafeBufferPointer<UInt8>) {
        self.bytes = bytes
        current = root
    }

    // MARK: - Positions and errors

    /// Line and column of `offset`, which must be on the current line (a fallback walks the
    /// document otherwise).
    mutating func position(at offset: Int) -> TOMLPosition {
        guard offset >= lineStart else { return slowPosition(at: offset) }
        if offset < columnOffset {
            columnOffset = lineStart
            column = 1
        }
        var i = columnOffset
        var count = column
        while i < offset {
            if bytes[i] & 0xC0 != 0x80 { count += 1 }
            i += 1
        }
        columnOffset = offset
        column = count
        return TOMLPosition(line: line, column: count)
    }

    private func slowPosition(at offset: Int) -> TOMLPosition {
        var line = 1
        var column = 1
        var i = bytes.starts(with: [0xEF, 0xBB, 0xBF]) ? 3 : 0
        while i < offset && i < bytes.count {
            if bytes[i] == TOMLByte.lf {
                line += 1
                column = 1
            } else if bytes[i] & 0xC0 != 0x80 {
                column += 1
            }
            i += 1
        }
        return TOMLPosition(line: line, column: column)
    }

    /// Removes the last `count` components of `keyPath` (one at a time: `removeLast(_:)` goes
    /// through a general range replacement that shows in profiles).
    @inline(__always) mutating func popKeyPath(_ count: Int) {
        for _ in 0..<count { keyPath.removeLast() }
    }

    /// Records that a line feed was just consumed.
    @inline(__always) mutating func startLine() {
        line += 1
        lineStart = index
        columnOffset = index
        column = 1
    }

    /// A syntax error at `offset` for the key being read.
    mutating func error(_ message: String, at offset: Int) -> TOMLError {
        TOMLError(.syntax, message, at: position(at: offset), keyPath: keyPath)
    }

    /// A `.limitExceeded` error for nesting deeper than ``TOMLTable/maximumNestingDepth``.
    /// The key path stops just past the limit: a hostile key of a million components must not
    /// make a million-component error.
    mutating func depthError(at offset: Int) -> TOMLError {
        TOMLError(
            .limitExceeded,
            "tables and arrays are nested more than \(TOMLTable.maximumNestingDepth) deep",
            at: position(at: offset),
            keyPath: Array(keyPath.prefix(TOMLTable.maximumNestingDepth + 1))
        )
    }

    /// What is at `offset`, for "expected …, found …" messages: `end of file`, `end of line`,
    /// a control character's code, or the word or character there in quotes.
    func describe(_ offset: Int) -> String {
        guard offset < bytes.count else { return "end of file" }
        let byte = bytes[offset]
        if byte == TOMLByte.lf || (byte == TOMLByte.cr && offset + 1 < bytes.count && bytes[offset + 1] == TOMLByte.lf) {
            return "end of line"
        }
        if byte < TOMLByte.space || byte == TOMLByte.delete {
            return "control character U+00" + hex(byte)
        }
        if TOMLByte.isBareKey(byte) || byte == TOMLByte.plus || byte == TOMLByte.dot {
            // A whole word reads better than its first letter: `found 'truthy'`.
            var end = offset
            while end < bytes.count, end - offset < 32 {
                let next = bytes[end]
                guard TOMLByte.isBareKey(next) || next == TOMLByte.plus || next == TOMLByte.dot || next == TOMLByte.colon else { break }
                end += 1
            }
            return "'" + text(offset..<end) + "'"
        }
        var end = offset + 1
        while end < bytes.count, bytes[end] & 0xC0 == 0x80 { end += 1 }
        let character = text(offset..<end)
        guard byte >= 0x80, let scalar = character.unicodeScalars.first else { return "'" + character + "'" }
        // Non-ASCII may be invisible (U+3000, U+FEFF): name it too.
        var code = String(scalar.value, radix: 16, uppercase: true)
        while code.count < 4 { code = "0" + code }
        return "'\(character)' (U+\(code))"
    }

    private func hex(_ byte: UInt8) -> String {
        let digits = String(byte, radix: 16, uppercase: true)
        return byte < 16 ? "0" + digits : digits
    }

    /// The bytes in `range` as a string (already valid UTF-8).
    @inline(__always) func text(_ range: Range<Int>) -> String {
        String(decoding: UnsafeBufferPointer(rebasing: bytes[range]), as: UTF8.self)
    }

    // MARK: - Document structure

    /// Reads the whole document.
    mutating func parseDocument() throws(TOMLError) -> TOMLTable {
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) {
            // A byte order mark is not a character of the first line.
            index = 3
            lineStart = 3
            columnOffset = 3
        }
        while true {
            skipWhitespace()
            guard index < bytes.count else { break }
            if try consumeNewline() { continue }
            switch bytes[index] {
            case TOMLByte.hash:
                try skipComment()
            case TOMLByte.leftBracket:
                try parseHeader()
                try finishLine(after: "the table header")
            default:
                // The key stays on the error path until the line is finished.
                let keyLength = try parseKeyValue(into: current, section: section)
                try finishLine(after: "the value")
                popKeyPath(keyLength)
            }
        }
        return root.build()
    }

    /// Skips spaces and tabs.
    @inline(__always) mutating func skipWhitespace() {
        while index < bytes.count, bytes[index] == TOMLByte.space || bytes[index] == TOMLByte.tab {
            index += 1
        }
    }

    /// At a newline (LF, or CR LF), steps over it and returns true; elsewhere returns false.
    /// `index` must be in range.
    @inline(__always)
    mutating func consumeNewline() throws(TOMLError) -> Bool {
        switch bytes[index] {
        case TOMLByte.lf:
            index += 1
            startLine()
            return true
        case TOMLByte.cr:
            try consumeCarriageReturn()
            return true
        default:
            return false
        }
    }

    /// At a carriage return: consumes CRLF, or fails on a lone CR.
    mutating func consumeCarriageReturn() throws(TOMLError) {
        guard index + 1 < bytes.count, bytes[index + 1] == TOMLByte.lf else {
            throw error("a carriage return must be followed by a line feed", at: index)
        }
        index += 2
        startLine()
    }

    /// At `#`: skips the comment up to (not including) the end of the line.
    mutating func skipComment() throws(TOMLError) {
        index += 1
        while index < bytes.count {
            let byte = bytes[index]
            if byte == TOMLByte.lf || byte == TOMLByte.cr { return }
            if TOMLByte.isForbiddenControl(byte) {
                throw error("control character U+00\(hex(byte)) is not allowed in a comment", at: index)
            }
            index += 1
        }
    }

    /// After a header or a key/value pair: only whitespace and a comment may follow on the line.
    mutating func finishLine(after what: String) throws(TOMLError) {
        skipWhitespace()
        guard index < bytes.count else { return }
        if bytes[index] == TOMLByte.hash {
            try skipComment()
            guard index < bytes.count else { return }
        }
        guard try consumeNewline() else {
            throw error("expected end of line after \(what) but found \(describe(index))", at: index)
        }
    }

    /// Skips whitespace, newlines and comments (inside arrays).
    mutating func skipWhitespaceCommentsAndNewlines() throws(TOMLError) {
        try skipWhitespaceAndNewlines(skippingComments: true)
    }

    /// Skips whitespace and newlines, and comments too when `skippingComments`.
    mutating func skipWhitespaceAndNewlines(skippingComments: Bool) throws(TOMLError) {
        while index < bytes.count {
            switch bytes[index] {
            case TOMLByte.space, TOMLByte.tab:
                index += 1
            case TOMLByte.hash where skippingComments:
                try skipComment()
            default:
                guard try consumeNewline() else { return }
            }
        }
    }

    // MARK: - Keys

    /// Reads a key, simple or dotted, and the whitespace after it, into `keyParts`.
    ///
    /// A buffer the parser keeps rather than a new array per key: most lines have one key, and
    /// an allocation per line shows in the profile. Callers copy what they need from it before
    /// parsing a value, which may read keys of its own (inline tables).
    mutating func parseKey() throws(TOMLError) {
        while !keyParts.isEmpty { keyParts.removeLast() }
        while true {
            let part = try parseKeyPart()
            keyParts.append(part)
            skipWhitespace()
            guard index < bytes.count, bytes[index] == TOMLByte.dot else { return }
            index += 1
            skipWhitespace()
        }
    }

    /// Reads one component of a key: bare, basic-quoted or literal-quoted.
    mutating func parseKeyPart() throws(TOMLError) -> KeyPart {
        let start = index
        guard index < bytes.count else { throw error("expected a key but found end of file", at: index) }
        let byte = bytes[index]
        if TOMLByte.isBareKey(byte) {
            repeat { index += 1 } while index < bytes.count && TOMLByte.isBareKey(bytes[index])
            let range = start..<index
            return KeyPart(name: text(range), offset: start, hash: TOMLParser.hash(UnsafeBufferPointer(rebasing: bytes[range])))
        }
        if byte == TOMLByte.quote || byte == TOMLByte.apostrophe {
            if index + 2 < bytes.count, bytes[index + 1] == byte, bytes[index + 2] == byte {
                throw error("a key cannot be a multi-line string", at: index)
            }
            var name = byte == TOMLByte.quote ? try parseBasicString() : try parseLiteralString()
            let hash = name.withUTF8 { TOMLParser.hash($0) }
            return KeyPart(name: name, offset: start, hash: hash)
        }
        throw error("expected a key but found \(describe(index))", at: index)
    }

    /// The TOML spelling of `keyParts[range]` (for messages).
    func dottedKey(_ range: Range<Int>) -> String {
        keyParts[range].map { TOMLPathComponent.key($0.name) }.dottedKey
    }

    // MARK: - Key/value pairs

    /// Reads `key = value` into `table`; `section` numbers the table body or inline table.
    /// Returns the number of key components it appended to `keyPath`, which the caller removes
    /// once it has checked what follows the value.
    mutating func parseKeyValue(into table: TOMLTableBuilder, section: Int) throws(TOMLError) -> Int {
        let keyStart = index
        let keyPosition = position(at: keyStart)
        try parseKey()
        let partCount = keyParts.count
        for part in keyParts { keyPath.append(.key(part.name)) }
        guard index < bytes.count, bytes[index] == TOMLByte.equals else {
            throw error("expected '=' after the key but found \(describe(index))", at: index)
        }
        index += 1
        skipWhitespace()
        let dottedTables = partCount - 1
        guard depth + dottedTables <= TOMLTable.maximumNestingDepth else { throw depthError(at: keyStart) }
        let parent = dottedTables == 0 ? table : try resolveDottedParent(in: table, section: section, position: keyPosition)
        let last = keyParts[partCount - 1]
        if let existing = parent.find(last.name, hash: last.hash) {
            let first = parent.entries[existing].position
            throw error("duplicate key '\(TOMLPathComponent.key(last.name))' (first defined at \(first))", at: last.offset)
        }
        depth += dottedTables
        let value = try parseValue(expecting: "a value after '='")
        depth -= dottedTables
        parent.append(last.name, hash: last.hash, .value(value), at: keyPosition)
        return partCount
    }

    /// Walks (creating as needed) the tables a dotted key in `keyParts` names before its last
    /// component.
    mutating func resolveDottedParent(
        in table: TOMLTableBuilder,
        section: Int,
        position: TOMLPosition
    ) throws(TOMLError) -> TOMLTableBuilder {
        var node = table
        let partCount = keyParts.count
        for n in 0..<(partCount - 1) {
            let part = keyParts[n]
            guard let index = node.find(part.name, hash: part.hash) else {
                let child = TOMLTableBuilder(position: position, origin: .dotted(section: section))
                node.append(part.name, hash: part.hash, .table(child), at: position)
                node = child
                continue
            }
            let defined = node.entries[index].position
            // The full name: the section's path (in `keyPath` before the key) and the key so far.
            let name = Array(keyPath[..<(keyPath.count - partCount + n + 1)]).dottedKey
            switch node.entries[index].slot {
            case .table(let child):
                switch child.origin {
                case .dotted(let other) where other == section:
                    node = child
                case .implicit:
                    // Created as a header's parent only: dotted keys may define it (and then
                    // no header may), and it is then where they were written.
                    child.origin = .dotted(section: section)
                    child.position = position
                    node.setPosition(position, at: index)
                    node = child
                case .header, .root:
                    throw error(
                        "dotted keys cannot add to table '\(name)', defined by a header at \(child.position)",
                        at: part.offset
                    )
                case .dotted:
                    throw error(
                        "dotted keys cannot add to table '\(name)' here: it was defined by dotted keys at \(defined)",
                        at: part.offset
                    )
                }
            case .arrayOfTables:
                throw error(
                    "dotted keys cannot add to '\(name)', an array of tables defined at \(defined)",
                    at: part.offset
                )
            case .value(let value):
                throw error(
                    "dotted keys cannot add to '\(name)', already defined as \(article(value)) at \(defined)",
                    at: part.offset
                )
            }
        }
        return node
    }

    /// `an integer`, `an inline table`…, for messages about an existing value.
    func article(_ value: TOMLValue) -> String {
        switch value {
        case .integer, .array, .offsetDateTime: "an \(value.typeName)"
        case .table: "an inline table"
        default: "a \(value.typeName)"
        }
    }

    // MARK: - Headers

    /// Reads `[a.b]` or `[[a.b]]` and makes its table the current one.
    mutating func parseHeader() throws(TOMLError) {
        let open = index
        let headerPosition = position(at: open)
        index += 1
        let isArray = index < bytes.count && bytes[index] == TOMLByte.leftBracket
        if isArray { index += 1 }
        skipWhitespace()
        keyPath.removeAll(keepingCapacity: true)
        try parseKey()
        guard index < bytes.count, bytes[index] == TOMLByte.rightBracket else {
            let closing = isArray ? "']]'" : "']'"
            throw error("expected \(closing) to close the table header but found \(describe(index))", at: index)
        }
        index += 1
        if isArray {
            guard index < bytes.count, bytes[index] == TOMLByte.rightBracket else {
                throw error("expected ']]' to close the array-of-tables header but found \(describe(index))", at: index)
            }
            index += 1
        }
        section = nextSection
        nextSection += 1
        current = try defineTable(isArray: isArray, open: open, position: headerPosition)
    }

    /// Finds or creates the table the header in `keyParts` names; sets `keyPath` and `depth`
    /// to it.
    mutating func defineTable(isArray: Bool, open: Int, position: TOMLPosition) throws(TOMLError) -> TOMLTableBuilder {
        var node = root
        depth = 0
        let partCount = keyParts.count
        for n in 0..<(partCount - 1) {
            let part = keyParts[n]
            keyPath.append(.key(part.name))
            depth += 1
            guard depth <= TOMLTable.maximumNestingDepth else { throw depthError(at: open) }
            guard let index = node.find(part.name, hash: part.hash) else {
                let child = TOMLTableBuilder(position: position, origin: .implicit)
                node.append(part.name, hash: part.hash, .table(child), at: position)
                node = child
                continue
            }
            let defined = node.entries[index].position
            switch node.entries[index].slot {
            case .table(let child):
                node = child
            case .arrayOfTables(let array):
                // A header below an array of tables extends its last element.
                keyPath.append(.index(array.elements.count - 1))
                depth += 1
                node = array.elements[array.elements.count - 1]
            case .value(let value):
                throw error(
                    "cannot define table '\(dottedKey(0..<partCount))': '\(dottedKey(0..<(n + 1)))' is already \(article(value)) defined at \(defined)",
                    at: open
                )
            }
        }
        let last = keyParts[partCount - 1]
        keyPath.append(.key(last.name))
        depth += isArray ? 2 : 1
        guard depth <= TOMLTable.maximumNestingDepth else { throw depthError(at: open) }
        let name = dottedKey(0..<partCount)
        guard let index = node.find(last.name, hash: last.hash) else {
            let table = TOMLTableBuilder(position: position, origin: .header)
            if isArray {
                node.append(last.name, hash: last.hash, .arrayOfTables(TOMLArrayOfTablesBuilder(first: table)), at: position)
                keyPath.append(.index(0))
            } else {
                node.append(last.name, hash: last.hash, .table(table), at: position)
            }
            return table
        }
        let defined = node.entries[index].position
        switch (node.entries[index].slot, isArray) {
        case (.arrayOfTables(let array), true):
            let table = TOMLTableBuilder(position: position, origin: .header)
            keyPath.append(.index(array.elements.count))
            array.elements.append(table)
            return table
        case (.table(let table), false):
            switch table.origin {
            case .implicit:
                table.origin = .header
                table.position = position
                node.setPosition(position, at: index)
                return table
            case .dotted:
                throw error("table '\(name)' is already defined by dotted keys at \(defined)", at: open)
            case .header, .root:
                throw error("table '\(name)' is already defined at \(table.position)", at: open)
            }
        case (.table(let table), true):
            throw error(
                "cannot define array of tables '\(name)': it is already a table defined at \(table.position)",
                at: open
            )
        case (.arrayOfTables, false):
            throw error(
                "cannot define table '\(name)': it is already an array of tables defined at \(defined)",
                at: open
            )
        case (.value(.array), true):
            throw error("cannot append to the static array '\(name)' defined at \(defined)", at: open)
        case (.value(let value), _):
            throw error(
                "cannot define \(isArray ? "array of tables" : "table") '\(name)': it is already \(article(value)) defined at \(defined)",
                at: open
            )
        }
    }

    // MARK: - Values

    /// Reads one value; `expecting` completes the message "expected … but found …".
    mutating func parseValue(expecting: String) throws(TOMLError) -> TOMLValue {
        guard index < bytes.count else {
            throw error("expected \(expecting) but found end of file", at: index)
        }
        switch bytes[index] {
        case TOMLByte.quote:
            if index + 2 < bytes.count, bytes[index + 1] == TOMLByte.quote, bytes[index + 2] == TOMLByte.quote {
                return .string(try parseMultilineString(literal: false))
            }
            return .string(try parseBasicString())
        case TOMLByte.apostrophe:
            if index + 2 < bytes.count, bytes[index + 1] == TOMLByte.apostrophe, bytes[index + 2] == TOMLByte.apostrophe {
                return .string(try parseMultilineString(literal: true))
            }
            return .string(try parseLiteralString())
        case UInt8(ascii: "t"):
            if matchWord("true") { return .boolean(true) }
        case UInt8(ascii: "f"):
            if matchWord("false") { return .boolean(false) }
        case TOMLByte.leftBracket:
            return try parseArray()
        case TOMLByte.leftBrace:
            return try parseInlineTable()
        case TOMLByte.zero...TOMLByte.nine, TOMLByte.plus, TOMLByte.minus, UInt8(ascii: "i"), UInt8(ascii: "n"):
            return try parseNumberOrDateTime()
        default:
            break
        }
        throw error("expected \(expecting) but found \(describe(index))", at: index)
    }

    /// Consumes `word` if it is next and not followed by more of a word (`trueish`).
    mutating func matchWord(_ word: StaticString) -> Bool {
        let count = word.utf8CodeUnitCount
        guard index + count <= bytes.count else { return false }
        let utf8 = UnsafeBufferPointer(start: word.utf8Start, count: count)
        for i in 0..<count where bytes[index + i] != utf8[i] { return false }
        if index + count < bytes.count, TOMLByte.isBareKey(bytes[index + count]) { return false }
        index += count
        return true
    }

    /// Reads `[ … ]`: any values, commas between, an optional trailing comma, newlines and
    /// comments anywhere between elements.
    mutating func parseArray() throws(TOMLError) -> TOMLValue {
        depth += 1
        guard depth <= TOMLTable.maximumNestingDepth else { throw depthError(at: index) }
        index += 1
        var elements: [TOMLValue] = []
        while true {
            try skipWhitespaceCommentsAndNewlines()
            if index < bytes.count, bytes[index] == TOMLByte.rightBracket {
                index += 1
                break
            }
            keyPath.append(.index(elements.count))
            elements.append(try parseValue(expecting: "an array element or ']'"))
            keyPath.removeLast()
            try skipWhitespaceCommentsAndNewlines()
            guard index < bytes.count else {
                throw error("expected ',' or ']' after an array element but found end of file", at: index)
            }
            if bytes[index] == TOMLByte.comma {
                index += 1
            } else if bytes[index] == TOMLByte.rightBracket {
                index += 1
                break
            } else {
                throw error("expected ',' or ']' after an array element but found \(describe(index))", at: index)
            }
        }
        depth -= 1
        return .array(elements)
    }

    /// Reads `{ k = v, … }`: on one line, no trailing comma, closed for good at `}`.
    mutating func parseInlineTable() throws(TOMLError) -> TOMLValue {
        depth += 1
        guard depth <= TOMLTable.maximumNestingDepth else { throw depthError(at: index) }
        let builder = TOMLTableBuilder(position: position(at: index), origin: .root)
        let section = nextSection
        nextSection += 1
        index += 1
        skipWhitespace()
        if index < bytes.count, bytes[index] == TOMLByte.rightBrace {
            index += 1
        } else {
            while true {
                try checkInlineTableLine(expecting: "a key")
                let keyLength = try parseKeyValue(into: builder, section: section)
                skipWhitespace()
                try checkInlineTableLine(expecting: "',' or '}'")
                let separator = bytes[index]
                guard separator == TOMLByte.comma || separator == TOMLByte.rightBrace else {
                    throw error("expected ',' or '}' in an inline table but found \(describe(index))", at: index)
                }
                popKeyPath(keyLength)
                index += 1
                if separator == TOMLByte.rightBrace { break }
                skipWhitespace()
                if index < bytes.count, bytes[index] == TOMLByte.rightBrace {
                    throw error("a trailing comma is not allowed in an inline table", at: index)
                }
            }
        }
        depth -= 1
        return .table(builder.build())
    }

    /// Fails at the end of the file or of the line inside an inline table.
    private mutating func checkInlineTableLine(expecting: String) throws(TOMLError) {
        guard index < bytes.count else {
            throw error("expected \(expecting) in an inline table but found end of file", at: index)
        }
        if bytes[index] == TOMLByte.lf || bytes[index] == TOMLByte.cr {
            throw error("an inline table must be on one line (expected \(expecting))", at: index)
        }
    }
}
