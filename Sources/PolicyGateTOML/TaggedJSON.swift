package extension TOMLTable {
    /// The table in the toml-test corpus's "tagged JSON": tables as objects, arrays as arrays,
    /// every other value as `{"type": "…", "value": "…"}` with the value spelled as a string.
    /// Keys keep document order. Used by `toml-test-decoder` and the compliance tests.
    var taggedJSON: String {
        var output = ""
        output.reserveCapacity(count * 48)
        TaggedJSONWriter.write(self, into: &output)
        return output
    }
}

/// Writes tagged JSON; recursion is bounded by the depth of the value tree.
enum TaggedJSONWriter {
    static func write(_ table: TOMLTable, into output: inout String) {
        output += "{"
        var first = true
        for key in table.keys {
            guard let value = table[key] else { continue }
            if !first { output += "," }
            first = false
            writeString(key, into: &output)
            output += ":"
            write(value, into: &output)
        }
        output += "}"
    }

    static func write(_ value: TOMLValue, into output: inout String) {
        switch value {
        case .table(let table):
            write(table, into: &output)
        case .array(let elements):
            output += "["
            for (index, element) in elements.enumerated() {
                if index > 0 { output += "," }
                write(element, into: &output)
            }
            output += "]"
        case .string(let string):
            writeTagged("string", string, into: &output)
        case .integer(let integer):
            writeTagged("integer", String(integer), into: &output)
        case .float(let float):
            writeTagged("float", spell(float), into: &output)
        case .boolean(let boolean):
            writeTagged("bool", boolean ? "true" : "false", into: &output)
        case .offsetDateTime(let dateTime):
            writeTagged("datetime", dateTime.description, into: &output)
        case .localDateTime(let dateTime):
            writeTagged("datetime-local", dateTime.description, into: &output)
        case .localDate(let date):
            writeTagged("date-local", date.description, into: &output)
        case .localTime(let time):
            writeTagged("time-local", time.description, into: &output)
        }
    }

    /// The shortest spelling that reads back as the same double; `nan` has no sign in the
    /// corpus's format.
    static func spell(_ float: Double) -> String {
        if float.isNaN { return "nan" }
        if float.isInfinite { return float < 0 ? "-inf" : "inf" }
        return float.description
    }

    private static func writeTagged(_ type: String, _ value: String, into output: inout String) {
        output += "{\"type\":\""
        output += type
        output += "\",\"value\":"
        writeString(value, into: &output)
        output += "}"
    }

    /// A JSON string literal: quotes, backslashes and control characters escaped.
    static func writeString(_ string: String, into output: inout String) {
        output += "\""
        for scalar in string.unicodeScalars {
            switch scalar {
            case "\"": output += "\\\""
            case "\\": output += "\\\\"
            case "\n": output += "\\n"
            case "\r": output += "\\r"
            case "\t": output += "\\t"
            case "\u{08}": output += "\\b"
            case "\u{0C}": output += "\\f"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    output += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    output.unicodeScalars.append(scalar)
                }
            }
        }
        output += "\""
    }
}
