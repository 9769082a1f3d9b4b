// Built only with the package trait `Logging`; without it this module is empty, so the
// default build needs no swift-log.
#if Logging
import Foundation
import Logging
import PolicyGate
import PolicyGateTelemetrySupport

/// A `PolicyTelemetry` that writes one structured log line per gate event through swift-log.
///
/// ```swift
/// let gate = try PolicyService(limits: limits, telemetry: PolicyLogging(logger: logger))
/// ```
///
/// Every line has a fixed message and its figures in metadata (never interpolated into the
/// text), so log backends can index and query them:
///
/// | event | level (default) | message | metadata |
/// |---|---|---|---|
/// | refusal | `notice` | `PolicyGate rejected a call` | provider, scope_kind, scope, reason, limit, retry_after_seconds, estimated_tokens |
/// | limits change | `info` | `PolicyGate limits changed` | provider, limits_previous, limits_current |
/// | admission | `debug` | `PolicyGate admitted a call` | provider, scope_kind, scope, estimated_tokens, waited_seconds (and estimated_input_tokens, estimated_output_tokens when given apart) |
/// | commit | `debug` | `PolicyGate committed tokens` | provider, scope_kind, scope, estimated_tokens, previous_tokens, actual_tokens, estimate_ratio (actual ÷ estimate, left out when the estimate was 0) (and input_tokens, output_tokens, cache_read_tokens when committed in parts) |
/// | release | `trace` | `PolicyGate released a permit` | provider, scope_kind, scope, tokens, held_seconds |
/// | permit held too long | `warning` | `PolicyGate permit held too long` | provider, scope_kind, scope, held_seconds, threshold_seconds, estimated_tokens, committed_tokens (when it committed) |
///
/// Metadata keys carry the prefix `policygate.` (`policygate.provider`, …) so they cannot clash
/// with the application's own. A refusal also passes its `PolicyError` as the log's `error`.
/// A line below the logger's level costs one comparison: its metadata is never built.
public struct PolicyLogging: PolicyTelemetry {
    /// The level each kind of event is logged at.
    public struct Levels: Sendable, Hashable {
        /// Refused calls (rate limited, timed out, oversized, invalid counts). Default `notice`.
        public var reject: Logger.Level
        /// Limits replaced at run time or by a configuration reload. Default `info`.
        public var limitsChange: Logger.Level
        /// Admitted calls. Default `debug`.
        public var acquire: Logger.Level
        /// Committed token counts. Default `debug`.
        public var commit: Logger.Level
        /// Released permits. Default `trace`.
        public var release: Logger.Level
        /// A shared store that failed (and what the gate did about it). Default `warning`.
        public var storeFailure: Logger.Level
        /// A shared permit's lease that could no longer be vouched for (the key may run over its
        /// concurrency cap until the permit is released). Default `error`.
        public var leaseLoss: Logger.Level
        /// What a provider said about its limits, read from a response. Default `debug`; a
        /// report with values that were not believed is logged at `notice` or above.
        public var feedback: Logger.Level
        /// A provider pausing the gate (a 429, a `retry-after`). Default `warning`.
        public var providerPause: Logger.Level
        /// Adaptive caps lowered after a 429. Default `notice`; growing back is logged at
        /// `debug` (or this level if lower).
        public var adaptive: Logger.Level
        /// A permit held longer than the service's hold warning (once per permit). Default
        /// `warning`: a permit never released keeps a concurrency slot for good.
        public var longHold: Logger.Level

        /// Levels for each kind of event; the defaults keep per-call lines below `info`.
        public init(
            reject: Logger.Level = .notice,
            limitsChange: Logger.Level = .info,
            acquire: Logger.Level = .debug,
            commit: Logger.Level = .debug,
            release: Logger.Level = .trace,
            storeFailure: Logger.Level = .warning,
            leaseLoss: Logger.Level = .error,
            feedback: Logger.Level = .debug,
            providerPause: Logger.Level = .warning,
            adaptive: Logger.Level = .notice,
            longHold: Logger.Level = .warning
        ) {
            self.reject = reject
            self.limitsChange = limitsChange
            self.acquire = acquire
            self.commit = commit
            self.release = release
            self.storeFailure = storeFailure
            self.leaseLoss = leaseLoss
            self.feedback = feedback
            self.providerPause = providerPause
            self.adaptive = adaptive
            self.longHold = longHold
        }
    }

    /// The metadata keys written, for filtering or tests.
    public enum MetadataKey {
        /// The provider name.
        public static let provider = "policygate.provider"
        /// The scope's kind: `global`, `user`, `org`, `project` or a custom kind.
        public static let scopeKind = "policygate.scope_kind"
        /// The whole scope, such as `user:u-42` (left out when `includeScopeID` is off).
        public static let scope = "policygate.scope"
        /// Why a call was refused: `rate_limited`, `timed_out`, `oversized`, `invalid_token_count`, …
        public static let reason = "policygate.reason"
        /// The cap that refused the call (`tokens_per_minute`, `concurrency`, …), when one did.
        public static let limit = "policygate.limit"
        /// Seconds until the same call would be admitted, when known.
        public static let retryAfterSeconds = "policygate.retry_after_seconds"
        /// The call's pre-flight token estimate.
        public static let estimatedTokens = "policygate.estimated_tokens"
        /// Seconds the admitted call waited.
        public static let waitedSeconds = "policygate.waited_seconds"
        /// The token count a commit replaced.
        public static let previousTokens = "policygate.previous_tokens"
        /// The token count committed.
        public static let actualTokens = "policygate.actual_tokens"
        /// An admitted call's input estimate, when given apart.
        public static let estimatedInputTokens = "policygate.estimated_input_tokens"
        /// An admitted call's output estimate, when given apart.
        public static let estimatedOutputTokens = "policygate.estimated_output_tokens"
        /// The input tokens a commit reported, when committed in parts.
        public static let inputTokens = "policygate.input_tokens"
        /// The output tokens a commit reported, when committed in parts.
        public static let outputTokens = "policygate.output_tokens"
        /// The input tokens read from the provider's cache, when committed in parts.
        public static let cacheReadTokens = "policygate.cache_read_tokens"
        /// The tokens a released permit ended with.
        public static let tokens = "policygate.tokens"
        /// Seconds a released permit was held, or a permit held too long had been held.
        public static let heldSeconds = "policygate.held_seconds"
        /// The hold warning's threshold, in seconds, on a permit held too long.
        public static let thresholdSeconds = "policygate.threshold_seconds"
        /// The tokens a permit held too long committed last (left out if it committed none).
        public static let committedTokens = "policygate.committed_tokens"
        /// A commit's actual ÷ estimated tokens (left out when the estimate was 0).
        public static let estimateRatio = "policygate.estimate_ratio"
        /// A provider's limits before a change (`requestsPerMinute=500 maxConcurrent=16`, or `unlimited`).
        public static let limitsPrevious = "policygate.limits_previous"
        /// A provider's limits after a change.
        public static let limitsCurrent = "policygate.limits_current"
        /// What changed the limits: `configuration` or `schedule`.
        public static let cause = "policygate.cause"
        /// The schedule entry in force after the change, when one applies.
        public static let scheduleEntry = "policygate.schedule_entry"
        /// `true` when that schedule entry closes the gate.
        public static let closed = "policygate.closed"
        /// When the schedule changes the limits next (ISO 8601, UTC), when it will.
        public static let nextTransition = "policygate.next_transition"
    }

    /// The logger written to.
    public let logger: Logger
    /// The level of each kind of event.
    public let levels: Levels
    /// Whether lines name the scope's id (`policygate.scope`). Turn it off when ids such as user
    /// ids must not reach the logs; the scope's kind is always written.
    public let includeScopeID: Bool

    /// Logs gate events to `logger`.
    /// - Parameters:
    ///   - logger: Where lines go; its level decides which events are written.
    ///   - levels: The level of each kind of event.
    ///   - includeScopeID: Whether lines name the scope's id as well as its kind.
    public init(
        logger: Logger = Logger(label: "PolicyGate"),
        levels: Levels = Levels(),
        includeScopeID: Bool = true
    ) {
        self.logger = logger
        self.levels = levels
        self.includeScopeID = includeScopeID
    }

    /// Logs a refusal at ``Levels/reject``.
    public func didReject(_ event: PolicyRejectEvent) {
        logger.log(
            level: levels.reject, "PolicyGate rejected a call", error: event.error,
            metadata: {
                var metadata = keyMetadata(event.key)
                metadata[MetadataKey.reason] = .string(LabelNames.reason(event.error.code))
                if let limit = event.error.limit { metadata[MetadataKey.limit] = .string(LabelNames.limit(limit)) }
                if let retryAfter = event.error.retryAfter {
                    metadata[MetadataKey.retryAfterSeconds] = .stringConvertible(LabelNames.seconds(retryAfter))
                }
                metadata[MetadataKey.estimatedTokens] = .stringConvertible(event.estimatedTokens)
                return metadata
            }(), source: "PolicyGate")
    }

    /// Logs a limits change at ``Levels/limitsChange``.
    public func didChangeLimits(_ event: PolicyLimitsChangeEvent) {
        logger.log(
            level: levels.limitsChange, "PolicyGate limits changed",
            metadata: {
                var metadata: Logger.Metadata = [
                    MetadataKey.provider: .string(event.provider),
                    MetadataKey.limitsPrevious: .string(event.previous.description),
                    MetadataKey.limitsCurrent: .string(event.current.description),
                    MetadataKey.cause: .string(event.cause.rawValue),
                ]
                if let entry = event.scheduleEntry {
                    metadata[MetadataKey.scheduleEntry] = .string(entry)
                    metadata[MetadataKey.closed] = .stringConvertible(event.isClosed)
                }
                if let next = event.nextTransition {
                    metadata[MetadataKey.nextTransition] = .string(next.formatted(.iso8601))
                }
                return metadata
            }(), source: "PolicyGate")
    }

    /// Logs an admission at ``Levels/acquire``.
    public func didAcquire(_ event: PolicyAcquireEvent) {
        logger.log(
            level: levels.acquire, "PolicyGate admitted a call",
            metadata: {
                var metadata = keyMetadata(event.key)
                metadata[MetadataKey.estimatedTokens] = .stringConvertible(event.estimatedTokens)
                if let input = event.estimatedInputTokens { metadata[MetadataKey.estimatedInputTokens] = .stringConvertible(input) }
                if let output = event.estimatedOutputTokens { metadata[MetadataKey.estimatedOutputTokens] = .stringConvertible(output) }
                metadata[MetadataKey.waitedSeconds] = .stringConvertible(LabelNames.seconds(event.waited))
                return metadata
            }(), source: "PolicyGate")
    }

    /// Logs a commit at ``Levels/commit``.
    public func didCommit(_ event: PolicyCommitEvent) {
        logger.log(
            level: levels.commit, "PolicyGate committed tokens",
            metadata: {
                var metadata = keyMetadata(event.key)
                metadata[MetadataKey.estimatedTokens] = .stringConvertible(event.estimatedTokens)
                metadata[MetadataKey.previousTokens] = .stringConvertible(event.previousTokens)
                metadata[MetadataKey.actualTokens] = .stringConvertible(event.actualTokens)
                if let ratio = event.estimateRatio { metadata[MetadataKey.estimateRatio] = .stringConvertible(ratio) }
                if let input = event.inputTokens { metadata[MetadataKey.inputTokens] = .stringConvertible(input) }
                if let output = event.outputTokens { metadata[MetadataKey.outputTokens] = .stringConvertible(output) }
                if let cached = event.cacheReadTokens { metadata[MetadataKey.cacheReadTokens] = .stringConvertible(cached) }
                return metadata
            }(), source: "PolicyGate")
    }

    /// Logs a store failure at ``Levels/storeFailure``: the operation, what the gate did, and
    /// the store's error (which never holds a password).
    public func didFailStore(_ event: PolicyStoreFailureEvent) {
        logger.log(
            level: levels.storeFailure, "PolicyGate store failed: \(event.error)",
            metadata: {
                var metadata = keyMetadata(event.key)
                metadata["policygate.store_operation"] = .string(event.operation.rawValue)
                metadata["policygate.store_outcome"] = .string(LabelNames.snakeCase(event.outcome.rawValue))
                return metadata
            }(), source: "PolicyGate")
    }

    /// Logs a lost lease at ``Levels/leaseLoss``, with the reason.
    public func didLoseLease(_ event: PolicyLeaseLossEvent) {
        logger.log(
            level: levels.leaseLoss, "PolicyGate lost a shared lease: the slot may be given to another process",
            metadata: {
                var metadata = keyMetadata(event.key)
                metadata["policygate.lease_loss"] = .string(event.reason.rawValue)
                return metadata
            }(), source: "PolicyGate")
    }

    /// Logs provider feedback: a pause at ``Levels/providerPause``, values not believed at
    /// `notice` (or ``Levels/feedback`` if higher), the rest at ``Levels/feedback``.
    public func didObserveFeedback(_ event: PolicyFeedbackEvent) {
        let ignored = event.feedback.ignored
        let level =
            event.pausedFor != nil
            ? levels.providerPause : ignored.isEmpty ? levels.feedback : max(levels.feedback, .notice)
        let message: Logger.Message =
            event.pausedFor != nil
            ? "PolicyGate paused by the provider"
            : ignored.isEmpty
                ? "PolicyGate read provider feedback"
                : "PolicyGate ignored provider feedback it could not believe"
        logger.log(
            level: level, message,
            metadata: {
                var metadata = keyMetadata(event.key)
                if let pause = event.pausedFor { metadata["policygate.paused_seconds"] = .stringConvertible(LabelNames.seconds(pause)) }
                if let cause = event.pauseCause { metadata["policygate.pause_cause"] = .string(cause) }
                if let left = event.requestsRemaining { metadata["policygate.requests_remaining"] = .stringConvertible(left) }
                if let left = event.tokensRemaining { metadata["policygate.tokens_remaining"] = .stringConvertible(left) }
                if !ignored.isEmpty { metadata["policygate.ignored"] = .array(ignored.map { .string($0.description) }) }
                return metadata
            }(), source: "PolicyGate")
    }

    /// Logs adaptive caps that moved: lowered at ``Levels/adaptive``, grown back at `debug`.
    public func didAdaptLimits(_ event: PolicyAdaptiveEvent) {
        logger.log(
            level: event.isDecrease ? levels.adaptive : min(levels.adaptive, .debug),
            event.isDecrease ? "PolicyGate lowered adaptive caps after a 429" : "PolicyGate adaptive caps grew back",
            metadata: [
                MetadataKey.provider: .string(event.provider),
                "policygate.adaptive_factor": .stringConvertible(event.factor),
                "policygate.adaptive_previous_factor": .stringConvertible(event.previousFactor),
                MetadataKey.limitsCurrent: .string(event.limits.description),
            ], source: "PolicyGate")
    }

    /// Logs a permit held too long at ``Levels/longHold``: its key, how long, the threshold and
    /// its tokens.
    public func didHoldPermitTooLong(_ event: PolicyLongHoldEvent) {
        logger.log(
            level: levels.longHold, "PolicyGate permit held too long",
            metadata: {
                var metadata = keyMetadata(event.key)
                metadata[MetadataKey.heldSeconds] = .stringConvertible(LabelNames.seconds(event.held))
                metadata[MetadataKey.thresholdSeconds] = .stringConvertible(LabelNames.seconds(event.threshold))
                metadata[MetadataKey.estimatedTokens] = .stringConvertible(event.estimatedTokens)
                if let committed = event.committedTokens { metadata[MetadataKey.committedTokens] = .stringConvertible(committed) }
                return metadata
            }(), source: "PolicyGate")
    }

    /// Logs a release at ``Levels/release``.
    public func didRelease(_ event: PolicyReleaseEvent) {
        logger.log(
            level: levels.release, "PolicyGate released a permit",
            metadata: {
                var metadata = keyMetadata(event.key)
                metadata[MetadataKey.tokens] = .stringConvertible(event.tokens)
                metadata[MetadataKey.heldSeconds] = .stringConvertible(LabelNames.seconds(event.held))
                return metadata
            }(), source: "PolicyGate")
    }

    private func keyMetadata(_ key: PolicyKey) -> Logger.Metadata {
        var metadata: Logger.Metadata = [
            MetadataKey.provider: .string(key.provider),
            MetadataKey.scopeKind: .string(key.scope.kind),
        ]
        if includeScopeID { metadata[MetadataKey.scope] = .string(key.scope.description) }
        return metadata
    }
}
#endif
