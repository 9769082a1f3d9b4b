import Foundation

/// Receives what the gate does, for logs, metrics and tests.
///
/// The gate calls these methods after it has released its locks, on the thread of the call that
/// caused the event (a permit's release, for instance, reports from its `deinit`). They may call
/// back into the gate (read its state, even acquire) without deadlocking, but should return
/// quickly: they run inline on the caller's path. Every method has an empty default, so an
/// implementation overrides only what it needs. When no telemetry is installed, nothing is
/// built or called.
///
/// Providers without caps (no-op providers) report nothing: nothing is tracked for them.
public protocol PolicyTelemetry: Sendable {
    /// A call was admitted (at once or after waiting).
    func didAcquire(_ event: PolicyAcquireEvent)
    /// A permit's token count was replaced by a committed one.
    func didCommit(_ event: PolicyCommitEvent)
    /// A call was refused: rejected at once, timed out, oversized, or given a bad token count.
    /// Cancellation is not a rejection and is not reported.
    func didReject(_ event: PolicyRejectEvent)
    /// A permit gave back its slot.
    func didRelease(_ event: PolicyReleaseEvent)
    /// A provider's limits changed: ``PolicyService/setLimits(_:for:)`` or a configuration
    /// applied with ``PolicyService/apply(_:keepingScopeOverrides:)``, reported once per
    /// provider whose limits differ; or one scope's override
    /// (``PolicyService/setScopeOverride(_:for:provider:)``, the event's
    /// ``PolicyLimitsChangeEvent/scope`` names it). After the change took effect.
    func didChangeLimits(_ event: PolicyLimitsChangeEvent)
    /// A provider's own feedback (response headers, a 429) was read: what the gate adopted, and
    /// the values it did not believe.
    func didObserveFeedback(_ event: PolicyFeedbackEvent)
    /// An adaptive provider's caps dropped after a 429 or grew back a step (see
    /// ``PolicyConfiguration/adaptive``).
    func didAdaptLimits(_ event: PolicyAdaptiveEvent)
    /// A shared provider's store failed (an error, or no answer in time): what the gate did
    /// about it. Reported for admissions, commits and releases.
    func didFailStore(_ event: PolicyStoreFailureEvent)
    /// A shared permit's lease in the store can no longer be vouched for: the slot may be
    /// given to another process while the permit's call still runs. Reported once per lease,
    /// from the store's background work.
    func didLoseLease(_ event: PolicyLeaseLossEvent)
    /// A permit has been held longer than the service's ``PolicyService/permitHoldWarning``
    /// (off unless set). Reported once per permit, from the service's own timer, while the
    /// permit is still held.
    func didHoldPermitTooLong(_ event: PolicyLongHoldEvent)
}

extension PolicyTelemetry {
    /// Does nothing.
    public func didAcquire(_ event: PolicyAcquireEvent) {}
    /// Does nothing.
    public func didCommit(_ event: PolicyCommitEvent) {}
    /// Does nothing.
    public func didReject(_ event: PolicyRejectEvent) {}
    /// Does nothing.
    public func didRelease(_ event: PolicyReleaseEvent) {}
    /// Does nothing.
    public func didChangeLimits(_ event: PolicyLimitsChangeEvent) {}
    /// Does nothing.
    public func didObserveFeedback(_ event: PolicyFeedbackEvent) {}
    /// Does nothing.
    public func didAdaptLimits(_ event: PolicyAdaptiveEvent) {}
    /// Does nothing.
    public func didFailStore(_ event: PolicyStoreFailureEvent) {}
    /// Does nothing.
    public func didLoseLease(_ event: PolicyLeaseLossEvent) {}
    /// Does nothing.
    public func didHoldPermitTooLong(_ event: PolicyLongHoldEvent) {}
}

/// A call was admitted.
public struct PolicyAcquireEvent: Sendable, Hashable {
    /// The key it was admitted under.
    public let key: PolicyKey
    /// Its pre-flight estimate (input plus output when given in parts).
    public let estimatedTokens: Int
    /// Its input estimate, when given apart.
    public let estimatedInputTokens: Int?
    /// Its output estimate, when given apart.
    public let estimatedOutputTokens: Int?
    /// How long it waited for a slot and for capacity (zero when admitted at once).
    public let waited: Duration
    /// The class it was acquired in (``PolicyPriority``).
    public var priority: PolicyPriority = .interactive
    /// For a provider with spend caps: the cost the call reserved (its estimate at its model's
    /// price); `nil` otherwise.
    public var estimatedCost: PolicyMoney? = nil

    /// Creates the event (the gate does; adapters' tests and fakes may too).
    public init(
        key: PolicyKey, estimatedTokens: Int, estimatedInputTokens: Int? = nil, estimatedOutputTokens: Int? = nil,
        waited: Duration
    ) {
        self.key = key
        self.estimatedTokens = estimatedTokens
        self.estimatedInputTokens = estimatedInputTokens
        self.estimatedOutputTokens = estimatedOutputTokens
        self.waited = waited
    }

    init(key: PolicyKey, estimate: PolicyService.Estimate, waited: Duration, priority: PolicyPriority = .interactive) {
        let parts = estimate.parts
        self.init(
            key: key, estimatedTokens: estimate.total, estimatedInputTokens: parts?.input, estimatedOutputTokens: parts?.output,
            waited: waited)
        self.priority = priority
    }
}

/// A permit committed its actual token count.
public struct PolicyCommitEvent: Sendable, Hashable {
    /// The permit's key.
    public let key: PolicyKey
    /// The estimate it was admitted with.
    public let estimatedTokens: Int
    /// The count it replaced (the estimate, or an earlier commit).
    public let previousTokens: Int
    /// The count committed now (input, cache reads if they count, and output, when committed
    /// in parts).
    public let actualTokens: Int
    /// The input tokens reported, when committed in parts (without cache reads).
    public let inputTokens: Int?
    /// The output tokens reported, when committed in parts.
    public let outputTokens: Int?
    /// The input tokens read from the provider's cache, when committed in parts.
    public let cacheReadTokens: Int?
    /// For a provider with spend caps: what the call counted for before this commit, and now
    /// (the actual cost at its model's price); `nil` otherwise.
    public var previousCost: PolicyMoney? = nil
    /// See ``previousCost``.
    public var actualCost: PolicyMoney? = nil

    /// The estimate's error for this call: `actualTokens / estimatedTokens` (1 when exact,
    /// above 1 when the call used more than estimated).
    ///
    /// `nil` when the estimate was 0, which is allowed for a provider without token caps:
    /// there is no estimate to compare with, and a ratio would be infinite. A commit of 0 (how
    /// a failed call is recorded) gives 0.
    public var estimateRatio: Double? {
        estimatedTokens > 0 ? Double(actualTokens) / Double(estimatedTokens) : nil
    }

    /// Creates the event (the gate does; adapters' tests and fakes may too).
    public init(
        key: PolicyKey, estimatedTokens: Int, previousTokens: Int, actualTokens: Int, inputTokens: Int? = nil,
        outputTokens: Int? = nil, cacheReadTokens: Int? = nil
    ) {
        self.key = key
        self.estimatedTokens = estimatedTokens
        self.previousTokens = previousTokens
        self.actualTokens = actualTokens
        self.inputTokens = inputTokens
        self.outputTokens = outputTokens
        self.cacheReadTokens = cacheReadTokens
    }
}

/// A call was refused.
public struct PolicyRejectEvent: Sendable, Hashable {
    /// The key the call was for.
    public let key: PolicyKey
    /// Its estimate.
    public let estimatedTokens: Int
    /// Why: its ``PolicyError/code``, ``PolicyError/limit`` and ``PolicyError/retryAfter``.
    public let error: PolicyError
    /// The class it was asked in (``PolicyPriority``).
    public var priority: PolicyPriority = .interactive

    /// Creates the event (the gate does; adapters' tests and fakes may too).
    public init(key: PolicyKey, estimatedTokens: Int, error: PolicyError) {
        self.key = key
        self.estimatedTokens = estimatedTokens
        self.error = error
    }
}

/// A permit was released.
public struct PolicyReleaseEvent: Sendable, Hashable {
    /// The permit's key.
    public let key: PolicyKey
    /// How long the permit was held, from admission to release.
    public let held: Duration
    /// The tokens it ended with (the estimate unless committed).
    public let tokens: Int

    /// Creates the event (the gate does; adapters' tests and fakes may too).
    public init(key: PolicyKey, held: Duration, tokens: Int) {
        self.key = key
        self.held = held
        self.tokens = tokens
    }
}

/// A provider's limits were replaced: by a new configuration, or by its schedule at a
/// transition.
public struct PolicyLimitsChangeEvent: Sendable, Hashable {
    /// What changed the limits.
    public enum Cause: String, Sendable, Hashable {
        /// ``PolicyService/setLimits(_:for:)`` or ``PolicyService/apply(_:keepingScopeOverrides:)``.
        case configuration
        /// A schedule transition: another entry (or none) applies from now on.
        case schedule
    }

    /// The provider.
    public let provider: String
    /// Its limits in force before; ``PolicyLimits/unlimited`` when it was not gated.
    public let previous: PolicyLimits
    /// Its limits in force now (with a schedule, the applying entry's over the base ones);
    /// ``PolicyLimits/unlimited`` when it is no longer gated.
    public let current: PolicyLimits
    /// What changed them.
    public let cause: Cause
    /// The schedule entry that applies now, if any.
    public let scheduleEntry: String?
    /// Whether that entry closes the gate.
    public let isClosed: Bool
    /// When the schedule may change the limits next, if the provider has a schedule that will.
    public let nextTransition: Date?
    /// The one scope whose caps changed (its override was set, replaced or removed:
    /// ``PolicyService/setScopeOverride(_:for:provider:)``); `nil` when the provider's did.
    /// ``previous`` and ``current`` are then that scope's.
    public var scope: PolicyScope?

    /// Creates the event (the gate does; adapters' tests and fakes may too).
    public init(
        provider: String, previous: PolicyLimits, current: PolicyLimits, cause: Cause = .configuration,
        scheduleEntry: String? = nil, isClosed: Bool = false, nextTransition: Date? = nil
    ) {
        self.provider = provider
        self.previous = previous
        self.current = current
        self.cause = cause
        self.scheduleEntry = scheduleEntry
        self.isClosed = isClosed
        self.nextTransition = nextTransition
    }
}

/// A shared store failed a call of the gate's.
public struct PolicyStoreFailureEvent: Sendable, Hashable {
    /// What the gate asked the store.
    public enum Operation: String, Sendable, Hashable {
        /// An admission (``PolicyService/acquire(_:estimatedTokens:model:maxWait:priority:)``).
        case admit
        /// A permit's ``PolicyPermit/commitTokens(_:)``.
        case commit
        /// A permit's release.
        case release
        /// The store's own periodic cleanup of old rows (``key`` names no caller's key: its
        /// provider is `policygate.store`).
        case cleanup
        /// The store's registration of this process's waiters for a key, which the store
        /// needs to be told of other processes' releases.
        case waiters
    }

    /// What the gate did about it.
    public enum Outcome: String, Sendable, Hashable {
        /// The provider fails open: the call was admitted without being counted.
        case admittedUncounted
        /// The provider fails closed: the call was refused with
        /// ``PolicyError/Code/storeUnavailable``.
        case refused
        /// The write will be tried again.
        case willRetry
        /// The write was retried for the store's whole retry period and dropped: a commit's
        /// estimate stands, a release is left to the slot's lease.
        case gaveUp
    }

    /// The key concerned.
    public let key: PolicyKey
    /// What was asked.
    public let operation: Operation
    /// What the gate did.
    public let outcome: Outcome
    /// The store's error, described (stores keep passwords out of it).
    public let error: String

    /// Creates the event (the gate does; adapters' tests and fakes may too).
    public init(key: PolicyKey, operation: Operation, outcome: Outcome, error: String) {
        self.key = key
        self.operation = operation
        self.outcome = outcome
        self.error = error
    }
}
