extension TOMLParser {
    /// The error for bytes the standard library found not to be UTF-8: walks them again to
    /// name the first bad byte and its line and column (counted as the parser would, after a
    /// leading byte order mark).
    static func invalidUTF8Error(in bytes: some Collection<UInt8>) -> TOMLError {
        let bytes = Array(bytes)
        var i = bytes.starts(with: [0xEF, 0xBB, 0xBF]) ? 3 : 0
        var line = 1
        var column = 1
        while i < bytes.count {
            let lead = bytes[i]
            if lead < 0x80 {
                if lead == TOMLByte.lf {
                    line += 1
                    column = 1
                } else {
                    column += 1
                }
                i += 1
                continue
            }
            // Unicode 15, table 3-7: the well-formed sequences and the range of each second byte.
            let length: Int
            let second: ClosedRange<UInt8>
            switch lead {
            case 0xC2...0xDF: (length, second) = (2, 0x80...0xBF)
            case 0xE0: (length, second) = (3, 0xA0...0xBF)
            case 0xE1...0xEC, 0xEE...0xEF: (length, second) = (3, 0x80...0xBF)
            case 0xED: (length, second) = (3, 0x80...0x9F)
            case 0xF0: (length, second) = (4, 0x90...0xBF)
            case 0xF1...0xF3: (length, second) = (4, 0x80...0xBF)
            case 0xF4: (length, second) = (4, 0x80...0x8F)
            default:
                return TOMLError(
                    .invalidUTF8,
                    "invalid UTF-8: byte 0x\(hex(lead)) cannot start a character",
                    at: TOMLPosition(line: line, column: column)
                )
            }
            var valid = i + length <= bytes.count && second.contains(bytes[i + 1])
            if valid {
                for k in 2..<length where bytes[i + k] & 0xC0 != 0x80 { valid = false }
            }
            guard valid else {
                return TOMLError(
                    .invalidUTF8,
                    "invalid UTF-8: malformed or incomplete \(length)-byte sequence starting with byte 0x\(hex(lead))",
                    at: TOMLPosition(line: line, column: column)
                )
            }
            i += length
            column += 1
        }
        // Not reached when the standard library and this walk agree on what UTF-8 is.
        return TOMLError(.invalidUTF8, "invalid UTF-8", at: nil)
    }

    private static func hex(_ byte: UInt8) -> String {
        let digits = String(byte, radix: 16, uppercase: true)
        return byte < 16 ? "0" + digits : digits
    }
}
