import Foundation
import PolicyGate

/// Reads a recorded trace: JSON Lines, one call per line.
///
/// ```json
/// {"at": 0.25, "provider": "openai", "scope": "user:ada", "estimated_tokens": 1200, "actual_tokens": 950, "duration": 3.1}
/// {"at": "2026-01-05T09:00:01.5Z", "provider": "openai", "scope": "global", "estimated_tokens": 800, "actual_tokens": 640, "duration": 1.2, "max_wait": 30, "cancel_after": 10}
/// ```
///
/// | field | | meaning |
/// |---|---|---|
/// | `at` | required | seconds from the start (a number ≥ 0), or an ISO 8601 instant with its offset |
/// | `provider` | required | the provider name the configuration's limits are under |
/// | `scope` | optional | `global` (the default), `user:<id>`, `org:<id>`, `project:<id>`, `<kind>:<id>` |
/// | `estimated_tokens` | required¹ | the pre-flight estimate, a whole number ≥ 0 |
/// | `actual_tokens` | required¹ | what the provider reported, committed when the call completes |
/// | `estimated_input_tokens`, `estimated_output_tokens` | optional, together | the estimate in parts: the call acquires with both |
/// | `actual_input_tokens`, `actual_output_tokens` | optional, together | the usage in parts: the call commits both |
/// | `actual_cache_read_tokens` | optional, with the actual parts | input read from the prompt cache (0 by default) |
/// | `duration` | required | seconds the provider call took |
/// | `max_wait` | optional | seconds the caller waits at most for admission (`null`: no limit) |
/// | `cancel_after` | optional | seconds after `at` at which the caller gives up (`null`: never) |
/// | `priority` | optional | `"interactive"` (the default) or `"batch"`: the call's class (``PolicyPriority``) |
/// | `tier` | optional | the tier the scope is in (``PolicyKey/tier``), one of the provider's `tiers` (`null`: none) |
///
/// ¹ `estimated_tokens` may be left out when both estimated parts are given, and `actual_tokens`
/// when both actual parts are; given as well, each must equal the sum of its parts (for
/// `actual_tokens`: input, output and cache reads, like OpenAI's `total_tokens`). Without parts, a
/// call acquires and commits its total, which the gate counts in full as input and as output.
///
/// ISO 8601 instants are taken relative to the start date given to the reader, or else to the
/// earliest instant in the trace (which then becomes the simulation's start date). Lines may come
/// in any order; blank lines are skipped; other fields (`id`, `model`…) are ignored, except
/// near-misses of the known ones (`max_wiat`, `estimatedTokens`), which are errors. Every error
/// names its line and field.
package enum TraceReader {
    /// The fields every line must have (`estimated_tokens` and `actual_tokens` may be given
    /// as their parts instead).
    package static let requiredFields = ["at", "provider", "estimated_tokens", "actual_tokens", "duration"]
    /// The fields a line may have.
    package static let optionalFields = [
        "scope", "max_wait", "cancel_after", "estimated_input_tokens", "estimated_output_tokens", "actual_input_tokens",
        "actual_output_tokens", "actual_cache_read_tokens", "priority", "tier",
    ]
    /// The largest number of seconds accepted for `at` and the durations (about 31 years).
    static let maximumSeconds = 1e9

    /// Reads the calls of a trace.
    /// - Parameters:
    ///   - text: The whole trace.
    ///   - startDate: The wall-clock date of time zero, against which ISO 8601 `at` values are
    ///     read; `nil` takes the earliest of them.
    /// - Throws: ``SimulationError`` naming the first bad line and field.
    package static func read(_ text: String, startDate: Date? = nil) throws(SimulationError) -> [SimulatedCall] {
        try readTrace(text, startDate: startDate).calls
    }

    /// Reads the calls of a trace and the date its time zero stands for.
    /// - Throws: ``SimulationError`` naming the first bad line and field.
    package static func readTrace(_ text: String, startDate: Date? = nil) throws(SimulationError) -> SimulatedTrace {
        var text = text
        let result: Result<SimulatedTrace, SimulationError> = text.withUTF8 { bytes in
            do throws(SimulationError) {
                return .success(try read(bytes, startDate: startDate))
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    /// A call whose `at` may still be an instant, resolved once the earliest one is known.
    private struct Pending {
        var call: SimulatedCall
        var date: Date?
        var line: Int
    }

    private static func read(_ bytes: UnsafeBufferPointer<UInt8>, startDate: Date?) throws(SimulationError) -> SimulatedTrace {
        var pending: [Pending] = []
        var earliest: Date?
        var lineNumber = 0
        var start = 0
        while start < bytes.count {
            var end = start
            while end < bytes.count && bytes[end] != UInt8(ascii: "\n") { end += 1 }
            lineNumber += 1
            let line = UnsafeBufferPointer(rebasing: bytes[start..<end])
            start = end + 1
            guard line.contains(where: { !JSONLineParser.isSpace($0) }) else { continue }
            var parser = JSONLineParser(line, lineNumber: lineNumber)
            let fields = try parser.parseObject()
            let entry = try call(from: fields, line: lineNumber)
            if let date = entry.date, earliest.map({ date < $0 }) ?? true { earliest = date }
            pending.append(entry)
        }
        let origin = startDate ?? earliest
        var calls: [SimulatedCall] = []
        calls.reserveCapacity(pending.count)
        for entry in pending {
            var call = entry.call
            if let date = entry.date, let origin {
                let seconds = date.timeIntervalSince(origin)
                guard seconds >= 0 else {
                    throw SimulationError(
                        line: entry.line, field: "at",
                        "\(Values.iso8601(date)) is \(describe(seconds: -seconds)) before the simulation's start (\(Values.iso8601(origin)))"
                    )
                }
                guard seconds <= maximumSeconds else {
                    throw SimulationError(line: entry.line, field: "at", "more than \(Int(maximumSeconds)) s after the simulation's start")
                }
                call.at = duration(seconds: seconds)
            }
            calls.append(call)
        }
        return SimulatedTrace(calls: calls, startDate: origin)
    }

    private static func call(from fields: [(key: String, value: JSONLineValue, column: Int)], line: Int) throws(SimulationError) -> Pending
    {
        var values: [String: JSONLineValue] = [:]
        for (key, value, column) in fields {
            guard values.updateValue(value, forKey: key) == nil else {
                throw SimulationError(line: line, field: key, "appears twice (column \(column))")
            }
            if !requiredFields.contains(key) && !optionalFields.contains(key), let known = nearMiss(key) {
                throw SimulationError(line: line, "unknown field '\(key)'; did you mean '\(known)'?")
            }
        }
        // A total may be left out when both of its parts are given.
        let partsOf = [
            "estimated_tokens": ("estimated_input_tokens", "estimated_output_tokens"),
            "actual_tokens": ("actual_input_tokens", "actual_output_tokens"),
        ]
        for field in requiredFields where values[field] == nil {
            if let parts = partsOf[field], values[parts.0] != nil || values[parts.1] != nil { continue }
            throw SimulationError(line: line, field: field, "missing (each line needs \(requiredFields.joined(separator: ", ")))")
        }
        func seconds(_ field: String) throws(SimulationError) -> Duration? {
            switch values[field] {
            case nil, .null?: return nil
            case .number(let number)?:
                guard number.double >= 0, number.double <= maximumSeconds else {
                    throw SimulationError(line: line, field: field, "expected seconds in 0...\(Int(maximumSeconds)), got \(number.text)")
                }
                return duration(seconds: number.double)
            case let other?:
                throw SimulationError(line: line, field: field, "expected a number of seconds, got \(other.kind)")
            }
        }
        func tokens(_ field: String) throws(SimulationError) -> Int {
            guard case .number(let number)? = values[field] else {
                throw SimulationError(line: line, field: field, "expected a whole number of tokens, got \(values[field]!.kind)")
            }
            guard let count = number.integer, count >= 0, count <= PolicyLimits.maximumTokenCount else {
                throw SimulationError(
                    line: line, field: field, "expected a whole number in 0...\(PolicyLimits.maximumTokenCount), got \(number.text)")
            }
            return count
        }
        guard case .string(let provider)? = values["provider"], !provider.isEmpty else {
            let got = values["provider"].map { if case .string = $0 { "an empty string" } else { $0.kind } } ?? ""
            throw SimulationError(line: line, field: "provider", "expected a provider name, got \(got)")
        }
        var scope = PolicyScope.global
        var parents: [PolicyScope] = []
        switch values["scope"] {
        case nil, .null?: break
        case .string(let text)?:
            // A path names a scope inside its parents, for nested limits: `org:acme/user:ada`.
            let path = text.split(separator: "/", omittingEmptySubsequences: false).map { PolicyScope(simulationText: String($0)) }
            guard let last = path.last, let parsed = last, path.allSatisfy({ $0 != nil }) else {
                throw SimulationError(
                    line: line, field: "scope",
                    "expected 'global', '<kind>:<id>' (user:…, org:…, project:…) or a path such as 'org:acme/user:ada', got '\(text)'")
            }
            scope = parsed
            parents = path.dropLast().compactMap { $0 }
        case let other?:
            throw SimulationError(line: line, field: "scope", "expected a string such as 'user:ada', got \(other.kind)")
        }
        var at = Duration.zero
        var date: Date?
        switch values["at"]! {
        case .number:
            at = try seconds("at")!
        case .string(let text):
            guard text != "now", let instant = Values.parseInstant(text) else {
                throw SimulationError(
                    line: line, field: "at",
                    "expected seconds from the start or an ISO 8601 instant with its offset (2026-01-05T09:00:00Z), got '\(text)'")
            }
            date = instant
        case let other:
            throw SimulationError(line: line, field: "at", "expected seconds from the start or an ISO 8601 instant, got \(other.kind)")
        }
        guard let duration = try seconds("duration") else {
            throw SimulationError(line: line, field: "duration", "expected a number of seconds, got null")
        }
        /// The parts `input` and `output` (and `cacheReads`), which come together, and the total
        /// `field`, which must be their sum when it is given too.
        func parts(_ total: String, _ input: String, _ output: String, cacheReads: String?) throws(SimulationError)
            -> (total: Int, parts: SimulatedTokenParts?)
        {
            guard values[input] != nil || values[output] != nil else {
                if let cacheReads, values[cacheReads] != nil {
                    throw SimulationError(line: line, field: cacheReads, "needs \(input) and \(output) beside it")
                }
                return (try tokens(total), nil)
            }
            guard values[input] != nil, values[output] != nil else {
                throw SimulationError(
                    line: line, field: values[input] == nil ? input : output, "missing (\(input) and \(output) come together)")
            }
            var reads = 0
            if let cacheReads, values[cacheReads] != nil { reads = try tokens(cacheReads) }
            let split = SimulatedTokenParts(input: try tokens(input), output: try tokens(output), cacheReads: reads)
            guard values[total] != nil else { return (split.total, split) }
            let given = try tokens(total)
            guard given == split.total else {
                let terms = cacheReads == nil ? "\(input) + \(output)" : "\(input) + \(output) + \(cacheReads!)"
                throw SimulationError(
                    line: line, field: total, "\(given) is not \(terms) (\(split.total)); leave it out or make it the sum")
            }
            return (given, split)
        }
        var tier: String?
        switch values["tier"] {
        case nil, .null?: break
        case .string(let text)? where !text.isEmpty: tier = text
        case let other?:
            let got = if case .string = other { "an empty string" } else { other.kind }
            throw SimulationError(line: line, field: "tier", "expected a tier name such as 'pro', got \(got)")
        }
        let estimate = try parts("estimated_tokens", "estimated_input_tokens", "estimated_output_tokens", cacheReads: nil)
        let usage = try parts("actual_tokens", "actual_input_tokens", "actual_output_tokens", cacheReads: "actual_cache_read_tokens")
        var call = SimulatedCall(
            at: at, key: PolicyKey(provider: provider, scope: scope, within: parents, tier: tier), estimatedTokens: estimate.total,
            actualTokens: usage.total, duration: duration, maxWait: try seconds("max_wait"),
            cancelAfter: try seconds("cancel_after"))
        call.estimatedParts = estimate.parts
        call.actualParts = usage.parts
        switch values["priority"] {
        case nil, .null?: break
        case .string(let text)?:
            guard let priority = PolicyPriority(text) else {
                throw SimulationError(line: line, field: "priority", "expected 'interactive' or 'batch', got '\(text)'")
            }
            call.priority = priority
        case let other?:
            throw SimulationError(line: line, field: "priority", "expected 'interactive' or 'batch', got \(other.kind)")
        }
        return Pending(call: call, date: date, line: line)
    }

    /// The known field an unknown one was probably meant to be: the same letters in another
    /// case or separator (`estimatedTokens`), the nearest at most two edits away (`max_wiat`),
    /// or `actual_cache_read_tokens` for Anthropic's `cache_read_input_tokens`.
    static func nearMiss(_ key: String) -> String? {
        func folded(_ text: String) -> [Character] { Array(text.lowercased().filter { $0 != "_" && $0 != "-" }) }
        let candidate = folded(key)
        let known = requiredFields + optionalFields
        if let same = known.first(where: { folded($0) == candidate }) { return same }
        // Anthropic's name for it.
        if candidate == folded("cache_read_input_tokens") { return "actual_cache_read_tokens" }
        guard candidate.count >= 4 else { return nil }
        let nearest = known.map { ($0, editDistance(candidate, folded($0))) }.min { $0.1 < $1.1 }
        return nearest.flatMap { $0.1 <= 2 ? $0.0 : nil }
    }

    private static func editDistance(_ a: [Character], _ b: [Character]) -> Int {
        var previous = Array(0...b.count)
        for i in 1...max(1, a.count) where !a.isEmpty {
            var current = [i] + Array(repeating: 0, count: b.count)
            for j in 1...max(1, b.count) where !b.isEmpty {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return a.isEmpty ? b.count : previous[b.count]
    }

    static func duration(seconds: Double) -> Duration {
        .nanoseconds(Int64((seconds * 1e9).rounded()))
    }

    private static func describe(seconds: Double) -> String {
        seconds == seconds.rounded() ? "\(Int(seconds)) s" : "\(seconds) s"
    }
}

/// A JSON value of one trace line, as far as the reader needs it.
enum JSONLineValue: Sendable {
    /// A number, with its text (for messages) and its value.
    struct Number: Sendable {
        var text: String
        var double: Double
        /// The value when the text is a whole number without fraction or exponent.
        var integer: Int?
    }

    case null
    case bool(Bool)
    case number(Number)
    case string(String)
    case array
    case object

    /// What kind of value it is, for messages: `a string`, `null`…
    var kind: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .number(let number): number.text
        case .string(let text): "the string \"\(text)\""
        case .array: "an array"
        case .object: "an object"
        }
    }
}

/// A small JSON parser for one line holding one object (RFC 8259), faster than Foundation's for
/// a million short lines and precise in its messages (line and column). Nested arrays and
/// objects are checked and skipped: no field the reader knows holds one.
struct JSONLineParser {
    private let bytes: UnsafeBufferPointer<UInt8>
    private let lineNumber: Int
    private var index = 0
    private var depth = 0

    init(_ bytes: UnsafeBufferPointer<UInt8>, lineNumber: Int) {
        self.bytes = bytes
        self.lineNumber = lineNumber
    }

    static func isSpace(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") || byte == UInt8(ascii: "\r")
    }

    private func error(_ message: String) -> SimulationError {
        SimulationError(line: lineNumber, "invalid JSON at column \(index + 1): \(message)")
    }

    private var found: String {
        guard index < bytes.count else { return "the end of the line" }
        let byte = bytes[index]
        return byte >= 0x20 && byte < 0x7F ? "'\(Character(Unicode.Scalar(byte)))'" : "byte 0x\(String(byte, radix: 16))"
    }

    private mutating func skipSpace() {
        while index < bytes.count && Self.isSpace(bytes[index]) { index += 1 }
    }

    private mutating func expect(_ byte: UInt8, _ what: String) throws(SimulationError) {
        skipSpace()
        guard index < bytes.count, bytes[index] == byte else { throw error("expected \(what), found \(found)") }
        index += 1
    }

    /// Parses the line's object, with each field's column (1-based), and checks that nothing follows.
    mutating func parseObject() throws(SimulationError) -> [(key: String, value: JSONLineValue, column: Int)] {
        try expect(UInt8(ascii: "{"), "'{' (each line holds one JSON object)")
        var fields: [(key: String, value: JSONLineValue, column: Int)] = []
        skipSpace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
            index += 1
        } else {
            while true {
                skipSpace()
                let column = index + 1
                guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else {
                    throw error("expected a field name in double quotes, found \(found)")
                }
                let key = try parseString()
                try expect(UInt8(ascii: ":"), "':' after the field name")
                let value = try parseValue()
                fields.append((key, value, column))
                skipSpace()
                guard index < bytes.count else { throw error("expected ',' or '}', found the end of the line") }
                if bytes[index] == UInt8(ascii: ",") {
                    index += 1
                    continue
                }
                if bytes[index] == UInt8(ascii: "}") {
                    index += 1
                    break
                }
                throw error("expected ',' or '}', found \(found)")
            }
        }
        skipSpace()
        guard index == bytes.count else { throw error("expected the end of the line after the object, found \(found)") }
        return fields
    }

    private mutating func parseValue() throws(SimulationError) -> JSONLineValue {
        skipSpace()
        guard index < bytes.count else { throw error("expected a value, found the end of the line") }
        switch bytes[index] {
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try parseNumber())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "["), UInt8(ascii: "{"):
            let isArray = bytes[index] == UInt8(ascii: "[")
            try skipComposite()
            return isArray ? .array : .object
        default: throw error("expected a value, found \(found)")
        }
    }

    private mutating func literal(_ word: StaticString) throws(SimulationError) {
        let count = word.utf8CodeUnitCount
        guard index + count <= bytes.count,
            (0..<count).allSatisfy({ bytes[index + $0] == word.utf8Start[$0] })
        else { throw error("expected a value, found \(found)") }
        index += count
    }

    private mutating func skipComposite() throws(SimulationError) {
        depth += 1
        defer { depth -= 1 }
        guard depth <= 64 else { throw error("nested more than 64 deep") }
        let isArray = bytes[index] == UInt8(ascii: "[")
        let close = isArray ? UInt8(ascii: "]") : UInt8(ascii: "}")
        index += 1
        skipSpace()
        if index < bytes.count, bytes[index] == close {
            index += 1
            return
        }
        while true {
            if !isArray {
                skipSpace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else {
                    throw error("expected a field name in double quotes, found \(found)")
                }
                _ = try parseString()
                try expect(UInt8(ascii: ":"), "':' after the field name")
            }
            _ = try parseValue()
            skipSpace()
            guard index < bytes.count else {
                throw error("expected ',' or '\(Character(Unicode.Scalar(close)))', found the end of the line")
            }
            if bytes[index] == UInt8(ascii: ",") {
                index += 1
            } else if bytes[index] == close {
                index += 1
                return
            } else {
                throw error("expected ',' or '\(Character(Unicode.Scalar(close)))', found \(found)")
            }
        }
    }

    private mutating func parseNumber() throws(SimulationError) -> JSONLineValue.Number {
        let start = index
        func digits() -> Int {
            let first = index
            while index < bytes.count && bytes[index] >= UInt8(ascii: "0") && bytes[index] <= UInt8(ascii: "9") { index += 1 }
            return index - first
        }
        if bytes[index] == UInt8(ascii: "-") { index += 1 }
        let integerStart = index
        let integerDigits = digits()
        guard integerDigits > 0 else { throw error("expected digits after '-', found \(found)") }
        guard integerDigits == 1 || bytes[integerStart] != UInt8(ascii: "0") else {
            index = integerStart + 1
            throw error("a number may not start with 0, found \(found)")
        }
        var isInteger = true
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            index += 1
            isInteger = false
            guard digits() > 0 else { throw error("expected digits after '.', found \(found)") }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            index += 1
            isInteger = false
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
            guard digits() > 0 else { throw error("expected digits in the exponent, found \(found)") }
        }
        let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
        guard let double = Double(text), double.isFinite else { throw error("the number \(text) is out of range") }
        return JSONLineValue.Number(text: text, double: double, integer: isInteger ? Int(text) : nil)
    }

    private mutating func parseString() throws(SimulationError) -> String {
        index += 1  // the opening quote
        var utf8: [UInt8] = []
        var runStart = index
        while true {
            guard index < bytes.count else { throw error("unterminated string") }
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                utf8.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<index]))
                index += 1
                return String(decoding: utf8, as: UTF8.self)
            }
            if byte < 0x20 { throw error("a control character must be escaped in a string") }
            if byte != UInt8(ascii: "\\") {
                index += 1
                continue
            }
            utf8.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<index]))
            index += 1
            guard index < bytes.count else { throw error("unterminated string") }
            let escape = bytes[index]
            index += 1
            switch escape {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): utf8.append(escape)
            case UInt8(ascii: "b"): utf8.append(0x08)
            case UInt8(ascii: "f"): utf8.append(0x0C)
            case UInt8(ascii: "n"): utf8.append(0x0A)
            case UInt8(ascii: "r"): utf8.append(0x0D)
            case UInt8(ascii: "t"): utf8.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = try hex4()
                if (0xD800..<0xDC00).contains(scalar) {
                    // A high surrogate must be followed by an escaped low one.
                    guard index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") else {
                        throw error("a \\u escape of a high surrogate must be followed by a low one")
                    }
                    index += 2
                    let low = try hex4()
                    guard (0xDC00..<0xE000).contains(low) else { throw error("invalid low surrogate in a \\u escape") }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                }
                guard let unicode = Unicode.Scalar(scalar) else { throw error("invalid \\u escape") }
                utf8.append(contentsOf: Array(String(Character(unicode)).utf8))
            default:
                index -= 2  // at the backslash
                throw error("invalid escape '\\\(Character(Unicode.Scalar(escape)))' in a string")
            }
            runStart = index
        }
    }

    private mutating func hex4() throws(SimulationError) -> UInt32 {
        var value: UInt32 = 0
        for _ in 0..<4 {
            guard index < bytes.count, let digit = hexDigit(bytes[index]) else { throw error("expected 4 hex digits after \\u") }
            value = value << 4 | digit
            index += 1
        }
        return value
    }

    private func hexDigit(_ byte: UInt8) -> UInt32? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): UInt32(byte - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): UInt32(byte - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): UInt32(byte - UInt8(ascii: "A") + 10)
        default: nil
        }
    }
}
