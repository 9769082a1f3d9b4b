/// Sends every telemetry event to several sinks, in the order given.
///
/// A gate takes one ``PolicyTelemetry``; this is how it feeds logs, metrics and traces at once:
///
/// ```swift
/// let gate = try PolicyService(limits: limits, telemetry: .fanOut(PolicyLogging(), PolicyMetrics()))
/// ```
///
/// Each sink sees every event, on the thread that caused it, one after the other; a sink that
/// is slow delays the ones after it and the caller, so keep each one cheap. Nested fan-outs are
/// flattened, so combining them costs no extra indirection.
public struct PolicyTelemetryFanOut: PolicyTelemetry {
    /// The sinks, in the order they are called.
    public let sinks: [any PolicyTelemetry]

    /// A fan-out to `sinks`, called in that order.
    public init(_ sinks: [any PolicyTelemetry]) {
        // Flattened so that a fan-out built from other fan-outs is one loop over the leaves.
        self.sinks = sinks.flatMap { sink -> [any PolicyTelemetry] in
            (sink as? PolicyTelemetryFanOut)?.sinks ?? [sink]
        }
    }

    /// A fan-out to `sinks`, called in that order.
    public init(_ sinks: any PolicyTelemetry...) {
        self.init(sinks)
    }

    /// Reports the admission to every sink.
    public func didAcquire(_ event: PolicyAcquireEvent) {
        for sink in sinks { sink.didAcquire(event) }
    }

    /// Reports the commit to every sink.
    public func didCommit(_ event: PolicyCommitEvent) {
        for sink in sinks { sink.didCommit(event) }
    }

    /// Reports the refusal to every sink.
    public func didReject(_ event: PolicyRejectEvent) {
        for sink in sinks { sink.didReject(event) }
    }

    /// Reports the release to every sink.
    public func didRelease(_ event: PolicyReleaseEvent) {
        for sink in sinks { sink.didRelease(event) }
    }

    /// Reports the limits change to every sink.
    public func didChangeLimits(_ event: PolicyLimitsChangeEvent) {
        for sink in sinks { sink.didChangeLimits(event) }
    }

    /// Passes the event to every sink.
    public func didObserveFeedback(_ event: PolicyFeedbackEvent) {
        for sink in sinks { sink.didObserveFeedback(event) }
    }

    /// Passes the event to every sink.
    public func didAdaptLimits(_ event: PolicyAdaptiveEvent) {
        for sink in sinks { sink.didAdaptLimits(event) }
    }

    /// Passes the event to every sink.
    public func didFailStore(_ event: PolicyStoreFailureEvent) {
        for sink in sinks { sink.didFailStore(event) }
    }

    /// Passes the event to every sink.
    public func didLoseLease(_ event: PolicyLeaseLossEvent) {
        for sink in sinks { sink.didLoseLease(event) }
    }

    /// Passes the event to every sink.
    public func didHoldPermitTooLong(_ event: PolicyLongHoldEvent) {
        for sink in sinks { sink.didHoldPermitTooLong(event) }
    }
}

extension PolicyTelemetry where Self == PolicyTelemetryFanOut {
    /// Several sinks as one, called in the order given:
    /// `PolicyService(limits: limits, telemetry: .fanOut(logging, metrics, tracing))`.
    public static func fanOut(_ sinks: any PolicyTelemetry...) -> PolicyTelemetryFanOut {
        PolicyTelemetryFanOut(sinks)
    }

    /// Several sinks as one, from a list built at run time (for instance, only the adapters a
    /// configuration turns on), called in the list's order.
    public static func fanOut(_ sinks: [any PolicyTelemetry]) -> PolicyTelemetryFanOut {
        PolicyTelemetryFanOut(sinks)
    }
}
