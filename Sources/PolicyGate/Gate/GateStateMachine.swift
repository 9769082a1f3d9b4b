/// What an admitted call carries so that its commit finds the buckets it was recorded in.
struct Admission: Sendable, Hashable {
    /// When it was admitted, in nanoseconds since the service's epoch.
    let time: Int64
    /// Its place among the key's admissions (1, 2, …).
    let sequence: UInt64
}

/// Why a call cannot be admitted now, and when it could be if nothing else arrives.
struct Rejection: Error, Hashable {
    /// The cap; `nil` when a schedule entry closes the gate.
    let kind: PolicyLimitKind?
    /// When the call would fit; `nil` when that depends on a release (concurrency).
    let retryAt: Int64?
}

/// The rules of one key: windows, concurrency slots and the FIFO queue. Used in place (its
/// windows are reference storage, so a copy would share them), under the key's lock.
///
/// It never locks, suspends, reads a clock or calls out. Every method takes `now` and returns
/// what its caller must do (resume waiters, arm a timer at `wake`), so it can be driven
/// synchronously by tests, by the simulator, and by ``KeyStorage`` under its lock.
///
/// Waiters queue in arrival order. The ones at the front hold concurrency slots (always a prefix
/// of the queue, `slotted` long): a waiter first waits for a slot, then, holding it, for window
/// capacity. Only the head is ever admitted, so a large call is never starved by smaller ones.
struct GateStateMachine<Payload> {
    struct Waiter {
        let id: UInt64
        let tokens: Int64
        let deadline: Int64
        let payload: Payload
    }

    struct Resume {
        let payload: Payload
        let result: Result<Admission, PolicyError>
    }

    /// What the caller must carry out after the machine changed.
    struct Effects {
        /// Waiters to resume, in order (the common case, none, builds no array).
        var resumes = Few<Resume>()
        /// When the machine must be ticked again (a window frees room for the head, or a
        /// waiter's deadline passes); `nil` when only a release or commit can change anything.
        var wake: Int64?

        init() {}

        mutating func resume(_ payload: Payload, _ result: Result<Admission, PolicyError>) {
            resumes.append(Resume(payload: payload, result: result))
        }

        mutating func merge(_ other: Effects) {
            resumes.append(contentsOf: other.resumes)
            if let w = other.wake { wake = min(wake ?? .max, w) }
        }
    }

    enum EnqueueResult {
        case admitted(Admission, Effects)
        case rejected(PolicyError, Effects)
        case enqueued(Effects)
    }

    private(set) var limits: CompiledLimits
    private var windows = WindowSlots()
    /// Permits holding a slot.
    private(set) var inFlight = 0
    private var queue = WaiterQueue<Waiter>()
    /// How many waiters at the front of the queue hold a slot.
    private(set) var slotted = 0
    private var deadlineCount = 0
    /// Admissions so far.
    private var sequence: UInt64 = 0

    init(limits: CompiledLimits, now: Int64) {
        self.limits = limits
        for w in 0..<3 where limits.tracks(w) {
            windows[w] = SlidingWindow(length: PolicyWindow(rawValue: w)!.nanoseconds, now: now, firstSequence: 1)
        }
    }

    var queued: Int { queue.count }
    var hasWaiters: Bool { !queue.isEmpty }

    // MARK: Admission

    /// Admits a call at once if nobody is queued and it fits; otherwise says why not.
    /// Runs due work first (waiters whose time has come), returned in the effects.
    @inline(__always)
    mutating func tryAdmit(tokens: Int64, now: Int64) -> (Result<Admission, Rejection>, Effects) {
        var effects = Effects()
        if !queue.isEmpty {
            effects = pump(now: now)
            if let head = queue.first {
                return (.failure(rejection(forQueued: head, at: 0, now: now)), effects)
            }
        }
        if inFlight >= limits.maxConcurrent {
            return (.failure(Rejection(kind: .concurrency, retryAt: nil)), effects)
        }
        advanceWindows(to: now)
        if windowsFit(tokens, now: now) { return (.success(admit(tokens: tokens, now: now)), effects) }
        return (.failure(windowRejection(tokens: tokens, now: now)!), effects)
    }

    /// Queues a call that could not be admitted at once, or admits/rejects it if the state
    /// changed meanwhile or its deadline can never be met.
    mutating func enqueue(id: UInt64, tokens: Int64, deadline: Int64, payload: Payload, now: Int64) -> EnqueueResult {
        var effects = queue.isEmpty ? Effects() : pump(now: now)
        advanceWindows(to: now)
        if queue.isEmpty && inFlight < limits.maxConcurrent && windowsFit(tokens, now: now) {
            return .admitted(admit(tokens: tokens, now: now), effects)
        }
        if deadline != .max {
            // The earliest this call could start, ignoring everyone ahead: a lower bound.
            let windowBlock = windowRejection(tokens: tokens, now: now)
            if deadline <= now || (windowBlock?.retryAt ?? now) > deadline {
                let rejection: Rejection
                if let first = queue.first, windowBlock == nil {
                    rejection = self.rejection(forQueued: first, at: 0, now: now)
                } else {
                    rejection = windowBlock ?? Rejection(kind: .concurrency, retryAt: nil)
                }
                return .rejected(Self.error(.rateLimited, rejection, now: now,
                    "cannot be admitted within its maximum wait"), effects)
            }
            deadlineCount += 1
        }
        queue.append(Waiter(id: id, tokens: tokens, deadline: deadline, payload: payload))
        effects.merge(pump(now: now))
        return .enqueued(effects)
    }

    /// Removes a waiter that gave up (cancelled). Returns its payload if it was still queued.
    mutating func cancel(id: UInt64, now: Int64) -> (Payload?, Effects) {
        guard let index = queue.firstIndex(where: { $0.id == id }) else { return (nil, Effects()) }
        let waiter = remove(at: index)
        return (waiter.payload, pump(now: now))
    }

    /// Runs what time made due: expired deadlines, admissions that now fit.
    mutating func tick(now: Int64) -> Effects {
        queue.isEmpty ? Effects() : pump(now: now)
    }

    // MARK: Permits

    /// A permit gave back its slot. Returns whether waiters may now proceed (then `tick`).
    @inline(__always)
    mutating func release() -> Bool {
        inFlight -= 1
        return !queue.isEmpty
    }

    /// Replaces a call's tokens `old` by `new` in every window still holding it.
    /// Returns whether waiters may now proceed (then `tick`).
    /// - Throws: `invalidTokenCount` if a sum would overflow; nothing is changed then.
    mutating func commit(_ admission: Admission, from old: Int64, to new: Int64) throws(PolicyError) -> Bool {
        let delta = new - old  // both are non-negative: cannot overflow
        if delta == 0 { return false }
        let (time, sequence) = (admission.time, admission.sequence)
        if windows.minute?.canAdjust(admittedAt: time, sequence: sequence, by: delta) == false
            || windows.hour?.canAdjust(admittedAt: time, sequence: sequence, by: delta) == false
            || windows.day?.canAdjust(admittedAt: time, sequence: sequence, by: delta) == false
        {
            throw PolicyError(.invalidTokenCount, message: "committing \(new) tokens would overflow the window's total")
        }
        windows.minute?.adjust(admittedAt: time, sequence: sequence, by: delta)
        windows.hour?.adjust(admittedAt: time, sequence: sequence, by: delta)
        windows.day?.adjust(admittedAt: time, sequence: sequence, by: delta)
        return delta < 0 && !queue.isEmpty
    }

    // MARK: Administration

    /// Adopts newer limits, keeping the usage of every window that stays tracked.
    mutating func setLimits(_ new: CompiledLimits, now: Int64) -> Effects {
        guard new.generation > limits.generation else { return Effects() }
        for w in 0..<3 {
            if !new.tracks(w) {
                windows[w] = nil
            } else if windows[w] == nil {
                windows[w] = SlidingWindow(length: PolicyWindow(rawValue: w)!.nanoseconds, now: now, firstSequence: sequence + 1)
            }
        }
        limits = new
        return queue.isEmpty ? Effects() : pump(now: now)
    }

    /// Forgets all recorded usage (permits and waiters stay).
    mutating func reset(now: Int64) -> Effects {
        for w in 0..<3 where windows[w] != nil {
            windows[w]?.clear(firstSequence: sequence + 1)
        }
        return queue.isEmpty ? Effects() : pump(now: now)
    }

    /// Whether nothing is held, queued or counted any more: the key can be forgotten.
    mutating func isIdle(now: Int64) -> Bool {
        guard inFlight == 0, queue.isEmpty else { return false }
        advanceWindows(to: now)
        return windows.minute?.isEmpty != false && windows.hour?.isEmpty != false && windows.day?.isEmpty != false
    }

    // MARK: Readouts

    struct WindowUsage: Sendable {
        let window: PolicyWindow
        let requests: Int64
        let tokens: Int64
    }

    /// Usage per tracked window at `now` (advancing the windows).
    mutating func usage(now: Int64) -> [WindowUsage] {
        advanceWindows(to: now)
        var result: [WindowUsage] = []
        for w in 0..<3 {
            if let window = windows[w] {
                result.append(WindowUsage(window: PolicyWindow(rawValue: w)!, requests: window.requestTotal, tokens: window.tokenTotal))
            }
        }
        return result
    }

    /// When some recorded usage next leaves a window, or `nil` if none is recorded.
    func nextExpiry() -> Int64? {
        var earliest: Int64?
        for w in 0..<3 {
            if let t = windows[w]?.nextExpiry() { earliest = min(earliest ?? .max, t) }
        }
        return earliest
    }

    /// Why a call of `tokens` could not be admitted now (nil if it could), for readouts.
    mutating func blocker(tokens: Int64, now: Int64) -> Rejection? {
        if let head = queue.first { return rejection(forQueued: head, at: 0, now: now) }
        if inFlight >= limits.maxConcurrent { return Rejection(kind: .concurrency, retryAt: nil) }
        advanceWindows(to: now)
        return windowRejection(tokens: tokens, now: now)
    }

    // MARK: Internals

    @inline(__always)
    private mutating func advanceWindows(to now: Int64) {
        windows.minute?.advance(to: now)
        windows.hour?.advance(to: now)
        windows.day?.advance(to: now)
    }

    @inline(__always)
    private func windowsFit(_ tokens: Int64, now: Int64) -> Bool {
        now >= limits.closedUntil
            && windows.minute?.fits(tokens: tokens, requestCap: limits.requestCaps[0], tokenCap: limits.tokenCaps[0]) != false
            && windows.hour?.fits(tokens: tokens, requestCap: limits.requestCaps[1], tokenCap: limits.tokenCaps[1]) != false
            && windows.day?.fits(tokens: tokens, requestCap: limits.requestCaps[2], tokenCap: limits.tokenCaps[2]) != false
    }

    @inline(__always)
    private mutating func admit(tokens: Int64, now: Int64) -> Admission {
        sequence += 1
        windows.minute?.record(tokens: tokens)
        windows.hour?.record(tokens: tokens)
        windows.day?.record(tokens: tokens)
        inFlight += 1
        return Admission(time: now, sequence: sequence)
    }

    /// The binding window cap for a call of `tokens` and when it frees (the latest of all
    /// windows' earliest fits, so that retrying then succeeds); nil if it fits now.
    /// Windows must be advanced to `now`.
    private func windowRejection(tokens: Int64, now: Int64) -> Rejection? {
        let worst = capsRejection(tokens: tokens, now: now)
        // Closed by a schedule: that is the reason, and the call fits no earlier than the
        // opening (nor than the windows allow).
        guard now < limits.closedUntil else { return worst }
        return Rejection(kind: nil, retryAt: max(limits.closedUntil, worst?.retryAt ?? .min))
    }

    private func capsRejection(tokens: Int64, now: Int64) -> Rejection? {
        Self.capsRejection(in: windows, limits: limits, tokens: tokens, now: now)
    }

    /// The binding window cap for a call of `tokens` over `windows` (advanced to `now`) and
    /// when it frees; nil if it fits. Shared by this machine and the shared-store path, which
    /// rebuilds the windows from a store's buckets.
    static func capsRejection(in windows: WindowSlots, limits: CompiledLimits, tokens: Int64, now: Int64) -> Rejection? {
        var worst: Rejection?
        for w in 0..<3 {
            guard let window = windows[w] else { continue }
            let requestCap = limits.requestCaps[w]
            let tokenCap = limits.tokenCaps[w]
            if let at = window.earliestFit(requests: 1, tokens: 0, requestCap: requestCap, tokenCap: .max, now: now),
                at > now, at > (worst?.retryAt ?? now)
            {
                worst = Rejection(kind: .requests(PolicyWindow(rawValue: w)!), retryAt: at)
            }
            if let at = window.earliestFit(requests: 0, tokens: tokens, requestCap: .max, tokenCap: tokenCap, now: now),
                at > now, at > (worst?.retryAt ?? now)
            {
                worst = Rejection(kind: .tokens(PolicyWindow(rawValue: w)!), retryAt: at)
            }
        }
        return worst
    }

    private func rejection(forQueued waiter: Waiter, at index: Int, now: Int64) -> Rejection {
        guard index < slotted else { return Rejection(kind: .concurrency, retryAt: nil) }
        // A slotted waiter is blocked by windows; if it fits it is about to be admitted.
        return windowRejection(tokens: waiter.tokens, now: now) ?? Rejection(kind: .concurrency, retryAt: nil)
    }

    private mutating func remove(at index: Int) -> Waiter {
        let waiter = queue.remove(at: index)
        if index < slotted { slotted -= 1 }
        if waiter.deadline != .max { deadlineCount -= 1 }
        return waiter
    }

    static func error(_ code: PolicyError.Code, _ rejection: Rejection, now: Int64, _ what: String) -> PolicyError {
        // `.max`: closed beyond the schedule's horizon, so no honest retry time exists.
        let retryAfter = rejection.retryAt.flatMap { $0 == .max ? nil : Duration.nanoseconds(max(0, $0 - now)) }
        guard let kind = rejection.kind else {
            return PolicyError(code, retryAfter: retryAfter, closedBy: "", message: "\(what): closed by schedule")
        }
        return PolicyError(code, limit: kind, retryAfter: retryAfter, message: "\(what): \(kind) is exhausted")
    }

    /// Expires deadlines, hands free slots to the front of the queue and admits the head while
    /// it fits; reports when to look again.
    private mutating func pump(now: Int64) -> Effects {
        var effects = Effects()
        // A waiter may still be admitted at the very instant its deadline falls (enqueue
        // accepted it because it could fit by then), so only deadlines already past expire
        // before the admissions, and those falling exactly now after them.
        if deadlineCount > 0 { expireDeadlines(now: now, including: false, into: &effects) }
        admitFromHead(now: now, into: &effects)
        if deadlineCount > 0, expireDeadlines(now: now, including: true, into: &effects) {
            admitFromHead(now: now, into: &effects)  // the expired may have held slots
        }
        if deadlineCount > 0 {
            var i = 0
            while i < queue.count {
                effects.wake = min(effects.wake ?? .max, queue[i].deadline)
                i += 1
            }
        }
        return effects
    }

    /// Fails the waiters whose deadline is before `now` (or at it, when `including`).
    /// Returns whether any was removed.
    @discardableResult
    private mutating func expireDeadlines(now: Int64, including: Bool, into effects: inout Effects) -> Bool {
        var removed = false
        var i = 0
        while i < queue.count {
            let waiter = queue[i]
            if waiter.deadline < now || (including && waiter.deadline == now) {
                advanceWindows(to: now)
                let why = rejection(forQueued: waiter, at: i, now: now)
                _ = remove(at: i)
                removed = true
                effects.resume(waiter.payload, .failure(
                    Self.error(.timedOut, why, now: now, "not admitted within its maximum wait")))
            } else {
                i += 1
            }
        }
        return removed
    }

    /// Hands free slots to the front of the queue and admits the head while it fits; sets
    /// `wake` to when the head could fit.
    private mutating func admitFromHead(now: Int64, into effects: inout Effects) {
        var advanced = false
        effects.wake = nil
        while true {
            while slotted < queue.count && inFlight + slotted < limits.maxConcurrent { slotted += 1 }
            guard slotted > 0, let head = queue.first else { break }
            // The schedule's next limits are due and not here yet: admit nobody on stale
            // limits. Handing over the new ones (`setLimits`) pumps again.
            if now >= limits.validUntil { break }
            if let kind = limits.oversizedKind(head.tokens) {
                // Limits lowered below this estimate while it waited: it can never fit.
                _ = remove(at: 0)
                effects.resume(head.payload, .failure(PolicyError(
                    .oversized, limit: kind, message: "estimate of \(head.tokens) tokens exceeds \(kind)")))
                continue
            }
            if !advanced {
                advanceWindows(to: now)
                advanced = true
            }
            if windowsFit(head.tokens, now: now) {
                _ = remove(at: 0)  // gives back the waiter's slot, which `admit` takes as in-flight
                effects.resume(head.payload, .success(admit(tokens: head.tokens, now: now)))
                continue
            }
            // `.max`: closed beyond the schedule's horizon; the schedule's own timer reopens it.
            let retryAt = windowRejection(tokens: head.tokens, now: now)?.retryAt
            effects.wake = retryAt == .max ? nil : retryAt
            break
        }
    }
}

extension GateStateMachine.Resume: Sendable where Payload: Sendable {}
extension GateStateMachine.Effects: Sendable where Payload: Sendable {}

/// The minute, hour and day windows of a key, each present only while some cap over it is set.
///
/// Three stored properties rather than an `InlineArray` of optionals: an `InlineArray` of a
/// non-trivial element is copied and checked through generic value witnesses, which cost more
/// than all the window arithmetic on the hot path.
struct WindowSlots {
    var minute: SlidingWindow?
    var hour: SlidingWindow?
    var day: SlidingWindow?

    subscript(window: Int) -> SlidingWindow? {
        @inline(__always) _read {
            switch window {
            case 0: yield minute
            case 1: yield hour
            default: yield day
            }
        }
        @inline(__always) _modify {
            switch window {
            case 0: yield &minute
            case 1: yield &hour
            default: yield &day
            }
        }
    }
}
