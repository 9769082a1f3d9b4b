extension TOMLParser {
    /// Reads `"…"`: one line, escapes, no control characters but tab.
    mutating func parseBasicString() throws(TOMLError) -> String {
        index += 1
        let contentStart = index
        // Fast path: most strings have no escape and are one slice of the document.
        while index < bytes.count {
            let byte = bytes[index]
            if byte == TOMLByte.quote {
                let string = text(contentStart..<index)
                index += 1
                return string
            }
            if byte == TOMLByte.backslash { break }
            if TOMLByte.isForbiddenControl(byte) { throw singleLineStringError(quote: "\"") }
            index += 1
        }
        guard index < bytes.count else { throw singleLineStringError(quote: "\"") }
        scratch.removeAll(keepingCapacity: true)
        scratch.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[contentStart..<index]))
        while index < bytes.count {
            let byte = bytes[index]
            if byte == TOMLByte.quote {
                index += 1
                return String(decoding: scratch, as: UTF8.self)
            }
            if byte == TOMLByte.backslash {
                try appendEscape()
            } else if TOMLByte.isForbiddenControl(byte) {
                throw singleLineStringError(quote: "\"")
            } else {
                scratch.append(byte)
                index += 1
            }
        }
        throw singleLineStringError(quote: "\"")
    }

    /// Reads `'…'`: one line, no escapes, no control characters but tab.
    mutating func parseLiteralString() throws(TOMLError) -> String {
        index += 1
        let contentStart = index
        while index < bytes.count {
            let byte = bytes[index]
            if byte == TOMLByte.apostrophe {
                let string = text(contentStart..<index)
                index += 1
                return string
            }
            if TOMLByte.isForbiddenControl(byte) { break }
            index += 1
        }
        throw singleLineStringError(quote: "'")
    }

    /// The error for a single-line string stopped by the end of the line or file, or a control
    /// character, at `index`.
    private mutating func singleLineStringError(quote: String) -> TOMLError {
        guard index < bytes.count else {
            return error("unterminated string: expected \(quote) but found end of file", at: index)
        }
        let byte = bytes[index]
        if byte == TOMLByte.lf || byte == TOMLByte.cr {
            return error(
                "unterminated string: expected \(quote) before the end of the line (use \(quote)\(quote)\(quote) for a multi-line string)",
                at: index
            )
        }
        return error("\(describe(index)) is not allowed in a string; use an escape sequence", at: index)
    }

    /// At a backslash in a basic string: appends the escaped character to `scratch`.
    mutating func appendEscape() throws(TOMLError) {
        let start = index
        index += 1
        guard index < bytes.count else { throw error("unterminated escape sequence at end of file", at: start) }
        let byte = bytes[index]
        index += 1
        switch byte {
        case UInt8(ascii: "b"): scratch.append(0x08)
        case UInt8(ascii: "t"): scratch.append(TOMLByte.tab)
        case UInt8(ascii: "n"): scratch.append(TOMLByte.lf)
        case UInt8(ascii: "f"): scratch.append(0x0C)
        case UInt8(ascii: "r"): scratch.append(TOMLByte.cr)
        case TOMLByte.quote: scratch.append(TOMLByte.quote)
        case TOMLByte.backslash: scratch.append(TOMLByte.backslash)
        case UInt8(ascii: "u"), UInt8(ascii: "U"):
            let digits = byte == UInt8(ascii: "u") ? 4 : 8
            var value: UInt32 = 0
            for _ in 0..<digits {
                guard index < bytes.count, let digit = hexValue(bytes[index]) else {
                    throw error(
                        "\\\(byte == UInt8(ascii: "u") ? "u" : "U") must be followed by \(digits) hexadecimal digits",
                        at: start
                    )
                }
                value = value << 4 | UInt32(digit)
                index += 1
            }
            guard let scalar = Unicode.Scalar(value) else {
                throw error(
                    "\(text(start..<index)) is not a Unicode scalar value (surrogates and values above 10FFFF are not)",
                    at: start
                )
            }
            scratch.append(contentsOf: UTF8.encode(scalar)!)
        default:
            index -= 1
            if byte > TOMLByte.space && byte < TOMLByte.delete {
                throw error("invalid escape sequence '\\\(Character(Unicode.Scalar(byte)))'", at: start)
            }
            throw error("invalid escape sequence: '\\' followed by \(describe(index))", at: start)
        }
    }

    /// The value of a hexadecimal digit, either case.
    @inline(__always) func hexValue(_ byte: UInt8) -> UInt8? {
        if TOMLByte.isDigit(byte) { return byte - TOMLByte.zero }
        let lower = byte | 0x20
        if lower >= UInt8(ascii: "a") && lower <= UInt8(ascii: "f") { return lower - UInt8(ascii: "a") + 10 }
        return nil
    }

    /// Reads `"""…"""` or `'''…'''`. A newline right after the opening delimiter is dropped,
    /// CRLF is read as LF, and up to two quotes may precede the closing delimiter. In the basic
    /// form, a backslash ending a line removes it and the whitespace and newlines after it.
    mutating func parseMultilineString(literal: Bool) throws(TOMLError) -> String {
        let delimiter = literal ? TOMLByte.apostrophe : TOMLByte.quote
        let openPosition = position(at: index)
        index += 3
        if index < bytes.count, bytes[index] == TOMLByte.lf {
            index += 1
            startLine()
        } else if index + 1 < bytes.count, bytes[index] == TOMLByte.cr, bytes[index + 1] == TOMLByte.lf {
            index += 2
            startLine()
        }
        // Copy into `scratch` only once an escape or a CRLF makes the text differ from the
        // document; `runStart` is the first byte not copied yet.
        var copied = false
        scratch.removeAll(keepingCapacity: true)
        var runStart = index
        while index < bytes.count {
            let byte = bytes[index]
            switch byte {
            case delimiter:
                guard index + 2 < bytes.count, bytes[index + 1] == delimiter, bytes[index + 2] == delimiter else {
                    index += 1
                    continue
                }
                var run = 3
                while index + run < bytes.count, bytes[index + run] == delimiter { run += 1 }
                if run > 5 {
                    throw error("too many quotes: at most two may come before the closing delimiter", at: index + 5)
                }
                let contentEnd = index + run - 3
                index += run
                if !copied { return text(runStart..<contentEnd) }
                scratch.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<contentEnd]))
                return String(decoding: scratch, as: UTF8.self)
            case TOMLByte.lf:
                index += 1
                startLine()
            case TOMLByte.cr:
                guard index + 1 < bytes.count, bytes[index + 1] == TOMLByte.lf else {
                    throw error("a carriage return must be followed by a line feed", at: index)
                }
                scratch.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<index]))
                scratch.append(TOMLByte.lf)
                copied = true
                index += 2
                startLine()
                runStart = index
            case TOMLByte.backslash where !literal:
                scratch.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<index]))
                copied = true
                if try !skipLineEndingBackslash() { try appendEscape() }
                runStart = index
            default:
                if TOMLByte.isForbiddenControl(byte) {
                    throw error("\(describe(index)) is not allowed in a string; use an escape sequence", at: index)
                }
                index += 1
            }
        }
        throw error(
            "unterminated multi-line string opened at \(openPosition): expected \(literal ? "'''" : "\"\"\"") but found end of file",
            at: index
        )
    }

    /// At a backslash in a multi-line basic string: if only whitespace follows it on its line,
    /// skips to the next character that is neither whitespace nor a newline and returns true.
    private mutating func skipLineEndingBackslash() throws(TOMLError) -> Bool {
        var i = index + 1
        while i < bytes.count, bytes[i] == TOMLByte.space || bytes[i] == TOMLByte.tab { i += 1 }
        guard i < bytes.count, bytes[i] == TOMLByte.lf || bytes[i] == TOMLByte.cr else {
            if i > index + 1 {
                throw error("a backslash followed by whitespace must end the line", at: index)
            }
            return false
        }
        index = i
        try skipWhitespaceAndNewlines(skippingComments: false)
        return true
    }
}
