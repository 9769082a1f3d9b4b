import Foundation
import PolicyGate

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A tiny HTTP/1.1 server on a loopback port that plays a provider, for tests and examples:
/// each request gets the reply a handler writes (JSON, a stream of events sent as they are
/// written, a 429 with headers, or a reply cut mid-stream). One thread per connection; not for
/// production.
public final class FakeProvider: Sendable {
    /// One request as received.
    public struct Request: Sendable {
        /// `POST`, `GET`…
        public let method: String
        /// The path, such as `/v1/messages`.
        public let path: String
        /// Header names lower-cased.
        public let headers: [String: String]
        /// The body.
        public let body: Data
    }

    /// What to send back.
    public struct Reply: Sendable {
        /// The status code.
        public var status: Int
        /// Extra headers (Content-Length or Transfer-Encoding are added).
        public var headers: [(String, String)]
        /// The body in parts. More than one part is sent chunked, each part flushed and followed
        /// by ``pause``, so a streamed reply arrives as it is written.
        public var parts: [Data]
        /// The wait after each part of a chunked reply.
        public var pause: Duration
        /// Close the connection after this many parts, without ending the reply (a cut stream).
        public var cutAfter: Int?

        /// A JSON (or any single-body) reply.
        public static func json(_ body: String, status: Int = 200, headers: [(String, String)] = []) -> Reply {
            Reply(status: status, headers: [("Content-Type", "application/json")] + headers, parts: [Data(body.utf8)], pause: .zero)
        }

        /// A server-sent events reply, one part per event text (each should end with a blank line).
        public static func events(
            _ events: [String], headers: [(String, String)] = [], pause: Duration = .milliseconds(5), cutAfter: Int? = nil
        ) -> Reply {
            Reply(
                status: 200, headers: [("Content-Type", "text/event-stream")] + headers, parts: events.map { Data($0.utf8) },
                pause: pause, cutAfter: cutAfter)
        }
    }

    /// The port it listens on, on 127.0.0.1.
    public let port: Int
    /// `http://127.0.0.1:<port>`.
    public var baseURL: URL { URL(string: "http://127.0.0.1:\(port)")! }
    private let listener: Int32
    private let received = Locked<[Request]>([])
    private let handler: @Sendable (Request) -> Reply

    /// Starts listening on a free loopback port; `handler` answers each request.
    public init(handler: @escaping @Sendable (Request) -> Reply) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EIO) }
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 64) == 0 else { close(fd); throw POSIXError(.EADDRINUSE) }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        self.listener = fd
        self.port = Int(UInt16(bigEndian: address.sin_port))
        self.handler = handler
        let accepting = Thread { [listener = fd, weakSelf = WeakBox(self)] in
            while true {
                let client = accept(listener, nil, nil)
                if client < 0 { return }  // closed by stop()
                guard let server = weakSelf.value else { close(client); return }
                Thread { server.serve(client) }.start()
            }
        }
        accepting.start()
    }

    /// The requests received so far.
    public var requests: [Request] { received.withLock { $0 } }

    /// Stops listening.
    public func stop() {
        guard
            stopped.withLock({
                let was = $0; $0 = true; return !was
            })
        else { return }
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
    }
    private let stopped = Locked(false)

    deinit { stop() }

    private func serve(_ fd: Int32) {
        defer { close(fd) }
        var buffer = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 16_384)
        while true {
            // Read one request: the head up to a blank line, then Content-Length bytes.
            var headEnd: Int?
            while headEnd == nil {
                if let range = buffer.firstRange(of: Array("\r\n\r\n".utf8)) { headEnd = range.upperBound; break }
                let n = read(fd, &chunk, chunk.count)
                if n <= 0 { return }
                buffer.append(contentsOf: chunk[..<n])
            }
            guard let headEnd else { return }
            let head = String(decoding: buffer[..<headEnd], as: UTF8.self).split(separator: "\r\n")
            guard let requestLine = head.first?.split(separator: " "), requestLine.count >= 2 else { return }
            var headers: [String: String] = [:]
            for line in head.dropFirst() {
                guard let colon = line.firstIndex(of: ":") else { continue }
                headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            }
            let length = Int(headers["content-length"] ?? "0") ?? 0
            while buffer.count < headEnd + length {
                let n = read(fd, &chunk, chunk.count)
                if n <= 0 { return }
                buffer.append(contentsOf: chunk[..<n])
            }
            let request = Request(
                method: String(requestLine[0]), path: String(requestLine[1]), headers: headers,
                body: Data(buffer[headEnd..<(headEnd + length)]))
            buffer.removeFirst(headEnd + length)
            received.withLock { $0.append(request) }
            if !respond(handler(request), on: fd) { return }
        }
    }

    /// Writes a reply; returns whether the connection stays usable.
    private func respond(_ reply: Reply, on fd: Int32) -> Bool {
        var head = "HTTP/1.1 \(reply.status) \(reply.status == 200 ? "OK" : reply.status == 429 ? "Too Many Requests" : "Status")\r\n"
        for (name, value) in reply.headers { head += "\(name): \(value)\r\n" }
        let chunked = reply.parts.count > 1 || reply.cutAfter != nil
        if chunked {
            head += "Transfer-Encoding: chunked\r\n\r\n"
        } else {
            head += "Content-Length: \(reply.parts.first?.count ?? 0)\r\n\r\n"
        }
        guard write(fd, Data(head.utf8)) else { return false }
        guard chunked else { return reply.parts.first.map { write(fd, $0) } ?? true }
        for (index, part) in reply.parts.enumerated() {
            if let cut = reply.cutAfter, index >= cut { return false }
            var framed = Data(String(part.count, radix: 16).utf8) + Data("\r\n".utf8)
            framed += part + Data("\r\n".utf8)
            guard write(fd, framed) else { return false }
            if reply.pause > .zero {
                Thread.sleep(forTimeInterval: Double(reply.pause.components.attoseconds) / 1e18 + Double(reply.pause.components.seconds))
            }
        }
        if reply.cutAfter != nil { return false }
        return write(fd, Data("0\r\n\r\n".utf8))
    }

    private func write(_ fd: Int32, _ data: Data) -> Bool {
        data.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                #if canImport(Glibc)
                let n = send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
                #else
                let n = Darwin.write(fd, raw.baseAddress! + offset, raw.count - offset)
                #endif
                if n <= 0 { return false }
                offset += n
            }
            return true
        }
    }
}

/// A weak reference the accepting thread holds, so the server can go away.
final class WeakBox<T: AnyObject>: @unchecked Sendable {
    weak var value: T?
    init(_ value: T) { self.value = value }
}
