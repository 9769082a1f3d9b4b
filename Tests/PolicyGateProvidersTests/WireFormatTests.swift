import Foundation
import PolicyGateProviders
import Testing

/// Request estimates and usage from bodies written after the providers' documentation,
/// complete and streamed, and bodies that are malformed or cut short.
@Suite("Provider wire formats")
struct WireFormatTests {
    static let openAIChatRequest = #"""
        {"model": "gpt-4o", "max_completion_tokens": 300, "stream": true, "stream_options": {"include_usage": true},
         "messages": [{"role": "system", "content": "You are a helpful assistant."},
                      {"role": "user", "content": [{"type": "text", "text": "What is in this image?"}]}],
         "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Get the weather",
                    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}]}
        """#
    static let anthropicRequest = #"""
        {"model": "claude-sonnet-4-5", "max_tokens": 1024, "system": [{"type": "text", "text": "You are terse."}],
         "messages": [{"role": "user", "content": "Hello, Claude"}]}
        """#
    static let responsesRequest = #"""
        {"model": "gpt-4.1", "instructions": "Talk like a pirate.", "input": "Are semicolons optional in JavaScript?",
         "max_output_tokens": 500}
        """#

    @Test("requests: model, stream flags, output cap and prompt bytes per API")
    func summaries() throws {
        let chat = try ProviderAPI.openAIChatCompletions.summarize(request: Data(Self.openAIChatRequest.utf8))
        #expect(chat.model == "gpt-4o" && chat.stream && chat.streamIncludesUsage && chat.maxOutputTokens == 300)
        #expect(chat.messageCount == 2)
        // Message text (28 + 22) plus the tool's strings and keys.
        #expect(chat.promptBytes > 50 && chat.promptBytes < 200)
        let anthropic = try ProviderAPI.anthropicMessages.summarize(request: Data(Self.anthropicRequest.utf8))
        #expect(anthropic.model == "claude-sonnet-4-5" && !anthropic.stream && anthropic.maxOutputTokens == 1_024)
        #expect(anthropic.promptBytes == "You are terse.".utf8.count + "Hello, Claude".utf8.count)
        let responses = try ProviderAPI.openAIResponses.summarize(request: Data(Self.responsesRequest.utf8))
        #expect(responses.maxOutputTokens == 500 && responses.messageCount == 1)
        #expect(responses.promptBytes == "Talk like a pirate.".utf8.count + "Are semicolons optional in JavaScript?".utf8.count)
    }

    @Test("malformed requests are typed errors, never a crash")
    func malformedRequests() {
        for body in ["", "{", "[1,2]", "\"text\"", #"{"max_tokens": -5}"#, #"{"max_tokens": 1.5}"#, #"{"max_tokens": "many"}"#] {
            #expect(throws: ProviderWireError.self, "\(body)") {
                _ = try ProviderAPI.anthropicMessages.summarize(request: Data(body.utf8))
            }
        }
        // Fields of the wrong type are skipped, not trusted.
        let odd = try? ProviderAPI.openAIChatCompletions.summarize(request: Data(#"{"messages": 7, "model": 3}"#.utf8))
        #expect(odd?.promptBytes == 0 && odd?.model == nil)
    }

    @Test("the JSON reader: escapes and surrogate pairs decoded, deep nesting and bad escapes refused")
    func jsonReader() throws {
        let escaped = #"{"messages": [{"role": "user", "content": "caf\u00e9 \ud83d\ude00 \"q\"\n"}]}"#
        // "café 😀 "q"⏎": 5 + 1 + 4 + 1 + 3 + 1 bytes.
        #expect(try ProviderAPI.anthropicMessages.summarize(request: Data(escaped.utf8)).promptBytes == 15)
        for body in [
            String(repeating: "[", count: 10_000), #"{"a": "\x"}"#, #"{"a": "\u12"}"#, #"{"a": 1} x"#, #"{"a": -}"#, #"{"a": 1.}"#,
            "{\"a\": \"\u{1}\"}",
        ] {
            #expect(throws: ProviderWireError.self, "\(body)") {
                _ = try ProviderAPI.anthropicMessages.summarize(request: Data(body.utf8))
            }
        }
        // Counts written as 12.0 or 1.2e1 are integers; 12.5 is not.
        #expect(
            try ProviderAPI.anthropicMessages.usage(fromResponse: Data(#"{"usage": {"input_tokens": 12.0, "output_tokens": 1.2e1}}"#.utf8))
                == ProviderUsage(input: 12, output: 12))
    }

    @Test("complete responses: cached input out of OpenAI's prompt, Anthropic's cache reads apart and writes as input")
    func completeUsage() throws {
        let chat = #"""
            {"id": "chatcmpl-1", "object": "chat.completion", "choices": [],
             "usage": {"prompt_tokens": 2006, "completion_tokens": 300, "total_tokens": 2306,
                       "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
                       "completion_tokens_details": {"reasoning_tokens": 0}}}
            """#
        #expect(
            try ProviderAPI.openAIChatCompletions.usage(fromResponse: Data(chat.utf8))
                == ProviderUsage(input: 86, output: 300, cacheReads: 1_920))
        let responses = #"""
            {"id": "resp_1", "object": "response", "status": "completed",
             "usage": {"input_tokens": 36, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 87,
                       "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 123}}
            """#
        #expect(try ProviderAPI.openAIResponses.usage(fromResponse: Data(responses.utf8)) == ProviderUsage(input: 36, output: 87))
        let anthropic = #"""
            {"id": "msg_1", "type": "message", "role": "assistant", "content": [{"type": "text", "text": "Hi!"}],
             "stop_reason": "end_turn",
             "usage": {"input_tokens": 21, "cache_creation_input_tokens": 188, "cache_read_input_tokens": 1200, "output_tokens": 393}}
            """#
        #expect(
            try ProviderAPI.anthropicMessages.usage(fromResponse: Data(anthropic.utf8))
                == ProviderUsage(input: 209, output: 393, cacheReads: 1_200))
    }

    @Test("error bodies, truncated and absurd usage are typed errors")
    func badUsage() {
        let cases: [(ProviderAPI, String, ProviderWireError.Code)] = [
            (.anthropicMessages, #"{"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}"#, .missingUsage),
            (
                .openAIChatCompletions, #"{"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}"#,
                .missingUsage
            ),
            (.openAIChatCompletions, #"{"usage": {"prompt_tokens": 10, "completion_tokens": 5"#, .malformedBody),
            (.openAIChatCompletions, #"{"usage": {"prompt_tokens": 10, "completion_tokens": -5}}"#, .invalidCount),
            (
                .openAIChatCompletions,
                #"{"usage": {"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 11}}}"#, .invalidCount
            ),
            (.openAIResponses, #"{"usage": {"input_tokens": 1e300, "output_tokens": 5}}"#, .invalidCount),
            (.anthropicMessages, #"{"usage": {"input_tokens": true, "output_tokens": 5}}"#, .invalidCount),
            (.anthropicMessages, "", .malformedBody),
        ]
        for (api, body, code) in cases {
            do {
                _ = try api.usage(fromResponse: Data(body.utf8))
                Issue.record("read usage from \(body)")
            } catch {
                #expect(error.code == code, "\(body): \(error)")
            }
        }
    }

    static let openAIStream = [
        #"data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""}}],"usage":null}"#
            + "\n\n",
        #"data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hello"}}],"usage":null}"# + "\n\n",
        #"data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}"#
            + "\n\n",
        #"data: {"id":"c1","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":120,"completion_tokens":9,"total_tokens":129,"prompt_tokens_details":{"cached_tokens":100}}}"#
            + "\n\n",
        "data: [DONE]\n\n",
    ]
    static let anthropicStream = [
        "event: message_start\n"
            + #"data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","usage":{"input_tokens":25,"cache_creation_input_tokens":0,"cache_read_input_tokens":2000,"output_tokens":1}}}"#
            + "\n\n",
        "event: content_block_start\n" + #"data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#
            + "\n\n",
        "event: ping\n" + #"data: {"type": "ping"}"# + "\n\n",
        "event: content_block_delta\n" + #"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}"#
            + "\n\n",
        "event: content_block_stop\n" + #"data: {"type":"content_block_stop","index":0}"# + "\n\n",
        "event: message_delta\n"
            + #"data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}"#
            + "\n\n",
        "event: message_stop\n" + #"data: {"type":"message_stop"}"# + "\n\n",
    ]
    static let responsesStream = [
        "event: response.created\n" + #"data: {"type":"response.created","response":{"id":"resp_1","status":"in_progress","usage":null}}"#
            + "\n\n",
        "event: response.output_text.delta\n" + #"data: {"type":"response.output_text.delta","delta":"Hi"}"# + "\n\n",
        "event: response.completed\n"
            + #"data: {"type":"response.completed","response":{"id":"resp_1","status":"completed","usage":{"input_tokens":37,"input_tokens_details":{"cached_tokens":0},"output_tokens":11,"total_tokens":48}}}"#
            + "\n\n",
    ]

    @Test("streamed usage, whatever the chunk boundaries (every split point, CRLF too)")
    func streamedUsage() {
        let cases: [(ProviderAPI, [String], ProviderUsage)] = [
            (.openAIChatCompletions, Self.openAIStream, ProviderUsage(input: 20, output: 9, cacheReads: 100)),
            (.anthropicMessages, Self.anthropicStream, ProviderUsage(input: 25, output: 15, cacheReads: 2_000)),
            (.openAIResponses, Self.responsesStream, ProviderUsage(input: 37, output: 11)),
        ]
        for (api, events, expected) in cases {
            for text in [events.joined(), events.joined().replacingOccurrences(of: "\n", with: "\r\n")] {
                let bytes = Array(text.utf8)
                for split in stride(from: 0, through: bytes.count, by: 7) {
                    var parser = StreamUsageParser(api: api)
                    parser.consume(bytes[..<split])
                    parser.consume(bytes[split...])
                    parser.finish()
                    #expect(parser.usage == expected && parser.isComplete && parser.ignoredEvents == 0, "\(api) split at \(split)")
                }
            }
        }
    }

    @Test("a stream cut short is incomplete but keeps what it saw; garbage is skipped")
    func cutStreams() {
        var anthropic = StreamUsageParser(api: .anthropicMessages)
        anthropic.consume(Self.anthropicStream.prefix(4).joined().utf8)
        anthropic.consume(#"data: {"type":"message_delta","usage":{"output_tokens":1"#.utf8)  // cut inside an event
        anthropic.finish()
        #expect(!anthropic.isComplete)
        #expect(anthropic.usage == ProviderUsage(input: 25, output: 1, cacheReads: 2_000))
        #expect(anthropic.ignoredEvents == 1)

        var openAI = StreamUsageParser(api: .openAIChatCompletions)
        openAI.consume(Self.openAIStream.prefix(2).joined().utf8)
        openAI.consume("data: not json\n\n: keep-alive\n\ndata: {\"usage\": {oops\n\n".utf8)
        openAI.consume("data: {\"usage\": {\"prompt_tokens\": -1, \"completion_tokens\": 2}}\n\n".utf8)
        openAI.consume([0xFF, 0xFE, 0x0A, 0x0A])
        openAI.finish()
        // Ignored: the usage event that is not JSON and the one with a negative count. Data that
        // names no usage ("not json") is skipped unparsed; the comment and the line of invalid
        // UTF-8 (no field) are no events at all.
        #expect(!openAI.isComplete && openAI.usage == nil && openAI.ignoredEvents == 2)
    }

    @Test("the estimator: documented heuristic, then calibrated by actual counts, its error shrinking")
    func calibration() throws {
        let estimator = TokenEstimator()
        let body = Data(Self.anthropicRequest.utf8)
        let first = try estimator.estimate(.anthropicMessages, request: body)
        // (14 + 13) bytes / 3.5 → 8, + 8 per request + 4 for its one message.
        #expect(first.input == 20 && first.uncalibratedInput == 20 && first.output == 1_024)
        #expect(estimator.accuracy(api: .anthropicMessages, model: "claude-sonnet-4-5") == nil)
        // This model's tokenizer counts 30 tokens for this prompt: 1.5 × the heuristic.
        var errors: [Double] = []
        for _ in 0..<10 {
            let estimate = try estimator.estimate(.anthropicMessages, request: body)
            estimator.calibrate(estimate, actual: ProviderUsage(input: 10, output: 50, cacheReads: 20))
            errors.append(try #require(estimator.accuracy(api: .anthropicMessages, model: "claude-sonnet-4-5")).meanRelativeError)
        }
        let accuracy = try #require(estimator.accuracy(api: .anthropicMessages, model: "claude-sonnet-4-5"))
        #expect(accuracy.samples == 10 && abs(accuracy.correction - 1.5) < 0.01 && abs(accuracy.lastRatio - 1) < 0.01)
        #expect(errors.first! > 0.3 && errors.last! < 0.05, "\(errors)")
        #expect(try estimator.estimate(.anthropicMessages, request: body).input == 30)
        // Calibration is per model: another model is still estimated by the heuristic.
        let other = Data(Self.anthropicRequest.replacingOccurrences(of: "claude-sonnet-4-5", with: "claude-haiku-4-5").utf8)
        #expect(try estimator.estimate(.anthropicMessages, request: other).input == 20)
        // No output cap in the request: the default.
        #expect(
            try TokenEstimator(defaultOutputTokens: 777).estimate(.openAIChatCompletions, request: Data(#"{"messages": []}"#.utf8)).output
                == 777)
    }

    @Test("a streamed OpenAI chat request is made to ask for its usage, the rest of its bytes kept; anything else is left alone")
    func requestingStreamUsage() throws {
        let api = ProviderAPI.openAIChatCompletions
        func rewritten(_ body: String) -> String { String(decoding: api.requestingStreamUsage(Data(body.utf8)), as: UTF8.self) }
        let cases: [(String, String)] = [
            (
                #"{"model": "gpt-4o", "stream": true, "messages": []}"#,
                #"{"stream_options":{"include_usage":true},"model": "gpt-4o", "stream": true, "messages": []}"#
            ),
            ("\n  {\"stream\":true}", "\n  {\"stream_options\":{\"include_usage\":true},\"stream\":true}"),
            (#"{"stream": true, "stream_options": {}}"#, #"{"stream": true, "stream_options": {"include_usage":true}}"#),
            (#"{"stream": true, "stream_options": { "x": 1 }}"#, #"{"stream": true, "stream_options": {"include_usage":true, "x": 1 }}"#),
            // A key given twice counts once, the last, as the provider's JSON reader takes it.
            (
                #"{"stream_options": {"include_usage": false}, "stream": true, "stream_options": {}}"#,
                #"{"stream_options": {"include_usage": false}, "stream": true, "stream_options": {"include_usage":true}}"#
            ),
        ]
        for (body, expected) in cases {
            let result = rewritten(body)
            #expect(result == expected)
            let summary = try api.summarize(request: Data(result.utf8))
            #expect(summary.stream && summary.streamIncludesUsage, "\(result)")
        }
        // Left as they are: already asked, or explicitly not; not streamed; options that are not
        // an object; not JSON; other APIs, which stream their usage anyway.
        for body in [
            Self.openAIChatRequest, #"{"stream": true, "stream_options": {"include_usage": false}}"#,
            #"{"stream": false, "messages": []}"#, #"{"messages": []}"#, #"{"stream": "yes"}"#,
            #"{"stream": true, "stream_options": null}"#, #"{"stream": true, "#, "[1, 2]", "",
        ] {
            #expect(rewritten(body) == body)
        }
        let anthropic = Self.anthropicRequest.replacingOccurrences(of: #""max_tokens""#, with: #""stream": true, "max_tokens""#)
        #expect(ProviderAPI.anthropicMessages.requestingStreamUsage(Data(anthropic.utf8)) == Data(anthropic.utf8))
        // A slice of a larger buffer (a Data whose indices do not start at 0) is read right.
        let padded = Data(("xx" + #"{"stream": true}"#).utf8)
        #expect(
            String(decoding: api.requestingStreamUsage(padded.dropFirst(2)), as: UTF8.self)
                == #"{"stream_options":{"include_usage":true},"stream": true}"#)
    }
}
