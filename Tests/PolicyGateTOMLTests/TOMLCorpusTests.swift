import Foundation
import PolicyGateTOML
import Testing

/// The official toml-test corpus (github.com/toml-lang/toml-test, data only), which lives
/// beside the package root in `shared/toml-test`; `TOML_TEST_DIR` overrides the location.
enum TOMLTestCorpus {
    /// The corpus directory (the one holding `tests/files-toml-1.0.0`), or nil if absent.
    static let directory: URL? = {
        let candidate: URL
        if let override = ProcessInfo.processInfo.environment["TOML_TEST_DIR"], !override.isEmpty {
            candidate = URL(fileURLWithPath: override)
        } else {
            // <root>/Tests/PolicyGateTOMLTests/TOMLCorpusTests.swift -> <root>/../shared/toml-test
            candidate = URL(fileURLWithPath: #filePath)
                .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
                .deletingLastPathComponent()
                .appendingPathComponent("shared/toml-test")
        }
        let list = candidate.appendingPathComponent("tests/files-toml-1.0.0")
        return FileManager.default.fileExists(atPath: list.path) ? candidate : nil
    }()
}

/// A value of the corpus's tagged JSON, as `JSONSerialization` reads it, in a form that
/// compares as the corpus README asks: integers and floats by value (NaN equal to NaN),
/// date-times by their fields with `Z` equal to `+00:00` and fractional seconds by value.
indirect enum TaggedValue: Equatable, CustomStringConvertible {
    case table([String: TaggedValue])
    case array([TaggedValue])
    case string(String)
    case integer(Int64)
    /// The bit pattern of a canonical NaN for any NaN, so that equality holds.
    case float(Double)
    case bool(Bool)
    /// Fields of a date-time; `offsetMinutes` is nil for the local kinds.
    case dateTime(kind: String, fields: [Int], offsetMinutes: Int?)

    var description: String {
        switch self {
        case .table(let table): "{" + table.keys.sorted().map { "\($0): \(table[$0]!)" }.joined(separator: ", ") + "}"
        case .array(let array): "[" + array.map(\.description).joined(separator: ", ") + "]"
        case .string(let string): "\"\(string)\""
        case .integer(let integer): "\(integer)"
        case .float(let float): "\(float)"
        case .bool(let bool): "\(bool)"
        case .dateTime(let kind, let fields, let offset): "\(kind)\(fields)\(offset.map { "@\($0)" } ?? "")"
        }
    }

    static func == (lhs: TaggedValue, rhs: TaggedValue) -> Bool {
        switch (lhs, rhs) {
        case (.table(let a), .table(let b)): a == b
        case (.array(let a), .array(let b)): a == b
        case (.string(let a), .string(let b)): a == b
        case (.integer(let a), .integer(let b)): a == b
        case (.float(let a), .float(let b)): a == b || (a.isNaN && b.isNaN)
        case (.bool(let a), .bool(let b)): a == b
        case (.dateTime(let k1, let f1, let o1), .dateTime(let k2, let f2, let o2)): k1 == k2 && f1 == f2 && o1 == o2
        default: false
        }
    }

    /// Reads a `JSONSerialization` result; nil (with `problem` set) if it is not tagged JSON.
    init?(json: Any, problem: inout String) {
        if let array = json as? [Any] {
            var elements: [TaggedValue] = []
            for element in array {
                guard let value = TaggedValue(json: element, problem: &problem) else { return nil }
                elements.append(value)
            }
            self = .array(elements)
            return
        }
        guard let object = json as? [String: Any] else {
            problem = "not an object or array: \(json)"
            return nil
        }
        // A tagged scalar has exactly string-valued "type" and "value"; anything else is a table
        // (a table may well have keys named type and value, with table values).
        if object.count == 2, let type = object["type"] as? String, let value = object["value"] as? String {
            guard let scalar = TaggedValue(type: type, value: value) else {
                problem = "cannot read \(type) '\(value)'"
                return nil
            }
            self = scalar
            return
        }
        var table: [String: TaggedValue] = [:]
        for (key, element) in object {
            guard let value = TaggedValue(json: element, problem: &problem) else { return nil }
            table[key] = value
        }
        self = .table(table)
    }

    /// A tagged scalar from its type and spelling.
    init?(type: String, value: String) {
        switch type {
        case "string":
            self = .string(value)
        case "integer":
            guard let integer = Int64(value) else { return nil }
            self = .integer(integer)
        case "float":
            switch value.lowercased() {
            case "nan", "+nan", "-nan": self = .float(.nan)
            case "inf", "+inf": self = .float(.infinity)
            case "-inf": self = .float(-.infinity)
            default:
                guard let float = Double(value) else { return nil }
                self = .float(float)
            }
        case "bool":
            guard value == "true" || value == "false" else { return nil }
            self = .bool(value == "true")
        case "datetime", "datetime-local", "date-local", "time-local":
            guard let parsed = TaggedValue.parseRFC3339(value, kind: type) else { return nil }
            self = parsed
        default:
            return nil
        }
    }

    /// An RFC 3339 date, time, local date-time or offset date-time, read independently of the
    /// parser under test: fields [year, month, day] and/or [hour, minute, second, nanosecond].
    static func parseRFC3339(_ text: String, kind: String) -> TaggedValue? {
        let scalars = Array(text.unicodeScalars)
        var index = 0
        func number(_ digits: Int) -> Int? {
            guard index + digits <= scalars.count else { return nil }
            var value = 0
            for scalar in scalars[index..<index + digits] {
                guard let digit = Int(String(scalar)) else { return nil }
                value = value * 10 + digit
            }
            index += digits
            return value
        }
        func expect(_ character: Unicode.Scalar) -> Bool {
            guard index < scalars.count, scalars[index] == character else { return false }
            index += 1
            return true
        }
        var fields: [Int] = []
        if kind != "time-local" {
            guard let year = number(4), expect("-"), let month = number(2), expect("-"), let day = number(2) else { return nil }
            fields += [year, month, day]
            if kind != "date-local" {
                guard index < scalars.count, "Tt ".unicodeScalars.contains(scalars[index]) else { return nil }
                index += 1
            }
        }
        if kind != "date-local" {
            guard let hour = number(2), expect(":"), let minute = number(2), expect(":"), let second = number(2) else { return nil }
            var nanosecond = 0
            if expect(".") {
                var digits = 0
                while index < scalars.count, let digit = Int(String(scalars[index])) {
                    if digits < 9 { nanosecond = nanosecond * 10 + digit }
                    digits += 1
                    index += 1
                }
                guard digits > 0 else { return nil }
                for _ in digits..<max(digits, 9) { nanosecond *= 10 }
            }
            fields += [hour, minute, second, nanosecond]
        }
        var offset: Int?
        if kind == "datetime" {
            if expect("Z") || expect("z") {
                offset = 0
            } else {
                let negative = index < scalars.count && scalars[index] == "-"
                guard expect("+") || expect("-"), let hours = number(2), expect(":"), let minutes = number(2) else { return nil }
                offset = (hours * 60 + minutes) * (negative ? -1 : 1)
            }
        }
        guard index == scalars.count else { return nil }
        return .dateTime(kind: kind, fields: fields, offsetMinutes: offset)
    }

    /// A parsed value, converted without going through the tagged JSON writer.
    init(_ value: TOMLValue) {
        switch value {
        case .string(let string): self = .string(string)
        case .integer(let integer): self = .integer(integer)
        case .float(let float): self = .float(float)
        case .boolean(let bool): self = .bool(bool)
        case .offsetDateTime(let dateTime):
            self = .dateTime(kind: "datetime", fields: TaggedValue.fields(dateTime.local), offsetMinutes: dateTime.offsetMinutes)
        case .localDateTime(let dateTime):
            self = .dateTime(kind: "datetime-local", fields: TaggedValue.fields(dateTime), offsetMinutes: nil)
        case .localDate(let date):
            self = .dateTime(kind: "date-local", fields: [date.year, date.month, date.day], offsetMinutes: nil)
        case .localTime(let time):
            self = .dateTime(kind: "time-local", fields: [time.hour, time.minute, time.second, time.nanosecond], offsetMinutes: nil)
        case .array(let elements): self = .array(elements.map(TaggedValue.init))
        case .table(let table): self = TaggedValue(table)
        }
    }

    init(_ table: TOMLTable) {
        var values: [String: TaggedValue] = [:]
        for key in table.keys {
            if let value = table[key] { values[key] = TaggedValue(value) }
        }
        self = .table(values)
    }

    private static func fields(_ dateTime: TOMLLocalDateTime) -> [Int] {
        let date = dateTime.date, time = dateTime.time
        return [date.year, date.month, date.day, time.hour, time.minute, time.second, time.nanosecond]
    }
}

@Suite("toml-test corpus")
struct TOMLCorpusTests {
    /// Every TOML 1.0.0 case of the corpus: each valid document must parse to its expected
    /// value (and the tagged JSON writer must reproduce that value), each invalid one must be
    /// rejected with a positioned error. No case is skipped.
    @Test(
        "toml-test 1.0.0: all valid cases decode to the expected JSON, all invalid ones are rejected",
        .enabled(
            if: TOMLTestCorpus.directory != nil, "toml-test corpus not found at ../shared/toml-test beside the package; set TOML_TEST_DIR")
    )
    func corpus() throws {
        let directory = try #require(TOMLTestCorpus.directory).appendingPathComponent("tests")
        let list = try String(contentsOf: directory.appendingPathComponent("files-toml-1.0.0"), encoding: .utf8)
        let cases = list.split(whereSeparator: \.isNewline).map(String.init).filter { $0.hasSuffix(".toml") }
        var passed = 0
        var failures: [String] = []
        var validCount = 0
        var invalidCount = 0
        for name in cases {
            let bytes = try Data(contentsOf: directory.appendingPathComponent(name))
            if name.hasPrefix("valid/") {
                validCount += 1
                if let problem = try checkValid(name: name, bytes: bytes, directory: directory) {
                    failures.append("\(name): \(problem)")
                } else {
                    passed += 1
                }
            } else if name.hasPrefix("invalid/") {
                invalidCount += 1
                do {
                    let table = try TOMLTable(parsingUTF8: bytes)
                    failures.append("\(name): accepted, parsed as \(table)")
                } catch {
                    if error.position == nil {
                        failures.append("\(name): rejected without a position: \(error)")
                    } else {
                        passed += 1
                    }
                }
            }
        }
        print("toml-test 1.0.0: \(passed) passed, \(failures.count) failed (\(validCount) valid, \(invalidCount) invalid cases)")
        for failure in failures { print("  FAILED \(failure)") }
        #expect(validCount == 210 && invalidCount == 499, "the case list changed: \(validCount) valid, \(invalidCount) invalid")
        #expect(failures.isEmpty, "\(failures.count) failed: \(failures.joined(separator: "\n"))")
    }

    /// Nil if the valid case passes, else what is wrong.
    private func checkValid(name: String, bytes: Data, directory: URL) throws -> String? {
        let jsonURL = directory.appendingPathComponent(String(name.dropLast(".toml".count)) + ".json")
        var problem = ""
        guard let expected = TaggedValue(json: try JSONSerialization.jsonObject(with: Data(contentsOf: jsonURL)), problem: &problem) else {
            return "unreadable expected JSON: \(problem)"
        }
        let table: TOMLTable
        do {
            table = try TOMLTable(parsingUTF8: bytes)
        } catch {
            return "rejected: \(error)"
        }
        let parsed = TaggedValue(table)
        guard parsed == expected else { return "parsed \(parsed), expected \(expected)" }
        // The writer, read back by Foundation, must give the same value.
        let written = table.taggedJSON
        guard let json = try? JSONSerialization.jsonObject(with: Data(written.utf8)) else {
            return "the tagged JSON writer produced invalid JSON: \(written)"
        }
        guard let reread = TaggedValue(json: json, problem: &problem) else {
            return "the tagged JSON writer's output is not tagged JSON (\(problem)): \(written)"
        }
        guard reread == expected else { return "the tagged JSON writer wrote \(written), expected \(expected)" }
        return nil
    }
}
