/// Adaptive caps: after a provider refuses calls (a 429), its caps shrink multiplicatively;
/// while it refuses none, they grow back additively, never above the caps configured (or
/// scheduled). Opt-in per provider (`adaptive = true` in its `[limits.<provider>]` table, or
/// ``PolicyConfiguration/adaptive``).
///
/// It is additive-increase, multiplicative-decrease (AIMD), the rule TCP uses to find a
/// link's capacity: a gate configured above what the provider really grants (a shared
/// account, a tier lowered by the provider, a busy region) settles near the real capacity
/// instead of sending bursts the provider refuses.
///
/// The state is one number and two instants per provider: the factor in force after the last
/// decrease, when that decrease happened, and until when further 429s count as the same
/// congestion event. The factor at any later instant is a pure function of these, so nothing
/// needs a timer to grow it; the caps compiled from it are valid until the next step (their
/// `validUntil`), and the gate's transition timer (the one schedules use) hands the next
/// step's caps to every key on time.
struct AdaptiveState: Sendable, Hashable {
    /// Factors are kept in thousandths (1000 = the configured caps), so that growing back
    /// lands exactly on the configured caps, with no rounding left over.
    static let full = 1_000
    /// Each congestion event multiplies the factor by this (in thousandths): 0.7 rather than TCP Reno's 0.5
    /// (it is CUBIC's β): a 429 usually means the provider's window is just full, not that its
    /// capacity halved, and two events in a row still cut the caps to half.
    static let decrease = 700
    /// The factor never goes below this: caps of a tenth of the configured ones still let
    /// calls through to probe the provider, and the provider's own retry-after pauses protect
    /// it below that. Every cap also stays at least 1.
    static let floor = 100
    /// The factor grows by this much (5 % of the configured caps) per ``step`` without a 429,
    /// from the end of the decrease's pause: from one decrease (0.7) back to the full caps in
    /// 30 s, from the floor in 90 s. Growth per unit
    /// of time (not per call) keeps the ramp the same whatever the traffic, and lets a quiet
    /// provider recover (its windows drained meanwhile, as the provider's did); a call waiting
    /// for an estimate above the adapted token cap is never stranded.
    static let increase = 50
    /// How often the factor grows: 5 s, several times shorter than the minute windows most
    /// providers enforce, so that the caps climb smoothly rather than in large jumps.
    static let step: Int64 = 5_000_000_000
    /// 429s within this long of a decrease (or before the pause that decrease came with ends)
    /// are one congestion event: they come from calls sent before the caps dropped, whose
    /// answers were already on their way (a 429 comes back in well under a second).
    static let quietPeriod: Int64 = 2_000_000_000

    /// The factor right after the last decrease, in thousandths (``full`` before any).
    private(set) var factorAtDecrease = full
    /// When the caps start growing back after the last decrease: the end of the pause it came
    /// with (in the service's nanoseconds). Growing while the provider pauses the gate would
    /// undo the decrease before a single call had tested it.
    private(set) var growsFrom: Int64 = .min
    /// Until when 429s count as part of the last decrease's event.
    private(set) var quietUntil: Int64 = .min

    /// How many steps of growth have passed by `now` since the last decrease's pause ended.
    private func steps(at now: Int64) -> Int64 {
        guard growsFrom != .min, now > growsFrom else { return 0 }
        return (now - growsFrom) / Self.step
    }

    /// The factor in force at `now`, in thousandths: the last decrease's, grown by
    /// ``increase`` per step, at most ``full``.
    func factor(at now: Int64) -> Int {
        guard factorAtDecrease < Self.full else { return Self.full }
        let grown = Int64(factorAtDecrease) + Int64(Self.increase) * min(steps(at: now), Int64(Self.full))
        return Int(min(Int64(Self.full), grown))
    }

    /// When the factor next grows, or `.max` once it is back at 1.
    func nextStep(after now: Int64) -> Int64 {
        guard factor(at: now) < Self.full else { return .max }
        return growsFrom.clampedAdding((steps(at: now) + 1).multipliedReportingOverflow(by: Self.step).partialValue)
    }

    /// A 429 (or a retry-after) arrived at `now`, pausing the provider until `pausedUntil`.
    /// - Returns: Whether the factor dropped (`false` within the last event's quiet period).
    mutating func throttled(at now: Int64, pausedUntil: Int64?) -> Bool {
        guard now >= quietUntil else { return false }
        factorAtDecrease = max(Self.floor, factor(at: now) * Self.decrease / Self.full)
        growsFrom = max(now, pausedUntil ?? .min)
        quietUntil = max(now.clampedAdding(Self.quietPeriod), pausedUntil ?? .min)
        return true
    }
}

extension PolicyLimits {
    /// These caps multiplied by `factor` thousandths (1…1000), rounded down, each at least 1:
    /// the caps adaptive mode enforces. Every cap goes through here (the one place that scales
    /// limits), so a new kind of cap is adapted by adding it to ``PolicyLimitKind``.
    func adapted(by factor: Int) -> PolicyLimits {
        guard factor < AdaptiveState.full else { return self }
        var adapted = self
        for kind in PolicyLimitKind.allCases {
            // Caps are at most 2^48 (tokens): times 1000 stays far inside Int64.
            guard let cap = self[kind] else { continue }
            adapted[kind] = max(1, cap / AdaptiveState.full * factor + cap % AdaptiveState.full * factor / AdaptiveState.full)
        }
        return adapted
    }
}
