extension PolicyService {
    /// How long a permit may be held before telemetry hears of it
    /// (``PolicyTelemetry/didHoldPermitTooLong(_:)``), or `nil` (the default) for never.
    ///
    /// A permit that is never released (kept in a stored property by mistake, or in a task
    /// that never ends) holds its key's concurrency slot for good; with this set, each permit
    /// held longer is reported once, with its key, how long it has been held and its tokens,
    /// while it is still held. Permits released sooner are never reported. Set it from a
    /// configuration (`[gate] permit_hold_warning = "10m"`, ``PolicyConfiguration/permitHoldWarning``)
    /// or with ``setPermitHoldWarning(_:)``.
    ///
    /// The gate notes the admission instant of each permit admitted while it is set, and one
    /// timer per service wakes when the oldest would pass it. Reports go to the service's
    /// telemetry, so a service without telemetry watches nothing; when it is not set, a
    /// service with telemetry pays one atomic load per admission, commit and release.
    public nonisolated var permitHoldWarning: Duration? {
        core.environment.holdWatch.current
    }

    /// Sets ``permitHoldWarning``: permits admitted from now on are reported once they have
    /// been held longer than `threshold`, and permits already noted are judged by the new
    /// threshold at once. `nil` turns the warning off and forgets the permits noted.
    /// - Throws: ``PolicyError/Code/invalidArgument`` if `threshold` is not positive; nothing
    ///   changes then.
    public nonisolated func setPermitHoldWarning(_ threshold: Duration?) throws(PolicyError) {
        try Self.validate(permitHoldWarning: threshold)
        core.environment.holdWatch.set(threshold)
    }

    /// Reports an in-process admission to telemetry and to the hold warning. Kept out of line:
    /// the admission path without telemetry stays as small as it was.
    @inline(never)
    nonisolated func reportAdmission(
        _ key: PolicyKey, estimate: Estimate, storage: KeyStorage, admission: Admission, tokens: TokenCounts, waited: Int64,
        priority: PolicyPriority = .interactive, costed: Bool = false
    ) {
        let environment = core.environment
        var event = PolicyAcquireEvent(key: key, estimate: estimate, waited: .nanoseconds(waited), priority: priority)
        // Whether the limits the call was admitted on have spend caps (read by the caller, not
        // from the machine, which is not ours to read outside its lock).
        if costed { event.estimatedCost = PolicyMoney(microUnits: tokens.cost) }
        environment.telemetry?.didAcquire(event)
        environment.holdWatch.admitted(.init(storage, admission), key: key, at: admission.time, estimated: Int(tokens.total))
    }

    /// Checks a hold warning's threshold: positive, or `nil`.
    static func validate(permitHoldWarning threshold: Duration?) throws(PolicyError) {
        if let threshold, threshold <= .zero {
            throw PolicyError(
                .invalidArgument,
                message: "the permit hold warning must be a positive duration, got \(threshold); use nil to turn it off")
        }
    }
}
