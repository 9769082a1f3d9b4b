#if Logging
import InMemoryLogging
import Logging
import PolicyGate
import PolicyGateLogging
import PolicyGateTestKit
import Testing

@Suite("PolicyLogging", .timeLimit(.minutes(5)))
struct PolicyLoggingTests {
    typealias Key = PolicyLogging.MetadataKey
    let clock = ManualClock()
    let key = PolicyKey(provider: "openai", scope: .user("u-42"))
    let handler = InMemoryLogHandler()

    func logger(_ level: Logger.Level) -> Logger {
        var logger = Logger(label: "test") { [handler] _ in handler }
        logger.logLevel = level
        return logger
    }

    @Test("a shared store's failure is one warning naming the operation, the outcome and the error")
    func storeFailure() {
        PolicyLogging(logger: logger(.info)).didFailStore(
            PolicyStoreFailureEvent(key: key, operation: .commit, outcome: .willRetry, error: "PostgreSQL connection: refused"))
        #expect(handler.entries.map(\.level) == [.warning])
        #expect(handler.entries.first?.message.description == "PolicyGate store failed: PostgreSQL connection: refused")
        #expect(
            flat(handler.entries.first?.metadata ?? [:]) == [
                Key.provider: "openai", Key.scopeKind: "user", Key.scope: "user:u-42",
                "policygate.store_operation": "commit", "policygate.store_outcome": "will_retry",
            ])
    }

    @Test("a lost lease is one error naming the key and the reason")
    func leaseLoss() {
        PolicyLogging(logger: logger(.info)).didLoseLease(PolicyLeaseLossEvent(key: key, reason: .unconfirmed))
        #expect(handler.entries.map(\.level) == [.error])
        #expect(handler.entries.first?.message.description == "PolicyGate lost a shared lease: the slot may be given to another process")
        #expect(
            flat(handler.entries.first?.metadata ?? [:]) == [
                Key.provider: "openai", Key.scopeKind: "user", Key.scope: "user:u-42", "policygate.lease_loss": "unconfirmed",
            ])
    }

    @Test("provider feedback: a 429 is a warning, values not believed a notice, the rest debug")
    func feedback() async throws {
        let gate = try PolicyService(
            limits: ["openai": PolicyLimits(requestsPerMinute: 100)], clock: clock,
            telemetry: PolicyLogging(logger: logger(.trace)))
        gate.reportThrottled(key, retryAfter: .seconds(20))
        gate.observe(headers: ["x-ratelimit-remaining-requests": "-1"], for: key)
        gate.observe(headers: ["x-ratelimit-remaining-requests": "7", "x-ratelimit-reset-requests": "30s"], for: key)
        #expect(handler.entries.map(\.level) == [.warning, .notice, .debug])
        #expect(
            handler.entries.map(\.message.description) == [
                "PolicyGate paused by the provider", "PolicyGate ignored provider feedback it could not believe",
                "PolicyGate read provider feedback",
            ])
        #expect(flat(handler.entries[0].metadata)["policygate.paused_seconds"] == "20.0")
        #expect(flat(handler.entries[2].metadata)["policygate.requests_remaining"] == "7")
    }

    @Test("adaptive caps: lowered is a notice, grown back debug")
    func adaptive() {
        let logging = PolicyLogging(logger: logger(.trace))
        let configured = PolicyLimits(requestsPerMinute: 100)
        logging.didAdaptLimits(
            PolicyAdaptiveEvent(
                provider: "openai", previousFactor: 1, factor: 0.7, limits: PolicyLimits(requestsPerMinute: 70), configured: configured))
        logging.didAdaptLimits(
            PolicyAdaptiveEvent(
                provider: "openai", previousFactor: 0.7, factor: 0.75, limits: PolicyLimits(requestsPerMinute: 75), configured: configured))
        #expect(handler.entries.map(\.level) == [.notice, .debug])
        #expect(handler.entries.first?.message.description == "PolicyGate lowered adaptive caps after a 429")
        #expect(flat(handler.entries[0].metadata)["policygate.adaptive_factor"] == "0.7")
        #expect(flat(handler.entries[1].metadata)[Key.limitsCurrent] == "requestsPerMinute=75")
    }

    @Test("acquire, commit, reject and release are one line each, with their figures as metadata")
    func everyEvent() async throws {
        let gate = try PolicyService(
            limits: ["openai": PolicyLimits(tokensPerMinute: 1_000)], clock: clock,
            telemetry: PolicyLogging(logger: logger(.trace)))
        do {
            var permit = try await gate.acquire(key, estimatedTokens: 800)
            clock.advance(by: .milliseconds(1_500))
            try permit.commitTokens(950)
            #expect(throws: PolicyError.self) { _ = try gate.tryAcquire(key, estimatedTokens: 100) }
        }
        let base: [String: String] = [
            Key.provider: "openai", Key.scopeKind: "user", Key.scope: "user:u-42",
        ]
        let entries = handler.entries
        try #require(entries.count == 4)
        #expect(entries.map(\.level) == [.debug, .debug, .notice, .trace])
        #expect(
            entries.map(\.message) == [
                "PolicyGate admitted a call", "PolicyGate committed tokens",
                "PolicyGate rejected a call", "PolicyGate released a permit",
            ])
        #expect(
            flat(entries[0].metadata)
                == base.merging([
                    Key.estimatedTokens: "800", Key.waitedSeconds: "0.0",
                ]) { $1 })
        #expect(
            flat(entries[1].metadata)
                == base.merging([
                    Key.estimatedTokens: "800", Key.previousTokens: "800", Key.actualTokens: "950", Key.estimateRatio: "1.1875",
                ]) { $1 })
        #expect(
            flat(entries[2].metadata)
                == base.merging([
                    Key.reason: "rate_limited", Key.limit: "tokens_per_minute",
                    Key.retryAfterSeconds: "59.5", Key.estimatedTokens: "100",
                ]) { $1 })
        #expect((entries[2].error as? PolicyError)?.code == .rateLimited)
        #expect(flat(entries[3].metadata) == base.merging([Key.tokens: "950", Key.heldSeconds: "1.5"]) { $1 })
    }

    @Test("a commit without an estimate has no estimate ratio")
    func noEstimate() async throws {
        let gate = try PolicyService(
            limits: ["openai": PolicyLimits(maxConcurrent: 1)], clock: clock, telemetry: PolicyLogging(logger: logger(.debug)))
        var permit = try await gate.acquire(key)
        try permit.commitTokens(40)
        permit.release()
        let commit = try #require(handler.entries.first { $0.message.description == "PolicyGate committed tokens" })
        #expect(flat(commit.metadata)[Key.actualTokens] == "40")
        #expect(flat(commit.metadata)[Key.estimateRatio] == nil)
    }

    @Test("a permit held too long is one warning with its key, how long, the threshold and its tokens")
    func longHold() async throws {
        let gate = try PolicyService(
            limits: ["openai": PolicyLimits(maxConcurrent: 2)], clock: clock, telemetry: PolicyLogging(logger: logger(.info)))
        try gate.setPermitHoldWarning(.seconds(90))
        var permit = try await gate.acquire(key, estimatedTokens: 12)
        try permit.commitTokens(7)
        clock.advance(by: .seconds(100))
        await eventually { !handler.entries.isEmpty }
        #expect(handler.entries.map(\.level) == [.warning])
        #expect(handler.entries.first?.message.description == "PolicyGate permit held too long")
        #expect(
            flat(handler.entries.first?.metadata ?? [:]) == [
                Key.provider: "openai", Key.scopeKind: "user", Key.scope: "user:u-42", Key.heldSeconds: "100.0",
                Key.thresholdSeconds: "90.0", Key.estimatedTokens: "12", Key.committedTokens: "7",
            ])
        permit.release()
    }

    @Test("input and output estimates and commits in parts are metadata; a refusal names the input cap")
    func inputOutput() async throws {
        let gate = try PolicyService(
            limits: ["openai": PolicyLimits(inputTokensPerMinute: 1_000, outputTokensPerMinute: 500)], clock: clock,
            telemetry: PolicyLogging(logger: logger(.trace)))
        do {
            var permit = try await gate.acquire(key, estimatedInputTokens: 800, estimatedOutputTokens: 300)
            try permit.commitTokens(input: 600, output: 100, cacheReads: 2_000)
            #expect(throws: PolicyError.self) { _ = try gate.tryAcquire(key, estimatedInputTokens: 401, estimatedOutputTokens: 10) }
        }
        let entries = handler.entries
        try #require(entries.count == 4)
        #expect(flat(entries[0].metadata)[Key.estimatedInputTokens] == "800")
        #expect(flat(entries[0].metadata)[Key.estimatedOutputTokens] == "300")
        #expect(flat(entries[0].metadata)[Key.estimatedTokens] == "1100")
        #expect(flat(entries[1].metadata)[Key.inputTokens] == "600")
        #expect(flat(entries[1].metadata)[Key.outputTokens] == "100")
        #expect(flat(entries[1].metadata)[Key.cacheReadTokens] == "2000")
        #expect(flat(entries[1].metadata)[Key.actualTokens] == "2700")  // cache reads count as input by default
        #expect(flat(entries[2].metadata)[Key.limit] == "input_tokens_per_minute")
    }

    @Test("a wait is logged in seconds; a timeout is a rejection with reason timed_out")
    func waitsAndTimeouts() async throws {
        let gate = try PolicyService(
            limits: ["openai": PolicyLimits(maxConcurrent: 1)], clock: clock,
            telemetry: PolicyLogging(logger: logger(.debug)))
        let first = try await gate.acquire(key)
        let waiter = Task { [gate, key] in
            let permit = try await gate.acquire(key, estimatedTokens: 0)
            permit.release()
        }
        await eventually { gate.currentState(for: key).queued == 1 }
        clock.advance(by: .seconds(2))
        first.release()
        try await waiter.value

        let holder = try await gate.acquire(key)
        let timeout = Task { [gate, key] in
            let permit = try await gate.acquire(key, maxWait: .seconds(5))
            permit.release()
        }
        await eventually { gate.currentState(for: key).queued == 1 }
        clock.advance(by: .seconds(5))
        await #expect(throws: PolicyError.self) { try await timeout.value }
        holder.release()

        let admitted = handler.entries.filter { $0.message == "PolicyGate admitted a call" }
        #expect(admitted.map { $0.metadata[Key.waitedSeconds]?.description } == ["0.0", "2.0", "0.0"])
        let rejected = try #require(handler.entries.first { $0.message == "PolicyGate rejected a call" })
        #expect(rejected.level == .notice)
        #expect(rejected.metadata[Key.reason] == "timed_out")
        #expect(rejected.metadata[Key.limit] == "concurrency")
        #expect(rejected.metadata[Key.retryAfterSeconds] == nil)
    }

    @Test("at the logger's default level only refusals and limit changes are written")
    func levels() async throws {
        let logging = PolicyLogging(logger: logger(.info))
        let gate = try PolicyService(limits: ["openai": PolicyLimits(requestsPerMinute: 1)], clock: clock, telemetry: logging)
        try await gate.acquire(key).release()
        #expect(throws: PolicyError.self) { _ = try gate.tryAcquire(key) }
        logging.didChangeLimits(
            PolicyLimitsChangeEvent(
                provider: "openai", previous: PolicyLimits(requestsPerMinute: 1),
                current: PolicyLimits(requestsPerMinute: 500, maxConcurrent: 16)))
        #expect(handler.entries.map(\.level) == [.notice, .info])
        let change = try #require(handler.entries.last)
        #expect(change.message == "PolicyGate limits changed")
        #expect(
            flat(change.metadata) == [
                Key.provider: "openai",
                Key.limitsPrevious: "requestsPerMinute=1",
                Key.limitsCurrent: "requestsPerMinute=500 concurrency=16",
                Key.cause: "configuration",
            ])
    }

    @Test("levels can be changed, and scope ids left out")
    func options() async throws {
        let logging = PolicyLogging(
            logger: logger(.info), levels: .init(reject: .warning, acquire: .info), includeScopeID: false)
        let gate = try PolicyService(limits: ["openai": PolicyLimits(requestsPerMinute: 1)], clock: clock, telemetry: logging)
        try await gate.acquire(key, estimatedTokens: 3).release()
        #expect(throws: PolicyError.self) { _ = try gate.tryAcquire(key) }
        #expect(handler.entries.map(\.level) == [.info, .warning])
        #expect(handler.entries.allSatisfy { $0.metadata[Key.scope] == nil && $0.metadata[Key.scopeKind] == "user" })
    }

    @Test("a line below the logger's level builds no metadata: the handler is never called")
    func disabledIsCheap() async throws {
        let gate = try PolicyService(
            limits: ["openai": PolicyLimits(requestsPerMinute: 1_000)], clock: clock,
            telemetry: PolicyLogging(logger: logger(.notice)))
        for _ in 0..<100 { try await gate.acquire(key, estimatedTokens: 1).release() }
        #expect(handler.entries.isEmpty)
    }
}

/// Metadata as plain strings: numbers are logged as `.stringConvertible`, rendered on output.
func flat(_ metadata: Logger.Metadata) -> [String: String] {
    metadata.mapValues(\.description)
}

/// Yields until `condition` holds; records an issue if it never does.
func eventually(sourceLocation: SourceLocation = #_sourceLocation, _ condition: () -> Bool) async {
    for _ in 0..<200_000 {
        if condition() { return }
        await Task.yield()
    }
    Issue.record("condition never held", sourceLocation: sourceLocation)
}
#endif
