import Foundation

/// A provider HTTP API whose request and response bodies PolicyGate can read: enough to
/// estimate a call before it is sent and to find what it used afterwards.
public enum ProviderAPI: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// OpenAI's chat completions (`POST /v1/chat/completions`) and the many servers compatible
    /// with it. Usage: `prompt_tokens` (cached tokens included, as `prompt_tokens_details.cached_tokens`)
    /// and `completion_tokens`; streamed, in a final chunk when the request sets
    /// `stream_options: {"include_usage": true}`.
    case openAIChatCompletions = "openai-chat-completions"
    /// OpenAI's responses API (`POST /v1/responses`). Usage: `input_tokens` (cached included, as
    /// `input_tokens_details.cached_tokens`) and `output_tokens`; streamed, in the
    /// `response.completed` event.
    case openAIResponses = "openai-responses"
    /// Anthropic's messages API (`POST /v1/messages`). Usage: `input_tokens` (cache reads and
    /// writes excluded), `cache_read_input_tokens`, `cache_creation_input_tokens` and
    /// `output_tokens`; streamed, in `message_start` and (cumulative output) `message_delta`.
    case anthropicMessages = "anthropic-messages"

    /// The API's name, as in `openai-chat-completions`.
    public var description: String { rawValue }
}

/// What a provider reported a call used, in the parts `PolicyPermit.commitTokens(input:output:cacheReads:)` takes.
///
/// `input` excludes the cache reads (OpenAI counts them inside its prompt tokens; they are
/// taken out here) and includes Anthropic's cache writes, which Anthropic bills and rate-limits
/// as input.
public struct ProviderUsage: Sendable, Hashable, CustomStringConvertible {
    /// Input tokens not served from the prompt cache.
    public var input: Int
    /// Output tokens.
    public var output: Int
    /// Input tokens served from the provider's prompt cache.
    public var cacheReads: Int

    /// Creates a usage.
    public init(input: Int, output: Int, cacheReads: Int = 0) {
        self.input = input
        self.output = output
        self.cacheReads = cacheReads
    }

    /// The whole prompt: input plus cache reads.
    public var prompt: Int { input + cacheReads }

    /// A readable form such as `in 120 (+ 30 cached) out 45`.
    public var description: String { "in \(input) (+ \(cacheReads) cached) out \(output)" }
}

/// Why a body could not be read. Reading never crashes; a body it cannot read gives this error.
public struct ProviderWireError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The kind of problem.
    public enum Code: String, Sendable, Hashable {
        /// Not JSON, or not a JSON object.
        case malformedBody
        /// Valid JSON without the expected usage fields.
        case missingUsage
        /// A count that is negative, fractional, absurdly large or not a number.
        case invalidCount
    }

    /// The kind of problem.
    public let code: Code
    /// What was wrong, for a person.
    public let message: String

    /// Creates the error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// `code: message`.
    public var description: String { "\(code.rawValue): \(message)" }
}

/// What ``ProviderAPI/summarize(request:)`` reads from a request body.
public struct ProviderRequestSummary: Sendable, Hashable {
    /// The `model` field, if any.
    public var model: String?
    /// Whether the request asks for a streamed (server-sent events) reply.
    public var stream: Bool
    /// Whether a streamed OpenAI chat request asks for the final usage chunk
    /// (`stream_options.include_usage`); always `true` for the other APIs, which stream usage anyway.
    public var streamIncludesUsage: Bool
    /// UTF-8 bytes of the prompt's text: every string in the messages (or `input`), the system
    /// prompt (or `instructions`) and the tool definitions, keys of tool schemas included.
    public var promptBytes: Int
    /// The number of messages (or input items).
    public var messageCount: Int
    /// `max_tokens`, `max_completion_tokens` or `max_output_tokens`, if set.
    public var maxOutputTokens: Int?
}

extension ProviderAPI {
    /// Reads what an estimate needs from a request body.
    /// - Throws: ``ProviderWireError/Code/malformedBody`` if it is not a JSON object;
    ///   ``ProviderWireError/Code/invalidCount`` for an unusable output cap.
    public func summarize(request body: Data) throws(ProviderWireError) -> ProviderRequestSummary {
        let object = try JSONBody.object(body)
        var bytes = 0
        var messages = 0
        switch self {
        case .openAIChatCompletions:
            if let list = object["messages"]?.array { messages = list.count; bytes += JSONBody.textBytes(.array(list)) }
            if let tools = object["tools"] { bytes += JSONBody.textBytes(tools, keys: true) }
            if let functions = object["functions"] { bytes += JSONBody.textBytes(functions, keys: true) }
        case .openAIResponses:
            if let input = object["input"]?.string {
                messages = 1; bytes += input.utf8.count
            } else if let list = object["input"]?.array {
                messages = list.count; bytes += JSONBody.textBytes(.array(list))
            }
            if let instructions = object["instructions"] { bytes += JSONBody.textBytes(instructions) }
            if let tools = object["tools"] { bytes += JSONBody.textBytes(tools, keys: true) }
        case .anthropicMessages:
            if let list = object["messages"]?.array { messages = list.count; bytes += JSONBody.textBytes(.array(list)) }
            if let system = object["system"] { bytes += JSONBody.textBytes(system) }
            if let tools = object["tools"] { bytes += JSONBody.textBytes(tools, keys: true) }
        }
        var cap: Int?
        for name in ["max_tokens", "max_completion_tokens", "max_output_tokens"] {
            guard let value = object[name], !value.isNull else { continue }
            guard let count = JSONBody.count(value) else {
                throw ProviderWireError(.invalidCount, "\(name) is not a token count")
            }
            cap = count
        }
        let includesUsage = self != .openAIChatCompletions || (object["stream_options"]?["include_usage"]?.isTrue ?? false)
        return ProviderRequestSummary(
            model: object["model"]?.string, stream: object["stream"]?.isTrue ?? false, streamIncludesUsage: includesUsage,
            promptBytes: bytes, messageCount: messages, maxOutputTokens: cap)
    }

    /// Reads the usage from a complete (not streamed) response body.
    /// - Throws: ``ProviderWireError`` — an error body (a 429's, say) has no usage.
    public func usage(fromResponse body: Data) throws(ProviderWireError) -> ProviderUsage {
        let object = try JSONBody.object(body)
        guard let usage = object["usage"]?.object else {
            throw ProviderWireError(.missingUsage, "the response has no usage object")
        }
        guard let parsed = try usageParts(usage, requireAll: true) else {
            throw ProviderWireError(.missingUsage, "the usage object lacks its token counts")
        }
        return parsed
    }

    /// Reads one usage object in this API's spelling; `nil` when its main counts are absent.
    func usageParts(_ usage: [String: JSONValue], requireAll: Bool) throws(ProviderWireError) -> ProviderUsage? {
        func count(_ name: String, in object: [String: JSONValue]? = nil) throws(ProviderWireError) -> Int? {
            guard let value = (object ?? usage)[name], !value.isNull else { return nil }
            guard let n = JSONBody.count(value) else { throw ProviderWireError(.invalidCount, "\(name) is not a token count") }
            return n
        }
        switch self {
        case .openAIChatCompletions, .openAIResponses:
            let (inName, outName, details) =
                self == .openAIChatCompletions
                ? ("prompt_tokens", "completion_tokens", "prompt_tokens_details")
                : ("input_tokens", "output_tokens", "input_tokens_details")
            guard let prompt = try count(inName), let output = try count(outName) else { return nil }
            let cached = try count("cached_tokens", in: usage[details]?.object ?? [:]) ?? 0
            guard cached <= prompt else {
                throw ProviderWireError(.invalidCount, "cached_tokens \(cached) exceeds the \(prompt) prompt tokens that include them")
            }
            return ProviderUsage(input: prompt - cached, output: output, cacheReads: cached)
        case .anthropicMessages:
            let input = try count("input_tokens")
            let output = try count("output_tokens")
            if requireAll && (input == nil || output == nil) { return nil }
            if input == nil && output == nil { return nil }
            let writes = try count("cache_creation_input_tokens") ?? 0
            let reads = try count("cache_read_input_tokens") ?? 0
            return ProviderUsage(input: (input ?? 0) + writes, output: output ?? 0, cacheReads: reads)
        }
    }
}

/// JSON reading shared by the wire formats (``JSONValue``), never a crash.
enum JSONBody {
    /// The largest count believed (the gate records at most 2^31 - 1 in a window anyway).
    static let largestCount = 1 << 40

    static func object(_ data: Data) throws(ProviderWireError) -> [String: JSONValue] {
        guard !data.isEmpty else { throw ProviderWireError(.malformedBody, "the body is empty") }
        let parsed: JSONValue
        do { parsed = try JSONValue.parse(data) } catch {
            throw ProviderWireError(.malformedBody, "the body is not JSON (at byte \(error.offset) of \(data.count))")
        }
        guard let object = parsed.object else { throw ProviderWireError(.malformedBody, "the body is not a JSON object") }
        return object
    }

    /// A non-negative integral JSON number up to ``largestCount``, or `nil`.
    static func count(_ value: JSONValue) -> Int? {
        guard case .number(let int?, _) = value, (0...largestCount).contains(int) else { return nil }
        return int
    }

    /// UTF-8 bytes of every string inside `value` (and of object keys when `keys`, as in tool
    /// schemas, whose property names the model reads too). Base64 image data is counted as
    /// text; providers count images differently, which calibration absorbs only in part.
    static func textBytes(_ value: JSONValue, keys: Bool = false) -> Int {
        switch value {
        case .string(let s): return s.utf8.count
        case .array(let list): return list.reduce(0) { $0 + textBytes($1, keys: keys) }
        case .object(let members):
            var total = 0
            for (key, item) in members {
                // Structural fields ("role", "type") are a few tokens the per-message overhead covers.
                if !keys && (key == "role" || key == "type" || key == "id" || key == "tool_call_id") { continue }
                if keys { total += key.utf8.count }
                total += textBytes(item, keys: keys)
            }
            return total
        default: return 0
        }
    }
}
