import PolicyGate

/// A `PolicyTelemetry` that keeps every event in memory, in order, for tests.
///
/// ```swift
/// let recorder = TelemetryRecorder()
/// let gate = try PolicyService(limits: limits, clock: clock, telemetry: recorder)
/// // …
/// #expect(recorder.rejects.map(\.error.limit) == [.requestsPerMinute])
/// ```
public final class TelemetryRecorder: PolicyTelemetry {
    /// One recorded event.
    public enum Event: Sendable, Hashable {
        /// A call was admitted.
        case acquire(PolicyAcquireEvent)
        /// A permit committed tokens.
        case commit(PolicyCommitEvent)
        /// A call was refused.
        case reject(PolicyRejectEvent)
        /// A permit was released.
        case release(PolicyReleaseEvent)
        /// A provider's limits changed.
        case limitsChange(PolicyLimitsChangeEvent)
        /// A provider's feedback was read.
        case feedback(PolicyFeedbackEvent)
        /// An adaptive provider's caps moved.
        case adaptive(PolicyAdaptiveEvent)
        /// A shared store failed a call.
        case storeFailure(PolicyStoreFailureEvent)
        /// A shared permit's lease was lost.
        case leaseLoss(PolicyLeaseLossEvent)
        /// A permit was held longer than the service's hold warning.
        case longHold(PolicyLongHoldEvent)
    }

    private let recorded = Locked<[Event]>([])

    /// An empty recorder.
    public init() {}

    /// Every event so far, oldest first.
    public var events: [Event] { recorded.withLock { $0 } }

    /// The acquire events so far.
    public var acquires: [PolicyAcquireEvent] {
        events.compactMap { if case .acquire(let e) = $0 { e } else { nil } }
    }

    /// The commit events so far.
    public var commits: [PolicyCommitEvent] {
        events.compactMap { if case .commit(let e) = $0 { e } else { nil } }
    }

    /// The reject events so far.
    public var rejects: [PolicyRejectEvent] {
        events.compactMap { if case .reject(let e) = $0 { e } else { nil } }
    }

    /// The release events so far.
    public var releases: [PolicyReleaseEvent] {
        events.compactMap { if case .release(let e) = $0 { e } else { nil } }
    }

    /// The limit changes so far.
    public var limitChanges: [PolicyLimitsChangeEvent] {
        events.compactMap { if case .limitsChange(let e) = $0 { e } else { nil } }
    }

    /// Forgets every event.
    public func removeAll() { recorded.withLock { $0.removeAll() } }

    /// Records an acquire.
    public func didAcquire(_ event: PolicyAcquireEvent) { recorded.withLock { $0.append(.acquire(event)) } }
    /// Records a commit.
    public func didCommit(_ event: PolicyCommitEvent) { recorded.withLock { $0.append(.commit(event)) } }
    /// Records a limits change.
    public func didChangeLimits(_ event: PolicyLimitsChangeEvent) { recorded.withLock { $0.append(.limitsChange(event)) } }

    /// Records the event.
    public func didObserveFeedback(_ event: PolicyFeedbackEvent) { recorded.withLock { $0.append(.feedback(event)) } }

    /// The provider feedback read so far.
    public var feedback: [PolicyFeedbackEvent] {
        events.compactMap { if case .feedback(let event) = $0 { event } else { nil } }
    }

    /// Records the event.
    public func didAdaptLimits(_ event: PolicyAdaptiveEvent) { recorded.withLock { $0.append(.adaptive(event)) } }

    /// The adaptive caps' moves so far.
    public var adaptations: [PolicyAdaptiveEvent] {
        events.compactMap { if case .adaptive(let event) = $0 { event } else { nil } }
    }

    /// Records the event.
    public func didFailStore(_ event: PolicyStoreFailureEvent) { recorded.withLock { $0.append(.storeFailure(event)) } }

    /// The store failures so far.
    public var storeFailures: [PolicyStoreFailureEvent] {
        events.compactMap { if case .storeFailure(let event) = $0 { event } else { nil } }
    }
    /// Records the event.
    public func didLoseLease(_ event: PolicyLeaseLossEvent) { recorded.withLock { $0.append(.leaseLoss(event)) } }

    /// The lost leases so far.
    public var leaseLosses: [PolicyLeaseLossEvent] {
        events.compactMap { if case .leaseLoss(let event) = $0 { event } else { nil } }
    }
    /// Records the event.
    public func didHoldPermitTooLong(_ event: PolicyLongHoldEvent) { recorded.withLock { $0.append(.longHold(event)) } }

    /// The permits reported as held too long so far.
    public var longHolds: [PolicyLongHoldEvent] {
        events.compactMap { if case .longHold(let event) = $0 { event } else { nil } }
    }
    /// Records a reject.
    public func didReject(_ event: PolicyRejectEvent) { recorded.withLock { $0.append(.reject(event)) } }
    /// Records a release.
    public func didRelease(_ event: PolicyReleaseEvent) { recorded.withLock { $0.append(.release(event)) } }
}
