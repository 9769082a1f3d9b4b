/// A shared permit's concurrency slot can no longer be vouched for: its lease in the store
/// expired, or this process could not renew it in time. The permit stays usable (the gate
/// cannot stop a call in flight), but other processes may take the slot, so until the permit
/// is released the key may run one call over its concurrency cap per lost lease.
public struct PolicyLeaseLossEvent: Sendable, Hashable {
    /// Why the lease counts as lost.
    public enum Reason: String, Sendable, Hashable, CaseIterable {
        /// The store said the lease had expired when this process tried to renew it (the
        /// process stalled, or could not reach the store, for longer than the lease).
        case expired
        /// No renewal succeeded within the lease minus a safety margin: the store may already
        /// count the slot free. Reported before the lease can expire.
        case unconfirmed
    }

    /// The permit's key.
    public let key: PolicyKey
    /// Why the lease counts as lost.
    public let reason: Reason

    /// Creates the event (stores do; adapters' tests and fakes may too).
    public init(key: PolicyKey, reason: Reason) {
        self.key = key
        self.reason = reason
    }
}
