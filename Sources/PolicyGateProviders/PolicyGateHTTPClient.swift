import Foundation
import PolicyGate

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A provider's reply to a gated call, read whole.
public struct ProviderResponse: @unchecked Sendable {
    /// The HTTP response (status and headers).
    public let http: HTTPURLResponse
    /// The body.
    public let body: Data
    /// The usage read from the body and committed; `nil` when the call failed or the body had none
    /// (the permit then counted 0 for a failed call, its estimate otherwise).
    public let usage: ProviderUsage?
    /// What the call was estimated at.
    public let estimate: TokenEstimate
    /// Calls sent: more than 1 when 429s were retried.
    public let attempts: Int

    /// The HTTP status code.
    public var status: Int { http.statusCode }
}

/// Provider calls through a `PolicyService` in one line: estimate, wait, send,
/// commit, feed back.
///
/// ```swift
/// let client = PolicyGateHTTPClient(gate: gate)
/// let reply = try await client.send(request, api: .anthropicMessages, key: key)
/// ```
///
/// Each call estimates its tokens from the request body (``TokenEstimator``), acquires a permit
/// with that estimate, sends the request with `URLSession`, feeds the response's rate-limit
/// headers back to the gate (`PolicyPermit.observe(headers:)`), commits the usage
/// the provider reported (0 for a failed call, as the provider bills it) and releases the
/// permit. A 429 pauses the provider (`PolicyPermit.reportThrottled(retryAfter:)`
/// with its retry hint) and is retried, if asked, once the gate admits again within the
/// caller's maximum wait. Commits never throw after the provider answered: a count the gate
/// cannot record is clamped and reported to telemetry.
public final class PolicyGateHTTPClient: Sendable {
    /// The gate every call goes through.
    public let gate: PolicyService
    /// The estimator, calibrated by every successful call's usage.
    public let estimator: TokenEstimator
    /// Whether ``stream(_:api:key:maxWait:retryThrottled:maxAttempts:)`` adds
    /// `"stream_options": {"include_usage": true}` to a streamed OpenAI chat request that does
    /// not say (``ProviderAPI/requestingStreamUsage(_:)``): without it OpenAI sends no usage, and
    /// the stream can only commit its fallback (the input estimate and the output cap).
    public let requestsStreamUsage: Bool
    let session: URLSession
    let streaming: URLSession
    let router: StreamRouter

    /// Creates a client.
    /// - Parameters:
    ///   - gate: The gate to acquire permits from.
    ///   - configuration: The sessions' configuration (timeouts, proxies, extra headers).
    ///   - estimator: The estimator (share one between clients to share its calibration).
    ///   - requestsStreamUsage: Whether streamed OpenAI chat requests are made to ask for their
    ///     usage (see ``requestsStreamUsage``); `false` sends them as given.
    public init(
        gate: PolicyService, configuration: URLSessionConfiguration = .ephemeral, estimator: TokenEstimator = TokenEstimator(),
        requestsStreamUsage: Bool = true
    ) {
        self.gate = gate
        self.estimator = estimator
        self.requestsStreamUsage = requestsStreamUsage
        self.session = URLSession(configuration: configuration)
        let router = StreamRouter()
        self.router = router
        self.streaming = URLSession(configuration: configuration, delegate: router, delegateQueue: nil)
    }

    deinit {
        session.finishTasksAndInvalidate()
        streaming.finishTasksAndInvalidate()
    }

    /// Sends `request` (its body is `api`'s JSON) through the gate under `key` and returns the
    /// whole reply.
    ///
    /// - Parameters:
    ///   - request: The provider call, its body in `api`'s JSON.
    ///   - api: The provider's wire format, which the estimate and the usage are read with.
    ///   - key: The provider and scope the call counts under.
    ///   - maxWait: The longest to wait for the gate, over all attempts; `nil` waits as long as it takes.
    ///   - retryThrottled: Whether a 429 is sent again once the gate admits (after the provider's
    ///     retry hint, or `PolicyService.defaultThrottlePause` without one); a retry
    ///     that would start later than `maxWait` allows is not attempted and the 429 is returned.
    ///   - maxAttempts: The most calls sent, first included.
    /// - Returns: The reply; a non-2xx status is returned, not thrown.
    /// - Throws: ``ProviderWireError`` if the request body cannot be read, what
    ///   `PolicyService.acquire(_:estimatedInputTokens:estimatedOutputTokens:maxWait:)`
    ///   throws, or the transport's error (the call then committed 0).
    public func send(
        _ request: URLRequest, api: ProviderAPI, key: PolicyKey, maxWait: Duration? = nil,
        retryThrottled: Bool = true, maxAttempts: Int = 3
    ) async throws -> ProviderResponse {
        var attempts = try GatedAttempts(
            api: api, body: request.httpBody ?? Data(), estimator: estimator, maxWait: maxWait, retryThrottled: retryThrottled,
            maxAttempts: maxAttempts)
        while true {
            let permit = try await attempts.acquire(from: gate, for: key)
            let data: Data
            let response: URLResponse
            do {
                (data, response) = try await session.data(for: request)
            } catch {
                GatedAttempts.discard(permit)
                throw error
            }
            guard let http = response as? HTTPURLResponse else {
                GatedAttempts.discard(permit)
                throw URLError(.badServerResponse)
            }
            switch attempts.settle(permit, status: http.statusCode, headers: Self.headerPairs(http), body: data) {
            case .retry: continue
            case .reply(let usage):
                return ProviderResponse(http: http, body: data, usage: usage, estimate: attempts.estimate, attempts: attempts.count)
            }
        }
    }

    /// Sends a streaming `request` through the gate and returns the reply as it arrives.
    ///
    /// The permit is held until the stream ends: its usage (``StreamUsageParser``) is then
    /// committed and the permit released. When the consumer stops early (stops iterating and
    /// drops the stream, or its task is cancelled) the request is cancelled and what was seen is
    /// committed at once: the usage if complete; otherwise the input seen (or estimated) and
    /// the larger of the output seen and the output estimate, since the provider bills what it
    /// generated before it noticed. A non-2xx reply commits 0. 429s are retried as in
    /// ``send(_:api:key:maxWait:retryThrottled:maxAttempts:)``. A streamed OpenAI chat request
    /// is sent asking for its usage unless it says otherwise (see ``requestsStreamUsage``).
    /// - Throws: As ``send(_:api:key:maxWait:retryThrottled:maxAttempts:)``, before any byte of the body.
    public func stream(
        _ request: URLRequest, api: ProviderAPI, key: PolicyKey, maxWait: Duration? = nil,
        retryThrottled: Bool = true, maxAttempts: Int = 3
    ) async throws -> ProviderStream {
        var attempts = try GatedAttempts(
            api: api, body: request.httpBody ?? Data(), estimator: estimator, maxWait: maxWait, retryThrottled: retryThrottled,
            maxAttempts: maxAttempts, requestingStreamUsage: requestsStreamUsage)
        var request = request
        request.httpBody = attempts.body
        while true {
            let permit = try await attempts.acquire(from: gate, for: key)
            // The sink must not keep the consumer's stream: its end (the consumer dropping the
            // stream and its iterator) is what tells the sink to stop early.
            let (chunks, continuation) = AsyncThrowingStream<Data, any Error>.makeStream()
            let sink = StreamSink(
                api: api, estimate: attempts.estimate, estimator: estimator, permit: permit, continuation: continuation)
            let task = streaming.dataTask(with: request)
            router.register(sink, for: task)
            task.resume()
            let http = try await withTaskCancellationHandler {
                try await sink.head()
            } onCancel: {
                task.cancel()
            }
            if sink.feedBack(status: http.statusCode, headers: Self.headerPairs(http), attempts: attempts) {
                task.cancel()
                sink.settle()
                continue
            }
            return ProviderStream(http: http, sink: sink, chunks: chunks, attempts: attempts.count)
        }
    }

    static func headerPairs(_ http: HTTPURLResponse) -> [(String, String)] {
        http.allHeaderFields.compactMap { name, value in
            guard let name = name as? String else { return nil }
            return (name, "\(value)")
        }
    }
}

/// A streamed reply: its head at once, its body as it arrives (`for try await chunk in stream`).
///
/// Stopping early (leaving the loop and dropping the stream, or cancelling the task) cancels the
/// request and commits what the call used, as ``PolicyGateHTTPClient/stream(_:api:key:maxWait:retryThrottled:maxAttempts:)`` says.
public struct ProviderStream: AsyncSequence, @unchecked Sendable {
    /// The bytes of the body, in the chunks they arrived in.
    public typealias Element = Data
    /// The HTTP response (status and headers).
    public let http: HTTPURLResponse
    let sink: StreamSink
    let chunks: AsyncThrowingStream<Data, any Error>
    /// Calls sent: more than 1 when 429s were retried.
    public let attempts: Int

    /// The HTTP status code.
    public var status: Int { http.statusCode }
    /// The usage read from the events so far.
    public var usage: ProviderUsage? { sink.parsed.usage }
    /// Whether the stream's end event arrived.
    public var isComplete: Bool { sink.parsed.isComplete }
    /// What was committed when the stream ended, or `nil` while it runs.
    public var committed: ProviderUsage? { sink.committed }

    /// Iterates the body's chunks.
    public func makeAsyncIterator() -> AsyncThrowingStream<Data, any Error>.Iterator {
        chunks.makeAsyncIterator()
    }
}

/// One streamed call: its permit until the end, its parser, and its consumer's stream.
final class StreamSink: Sendable {
    enum Head {
        case waiting(CheckedContinuation<HTTPURLResponse, any Error>?)
        case received(HTTPURLResponse)
        case failed(any Error)
    }

    let api: ProviderAPI
    let estimate: TokenEstimate
    let estimator: TokenEstimator
    let lease: Locked<PolicyPermit?>
    let parser: Locked<StreamUsageParser>
    let status = Locked(0)
    let settled = Locked<ProviderUsage?>(nil)
    let headState = Locked<Head>(.waiting(nil))
    let continuation: AsyncThrowingStream<Data, any Error>.Continuation
    let cancel = Locked<(@Sendable () -> Void)?>(nil)

    init(
        api: ProviderAPI, estimate: TokenEstimate, estimator: TokenEstimator, permit: consuming PolicyPermit,
        continuation: AsyncThrowingStream<Data, any Error>.Continuation
    ) {
        self.api = api
        self.estimate = estimate
        self.estimator = estimator
        self.lease = Locked(Optional(permit))
        self.parser = Locked(StreamUsageParser(api: api))
        self.continuation = continuation
        continuation.onTermination = { [weak self] termination in
            guard let self else { return }
            if case .cancelled = termination {
                self.cancel.withLock { $0 }?()
                self.settle()
            }
        }
    }

    var parsed: StreamUsageParser { parser.withLock { $0 } }
    var committed: ProviderUsage? { settled.withLock { $0 } }

    func head() async throws -> HTTPURLResponse {
        try await withCheckedThrowingContinuation { (waiter: CheckedContinuation<HTTPURLResponse, any Error>) in
            let ready: Result<HTTPURLResponse, any Error>? = headState.withLock { state in
                switch state {
                case .waiting: state = .waiting(waiter); return nil
                case .received(let http): return .success(http)
                case .failed(let error): return .failure(error)
                }
            }
            if let ready { waiter.resume(with: ready) }
        }
    }

    func received(_ response: URLResponse) {
        let http = response as? HTTPURLResponse
        status.withLock { $0 = http?.statusCode ?? 0 }
        let outcome: Result<HTTPURLResponse, any Error> = http.map { .success($0) } ?? .failure(URLError(.badServerResponse))
        let waiter: CheckedContinuation<HTTPURLResponse, any Error>? = headState.withLock { state in
            guard case .waiting(let waiter) = state else { return nil }
            switch outcome {
            case .success(let http): state = .received(http)
            case .failure(let error): state = .failed(error)
            }
            return waiter
        }
        waiter?.resume(with: outcome)
    }

    func received(_ data: Data) {
        guard committed == nil else { return }
        parser.withLock { $0.consume(data) }
        continuation.yield(data)
    }

    func completed(_ error: (any Error)?) {
        parser.withLock { $0.finish() }
        let waiter: CheckedContinuation<HTTPURLResponse, any Error>? = headState.withLock { state in
            guard case .waiting(let waiter) = state else { return nil }
            state = .failed(error ?? URLError(.badServerResponse))
            return waiter
        }
        waiter?.resume(throwing: error ?? URLError(.badServerResponse))
        settle()
        if let error { continuation.finish(throwing: error) } else { continuation.finish() }
    }

    /// Feeds the reply's head back through the permit (``GatedAttempts/feedBack(status:headers:through:)``);
    /// returns whether the attempt is to be sent again.
    func feedBack(status: Int, headers: [(String, String)], attempts: GatedAttempts) -> Bool {
        lease.withLock { slot in
            guard let permit = slot.take() else { return false }
            let retry = attempts.feedBack(status: status, headers: headers, through: permit)
            slot = consume permit
            return retry
        }
    }

    /// Commits what the call used and releases its permit; only the first call does anything.
    func settle() {
        let snapshot = parsed
        let code = status.withLock { $0 }
        let usage = ProviderUsage.committed(status: code, stream: snapshot, estimate: estimate)
        guard let permit = lease.withLock({ $0.take() }) else { return }
        settled.withLock { $0 = usage }
        GatedAttempts.settleStream(
            permit, committing: usage, status: code, stream: snapshot, estimate: estimate, estimator: estimator)
    }
}

/// The streaming session's delegate: hands each task's events to its sink.
final class StreamRouter: NSObject, URLSessionDataDelegate, @unchecked Sendable {
    private let sinks = Locked<[Int: StreamSink]>([:])

    func register(_ sink: StreamSink, for task: URLSessionDataTask) {
        sinks.withLock { $0[task.taskIdentifier] = sink }
        sink.cancel.withLock { $0 = { [weak task] in task?.cancel() } }
    }

    private func sink(_ task: URLSessionTask) -> StreamSink? { sinks.withLock { $0[task.taskIdentifier] } }

    func urlSession(
        _ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
        completionHandler: @escaping @Sendable (URLSession.ResponseDisposition) -> Void
    ) {
        sink(dataTask)?.received(response)
        completionHandler(.allow)
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
        sink(dataTask)?.received(data)
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: (any Error)?) {
        let sink = sinks.withLock { $0.removeValue(forKey: task.taskIdentifier) }
        sink?.completed(error)
    }
}
