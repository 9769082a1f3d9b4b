#if AsyncHTTPClient
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import PolicyGate
import PolicyGateProviders

/// `PolicyGateHTTPClient` over swift-server's AsyncHTTPClient instead of
/// `URLSession`: the same estimate, wait, send, commit and feedback in one call.
///
/// ```swift
/// let client = GatedAsyncHTTPClient(gate: gate)  // HTTPClient.shared unless given one
/// var request = HTTPClientRequest(url: "https://api.anthropic.com/v1/messages")
/// request.method = .POST
/// let reply = try await client.send(request, body: body, api: .anthropicMessages, key: key)
/// ```
public final class GatedAsyncHTTPClient: Sendable {
    /// The gate every call goes through.
    public let gate: PolicyService
    /// The estimator, calibrated by every successful call's usage.
    public let estimator: TokenEstimator
    /// The HTTP client calls are sent with.
    public let client: HTTPClient
    /// Whether ``stream(_:body:api:key:maxWait:retryThrottled:maxAttempts:timeout:)`` adds
    /// `"stream_options": {"include_usage": true}` to a streamed OpenAI chat request that does not
    /// say, as `PolicyGateHTTPClient.requestsStreamUsage` does.
    public let requestsStreamUsage: Bool

    /// Creates a client.
    /// - Parameters:
    ///   - gate: The gate to acquire permits from.
    ///   - client: The HTTP client to send with.
    ///   - estimator: The estimator (share one between clients to share its calibration).
    ///   - requestsStreamUsage: Whether streamed OpenAI chat requests are made to ask for their
    ///     usage; `false` sends them as given.
    public init(
        gate: PolicyService, client: HTTPClient = .shared, estimator: TokenEstimator = TokenEstimator(),
        requestsStreamUsage: Bool = true
    ) {
        self.gate = gate
        self.client = client
        self.estimator = estimator
        self.requestsStreamUsage = requestsStreamUsage
    }

    /// A reply read whole.
    public struct Response: Sendable {
        /// The status code.
        public let status: Int
        /// The response headers.
        public let headers: HTTPHeaders
        /// The body.
        public let body: Data
        /// The usage read and committed; `nil` for a failed call or a body without one.
        public let usage: ProviderUsage?
        /// What the call was estimated at.
        public let estimate: TokenEstimate
        /// Calls sent: more than 1 when 429s were retried.
        public let attempts: Int
    }

    /// Sends `request` with `body` (`api`'s JSON) through the gate under `key` and returns the
    /// whole reply, as `PolicyGateHTTPClient.send(_:api:key:maxWait:retryThrottled:maxAttempts:)`
    /// does over `URLSession`.
    /// - Parameters:
    ///   - request: The provider call (method, URL, headers); its body is `body`.
    ///   - body: The request's body, in `api`'s JSON.
    ///   - api: The provider's wire format, which the estimate and the usage are read with.
    ///   - key: The provider and scope the call counts under.
    ///   - maxWait: The longest to wait for the gate, over all attempts; `nil` waits as long as it takes.
    ///   - retryThrottled: Whether a 429 is sent again once the gate admits, within `maxWait`.
    ///   - maxAttempts: The most calls sent, first included.
    ///   - timeout: The longest one exchange may take.
    ///   - maxBodyBytes: The largest body read.
    public func send(
        _ request: HTTPClientRequest, body: Data, api: ProviderAPI, key: PolicyKey, maxWait: Duration? = nil,
        retryThrottled: Bool = true, maxAttempts: Int = 3, timeout: TimeAmount = .seconds(600), maxBodyBytes: Int = 64 << 20
    ) async throws -> Response {
        var attempts = try GatedAttempts(
            api: api, body: body, estimator: estimator, maxWait: maxWait, retryThrottled: retryThrottled, maxAttempts: maxAttempts)
        var request = request
        request.body = .bytes(ByteBuffer(bytes: attempts.body))
        while true {
            let permit = try await attempts.acquire(from: gate, for: key)
            let response: HTTPClientResponse
            let bytes: ByteBuffer
            do {
                response = try await client.execute(request, timeout: timeout)
                bytes = try await response.body.collect(upTo: maxBodyBytes)
            } catch {
                GatedAttempts.discard(permit)
                throw error
            }
            let data = Data(bytes.readableBytesView)
            let status = Int(response.status.code)
            switch attempts.settle(permit, status: status, headers: response.headers.map { ($0.name, $0.value) }, body: data) {
            case .retry: continue
            case .reply(let usage):
                return Response(
                    status: status, headers: response.headers, body: data, usage: usage, estimate: attempts.estimate,
                    attempts: attempts.count)
            }
        }
    }

    /// Sends a streaming request through the gate; the body's chunks arrive as they come and
    /// the call is committed when the stream ends, fails, or is dropped early (as
    /// `PolicyGateHTTPClient.stream(_:api:key:maxWait:retryThrottled:maxAttempts:)`
    /// says). 429s are handled as in ``send(_:body:api:key:maxWait:retryThrottled:maxAttempts:timeout:maxBodyBytes:)``.
    /// A streamed OpenAI chat request is sent asking for its usage unless it says otherwise
    /// (see ``requestsStreamUsage``).
    public func stream(
        _ request: HTTPClientRequest, body: Data, api: ProviderAPI, key: PolicyKey, maxWait: Duration? = nil,
        retryThrottled: Bool = true, maxAttempts: Int = 3, timeout: TimeAmount = .seconds(600)
    ) async throws -> Stream {
        var attempts = try GatedAttempts(
            api: api, body: body, estimator: estimator, maxWait: maxWait, retryThrottled: retryThrottled, maxAttempts: maxAttempts,
            requestingStreamUsage: requestsStreamUsage)
        var request = request
        request.body = .bytes(ByteBuffer(bytes: attempts.body))
        while true {
            let permit = try await attempts.acquire(from: gate, for: key)
            let response: HTTPClientResponse
            do {
                response = try await client.execute(request, timeout: timeout)
            } catch {
                GatedAttempts.discard(permit)
                throw error
            }
            let status = Int(response.status.code)
            if attempts.feedBack(status: status, headers: response.headers.map { ($0.name, $0.value) }, through: permit) {
                GatedAttempts.discard(permit)
                continue
            }
            let lease = Lease(api: api, status: status, estimate: attempts.estimate, estimator: estimator, permit: permit)
            return Stream(status: status, headers: response.headers, body: response.body, lease: lease, attempts: attempts.count)
        }
    }

    /// A streamed reply: its head at once, its body as it arrives.
    public struct Stream: AsyncSequence, Sendable {
        /// The bytes of the body, in the chunks they arrived in.
        public typealias Element = Data
        /// The status code.
        public let status: Int
        /// The response headers.
        public let headers: HTTPHeaders
        let body: HTTPClientResponse.Body
        let lease: Lease
        /// Calls sent: more than 1 when 429s were retried.
        public let attempts: Int

        /// What was committed when the stream ended, or `nil` while it runs.
        public var committed: ProviderUsage? { lease.committed }

        /// Iterates the body's chunks; the call is committed when the body ends or fails, or
        /// when the last of this stream and its iterators is dropped.
        public func makeAsyncIterator() -> Iterator { Iterator(body: body.makeAsyncIterator(), lease: lease) }

        /// The stream's iterator.
        public struct Iterator: AsyncIteratorProtocol {
            var body: HTTPClientResponse.Body.AsyncIterator
            let lease: Lease

            /// The next chunk, or `nil` at the end.
            public mutating func next() async throws -> Data? {
                do {
                    guard let buffer = try await body.next() else {
                        lease.settle()
                        return nil
                    }
                    let chunk = Data(buffer.readableBytesView)
                    lease.consume(chunk)
                    return chunk
                } catch {
                    lease.settle()
                    throw error
                }
            }
        }
    }

    /// A streamed call's permit and parser; settles once, at the end or when dropped.
    final class Lease: Sendable {
        let status: Int
        let estimate: TokenEstimate
        let estimator: TokenEstimator
        let permit: Locked<PolicyPermit?>
        let parser: Locked<StreamUsageParser>
        let settled = Locked<ProviderUsage?>(nil)

        init(api: ProviderAPI, status: Int, estimate: TokenEstimate, estimator: TokenEstimator, permit: consuming PolicyPermit) {
            self.status = status
            self.estimate = estimate
            self.estimator = estimator
            self.permit = Locked(Optional(permit))
            self.parser = Locked(StreamUsageParser(api: api))
        }

        var committed: ProviderUsage? { settled.withLock { $0 } }

        func consume(_ chunk: Data) { parser.withLock { $0.consume(chunk) } }

        func settle() {
            let snapshot = parser.withLock { parser -> StreamUsageParser in
                parser.finish()
                return parser
            }
            guard let permit = permit.withLock({ $0.take() }) else { return }
            let usage = ProviderUsage.committed(status: status, stream: snapshot, estimate: estimate)
            settled.withLock { $0 = usage }
            GatedAttempts.settleStream(
                permit, committing: usage, status: status, stream: snapshot, estimate: estimate, estimator: estimator)
        }

        deinit { settle() }
    }
}
#endif
