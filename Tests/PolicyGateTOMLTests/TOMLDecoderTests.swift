import PolicyGateTOML
import Testing

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

// Most tests build their documents by hand, so they test the decoder alone with positions
// chosen to be recognisable; `TOMLDecoderTextTests` then checks the same things end to end.

private func at(_ line: Int, _ column: Int = 1) -> TOMLPosition { TOMLPosition(line: line, column: column) }

/// A table whose keys are written on consecutive lines from `line + 1`, column 1: the shape of
/// a `[header]` on `line` followed by its pairs.
private func table(line: Int = 0, column: Int = 1, _ pairs: KeyValuePairs<String, TOMLValue>) -> TOMLTable {
    var table = TOMLTable(position: line == 0 ? at(1, 1) : at(line, column))
    for (offset, (key, value)) in pairs.enumerated() {
        table.setValue(value, forKey: key, at: at(line + offset + 1))
    }
    return table
}

private func decodingError<T: Decodable>(
    _ type: T.Type, from document: TOMLTable, with decoder: TOMLDecoder = TOMLDecoder(),
    sourceLocation: SourceLocation = #_sourceLocation
) throws -> TOMLError {
    try #require(throws: TOMLError.self, sourceLocation: sourceLocation) { try decoder.decode(T.self, from: document) }
}

private struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int?
    init(stringValue: String) { self.stringValue = stringValue }
    init(intValue: Int) {
        self.stringValue = "\(intValue)"
        self.intValue = intValue
    }
}

@Suite("TOMLDecoder: values")
struct TOMLDecoderValueTests {
    struct Scalars: Decodable, Equatable {
        var string: String
        var bool: Bool
        var int: Int
        var int8: Int8
        var int16: Int16
        var int32: Int32
        var int64: Int64
        var uint: UInt
        var uint8: UInt8
        var uint16: UInt16
        var uint32: UInt32
        var uint64: UInt64
        var double: Double
        var float: Float
    }

    @Test("strings, booleans, every fixed-width integer type, floats")
    func scalars() throws {
        let document = table([
            "string": .string("héllo"), "bool": .boolean(true),
            "int": .integer(-1), "int8": .integer(-128), "int16": .integer(32_767), "int32": .integer(-2_147_483_648),
            "int64": .integer(.max), "uint": .integer(7), "uint8": .integer(255), "uint16": .integer(65_535),
            "uint32": .integer(4_294_967_295), "uint64": .integer(.max), "double": .float(0.5), "float": .float(-2.25),
        ])
        let scalars = try TOMLDecoder().decode(Scalars.self, from: document)
        #expect(
            scalars
                == Scalars(
                    string: "héllo", bool: true, int: -1, int8: -128, int16: 32_767, int32: -2_147_483_648, int64: .max,
                    uint: 7, uint8: 255, uint16: 65_535, uint32: 4_294_967_295, uint64: UInt64(Int64.max), double: 0.5, float: -2.25
                ))
    }

    @Test("the same types at the top level, in arrays and through single-value containers")
    func scalarsEverywhere() throws {
        let decoder = TOMLDecoder()
        let document = table([
            "ints": .array([.integer(1), .integer(2)]), "bytes": .array([.integer(0), .integer(255)]),
            "floats": .array([.float(1.5), .integer(2)]), "words": .array([.string("a"), .string("b")]),
            "flags": .array([.boolean(false), .boolean(true)]), "big": .array([.integer(-5)]),
        ])
        struct Arrays: Decodable {
            var ints: [Int], bytes: [UInt8], floats: [Float], words: [String], flags: [Bool], big: [Int128]
        }
        let arrays = try decoder.decode(Arrays.self, from: document)
        #expect(arrays.ints == [1, 2])
        #expect(arrays.bytes == [0, 255])
        #expect(arrays.floats == [1.5, 2])
        #expect(arrays.words == ["a", "b"])
        #expect(arrays.flags == [false, true])
        #expect(arrays.big == [-5])
        #expect(try decoder.decode([String: Int16].self, from: table(["a": .integer(-3)])) == ["a": -3])
        #expect(try decoder.decode([String: UInt128].self, from: table(["a": .integer(3)])) == ["a": 3])
    }

    @Test("Double and Float accept integers they hold exactly: ratio = 1")
    func floatsFromIntegers() throws {
        struct Ratio: Decodable { var ratio: Double; var scale: Float; var limit: Double? }
        let ratio = try TOMLDecoder().decode(
            Ratio.self, from: table(["ratio": .integer(1), "scale": .integer(-16_777_216), "limit": .integer(1 << 53)])
        )
        #expect(ratio.ratio == 1.0)
        #expect(ratio.scale == -16_777_216)
        #expect(ratio.limit == 9_007_199_254_740_992)
    }

    @Test("special floats and their ranges")
    func specialFloats() throws {
        struct Floats: Decodable { var a: Double, b: Float, c: Float }
        let floats = try TOMLDecoder().decode(
            Floats.self, from: table(["a": .float(-.infinity), "b": .float(.nan), "c": .float(.infinity)])
        )
        #expect(floats.a == -.infinity)
        #expect(floats.b.isNaN)
        #expect(floats.c == .infinity)
    }

    @Test("Date comes from an offset date-time, and is that instant")
    func dates() throws {
        struct Event: Decodable { var at: Date; var utc: Date; var precise: Date }
        let local = TOMLLocalDateTime(date: .init(year: 1979, month: 5, day: 27), time: .init(hour: 0, minute: 32, second: 0))
        var precise = local
        precise.time.nanosecond = 999_999_000
        let event = try TOMLDecoder().decode(
            Event.self,
            from: table([
                "at": .offsetDateTime(.init(local: local, offsetMinutes: -7 * 60)),
                "utc": .offsetDateTime(.init(local: local, offsetMinutes: 0)),
                "precise": .offsetDateTime(.init(local: precise, offsetMinutes: 90)),
            ]))
        // 1979-05-27T07:32:00Z, from `date -u -d 1979-05-27T07:32:00Z +%s`.
        #expect(event.at == Date(timeIntervalSince1970: 296_638_320))
        #expect(event.utc == Date(timeIntervalSince1970: 296_613_120))
        #expect(abs(event.precise.timeIntervalSince1970 - (296_613_120 - 5_400 + 0.999_999)) < 1e-6)
    }

    @Test("a Date refuses a local date-time, date or time, saying an offset is needed")
    func datesNeedAnOffset() throws {
        struct Event: Decodable { var at: Date }
        let date = TOMLLocalDate(year: 1979, month: 5, day: 27)
        let time = TOMLLocalTime(hour: 7, minute: 32, second: 0)
        for (value, name) in [
            (TOMLValue.localDateTime(.init(date: date, time: time)), "a local date-time"),
            (.localDate(date), "a local date"), (.localTime(time), "a local time"),
        ] {
            let error = try decodingError(Event.self, from: table(line: 4, ["at": value]))
            #expect(error.code == .typeMismatch)
            #expect(error.message.hasPrefix("expected an offset date-time, found \(name); "))
            #expect(error.message.contains("UTC offset"))
            #expect(error.keyPath == [.key("at")])
            #expect(error.position == at(5))
        }
        let error = try decodingError(Event.self, from: table(["at": .string("1979-05-27T07:32:00Z")]))
        #expect(error.message == "expected an offset date-time, found a string")
    }

    @Test("TOML's own date and time types decode from their kind of value only")
    func tomlDateTimes() throws {
        struct Times: Decodable {
            var odt: TOMLOffsetDateTime, ldt: TOMLLocalDateTime, date: TOMLLocalDate, time: TOMLLocalTime
        }
        let date = TOMLLocalDate(year: 2024, month: 2, day: 29)
        let time = TOMLLocalTime(hour: 23, minute: 59, second: 60, nanosecond: 5)
        let local = TOMLLocalDateTime(date: date, time: time)
        let odt = TOMLOffsetDateTime(local: local, offsetMinutes: 330)
        let document = table([
            "odt": .offsetDateTime(odt), "ldt": .localDateTime(local), "date": .localDate(date), "time": .localTime(time),
        ])
        let times = try TOMLDecoder().decode(Times.self, from: document)
        #expect(times.odt == odt)
        #expect(times.ldt == local)
        #expect(times.date == date)
        #expect(times.time == time)

        var swapped = document
        swapped["date"] = .localDateTime(local)
        let error = try decodingError(Times.self, from: swapped)
        #expect(error.code == .typeMismatch)
        #expect(error.message == "expected a local date, found a local date-time")
        #expect(error.keyPath == [.key("date")])
        swapped = document
        swapped["odt"] = .localDateTime(local)
        #expect(try decodingError(Times.self, from: swapped).message == "expected an offset date-time, found a local date-time")
    }

    @Test("TOMLValue and TOMLTable decode as themselves, positions included")
    func passThrough() throws {
        struct Plugin: Decodable {
            var name: String
            var settings: TOMLTable
            var extra: TOMLValue
            var anything: [TOMLValue]
        }
        let settings = table(line: 10, ["depth": .integer(3), "mode": .string("fast")])
        let document = table([
            "name": .string("p"), "settings": .table(settings), "extra": .array([.integer(1), .string("x")]),
            "anything": .array([.boolean(true), .table(settings)]),
        ])
        let plugin = try TOMLDecoder().decode(Plugin.self, from: document)
        #expect(plugin.settings == settings)
        #expect(plugin.settings.keys == ["depth", "mode"])
        #expect(plugin.settings.position == at(10))
        #expect(plugin.settings.position(of: "mode") == at(12))
        #expect(plugin.extra == .array([.integer(1), .string("x")]))
        #expect(plugin.anything == [.boolean(true), .table(settings)])
        #expect(try TOMLDecoder().decode(TOMLTable.self, from: document) == document)
        #expect(try TOMLDecoder().decode(TOMLValue.self, from: document) == .table(document))

        let error = try decodingError(
            Plugin.self,
            from: table([
                "name": .string("p"), "settings": .integer(1), "extra": .integer(1), "anything": .array([]),
            ]))
        #expect(error.code == .typeMismatch)
        #expect(error.message == "expected a table, found an integer")
        #expect(error.keyPath == [.key("settings")])
    }

    @Test("TOMLValue and TOMLTable also decode from other decoders")
    func passThroughFromJSON() throws {
        let json = Data(#"{"a": [1, 2.5, "x", true, {"b": false}]}"#.utf8)
        let value = try JSONDecoder().decode(TOMLValue.self, from: json)
        let inner = table(["b": .boolean(false)])
        #expect(value == .table(table(["a": .array([.integer(1), .float(2.5), .string("x"), .boolean(true), .table(inner)])])))
        #expect(try JSONDecoder().decode(TOMLTable.self, from: Data(#"{"b": false}"#.utf8)) == inner)
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(TOMLValue.self, from: Data("[null]".utf8)) }
    }

    @Test("URL from a string")
    func urls() throws {
        struct Endpoint: Decodable { var url: URL }
        let endpoint = try TOMLDecoder().decode(Endpoint.self, from: table(["url": .string("https://api.example.com/v1")]))
        #expect(endpoint.url.absoluteString == "https://api.example.com/v1")
        let error = try decodingError(Endpoint.self, from: table(["url": .integer(1)]))
        #expect(error.message == "expected a string, found an integer")
    }

    enum Mode: String, Decodable { case strict, lenient }
    enum Level: Int, Decodable { case low = 1, high = 2 }

    @Test("enums with String and Int raw values")
    func rawValueEnums() throws {
        struct Settings: Decodable { var mode: Mode; var level: Level; var modes: [Mode] }
        let settings = try TOMLDecoder().decode(
            Settings.self,
            from: table([
                "mode": .string("lenient"), "level": .integer(2), "modes": .array([.string("strict"), .string("lenient")]),
            ]))
        #expect(settings.mode == .lenient)
        #expect(settings.level == .high)
        #expect(settings.modes == [.strict, .lenient])

        let error = try decodingError(
            Settings.self,
            from: table(
                line: 2,
                [
                    "mode": .string("strict"), "level": .integer(3), "modes": .array([]),
                ]))
        #expect(error.code == .invalidValue)
        #expect(error.message.contains("3"))
        #expect(error.keyPath == [.key("level")])
        #expect(error.position == at(4))
        let mismatch = try decodingError(
            Settings.self,
            from: table([
                "mode": .integer(1), "level": .integer(1), "modes": .array([]),
            ]))
        #expect(mismatch.code == .typeMismatch)
        #expect(mismatch.message == "expected a string, found an integer")
    }

    @Test("arrays, sets, nested arrays, dictionaries and nested structs")
    func collections() throws {
        struct Inner: Decodable, Equatable { var name: String; var weight: Double? }
        struct Outer: Decodable {
            var tags: Set<String>
            var matrix: [[Int]]
            var byName: [String: Inner]
            var inner: Inner
            var inners: [Inner]
            var empty: [String]
        }
        let document = table([
            "tags": .array([.string("a"), .string("b"), .string("a")]),
            "matrix": .array([.array([.integer(1), .integer(2)]), .array([])]),
            "byName": .table(
                table(["x-1": .table(table(["name": .string("x")])), "y": .table(table(["name": .string("y"), "weight": .integer(2)]))])),
            "inner": .table(table(["name": .string("i"), "weight": .float(0.5)])),
            "inners": .array([.table(table(["name": .string("first")])), .table(table(["name": .string("second")]))]),
            "empty": .array([]),
        ])
        let outer = try TOMLDecoder().decode(Outer.self, from: document)
        #expect(outer.tags == ["a", "b"])
        #expect(outer.matrix == [[1, 2], []])
        #expect(outer.byName == ["x-1": Inner(name: "x"), "y": Inner(name: "y", weight: 2)])
        #expect(outer.inner == Inner(name: "i", weight: 0.5))
        #expect(outer.inners.map(\.name) == ["first", "second"])
        #expect(outer.empty.isEmpty)
        // Dictionaries with other keys go through the standard library's own decoding.
        #expect(try TOMLDecoder().decode([Int: String].self, from: table(["1": .string("a"), "20": .string("b")])) == [1: "a", 20: "b"])
    }

    @Test("user info reaches init(from:)")
    func userInfo() throws {
        let key = CodingUserInfoKey(rawValue: "environment")!
        struct Probe: Decodable {
            var environment: String?
            init(from decoder: any Decoder) throws {
                environment = decoder.userInfo[CodingUserInfoKey(rawValue: "environment")!] as? String
            }
        }
        var decoder = TOMLDecoder()
        decoder.userInfo[key] = "staging"
        #expect(try decoder.decode(Probe.self, from: table([:])).environment == "staging")
        // Nested values see it too, as do decoders made by superDecoder.
        struct Wrapper: Decodable { var probes: [Probe] }
        let nested = try decoder.decode(Wrapper.self, from: table(["probes": .array([.table(table([:]))])]))
        #expect(nested.probes.first?.environment == "staging")
    }
}

@Suite("TOMLDecoder: optionals and containers")
struct TOMLDecoderContainerTests {
    @Test("an optional is nil exactly when its key is missing")
    func optionals() throws {
        struct Options: Decodable { var name: String?; var port: Int?; var ratio: Double?; var tags: [String]?; var on: Bool? }
        let none = try TOMLDecoder().decode(Options.self, from: table([:]))
        #expect(none.name == nil && none.port == nil && none.ratio == nil && none.tags == nil && none.on == nil)
        let some = try TOMLDecoder().decode(
            Options.self,
            from: table([
                "name": .string("n"), "port": .integer(80), "ratio": .integer(1), "tags": .array([]), "on": .boolean(false),
            ]))
        #expect(some.name == "n" && some.port == 80 && some.ratio == 1 && some.tags == [] && some.on == false)
        // A value of the wrong type is an error, not a nil.
        let error = try decodingError(Options.self, from: table(["port": .string("80")]))
        #expect(error.code == .typeMismatch)
        #expect(error.keyPath == [.key("port")])
        let range = try decodingError([String: UInt8?].self, from: table(["a": .integer(-1)]))
        #expect(range.code == .invalidValue)
    }

    @Test("decode(T?.self) and decodeNil: a missing key is TOML's only null")
    func explicitOptionals() throws {
        struct Probe: Decodable {
            var missing: Int?, present: Int?, missingIsNil: Bool, presentIsNil: Bool, contains: [Bool]
            enum Keys: String, CodingKey { case a, b }
            init(from decoder: any Decoder) throws {
                let container = try decoder.container(keyedBy: Keys.self)
                missing = try container.decode(Int?.self, forKey: .b)
                present = try container.decode(Int?.self, forKey: .a)
                missingIsNil = try container.decodeNil(forKey: .b)
                presentIsNil = try container.decodeNil(forKey: .a)
                contains = [container.contains(.a), container.contains(.b)]
            }
        }
        let probe = try TOMLDecoder().decode(Probe.self, from: table(["a": .integer(1)]))
        #expect(probe.missing == nil)
        #expect(probe.present == 1)
        #expect(!probe.presentIsNil)
        #expect(probe.missingIsNil)
        #expect(probe.contains == [true, false])
    }

    @Test("allKeys lists the keys in document order")
    func allKeysInOrder() throws {
        struct Keys: Decodable {
            var keys: [String]
            init(from decoder: any Decoder) throws {
                keys = try decoder.container(keyedBy: AnyKey.self).allKeys.map(\.stringValue)
            }
        }
        let names = ["zeta", "alpha", "mid", "beta", "a.b", ""]
        var document = TOMLTable()
        for (index, name) in names.enumerated() { document.setValue(.integer(Int64(index)), forKey: name, at: at(index + 1)) }
        #expect(try TOMLDecoder().decode(Keys.self, from: document).keys == names)
        // allKeys holds only the keys the key type accepts.
        enum Known: String, CodingKey { case mid, alpha }
        struct KnownKeys: Decodable {
            var keys: [Known]
            init(from decoder: any Decoder) throws { keys = try decoder.container(keyedBy: Known.self).allKeys }
        }
        #expect(try TOMLDecoder().decode(KnownKeys.self, from: document).keys == [.alpha, .mid])
    }

    @Test("nested keyed and unkeyed containers")
    func nestedContainers() throws {
        struct Flattened: Decodable {
            var host: String, port: Int, first: String, count: Int?, rest: [String]
            enum Keys: String, CodingKey { case server, names }
            enum ServerKeys: String, CodingKey { case host, port }
            init(from decoder: any Decoder) throws {
                let root = try decoder.container(keyedBy: Keys.self)
                let server = try root.nestedContainer(keyedBy: ServerKeys.self, forKey: .server)
                host = try server.decode(String.self, forKey: .host)
                port = try server.decode(Int.self, forKey: .port)
                var names = try root.nestedUnkeyedContainer(forKey: .names)
                count = names.count
                first = try names.decode(String.self)
                rest = []
                while !names.isAtEnd { rest.append(try names.decode(String.self)) }
                #expect(names.currentIndex == 3)
            }
        }
        let document = table([
            "server": .table(table(["host": .string("h"), "port": .integer(1)])),
            "names": .array([.string("a"), .string("b"), .string("c")]),
        ])
        let flattened = try TOMLDecoder().decode(Flattened.self, from: document)
        #expect(flattened.host == "h" && flattened.port == 1 && flattened.first == "a" && flattened.rest == ["b", "c"])
        #expect(flattened.count == 3)

        var wrong = document
        wrong["names"] = .table(table([:]))
        let error = try decodingError(Flattened.self, from: wrong)
        #expect(error.code == .typeMismatch)
        #expect(error.message == "expected an array, found a table")
        #expect(error.keyPath == [.key("names")])
        wrong = document
        wrong["server"] = nil
        let missing = try decodingError(Flattened.self, from: wrong)
        #expect(missing.code == .keyNotFound)
        #expect(missing.message == "missing key 'server'")
    }

    @Test("unkeyed containers: nested containers, decodeNil, and running off the end")
    func unkeyed() throws {
        struct Pair: Decodable {
            var x: Int, y: Int, labels: [String], nilAtStart: Bool, point: [String: Int]
            enum PointKeys: String, CodingKey { case x }
            init(from decoder: any Decoder) throws {
                var container = try decoder.unkeyedContainer()
                nilAtStart = try container.decodeNil()
                x = try container.decode(Int.self)
                y = try container.decode(Int.self)
                var labels = try container.nestedUnkeyedContainer()
                self.labels = [try labels.decode(String.self)]
                let point = try container.nestedContainer(keyedBy: PointKeys.self)
                self.point = ["x": try point.decode(Int.self, forKey: .x)]
                #expect(container.isAtEnd)
                #expect(throws: DecodingError.self) { _ = try container.decodeNil() }
            }
        }
        struct Document: Decodable { var pair: Pair }
        let elements: [TOMLValue] = [.integer(1), .integer(2), .array([.string("l")]), .table(table(["x": .integer(9)]))]
        let document = try TOMLDecoder().decode(Document.self, from: table(["pair": .array(elements)]))
        #expect(document.pair.x == 1 && document.pair.y == 2 && document.pair.labels == ["l"] && document.pair.point == ["x": 9])
        #expect(!document.pair.nilAtStart)

        let error = try decodingError(Document.self, from: table(line: 6, ["pair": .array([.integer(1)])]))
        #expect(error.code == .valueNotFound)
        #expect(error.message == "expected another element, but the array has only 1")
        #expect(error.keyPath == [.key("pair"), .index(1)])
        #expect(error.position == at(7))
    }

    @Test("a failed decode does not move an unkeyed container on")
    func unkeyedRetry() throws {
        struct Mixed: Decodable {
            var values: [String] = []
            init(from decoder: any Decoder) throws {
                var container = try decoder.unkeyedContainer()
                while !container.isAtEnd {
                    if let int = try? container.decode(Int.self) {
                        values.append("int \(int)")
                    } else {
                        values.append("string \(try container.decode(String.self))")
                    }
                }
            }
        }
        struct Document: Decodable { var mixed: Mixed }
        let document = table(["mixed": .array([.integer(1), .string("two"), .integer(3)])])
        #expect(try TOMLDecoder().decode(Document.self, from: document).mixed.values == ["int 1", "string two", "int 3"])
    }

    @Test("superDecoder(), superDecoder(forKey:) and an unkeyed container's superDecoder()")
    func superDecoders() throws {
        struct Base: Decodable { var id: Int }
        struct Derived: Decodable {
            var base: Base, parent: Base, element: Base, missingIsNil: Bool
            enum Keys: String, CodingKey { case parent, list, missing }
            init(from decoder: any Decoder) throws {
                let container = try decoder.container(keyedBy: Keys.self)
                base = try Base(from: container.superDecoder())
                parent = try Base(from: container.superDecoder(forKey: .parent))
                var list = try container.nestedUnkeyedContainer(forKey: .list)
                element = try Base(from: list.superDecoder())
                #expect(list.isAtEnd)
                missingIsNil = try container.superDecoder(forKey: .missing).singleValueContainer().decodeNil()
                #expect(try container.superDecoder(forKey: .missing).codingPath.map(\.stringValue) == ["missing"])
            }
        }
        let document = table([
            "super": .table(table(["id": .integer(1)])), "parent": .table(table(["id": .integer(2)])),
            "list": .array([.table(table(["id": .integer(3)]))]),
        ])
        let derived = try TOMLDecoder().decode(Derived.self, from: document)
        #expect(derived.base.id == 1 && derived.parent.id == 2 && derived.element.id == 3)
        #expect(derived.missingIsNil)

        // A missing value read through a super decoder is valueNotFound, located at the key.
        struct Strict: Decodable {
            var name: String
            enum Keys: String, CodingKey { case name }
            init(from decoder: any Decoder) throws {
                name = try String(from: decoder.container(keyedBy: Keys.self).superDecoder(forKey: .name))
            }
        }
        let error = try decodingError(Strict.self, from: table([:]))
        #expect(error.code == .valueNotFound)
        #expect(error.message == "missing value, expected a string")
        #expect(error.keyPath == [.key("name")])
    }

    @Test("coding paths seen by init(from:)")
    func codingPaths() throws {
        struct Leaf: Decodable {
            var path: String
            init(from decoder: any Decoder) throws {
                path = decoder.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: "/")
            }
        }
        struct Root: Decodable { var a: [String: [Leaf]] }
        let document = table(["a": .table(table(["b": .array([.integer(0), .integer(1)])]))])
        #expect(try TOMLDecoder().decode(Root.self, from: document).a["b"]?.map(\.path) == ["a/b/[0]", "a/b/[1]"])
    }
}

@Suite("TOMLDecoder: errors")
struct TOMLDecoderErrorTests {
    struct Caps: Decodable { var tokens_per_minute: Int?; var requests_per_minute: Int }
    struct Config: Decodable { var limits: [String: Caps] }

    /// ```
    /// 1 [limits.anthropic]
    /// 2 requests_per_minute = 50
    /// 3
    /// 4 [limits.openai]
    /// 5   tokens_per_minute = "lots"
    /// 6   requests_per_minute = 500
    /// ```
    func limitsDocument(tokens: TOMLValue = .string("lots"), requests: TOMLValue? = .integer(500)) -> TOMLTable {
        var openai = TOMLTable(position: at(4))
        openai.setValue(tokens, forKey: "tokens_per_minute", at: at(5, 3))
        if let requests { openai.setValue(requests, forKey: "requests_per_minute", at: at(6, 3)) }
        var anthropic = TOMLTable(position: at(1))
        anthropic.setValue(.integer(50), forKey: "requests_per_minute", at: at(2))
        var limits = TOMLTable(position: at(1))
        limits.setValue(.table(anthropic), forKey: "anthropic", at: at(1, 2))
        limits.setValue(.table(openai), forKey: "openai", at: at(4, 2))
        var root = TOMLTable()
        root.setValue(.table(limits), forKey: "limits", at: at(1, 2))
        return root
    }

    @Test("typeMismatch: the dotted key path and the value's position")
    func typeMismatch() throws {
        let error = try decodingError(Config.self, from: limitsDocument())
        #expect(error.code == .typeMismatch)
        #expect(error.message == "expected an integer, found a string")
        #expect(error.keyPath == [.key("limits"), .key("openai"), .key("tokens_per_minute")])
        #expect(error.keyPath.dottedKey == "limits.openai.tokens_per_minute")
        #expect(error.position == at(5, 3))
        #expect(error.description == "line 5, column 3: limits.openai.tokens_per_minute: expected an integer, found a string")
    }

    @Test("keyNotFound: names the key, points at the table that lacks it")
    func keyNotFound() throws {
        let error = try decodingError(Config.self, from: limitsDocument(tokens: .integer(1), requests: nil))
        #expect(error.code == .keyNotFound)
        #expect(error.message == "missing key 'requests_per_minute'")
        #expect(error.keyPath.dottedKey == "limits.openai.requests_per_minute")
        #expect(error.position == at(4, 2))
        // At the root, the root's position.
        let root = try decodingError(Config.self, from: table([:]))
        #expect(root.message == "missing key 'limits'")
        #expect(root.keyPath == [.key("limits")])
        #expect(root.position == at(1, 1))
    }

    @Test("arrays of tables: servers[1].port, at the element's key")
    func arrayOfTables() throws {
        struct Server: Decodable { var name: String; var port: UInt16 }
        struct Servers: Decodable { var servers: [Server] }
        // [[servers]] on lines 1 and 4, each followed by name and port.
        func server(_ line: Int, _ name: String, _ port: Int64) -> TOMLValue {
            .table(table(line: line, ["name": .string(name), "port": .integer(port)]))
        }
        var document = TOMLTable()
        document.setValue(.array([server(1, "alpha", 8080), server(4, "beta", 70_000)]), forKey: "servers", at: at(1, 3))
        let error = try decodingError(Servers.self, from: document)
        #expect(error.code == .invalidValue)
        #expect(error.message == "integer 70000 does not fit in UInt16")
        #expect(error.keyPath == [.key("servers"), .index(1), .key("port")])
        #expect(error.keyPath.dottedKey == "servers[1].port")
        #expect(error.position == at(6))

        document.setValue(
            .array([server(1, "alpha", 8080), .table(table(line: 4, ["name": .string("beta")]))]), forKey: "servers", at: at(1, 3))
        let missing = try decodingError(Servers.self, from: document)
        #expect(missing.code == .keyNotFound)
        #expect(missing.keyPath.dottedKey == "servers[1].port")
        #expect(missing.position == at(4))

        document.setValue(.array([server(1, "alpha", 8080), .integer(3)]), forKey: "servers", at: at(1, 3))
        let scalar = try decodingError(Servers.self, from: document)
        #expect(scalar.message == "expected a table, found an integer")
        #expect(scalar.keyPath.dottedKey == "servers[1]")
        #expect(scalar.position == at(1, 3))
    }

    @Test(
        "integer range errors name the value and the type",
        arguments: [
            (TOMLValue.integer(300), "UInt8", "integer 300 does not fit in UInt8"),
            (.integer(-1), "UInt", "integer -1 does not fit in UInt"),
            (.integer(-129), "Int8", "integer -129 does not fit in Int8"),
            (.integer(40_000), "Int16", "integer 40000 does not fit in Int16"),
            (.integer(1 << 31), "Int32", "integer 2147483648 does not fit in Int32"),
            (.integer(-1), "UInt64", "integer -1 does not fit in UInt64"),
            (.integer(-1), "UInt128", "integer -1 does not fit in UInt128"),
            (.integer((1 << 53) + 1), "Double", "integer 9007199254740993 cannot be represented exactly as a Double"),
            (.integer((1 << 24) + 1), "Float", "integer 16777217 cannot be represented exactly as a Float"),
            (.float(1e300), "Float", "float 1e+300 does not fit in Float"),
        ])
    func ranges(value: TOMLValue, type: String, message: String) throws {
        let document = table(line: 2, ["n": value])
        let error: TOMLError =
            switch type {
            case "UInt8": try decodingError([String: UInt8].self, from: document)
            case "UInt": try decodingError([String: UInt].self, from: document)
            case "Int8": try decodingError([String: Int8].self, from: document)
            case "Int16": try decodingError([String: Int16].self, from: document)
            case "Int32": try decodingError([String: Int32].self, from: document)
            case "UInt64": try decodingError([String: UInt64].self, from: document)
            case "UInt128": try decodingError([String: UInt128].self, from: document)
            case "Double": try decodingError([String: Double].self, from: document)
            default: try decodingError([String: Float].self, from: document)
            }
        #expect(error.code == .invalidValue)
        #expect(error.message == message)
        #expect(error.keyPath == [.key("n")])
        #expect(error.position == at(3))
    }

    @Test("integers through every container kind are range-checked")
    func rangesEverywhere() throws {
        struct Keyed: Decodable { var a: UInt8 }
        struct Unkeyed: Decodable { var a: [UInt8] }
        struct Single: Decodable {
            var a: UInt8
            init(from decoder: any Decoder) throws { a = try decoder.singleValueContainer().decode(UInt8.self) }
        }
        struct Wrapped: Decodable { var a: Single }
        #expect(try decodingError(Keyed.self, from: table(["a": .integer(256)])).keyPath == [.key("a")])
        #expect(
            try decodingError(Unkeyed.self, from: table(["a": .array([.integer(1), .integer(256)])])).keyPath == [.key("a"), .index(1)])
        #expect(try decodingError(Wrapped.self, from: table(["a": .integer(256)])).message == "integer 256 does not fit in UInt8")
    }

    @Test("a mismatch at the root has an empty key path and the root's position")
    func rootMismatch() throws {
        let error = try decodingError([Int].self, from: table(["a": .integer(1)]))
        #expect(error.code == .typeMismatch)
        #expect(error.message == "expected an array, found a table")
        #expect(error.keyPath.isEmpty)
        #expect(error.position == at(1, 1))
        #expect(try decodingError(Int.self, from: table([:])).message == "expected an integer, found a table")
    }

    @Test("DecodingErrors thrown by init(from:) become TOMLErrors, with their message")
    func userDecodingErrors() throws {
        struct Window: Decodable {
            var minutes: Int
            enum Keys: String, CodingKey { case minutes }
            init(from decoder: any Decoder) throws {
                let container = try decoder.container(keyedBy: Keys.self)
                minutes = try container.decode(Int.self, forKey: .minutes)
                guard minutes > 0 else {
                    throw DecodingError.dataCorruptedError(
                        forKey: .minutes, in: container, debugDescription: "must be positive, got \(minutes)")
                }
            }
        }
        struct Name: Decodable {
            init(from decoder: any Decoder) throws {
                let container = try decoder.singleValueContainer()
                throw DecodingError.dataCorruptedError(
                    in: container, debugDescription: "'\(try container.decode(String.self))' is reserved")
            }
        }
        struct Document: Decodable { var windows: [Window]; var name: Name? }
        let windows = TOMLValue.array([.table(table(line: 3, ["minutes": .integer(1)])), .table(table(line: 5, ["minutes": .integer(0)]))])
        let error = try decodingError(Document.self, from: table(["windows": windows]))
        #expect(error.code == .invalidValue)
        #expect(error.message == "must be positive, got 0")
        #expect(error.keyPath.dottedKey == "windows[1].minutes")
        #expect(error.position == at(6))

        let named = try decodingError(Document.self, from: table(line: 8, ["windows": .array([]), "name": .string("root")]))
        #expect(named.code == .invalidValue)
        #expect(named.message == "'root' is reserved")
        #expect(named.keyPath == [.key("name")])
        #expect(named.position == at(10))
    }

    @Test("user DecodingErrors of every kind keep their kind")
    func userDecodingErrorKinds() throws {
        struct Thrower: Decodable {
            enum Keys: String, CodingKey { case kind }
            init(from decoder: any Decoder) throws {
                let container = try decoder.container(keyedBy: Keys.self)
                let path = container.codingPath + [Keys.kind]
                switch try container.decode(String.self, forKey: .kind) {
                case "type": throw DecodingError.typeMismatch(Int.self, .init(codingPath: path, debugDescription: "custom type"))
                case "value": throw DecodingError.valueNotFound(Int.self, .init(codingPath: path, debugDescription: ""))
                default:
                    throw DecodingError.keyNotFound(
                        AnyKey(stringValue: "other"), .init(codingPath: container.codingPath, debugDescription: ""))
                }
            }
        }
        struct Document: Decodable { var thrower: Thrower }
        func error(_ kind: String) throws -> TOMLError {
            try decodingError(Document.self, from: table(["thrower": .table(table(line: 1, ["kind": .string(kind)]))]))
        }
        let type = try error("type")
        #expect(type.code == .typeMismatch && type.message == "custom type" && type.keyPath.dottedKey == "thrower.kind")
        let value = try error("value")
        #expect(value.code == .valueNotFound && value.message == "missing value of type Int")
        let key = try error("key")
        #expect(key.code == .keyNotFound && key.message == "missing key 'other'" && key.keyPath.dottedKey == "thrower.other")
    }

    struct ConfigurationProblems: Error, Equatable { var problems: [String] }

    @Test("any other error from init(from:) passes through unchanged")
    func customErrorsPassThrough() throws {
        struct Strict: Decodable {
            init(from decoder: any Decoder) throws { throw ConfigurationProblems(problems: ["a", "b"]) }
        }
        struct Document: Decodable { var nested: [Strict] }
        let document = table(["nested": .array([.table(table([:]))])])
        let error = try #require(throws: ConfigurationProblems.self) { try TOMLDecoder().decode(Document.self, from: document) }
        #expect(error == ConfigurationProblems(problems: ["a", "b"]))

        // A TOMLError from a nested decode is passed through too, not re-located.
        let inner = TOMLError(.invalidValue, "from elsewhere", at: at(99, 9), keyPath: [.key("x")])
        struct Rethrower: Decodable {
            init(from decoder: any Decoder) throws {
                throw decoder.userInfo[CodingUserInfoKey(rawValue: "error")!] as! TOMLError
            }
        }
        var decoder = TOMLDecoder()
        decoder.userInfo[CodingUserInfoKey(rawValue: "error")!] = inner
        #expect(try decodingError(Rethrower.self, from: document, with: decoder) == inner)
    }

    @Test("array elements of the wrong type point at the array's key")
    func arrayElements() throws {
        struct Ports: Decodable { var ports: [Int] }
        let error = try decodingError(Ports.self, from: table(line: 1, ["ports": .array([.integer(80), .string("x")])]))
        #expect(error.message == "expected an integer, found a string")
        #expect(error.keyPath.dottedKey == "ports[1]")
        #expect(error.position == at(2))
        let notArray = try decodingError(Ports.self, from: table(["ports": .integer(80)]))
        #expect(notArray.message == "expected an array, found an integer")
    }

    @Test(
        "messages name every TOML type with its article",
        arguments: [
            (TOMLValue.string("s"), "a string"), (.integer(1), "an integer"), (.float(1), "a float"), (.boolean(true), "a boolean"),
            (.array([]), "an array"), (.table(TOMLTable()), "a table"),
            (.localDate(.init(year: 2000, month: 1, day: 1)), "a local date"),
            (.localTime(.init(hour: 1, minute: 0, second: 0)), "a local time"),
            (
                .localDateTime(.init(date: .init(year: 2000, month: 1, day: 1), time: .init(hour: 1, minute: 0, second: 0))),
                "a local date-time"
            ),
            (
                .offsetDateTime(
                    .init(
                        local: .init(date: .init(year: 2000, month: 1, day: 1), time: .init(hour: 1, minute: 0, second: 0)),
                        offsetMinutes: 0)), "an offset date-time"
            ),
        ])
    func articles(value: TOMLValue, name: String) throws {
        struct Flag: Decodable { var flag: Bool }
        struct Text: Decodable { var flag: String }
        let isBoolean = value == .boolean(true)
        let document = table(["flag": value])
        let error = try isBoolean ? decodingError(Text.self, from: document) : decodingError(Flag.self, from: document)
        #expect(error.code == .typeMismatch)
        #expect(error.message == "expected \(isBoolean ? "a string" : "a boolean"), found \(name)")
    }
}

@Suite("TOMLDecoder: convertFromSnakeCase")
struct TOMLDecoderSnakeCaseTests {
    struct Caps: Decodable, Equatable { var requestsPerMinute: Int; var tokensPerMinute: Int?; var maxConcurrent: Int? }
    struct Config: Decodable { var limits: [String: Caps]; var defaultProvider: String? }

    var snakeCase: TOMLDecoder {
        var decoder = TOMLDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return decoder
    }

    func document(openai: KeyValuePairs<String, TOMLValue>) -> TOMLTable {
        var limits = TOMLTable(position: at(3))
        limits.setValue(.table(table(line: 3, openai)), forKey: "azure_openai", at: at(3, 8))
        var root = table(["default_provider": .string("azure_openai")])
        root.setValue(.table(limits), forKey: "limits", at: at(3, 2))
        return root
    }

    @Test("snake_case keys match camelCase properties; dictionary keys stay as written")
    func converts() throws {
        let config = try snakeCase.decode(
            Config.self, from: document(openai: ["requests_per_minute": .integer(5), "max_concurrent": .integer(2)])
        )
        #expect(config.defaultProvider == "azure_openai")
        #expect(config.limits == ["azure_openai": Caps(requestsPerMinute: 5, maxConcurrent: 2)])
        // Without the strategy the same document lacks `requestsPerMinute`.
        let error = try decodingError(Config.self, from: document(openai: ["requests_per_minute": .integer(5)]))
        #expect(error.message == "missing key 'requestsPerMinute'")
    }

    @Test("errors spell keys as the document does")
    func errorPaths() throws {
        let mismatch = try decodingError(
            Config.self, from: document(openai: ["requests_per_minute": .integer(5), "tokens_per_minute": .string("x")]), with: snakeCase
        )
        #expect(mismatch.keyPath.dottedKey == "limits.azure_openai.tokens_per_minute")
        #expect(mismatch.position == at(5))
        let missing = try decodingError(Config.self, from: document(openai: ["tokens_per_minute": .integer(1)]), with: snakeCase)
        #expect(missing.code == .keyNotFound)
        #expect(missing.message == "missing key 'requests_per_minute'")
        #expect(missing.keyPath.dottedKey == "limits.azure_openai.requests_per_minute")
        #expect(missing.position == at(3, 8))
    }

    @Test("allKeys and contains use the converted keys")
    func allKeys() throws {
        struct Probe: Decodable {
            var keys: [String], containsCamel: Bool, containsSnake: Bool
            init(from decoder: any Decoder) throws {
                let container = try decoder.container(keyedBy: AnyKey.self)
                keys = container.allKeys.map(\.stringValue)
                containsCamel = container.contains(AnyKey(stringValue: "requestsPerMinute"))
                containsSnake = container.contains(AnyKey(stringValue: "requests_per_minute"))
            }
        }
        let probe = try snakeCase.decode(Probe.self, from: table(["requests_per_minute": .integer(1), "plain": .integer(2)]))
        #expect(probe.keys == ["requestsPerMinute", "plain"])
        #expect(probe.containsCamel && !probe.containsSnake)
    }

    @Test("the conversion is JSONDecoder's, key for key")
    func sameAsJSONDecoder() throws {
        let keys = [
            "snake_case", "_leading", "trailing_", "__both__", "double__underscore", "alreadyCamel", "URL_path",
            "foo_v2api", "a", "_", "___", "ÜBER_straße", "one_two_three", "with-dash_and_more", "x_1_y", "",
        ]
        struct Keys: Decodable {
            var keys: [String]
            init(from decoder: any Decoder) throws {
                keys = try decoder.container(keyedBy: AnyKey.self).allKeys.map(\.stringValue)
            }
        }
        var document = TOMLTable()
        for key in keys { document[key] = .integer(1) }
        let toml = try snakeCase.decode(Keys.self, from: document).keys
        let json = JSONDecoder()
        json.keyDecodingStrategy = .convertFromSnakeCase
        let object = "{" + keys.map { "\"\($0)\": 1" }.joined(separator: ", ") + "}"
        let expected = try json.decode(Keys.self, from: Data(object.utf8)).keys
        #expect(Set(toml) == Set(expected))
        #expect(toml.count == keys.count)
    }

    @Test("unusual spellings find their properties as JSONDecoder finds them")
    func unusualSpellings() throws {
        struct Odd: Decodable, Equatable {
            var urlPath: Int, fooV2Api: Int, _leading: Int, trailing_: Int, doubleUnderscore: Int, überStraße: Int
            var plain: Int, alreadyCamel: Int, x1Y: Int, absent: Int?
        }
        let keys = [
            "URL_path", "foo_v2api", "_leading", "trailing_", "double__underscore", "ÜBER_straße", "plain", "alreadyCamel", "x_1_y",
        ]
        var document = TOMLTable()
        for (index, key) in keys.enumerated() { document[key] = .integer(Int64(index)) }
        let toml = try snakeCase.decode(Odd.self, from: document)
        let json = JSONDecoder()
        json.keyDecodingStrategy = .convertFromSnakeCase
        let object = "{" + keys.enumerated().map { "\"\($1)\": \($0)" }.joined(separator: ", ") + "}"
        #expect(toml == (try json.decode(Odd.self, from: Data(object.utf8))))
        #expect(toml.urlPath == 0 && toml.überStraße == 5 && toml.x1Y == 8 && toml.absent == nil)
    }

    @Test("a key with underscores inside is not a coding key's spelling, as in JSONDecoder")
    func snakeCodingKeysDoNotMatch() throws {
        struct Explicit: Decodable {
            var rpm: Int?
            enum CodingKeys: String, CodingKey { case rpm = "requests_per_minute" }
        }
        #expect(try snakeCase.decode(Explicit.self, from: table(["requests_per_minute": .integer(1)])).rpm == nil)
        #expect(try TOMLDecoder().decode(Explicit.self, from: table(["requests_per_minute": .integer(1)])).rpm == 1)
    }
}

@Suite("TOMLDecoder: from TOML text")
struct TOMLDecoderTextTests {
    struct Caps: Decodable, Equatable {
        var requestsPerMinute: Int?
        var tokensPerMinute: Int?
        var ratio: Double?
    }
    struct Server: Decodable, Equatable {
        var name: String
        var port: UInt16
        var tags: [String]?
    }
    struct Configuration: Decodable {
        var defaultProvider: String
        var started: Date
        var window: TOMLLocalTime
        var limits: [String: Caps]
        var servers: [Server]
        var plugin: TOMLTable?
    }

    static let document = """
        # PolicyGate configuration
        default_provider = "openai"
        started = 1979-05-27T00:32:00-07:00
        window = 07:30:00

        [limits.openai]
          requests_per_minute = 500
          tokens_per_minute = 90_000
          ratio = 1

        [limits."azure.eu"]
        requests_per_minute = 60

        [[servers]]
        name = "alpha"
        port = 8080

        [[servers]]
        name = "beta"
        port = 8081
        tags = ["x", "y"]

        [plugin]
        depth = 3
        """

    var decoder: TOMLDecoder {
        var decoder = TOMLDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return decoder
    }

    @Test("a whole configuration, from a String and from Data")
    func wholeDocument() throws {
        for configuration in [
            try decoder.decode(Configuration.self, from: Self.document),
            try decoder.decode(Configuration.self, from: Data(Self.document.utf8)),
        ] {
            #expect(configuration.defaultProvider == "openai")
            #expect(configuration.started == Date(timeIntervalSince1970: 296_638_320))
            #expect(configuration.window == TOMLLocalTime(hour: 7, minute: 30, second: 0))
            #expect(
                configuration.limits == [
                    "openai": Caps(requestsPerMinute: 500, tokensPerMinute: 90_000, ratio: 1),
                    "azure.eu": Caps(requestsPerMinute: 60),
                ])
            #expect(configuration.servers == [Server(name: "alpha", port: 8080), Server(name: "beta", port: 8081, tags: ["x", "y"])])
            #expect(configuration.plugin?["depth"] == .integer(3))
            #expect(configuration.plugin?.position == TOMLPosition(line: 23, column: 1))
        }
    }

    func failure(replacing old: String, with new: String) throws -> TOMLError {
        let text = Self.document.replacing(old, with: new)
        #expect(text != Self.document)
        return try #require(throws: TOMLError.self) { try decoder.decode(Configuration.self, from: text) }
    }

    @Test("a type mismatch: code, dotted key, line and column of the key")
    func typeMismatch() throws {
        let error = try failure(replacing: "tokens_per_minute = 90_000", with: #"tokens_per_minute = "lots""#)
        #expect(error.code == .typeMismatch)
        #expect(error.message == "expected an integer, found a string")
        #expect(error.keyPath.dottedKey == "limits.openai.tokens_per_minute")
        #expect(error.position == TOMLPosition(line: 8, column: 3))
        #expect(error.description == "line 8, column 3: limits.openai.tokens_per_minute: expected an integer, found a string")
    }

    @Test("an integer out of range in an array of tables: servers[1].port")
    func outOfRange() throws {
        let error = try failure(replacing: "port = 8081", with: "port = 70_000")
        #expect(error.code == .invalidValue)
        #expect(error.message == "integer 70000 does not fit in UInt16")
        #expect(error.keyPath.dottedKey == "servers[1].port")
        #expect(error.position == TOMLPosition(line: 20, column: 1))
    }

    @Test("a missing key: named in the document's spelling, at its table's header")
    func missingKey() throws {
        let error = try failure(replacing: "name = \"beta\"\n", with: "")
        #expect(error.code == .keyNotFound)
        #expect(error.message == "missing key 'name'")
        #expect(error.keyPath.dottedKey == "servers[1].name")
        #expect(error.position == TOMLPosition(line: 18, column: 1))

        let provider = try failure(replacing: "default_provider = \"openai\"\n", with: "")
        #expect(provider.message == "missing key 'default_provider'")
        #expect(provider.keyPath.dottedKey == "default_provider")
        #expect(provider.position == TOMLPosition(line: 1, column: 1))
    }

    @Test("a quoted key in the path, and a local date-time where a Date is needed")
    func quotedKeysAndDates() throws {
        let quoted = try failure(replacing: "requests_per_minute = 60", with: "requests_per_minute = 6.5")
        #expect(quoted.keyPath.dottedKey == #"limits."azure.eu".requests_per_minute"#)
        #expect(quoted.message == "expected an integer, found a float")
        #expect(quoted.position == TOMLPosition(line: 12, column: 1))

        let date = try failure(replacing: "1979-05-27T00:32:00-07:00", with: "1979-05-27T00:32:00")
        #expect(date.code == .typeMismatch)
        #expect(date.message.hasPrefix("expected an offset date-time, found a local date-time; "))
        #expect(date.position == TOMLPosition(line: 3, column: 1))
    }

    @Test("syntax errors and invalid UTF-8 arrive as the parser's TOMLError")
    func parserErrors() throws {
        let syntax = try #require(throws: TOMLError.self) { try decoder.decode(Configuration.self, from: "a = ") }
        #expect(syntax.code == .syntax)
        var bytes = Data("name = \"".utf8)
        bytes.append(contentsOf: [0xC3, 0x28])
        bytes.append(contentsOf: Data("\"\n".utf8))
        let utf8 = try #require(throws: TOMLError.self) { try decoder.decode([String: String].self, from: bytes) }
        #expect(utf8.code == .invalidUTF8)
    }

    @Test("a decoding error from user code is located in the text")
    func userErrorsLocated() throws {
        struct Port: Decodable {
            var value: Int
            init(from decoder: any Decoder) throws {
                let container = try decoder.singleValueContainer()
                value = try container.decode(Int.self)
                guard value >= 1024 else {
                    throw DecodingError.dataCorruptedError(in: container, debugDescription: "port \(value) is privileged")
                }
            }
        }
        struct Listener: Decodable { var port: Port }
        struct Document: Decodable { var listeners: [String: Listener] }
        let text = """
            [listeners.public]
            port = 8443

            [listeners.admin]
                port = 22
            """
        let error = try #require(throws: TOMLError.self) { try TOMLDecoder().decode(Document.self, from: text) }
        #expect(error.code == .invalidValue)
        #expect(error.message == "port 22 is privileged")
        #expect(error.keyPath.dottedKey == "listeners.admin.port")
        #expect(error.position == TOMLPosition(line: 5, column: 5))
    }
}
