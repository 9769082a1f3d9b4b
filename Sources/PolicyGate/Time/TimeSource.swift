/// The gate's view of time: nanoseconds since the service started, on the injected clock.
///
/// Erasing the clock here keeps ``PolicyService`` and ``PolicyPermit`` non-generic while every
/// wait and window still runs on the caller's `Clock` (a manual one in tests).
package protocol TimeSource: Sendable {
    /// Nanoseconds elapsed since the service's epoch, never negative.
    func now() -> Int64
    /// Suspends until `now() >= deadline` or the task is cancelled.
    func sleep(until deadline: Int64) async throws
    /// The offset of `instant` from the epoch, or `nil` if it is not an instant of this clock.
    func offset(of instant: any InstantProtocol) -> Int64?
}

/// Makes the time source for `clock`: the monotonic fast path for `ContinuousClock`, the
/// generic one for every other clock.
package func makeTimeSource<C: Clock>(_ clock: C) -> any TimeSource where C.Duration == Duration {
    #if canImport(Glibc)
    if clock is ContinuousClock { return ContinuousTimeSource() }
    #endif
    return ClockTimeSource(clock: clock)
}

#if canImport(Glibc)
import Glibc

/// `ContinuousClock` read as plain nanoseconds: `clock_gettime(CLOCK_BOOTTIME)`, the clock
/// `ContinuousClock` itself reads on Linux, without building `Instant`s and `Duration`s (128-bit
/// arithmetic) on every call. Sleeps still go through `ContinuousClock`.
package final class ContinuousTimeSource: TimeSource {
    let epochNanoseconds: Int64
    let epoch: ContinuousClock.Instant

    package init() {
        epoch = ContinuousClock.now
        epochNanoseconds = Self.read()
    }

    @inline(__always)
    private static func read() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_BOOTTIME, &spec)
        return Int64(spec.tv_sec) &* 1_000_000_000 &+ Int64(spec.tv_nsec)
    }

    package func now() -> Int64 {
        max(0, Self.read() - epochNanoseconds)
    }

    package func sleep(until deadline: Int64) async throws {
        // The two epochs were read a few nanoseconds apart; a timer that wakes that much early
        // finds nothing due and re-arms itself.
        try await ContinuousClock().sleep(until: epoch.advanced(by: .nanoseconds(deadline)), tolerance: nil)
    }

    package func offset(of instant: any InstantProtocol) -> Int64? {
        guard let instant = instant as? ContinuousClock.Instant else { return nil }
        return epoch.duration(to: instant).nanosecondsSaturating
    }
}
#endif

package final class ClockTimeSource<C: Clock>: TimeSource where C.Duration == Duration {
    let clock: C
    let epoch: C.Instant

    package init(clock: C) {
        self.clock = clock
        self.epoch = clock.now
    }

    package func now() -> Int64 {
        max(0, epoch.duration(to: clock.now).nanosecondsSaturating)
    }

    package func sleep(until deadline: Int64) async throws {
        try await clock.sleep(until: epoch.advanced(by: .nanoseconds(deadline)), tolerance: nil)
    }

    package func offset(of instant: any InstantProtocol) -> Int64? {
        guard let instant = instant as? C.Instant else { return nil }
        return epoch.duration(to: instant).nanosecondsSaturating
    }
}

extension Duration {
    /// Whole nanoseconds, clamped to the range of `Int64`.
    package var nanosecondsSaturating: Int64 {
        let (seconds, attoseconds) = components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        let (sum, overflow2) = scaled.addingReportingOverflow(attoseconds / 1_000_000_000)
        if overflow2 { return seconds < 0 ? .min : .max }
        return sum
    }
}

extension Int64 {
    /// Adds without trapping, clamping at the bounds.
    @inline(__always)
    package func clampedAdding(_ other: Int64) -> Int64 {
        let (sum, overflow) = addingReportingOverflow(other)
        return overflow ? (other > 0 ? .max : .min) : sum
    }
}
