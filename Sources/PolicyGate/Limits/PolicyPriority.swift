/// Which class a call waits in. Within one key, a waiting interactive call is admitted before
/// any waiting batch call; within a class, calls are admitted in arrival order.
///
/// A provider's ``PolicyLimits/reservedForInteractive`` share of every cap is capacity batch
/// calls cannot take. A batch call that has waited ``PolicyLimits/batchAging`` (30 s unless
/// configured) is promoted: from then on it is ordered among the interactive calls by its
/// arrival time and may use the reserve, so batch calls never starve.
///
/// No raw type on purpose: a `String`-backed enum may be compared through its raw values, and
/// the class is compared on every call.
public enum PolicyPriority: Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// A call someone is waiting for (a chat reply, an editor completion): the default.
    case interactive
    /// Background work (evaluations, backfills, embeddings) that yields to interactive calls.
    case batch

    /// The class named `name` (`interactive` or `batch`, as configuration files and simulation
    /// traces write it), or `nil`.
    public init?(_ name: String) {
        switch name {
        case "interactive": self = .interactive
        case "batch": self = .batch
        default: return nil
        }
    }

    /// `interactive` or `batch`.
    public var description: String {
        switch self {
        case .interactive: "interactive"
        case .batch: "batch"
        }
    }
}
