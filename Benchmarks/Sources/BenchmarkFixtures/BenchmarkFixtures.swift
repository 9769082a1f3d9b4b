// What both benchmark executables share: the floors' targets, the gate's limits, RSS readings.

import PolicyGate
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The target of the actor-hop floor: an empty method on an actor the caller is not on.
public actor HopTarget {
    /// A target with no calls yet.
    public init() {}

    private var calls = 0

    // Empty but for one increment of the actor's own state. A truly empty method needs no
    // executor, so the optimiser deletes the hop altogether (even with @inline(never)), and the
    // loop then times a plain call (≈ 12 ns). Touching isolated state keeps the hop (≈ 1 ns more).
    public func noop() {
        calls &+= 1
    }
}

/// Caller-side work between awaits, so the optimiser cannot merge consecutive hops. Owned by
/// the caller; one relaxed add per iteration is also added to the gate loops, so they compare
/// like with like against the hop.
public final class Counter: Sendable {
    public let value = Atomic<Int>(0)

    /// A counter at zero.
    public init() {}

    @inlinable
    public func bump() {
        value.wrappingAdd(1, ordering: .relaxed)
    }
}

/// The target of the `Mutex` floor.
public final class LockedCounter: Sendable {
    public let value = Mutex<Int>(0)

    /// A counter at zero.
    public init() {}
}

/// Caps far above anything a run reaches, so nothing ever waits: only the bookkeeping is timed.
/// Request caps stay ≤ `PolicyLimits.maximumRequestCap` (UInt32.max).
/// ``typicalLimits(maxConcurrent:)`` with its token caps on input and output apart (the shape of
/// Anthropic's limits): the cycle this costs is compared with the total-token one.
public func typicalSplitLimits(maxConcurrent: Int) -> PolicyLimits {
    PolicyLimits(
        requestsPerMinute: 4_000_000_000,
        inputTokensPerMinute: 1 << 46,
        inputTokensPerDay: 1 << 47,
        outputTokensPerMinute: 1 << 46,
        outputTokensPerDay: 1 << 47,
        maxConcurrent: maxConcurrent
    )
}

public func typicalLimits(maxConcurrent: Int) -> PolicyLimits {
    PolicyLimits(
        requestsPerMinute: 4_000_000_000,
        tokensPerMinute: 1 << 46,
        tokensPerDay: 1 << 47,
        maxConcurrent: maxConcurrent
    )
}

/// Resident set size of this process, from /proc/self/statm; `nil` where there is no /proc.
public func residentBytes() -> Int? {
    #if os(Linux)
    let fd = open("/proc/self/statm", O_RDONLY)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: 256)
    let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count - 1) }
    guard count > 0 else { return nil }
    let fields = String(decoding: buffer[0..<count], as: UTF8.self).split(separator: " ")
    guard fields.count > 1, let pages = Int(fields[1]) else { return nil }
    return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    #else
    return nil
    #endif
}

/// A 20-entry schedule in a real time zone: one entry per weekday hour 0…18 and one for the
/// weekend, each overriding the request cap (still far above anything a run reaches), so a
/// scheduled provider changes limits at every hour boundary like a busy production calendar.
public func twentyEntrySchedule() throws -> PolicySchedule {
    var entries: [PolicyScheduleEntry] = []
    for hour in 0..<19 {
        entries.append(
            PolicyScheduleEntry(
                name: "hour-\(hour)", cron: try CronExpression("* \(hour) * * mon-fri"),
                limits: PolicyLimits(requestsPerMinute: 3_000_000_000 + hour)))
    }
    entries.append(
        PolicyScheduleEntry(
            name: "weekend", cron: try CronExpression("* * * * sat,sun"), limits: PolicyLimits(requestsPerMinute: 3_500_000_000)))
    return PolicySchedule(timeZone: try PolicySchedule.timeZone(named: "Europe/Berlin"), entries: entries)
}
