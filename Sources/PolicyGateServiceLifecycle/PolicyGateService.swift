#if ServiceLifecycle
import PolicyGate
import ServiceLifecycle

/// A `PolicyService` as a swift-service-lifecycle `Service`: run it in the application's
/// `ServiceGroup` and the gate shuts down gracefully with the group.
///
/// ```swift
/// let gate = try PolicyService(configuration: configuration)
/// let group = ServiceGroup(
///     services: [PolicyGateService(gate, gracePeriod: .seconds(20)), httpServer],
///     gracefulShutdownSignals: [.sigterm], logger: logger)
/// try await group.run()
/// ```
///
/// ``run()`` does nothing until the group shuts down; then it calls
/// `PolicyService.shutDown(gracePeriod:)`: new and waiting callers fail with
/// `PolicyError.Code.shutDown`, permits in flight may finish within the grace period, store
/// writes are flushed, leases given back and timers stopped, and `run()` returns.
///
/// A group shuts its services down in reverse order: list the gate before the services that
/// acquire its permits, so that they stop taking work first and the gate drains last.
public struct PolicyGateService: Service {
    /// The gate this service shuts down.
    public let gate: PolicyService
    /// How long permits in flight may take to finish once the group shuts down.
    public let gracePeriod: Duration

    /// Wraps `gate`.
    /// - Parameters:
    ///   - gate: The gate to shut down with the group.
    ///   - gracePeriod: How long permits in flight may take to finish after the group's
    ///     graceful shutdown begins (on the gate's clock).
    public init(_ gate: PolicyService, gracePeriod: Duration = PolicyService.defaultShutdownGracePeriod) {
        self.gate = gate
        self.gracePeriod = gracePeriod
    }

    /// Waits for the group's graceful shutdown, then shuts the gate down and returns.
    ///
    /// If the task is cancelled instead (the group is cancelled), the gate shuts down without
    /// a grace period: callers are refused and store writes flushed at once.
    public func run() async throws {
        do {
            try await gracefulShutdown()
        } catch {
            // Cancelled: `shutDown` sees the cancellation and skips the grace period.
            await gate.shutDown(gracePeriod: .zero)
            return
        }
        await gate.shutDown(gracePeriod: gracePeriod)
    }
}
#endif
