import PolicyGateTOML
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The CPU time the calling thread has used. Unlike the wall clock it leaves out the time the
/// thread waited for a core, which on a loaded machine can dwarf a parse.
private func threadCPUTime() -> Duration {
    var now = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now)
    return .seconds(Int64(now.tv_sec)) + .nanoseconds(Int64(now.tv_nsec))
}

/// The calling thread's CPU time spent in `body` (which must not suspend: this is a synchronous
/// test's own thread throughout).
private func cpuTime(_ body: () throws -> Void) rethrows -> Duration {
    let start = threadCPUTime()
    try body()
    return threadCPUTime() - start
}

/// Parses `text`, which must fail, and returns the error.
private func parseError(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) -> TOMLError? {
    do {
        let table = try TOMLTable(parsing: text)
        Issue.record("expected an error, parsed \(table)", sourceLocation: sourceLocation)
        return nil
    } catch {
        return error
    }
}

/// Parses `bytes`, which must fail, and returns the error.
private func parseError(bytes: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) -> TOMLError? {
    do {
        let table = try TOMLTable(parsingUTF8: bytes)
        Issue.record("expected an error, parsed \(table)", sourceLocation: sourceLocation)
        return nil
    } catch {
        return error
    }
}

private func at(_ line: Int, _ column: Int) -> TOMLPosition { TOMLPosition(line: line, column: column) }

/// The table under `key`, or an empty one (recording an issue).
private func subtable(_ table: TOMLTable, _ key: String, sourceLocation: SourceLocation = #_sourceLocation) -> TOMLTable {
    guard case .table(let sub)? = table[key] else {
        Issue.record("no table at '\(key)' in \(table)", sourceLocation: sourceLocation)
        return TOMLTable()
    }
    return sub
}

@Suite("TOML parser")
struct TOMLParserTests {
    // MARK: Values

    @Test("every kind of value")
    func values() throws {
        let table = try TOMLTable(
            parsing: #"""
                string = "tab\there \"quoted\" \u00E9 \U0001F600"
                literal = 'C:\path\no\escapes'
                multi = """
                first \
                   second
                third"""
                multiLiteral = '''
                raw \n ''quoted'' '''
                hex = 0xDEAD_beef
                oct = 0o755
                bin = 0b1101
                dec = -1_000
                max = 9223372036854775807
                min = -9223372036854775808
                float = 6.626e-34
                plain = 3.1_415
                exponent = 5E+22
                infinity = -inf
                notANumber = nan
                yes = true
                no = false
                offset = 1979-05-27T00:32:00.999999999999-07:00
                utc = 1979-05-27 07:32:00z
                local = 1979-05-27t07:32:00.5
                date = 2024-02-29
                time = 23:59:60.25
                mixed = [1, "two", [3.0], { four = 4 }, ]
                """#
        )
        #expect(table["string"] == .string("tab\there \"quoted\" é 😀"))
        #expect(table["literal"] == .string(#"C:\path\no\escapes"#))
        #expect(table["multi"] == .string("first second\nthird"))
        #expect(table["multiLiteral"] == .string(#"raw \n ''quoted'' "#))
        #expect(table["hex"] == .integer(0xDEAD_BEEF))
        #expect(table["oct"] == .integer(0o755))
        #expect(table["bin"] == .integer(13))
        #expect(table["dec"] == .integer(-1000))
        #expect(table["max"] == .integer(.max))
        #expect(table["min"] == .integer(.min))
        #expect(table["float"] == .float(6.626e-34))
        #expect(table["plain"] == .float(3.1415))
        #expect(table["exponent"] == .float(5e22))
        #expect(table["infinity"] == .float(-.infinity))
        guard case .float(let nan)? = table["notANumber"] else {
            Issue.record("nan is not a float")
            return
        }
        #expect(nan.isNaN)
        #expect(table["yes"] == .boolean(true))
        #expect(table["no"] == .boolean(false))
        let date = TOMLLocalDate(year: 1979, month: 5, day: 27)
        #expect(
            table["offset"]
                == .offsetDateTime(
                    TOMLOffsetDateTime(
                        local: TOMLLocalDateTime(date: date, time: TOMLLocalTime(hour: 0, minute: 32, second: 0, nanosecond: 999_999_999)),
                        offsetMinutes: -420
                    )
                )
        )
        #expect(
            table["utc"]
                == .offsetDateTime(
                    TOMLOffsetDateTime(
                        local: TOMLLocalDateTime(date: date, time: TOMLLocalTime(hour: 7, minute: 32, second: 0)), offsetMinutes: 0)
                )
        )
        #expect(
            table["local"]
                == .localDateTime(
                    TOMLLocalDateTime(date: date, time: TOMLLocalTime(hour: 7, minute: 32, second: 0, nanosecond: 500_000_000)))
        )
        #expect(table["date"] == .localDate(TOMLLocalDate(year: 2024, month: 2, day: 29)))
        #expect(table["time"] == .localTime(TOMLLocalTime(hour: 23, minute: 59, second: 60, nanosecond: 250_000_000)))
        var four = TOMLTable()
        four["four"] = .integer(4)
        #expect(table["mixed"] == .array([.integer(1), .string("two"), .array([.float(3)]), .table(four)]))
    }

    @Test("keys keep document order, in every table")
    func orderedKeys() throws {
        let table = try TOMLTable(
            parsing: """
                zeta = 1
                alpha = 2
                "quoted key" = 3
                mid.b = 4
                mid.a = 5
                [later]
                z = 1
                y = { c = 1, b = 2, a = 3 }
                [earlier]
                """
        )
        #expect(table.keys == ["zeta", "alpha", "quoted key", "mid", "later", "earlier"])
        #expect(subtable(table, "mid").keys == ["b", "a"])
        #expect(subtable(subtable(table, "later"), "y").keys == ["c", "b", "a"])
    }

    @Test(
        "dates are checked against the calendar",
        arguments: [
            ("2023-02-29", false), ("2024-02-29", true), ("1900-02-29", false), ("2000-02-29", true),
            ("2024-04-31", false), ("2024-12-31", true), ("2024-13-01", false), ("2024-00-10", false),
            ("0000-01-01", true), ("2024-01-01T24:00:00", false), ("2024-01-01T23:60:00", false),
            ("2024-01-01T23:59:61", false), ("2024-01-01T00:00:00+24:00", false), ("2024-01-01T00:00:00+23:59", true),
        ])
    func calendar(literal: String, valid: Bool) {
        let parsed = (try? TOMLTable(parsing: "d = \(literal)")) != nil
        #expect(parsed == valid, "\(literal)")
    }

    @Test(
        "integers and floats follow the grammar",
        arguments: [
            ("0", true), ("+0", true), ("-0", true), ("01", false), ("1__0", false), ("1_", false), ("_1", false),
            ("0x", false), ("0X1", false), ("+0x1", false), ("0xffff_ffff_ffff_ffff", false), ("0x7fff_ffff_ffff_ffff", true),
            ("-9223372036854775809", false), ("99999999999999999999999999", false), ("1.", false), (".1", false),
            ("1e", false), ("1e_1", false), ("1e1_0", true), ("0.0e-0_1", true), ("1.0e400", false), ("+inf", true),
            ("-nan", true), ("Inf", false), ("1e2.0", false), ("0e0", true), ("00.1", false),
        ])
    func numbers(literal: String, valid: Bool) {
        let parsed = (try? TOMLTable(parsing: "n = \(literal)")) != nil
        #expect(parsed == valid, "\(literal)")
    }

    @Test("\\u and \\U escapes must name Unicode scalar values")
    func unicodeEscapes() throws {
        #expect(try TOMLTable(parsing: #"s = "\u0041\U0010FFFF""#)["s"] == .string("A\u{10FFFF}"))
        for escape in [#"\uD800"#, #"\uDFFF"#, #"\U00110000"#, #"\U0000D83D"#, #"\u12"#, #"\x41"#, #"\e"#] {
            let error = parseError(#"s = "\#(escape)""#)
            #expect(error?.code == .syntax, "\(escape)")
            #expect(error?.position == at(1, 6), "\(escape)")
        }
    }

    // MARK: Positions

    @Test("entries record where their key, header or brace was written")
    func entryPositions() throws {
        let table = try TOMLTable(
            parsing: """
                title = "x"
                [limits.openai]
                rpm = 500
                burst = { size = 5 }
                nested.deep = true
                [[servers]]
                name = "a"
                [[servers]]
                  name = "b"
                """
        )
        #expect(table.position == at(1, 1))
        #expect(table.position(of: "title") == at(1, 1))
        #expect(table.position(of: "limits") == at(2, 1))
        let limits = subtable(table, "limits")
        #expect(limits.position == at(2, 1))
        let openai = subtable(limits, "openai")
        #expect(openai.position == at(2, 1))
        #expect(openai.position(of: "rpm") == at(3, 1))
        #expect(openai.position(of: "burst") == at(4, 1))
        #expect(subtable(openai, "burst").position == at(4, 9))
        #expect(openai.position(of: "nested") == at(5, 1))
        #expect(subtable(openai, "nested").position(of: "deep") == at(5, 1))
        #expect(table.position(of: "servers") == at(6, 1))
        #expect(table.position(at: [.key("servers"), .index(0)]) == at(6, 1))
        #expect(table.position(at: [.key("servers"), .index(1)]) == at(8, 1))
        #expect(table.position(at: [.key("servers"), .index(1), .key("name")]) == at(9, 3))
        #expect(table.position(at: [.key("limits"), .key("openai"), .key("burst"), .key("size")]) == at(4, 11))
    }

    @Test("a table created by a sub-table's header takes the position of its own header")
    func implicitThenExplicit() throws {
        let table = try TOMLTable(
            parsing: """
                [a.b]
                x = 1
                [a]
                y = 2
                """
        )
        #expect(table.position(of: "a") == at(3, 1))
        #expect(subtable(table, "a").position == at(3, 1))
        #expect(subtable(table, "a").keys == ["b", "y"])
        #expect(subtable(table, "a").position(of: "b") == at(1, 1))

        // Dotted keys may define such a table too; it is then where they were written, and no
        // header may define it again.
        let dotted = try TOMLTable(parsing: "[a.b.c]\n[a]\nb.d = 1")
        #expect(dotted.position(at: [.key("a"), .key("b")]) == at(3, 1))
        #expect(subtable(subtable(dotted, "a"), "b").keys == ["c", "d"])
        #expect(parseError("[a.b.c]\n[a]\nb.d = 1\n[a.b]")?.message == "table 'a.b' is already defined by dotted keys at line 3, column 1")
    }

    @Test("columns count Unicode scalars, and a leading byte order mark is not one")
    func columnsInScalars() throws {
        let error = parseError(#""é" = "ü😀" x"#)
        #expect(error?.position == at(1, 12))
        #expect(error?.message == "expected end of line after the value but found 'x'")
        #expect(error?.keyPath == [.key("é")])

        let withBOM: [UInt8] = [0xEF, 0xBB, 0xBF] + Array("a = 1\nb = x".utf8)
        let bomError = parseError(bytes: withBOM)
        #expect(bomError?.position == at(2, 5))
        #expect(bomError?.message == "expected a value after '=' but found 'x'")
        let parsed = try TOMLTable(parsingUTF8: [0xEF, 0xBB, 0xBF] + Array("a = 1".utf8))
        #expect(parsed.position(of: "a") == at(1, 1))
        #expect(parseError("\u{FEFF}\u{FEFF}a = 1")?.position == at(1, 1))
    }

    // MARK: Errors

    @Test("syntax errors name the character, the key path and what was expected")
    func syntaxErrors() {
        let cases: [(text: String, position: TOMLPosition, path: String, message: String)] = [
            ("key = \n", at(1, 7), "key", "expected a value after '=' but found end of line"),
            ("key = # no value\n", at(1, 7), "key", "expected a value after '=' but found '#'"),
            ("a = 1\nb = 2\na = 3\n", at(3, 1), "a", "duplicate key 'a' (first defined at line 1, column 1)"),
            (
                "[limits.openai]\ntokens_per_minute = 9223372036854775808\n", at(2, 21), "limits.openai.tokens_per_minute",
                "integer 9223372036854775808 does not fit in 64 bits"
            ),
            (
                "servers = [\n  { name = \"a\" },\n  { name = 1x },\n]", at(3, 12), "servers[1].name",
                "invalid number '1x'"
            ),
            ("[a]\nx = 1\n[a]\n", at(3, 1), "a", "table 'a' is already defined at line 1, column 1"),
            (#"s = "bad \q""#, at(1, 10), "s", #"invalid escape sequence '\q'"#),
            ("a = 1\r\nb = 2\r", at(2, 6), "b", "a carriage return must be followed by a line feed"),
            (
                "a = {x = 1}\na.y = 2\n", at(2, 1), "a.y",
                "dotted keys cannot add to 'a', already defined as an inline table at line 1, column 1"
            ),
            ("t = { a = 1,\n b = 2 }", at(1, 13), "t", "an inline table must be on one line (expected a key)"),
            ("t = { a = 1, }", at(1, 14), "t", "a trailing comma is not allowed in an inline table"),
            (
                "[[fruit]]\n[fruit.apple]\nx=1\n[fruit.apple]", at(4, 1), "fruit[0].apple",
                "table 'fruit.apple' is already defined at line 2, column 1"
            ),
            ("fruit = []\n[[fruit]]", at(2, 1), "fruit", "cannot append to the static array 'fruit' defined at line 1, column 1"),
            ("d = 2023-02-29", at(1, 5), "d", "invalid date 2023-02-29: that month has 28 days"),
            (
                "[a.b.c]\nz = 9\n[a]\nb.c.t = 1", at(4, 3), "a.b.c.t",
                "dotted keys cannot add to table 'a.b.c', defined by a header at line 1, column 1"
            ),
            (
                "s = \"\"\"\nnever closed\n", at(3, 1), "s",
                "unterminated multi-line string opened at line 1, column 5: expected \"\"\" but found end of file"
            ),
            ("a.b = 1\n[a]", at(2, 1), "a", "table 'a' is already defined by dotted keys at line 1, column 1"),
            ("# tab\tis fine, \u{7} is not", at(1, 16), "", "control character U+0007 is not allowed in a comment"),
        ]
        for entry in cases {
            guard let error = parseError(entry.text) else { continue }
            #expect(error.code == .syntax, "\(entry.text)")
            #expect(error.position == entry.position, "\(entry.text)")
            #expect(error.keyPath.dottedKey == entry.path, "\(entry.text)")
            #expect(error.message == entry.message, "\(entry.text)")
        }
    }

    @Test("the error's description puts position, key path and message together")
    func description() {
        let error = parseError("[limits.openai]\ntokens_per_minute = 9223372036854775808\n")
        #expect(
            error?.description == "line 2, column 21: limits.openai.tokens_per_minute: integer 9223372036854775808 does not fit in 64 bits")
    }

    @Test("invalid UTF-8 is an invalidUTF8 error at the offending byte")
    func invalidUTF8() {
        let cases: [(bytes: [UInt8], position: TOMLPosition)] = [
            (Array("a = \"ok\"\nb = \"".utf8) + [0xFF] + Array("\"\n".utf8), at(2, 6)),
            (Array("# é then a lone continuation byte: ".utf8) + [0x80], at(1, 36)),
            (Array("k = 'x".utf8) + [0xED, 0xA0, 0x80] + Array("'".utf8), at(1, 7)),  // an encoded surrogate
            (Array("k = 'x".utf8) + [0xC0, 0xAF] + Array("'".utf8), at(1, 7)),  // an overlong '/'
            (Array("k = 1 # ".utf8) + [0xE2, 0x82], at(1, 9)),  // cut short at the end
        ]
        for entry in cases {
            let error = parseError(bytes: entry.bytes)
            #expect(error?.code == .invalidUTF8)
            #expect(error?.position == entry.position)
        }
    }

    // MARK: Line endings

    @Test("CRLF line endings, read as LF inside multi-line strings")
    func crlf() throws {
        let text = "a = 1\r\nb = \"\"\"\r\nline1\r\nline2\"\"\"\r\n[t]\r\nc = 'x' # comment\r\nd = [\r\n  1,\r\n]\r\n"
        let table = try TOMLTable(parsing: text)
        #expect(table["b"] == .string("line1\nline2"))
        #expect(table.position(of: "t") == at(5, 1))
        #expect(table.position(at: [.key("t"), .key("c")]) == at(6, 1))
        #expect(table.position(at: [.key("t"), .key("d")]) == at(7, 1))
        #expect(try TOMLTable(parsingUTF8: Array(text.utf8)) == table)
    }

    // MARK: Robustness

    @Test("100 000 nested arrays or inline tables are a limitExceeded error, not a stack overflow")
    func deepNesting() {
        let arrays = parseError("a = " + String(repeating: "[", count: 100_000))
        #expect(arrays?.code == .limitExceeded)
        #expect(arrays?.position == at(1, 5 + TOMLTable.maximumNestingDepth))

        let inlineTables = parseError("a = " + String(repeating: "{ b = ", count: 100_000))
        #expect(inlineTables?.code == .limitExceeded)

        let dottedKey = parseError(Array(repeating: "k", count: 100_000).joined(separator: ".") + " = 1")
        #expect(dottedKey?.code == .limitExceeded)
        #expect((dottedKey?.keyPath.count ?? .max) <= TOMLTable.maximumNestingDepth + 1)

        let header = parseError("[" + Array(repeating: "k", count: 100_000).joined(separator: ".") + "]")
        #expect(header?.code == .limitExceeded)

        let arraysOfTables = (0..<70).map { "[[" + Array(repeating: "k", count: $0 + 1).joined(separator: ".") + "]]" }
        #expect(parseError(arraysOfTables.joined(separator: "\n"))?.code == .limitExceeded)
    }

    @Test("nesting up to the limit parses")
    func nestingAtTheLimit() throws {
        let depth = TOMLTable.maximumNestingDepth
        let arrays = try TOMLTable(parsing: "a = " + String(repeating: "[", count: depth) + String(repeating: "]", count: depth))
        var value = arrays["a"]
        var levels = 0
        while case .array(let elements)? = value {
            levels += 1
            value = elements.first
        }
        #expect(levels == depth)
        // A dotted key of n components makes n - 1 tables; the last one names the integer.
        let key = Array(repeating: "k", count: depth + 1).joined(separator: ".")
        #expect(try TOMLTable(parsing: "\(key) = 1").count == 1)
        #expect(parseError("\(key).k = 1")?.code == .limitExceeded)
        // A header of n components makes n tables.
        let header = Array(repeating: "k", count: depth).joined(separator: ".")
        #expect(try TOMLTable(parsing: "[\(header)]").count == 1)
        #expect(parseError("[\(header).k]")?.code == .limitExceeded)
    }

    @Test("a 10 MB document parses, in time proportional to its size")
    func largeDocument() throws {
        func document(tables: Int) -> String {
            var text = "title = \"large\"\n"
            for i in 0..<tables {
                text += """
                    [limits.provider-\(i)]
                    requests_per_minute = \(i % 1000 + 1)
                    tokens_per_minute = 200_000
                    models = ["gpt-4o", "o3", 'literal \\ backslash']
                    description = "provider \(i) \\"escaped\\" \\u00e9"
                    created = 2024-05-27T07:32:00.123Z
                    burst = { size = 50, refill_ms = 250 }
                    [[limits.provider-\(i).users]]
                    id = "u-\(i)"


                    """
            }
            return text
        }
        let small = document(tables: 3_600)
        let large = document(tables: 36_000)
        #expect(large.utf8.count > 10_000_000)
        var smallTable = TOMLTable()
        let smallTime = try cpuTime { smallTable = try TOMLTable(parsing: small) }
        var largeTable = TOMLTable()
        let largeTime = try cpuTime { largeTable = try TOMLTable(parsing: large) }
        #expect(subtable(smallTable, "limits").count == 3_600)
        #expect(subtable(largeTable, "limits").count == 36_000)
        #expect(
            largeTable.position(at: [.key("limits"), .key("provider-35999"), .key("users"), .index(0), .key("id")]) == at(36_000 * 10, 1))
        // Ten times the input: about ten times the CPU time. A quadratic parser would take a
        // hundred; the bound leaves room for caches and allocation.
        #expect(largeTime < smallTime * 30, "1 MB: \(smallTime), 10 MB: \(largeTime)")
    }

    @Test("parsing bytes and parsing the same text agree")
    func bytesAndText() throws {
        let text = "a = 1\n[b]\nc = \"é\"\nd = [1, { e = 2 }]\n"
        #expect(try TOMLTable(parsing: text) == TOMLTable(parsingUTF8: Array(text.utf8)))
        #expect(try TOMLTable(parsingUTF8: Array(text.utf8)[...]).count == 2)
        #expect(try TOMLTable(parsing: "").isEmpty)
    }

    // MARK: Tagged JSON

    @Test("the tagged JSON writer spells every kind of value as the toml-test corpus does")
    func taggedJSON() throws {
        let table = try TOMLTable(
            parsing: #"""
                s = "a\"b\\c\nd\u0001"
                i = -42
                f = [1.5, inf, -inf, nan, 1e300]
                b = true
                odt = 1979-05-27T07:32:00.5-07:00
                utc = 1979-05-27T07:32:00+00:00
                ldt = 1979-05-27T07:32:00
                ld = 1979-05-27
                lt = 07:32:00.000100
                [t]
                empty = {}
                """#
        )
        #expect(
            table.taggedJSON
                == #"{"s":{"type":"string","value":"a\"b\\c\nd\u0001"},"i":{"type":"integer","value":"-42"},"#
                + #""f":[{"type":"float","value":"1.5"},{"type":"float","value":"inf"},{"type":"float","value":"-inf"},"#
                + #"{"type":"float","value":"nan"},{"type":"float","value":"1e+300"}],"b":{"type":"bool","value":"true"},"#
                + #""odt":{"type":"datetime","value":"1979-05-27T07:32:00.5-07:00"},"utc":{"type":"datetime","value":"1979-05-27T07:32:00Z"},"#
                + #""ldt":{"type":"datetime-local","value":"1979-05-27T07:32:00"},"ld":{"type":"date-local","value":"1979-05-27"},"#
                + #""lt":{"type":"time-local","value":"07:32:00.0001"},"t":{"empty":{}}}"#
        )
    }
}
