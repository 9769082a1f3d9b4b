import Foundation

/// Reads the usage out of a streamed reply (server-sent events) as its bytes arrive, in chunks
/// cut anywhere (inside a line or a UTF-8 sequence).
///
/// - OpenAI chat completions: the chunk whose `usage` is an object (the last one, sent when the
///   request set `stream_options.include_usage`); `data: [DONE]` ends the stream.
/// - OpenAI responses: `response.completed` (or `response.incomplete` / `response.failed`)
///   carries `response.usage` and ends the stream.
/// - Anthropic messages: `message_start` carries the input counts (`message.usage`),
///   each `message_delta` the cumulative `output_tokens` (and, in newer versions, input counts);
///   `message_stop` ends the stream.
///
/// Lines it cannot read are counted in ``ignoredEvents`` and skipped, never a crash.
public struct StreamUsageParser: Sendable {
    /// The API whose events are read.
    public let api: ProviderAPI
    /// The usage seen so far; `nil` before any.
    public private(set) var usage: ProviderUsage?
    /// Whether the stream's end event arrived (a stream cut before it is incomplete).
    public private(set) var isComplete = false
    /// Whether an `error` event arrived.
    public private(set) var sawError = false
    /// Events whose data was not JSON or held an unusable count.
    public private(set) var ignoredEvents = 0
    private var line: [UInt8] = []
    private var data: [UInt8] = []
    private var event = ""
    /// A line longer than this is dropped (a malicious or broken stream must not grow memory).
    static let longestLine = 4 << 20

    /// Creates a parser for `api`'s events.
    public init(api: ProviderAPI) { self.api = api }

    /// Reads the next bytes of the stream.
    public mutating func consume<Bytes: Sequence>(_ bytes: Bytes) where Bytes.Element == UInt8 {
        for byte in bytes {
            if byte == UInt8(ascii: "\n") {
                if line.last == UInt8(ascii: "\r") { line.removeLast() }
                endLine()
                line.removeAll(keepingCapacity: true)
            } else if line.count < Self.longestLine {
                line.append(byte)
            }
        }
    }

    /// Ends the stream: a last event not followed by a blank line is read too.
    public mutating func finish() {
        if !line.isEmpty { endLine(); line.removeAll() }
        dispatch()
    }

    private mutating func endLine() {
        if line.isEmpty { dispatch(); return }
        if line.first == UInt8(ascii: ":") { return }  // a comment (keep-alive)
        let colon = line.firstIndex(of: UInt8(ascii: ":")) ?? line.endIndex
        let field = String(decoding: line[..<colon], as: UTF8.self)
        var value = colon < line.endIndex ? line[(colon + 1)...] : []
        if value.first == UInt8(ascii: " ") { value = value.dropFirst() }
        switch field {
        case "data":
            if !data.isEmpty { data.append(UInt8(ascii: "\n")) }
            if data.count + value.count <= Self.longestLine { data.append(contentsOf: value) }
        case "event": event = String(decoding: value, as: UTF8.self)
        default: break
        }
    }

    private mutating func dispatch() {
        defer { data.removeAll(keepingCapacity: true); event = "" }
        guard !data.isEmpty else { return }
        if data.elementsEqual("[DONE]".utf8) { isComplete = true; return }
        // Most events are text deltas without usage: skip them without parsing their JSON.
        guard mayCarryUsage() else { return }
        guard let object = try? JSONBody.object(Data(data)) else { ignoredEvents += 1; return }
        let type = object["type"]?.string ?? event
        do {
            switch api {
            case .openAIChatCompletions:
                if let usage = object["usage"]?.object, let parsed = try api.usageParts(usage, requireAll: true) {
                    self.usage = parsed
                }
                if object["error"] != nil { sawError = true }
            case .openAIResponses:
                switch type {
                case "response.completed", "response.incomplete", "response.failed":
                    if let usage = object["response"]?["usage"]?.object, let parsed = try api.usageParts(usage, requireAll: true) {
                        self.usage = parsed
                    }
                    isComplete = true
                    if type == "response.failed" { sawError = true }
                case "error": sawError = true
                default: break
                }
            case .anthropicMessages:
                switch type {
                case "message_start":
                    if let usage = object["message"]?["usage"]?.object, let parsed = try api.usageParts(usage, requireAll: false) {
                        self.usage = parsed
                    }
                case "message_delta":
                    if let usage = object["usage"]?.object { try mergeAnthropicDelta(usage) }
                case "message_stop": isComplete = true
                case "error": sawError = true
                default: break
                }
            }
        } catch {
            ignoredEvents += 1
        }
    }

    /// Whether the event's data may matter: it names usage, an error or the end. A cheap byte
    /// search, so that a stream of hundreds of text deltas is not parsed delta by delta.
    private func mayCarryUsage() -> Bool {
        if api == .openAIChatCompletions, Self.contains(data, Self.nullUsage), !Self.contains(data, Self.error) { return false }
        return Self.needles[api]!.contains { Self.contains(data, $0) }
    }

    static let nullUsage = Array(#""usage":null"#.utf8)
    static let error = Array(#""error""#.utf8)
    static let needles: [ProviderAPI: [[UInt8]]] = [
        .openAIChatCompletions: [Array(#""usage""#.utf8), error],
        .openAIResponses: [Array("response.completed".utf8), Array("response.incomplete".utf8), Array("response.failed".utf8), error],
        .anthropicMessages: [Array("message_start".utf8), Array("message_delta".utf8), Array("message_stop".utf8), error],
    ]

    /// Whether `needle` occurs in `haystack` (a plain scan: the generic `firstRange(of:)` costs
    /// microseconds per call).
    static func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard let first = needle.first, haystack.count >= needle.count else { return false }
        return haystack.withUnsafeBufferPointer { h in
            needle.withUnsafeBufferPointer { n in
                var i = 0
                let last = h.count - n.count
                while i <= last {
                    if h[i] == first {
                        var j = 1
                        while j < n.count && h[i + j] == n[j] { j += 1 }
                        if j == n.count { return true }
                    }
                    i += 1
                }
                return false
            }
        }
    }

    /// `message_delta` gives the cumulative output; newer versions repeat the input counts.
    private mutating func mergeAnthropicDelta(_ delta: [String: JSONValue]) throws(ProviderWireError) {
        var merged = usage ?? ProviderUsage(input: 0, output: 0)
        if let output = delta["output_tokens"], !output.isNull {
            guard let n = JSONBody.count(output) else { throw ProviderWireError(.invalidCount, "output_tokens") }
            merged.output = n
        }
        if delta["input_tokens"] != nil,
            let input = try api.usageParts(delta.merging(["output_tokens": .number(0, 0)]) { $1 }, requireAll: false)
        {
            merged.input = input.input
            merged.cacheReads = input.cacheReads
        }
        usage = merged
    }
}
