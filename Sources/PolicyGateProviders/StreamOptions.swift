import Foundation

extension ProviderAPI {
    /// `body` asking for the stream's usage, if it is a streamed OpenAI chat completions request
    /// that does not say: `"stream_options": {"include_usage": true}` added (into its
    /// `stream_options` object if it has one). Anything else is returned unchanged: another API
    /// (which streams usage anyway), a request that is not streamed, one that sets
    /// `include_usage` itself (to `false` too: that is the caller's choice), and a body that
    /// cannot be read.
    ///
    /// Without it OpenAI sends no usage in a stream, and a gated stream can only commit its
    /// estimate. The bytes of the body are kept as they were; the member is inserted, never
    /// the body re-encoded.
    public func requestingStreamUsage(_ body: Data) -> Data {
        guard self == .openAIChatCompletions, let object = try? JSONBody.object(body), object["stream"]?.isTrue == true,
            let offsets = JSONBody.topLevelOffsets(body)
        else { return body }
        let insertion: (at: Int, text: String)
        switch object["stream_options"] {
        case nil:
            // The object has a member ("stream"), so the new one is followed by a comma.
            insertion = (offsets.open + 1, #""stream_options":{"include_usage":true},"#)
        case .object(let options)?:
            guard options["include_usage"] == nil, let at = offsets.values["stream_options"] else { return body }
            insertion = (at + 1, options.isEmpty ? #""include_usage":true"# : #""include_usage":true,"#)
        default:
            return body  // `null` or not an object: left to the provider to judge
        }
        var result = Data(body[body.startIndex..<(body.startIndex + insertion.at)])
        result.append(contentsOf: insertion.text.utf8)
        result.append(body[(body.startIndex + insertion.at)...])
        return result
    }
}

extension JSONBody {
    /// Where a JSON object's `{` is in `data`, and where each of its members' values starts
    /// (for a key given twice, the last, as ``JSONValue`` reads it); `nil` unless `data` is a
    /// JSON object.
    static func topLevelOffsets(_ data: Data) -> (open: Int, values: [String: Int])? {
        data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> (open: Int, values: [String: Int])? in
            var parser = JSONParser(bytes: raw.bindMemory(to: UInt8.self))
            let bytes = parser.bytes
            parser.skipSpace()
            let open = parser.at
            guard open < bytes.count, bytes[open] == UInt8(ascii: "{") else { return nil }
            parser.at += 1
            var values: [String: Int] = [:]
            parser.skipSpace()
            if parser.at < bytes.count, bytes[parser.at] == UInt8(ascii: "}") { return (open, values) }
            do throws(JSONParseError) {
                while true {
                    parser.skipSpace()
                    guard parser.at < bytes.count, bytes[parser.at] == UInt8(ascii: "\"") else { return nil }
                    let key = try parser.string()
                    parser.skipSpace()
                    guard parser.at < bytes.count, bytes[parser.at] == UInt8(ascii: ":") else { return nil }
                    parser.at += 1
                    parser.skipSpace()
                    values[key] = parser.at
                    _ = try parser.value(depth: 1)
                    parser.skipSpace()
                    guard parser.at < bytes.count else { return nil }
                    if bytes[parser.at] == UInt8(ascii: ",") { parser.at += 1; continue }
                    return bytes[parser.at] == UInt8(ascii: "}") ? (open, values) : nil
                }
            } catch {
                return nil
            }
        }
    }
}
