#if Postgres
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A loopback TCP proxy a test controls: it passes bytes both ways, stalls them (a partition:
/// the connections stay open, nothing gets through either way), or cuts every connection.
/// Threads of its own, blocking sockets: it is for tests only. Connections are shut down but
/// their descriptors are not closed (a pump may still be using the number, and a reused one
/// could belong to another test's connection): a few per test.
final class TCPProxy: @unchecked Sendable {  // `mode` and `sockets` are guarded by `lock`
    enum Mode { case pass, stall, cut }

    /// The port it listens on, on 127.0.0.1.
    let port: Int
    private let upstreamPort: Int
    private let listener: Int32
    private let lock = NSLock()
    private var mode = Mode.pass
    private var sockets: [Int32] = []

    init(upstreamPort: Int) throws {
        self.upstreamPort = upstreamPort
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard listener >= 0 else { throw TestFailure("proxy: socket() failed") }
        var address = Self.loopback(port: 0)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, Glibc.listen(listener, 64) == 0 else { throw TestFailure("proxy: bind/listen failed") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) }
        }
        self.listener = listener
        port = Int(UInt16(bigEndian: address.sin_port))
        Thread.detachNewThread { [self] in acceptLoop() }
    }

    /// Passes, stalls or cuts the traffic from now on (cut also closes the open connections).
    func set(_ mode: Mode) {
        let open = lock.withLock {
            self.mode = mode
            return mode == .cut ? sockets : []
        }
        for socket in open { shutdown(socket, Int32(SHUT_RDWR)) }
    }

    /// Stops listening and closes every connection.
    func stop() {
        set(.cut)
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
    }

    private var current: Mode { lock.withLock { mode } }

    private static func loopback(port: UInt16) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        return address
    }

    private func acceptLoop() {
        while true {
            let client = accept(listener, nil, nil)
            if client < 0 { return }
            let upstream = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = Self.loopback(port: UInt16(upstreamPort))
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(upstream, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            let refuse = lock.withLock { () -> Bool in
                if connected != 0 || mode != .pass { return true }
                sockets += [client, upstream]
                return false
            }
            if refuse {
                close(client)
                close(upstream)
                continue
            }
            Thread.detachNewThread { [self] in pump(from: client, to: upstream) }
            Thread.detachNewThread { [self] in pump(from: upstream, to: client) }
        }
    }

    private func pump(from source: Int32, to destination: Int32) {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        loop: while true {
            while current == .stall { usleep(5_000) }
            if current == .cut { break }
            let count = read(source, &buffer, buffer.count)
            if count <= 0 { break }
            // Bytes read during a stall are held until it ends (or dropped by a cut).
            while current == .stall { usleep(5_000) }
            if current == .cut { break }
            var sent = 0
            while sent < count {
                let written = buffer[sent..<count].withUnsafeBytes { write(destination, $0.baseAddress, count - sent) }
                if written <= 0 { break loop }
                sent += written
            }
        }
        shutdown(source, Int32(SHUT_RDWR))
        shutdown(destination, Int32(SHUT_RDWR))
    }
}
#endif
