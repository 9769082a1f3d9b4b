/// What an admitted call carries so that its commit finds the buckets it was recorded in.
struct Admission: Sendable, Hashable {
    /// When it was admitted, in nanoseconds since the service's epoch.
    let time: Int64
    /// Its place among the key's admissions (1, 2, …).
    let sequence: UInt64
}

/// The rules of one key: windows, concurrency slots and the FIFO queue. `~Copyable`: its
/// windows are reference storage, so a copy would silently share them; the compiler keeps it
/// in place (in ``KeyStorage``, under the key's lock, or in a test's variable).
///
/// It never locks, suspends, reads a clock or calls out. Every method takes `now` and returns
/// what its caller must do (resume waiters, arm a timer at `wake`), so it can be driven
/// synchronously by tests, by the simulator, and by ``KeyStorage`` under its lock.
///
/// Waiters queue in arrival order. The ones at the front hold concurrency slots (always a prefix
/// of the queue, `slotted` long): a waiter first waits for a slot, then, holding it, for window
/// capacity. Only the head is ever admitted, so a large call is never starved by smaller ones.
///
/// Priority classes: interactive waiters (and batch waiters promoted by aging) come first, in
/// arrival order, then the batch waiters not yet promoted, in arrival order (`lowCount` of
/// them, at the tail). An interactive call queues ahead of them, and may be admitted at once
/// past them. A batch call is checked against the caps less the provider's reserve for
/// interactive calls (``CompiledLimits/reservingForInteractive()``) until it is promoted, at
/// `promoteAt` (its arrival plus the provider's batch aging, never before an earlier batch
/// call's): from then on it is ordered by its arrival among the interactive calls and sees the
/// whole caps. All of this is on the waiting path; a key nobody waits on pays one comparison.
///
/// When limits change (``setLimits(_:now:)``), permits admitted before run to completion;
/// from then on nobody is admitted while the permits in flight reach the cap in force, and
/// waiters holding slots beyond it give them back (the last of them first), keeping their
/// place in the queue. Time inside the machine never goes backwards: callers read the clock
/// before taking the lock, in any order, and the machine takes the latest instant it has seen,
/// so that a call is recorded in and committed to the same buckets.
struct GateStateMachine<Payload>: ~Copyable {
    struct Waiter {
        let id: UInt64
        let tokens: TokenCounts
        let deadline: Int64
        let payload: Payload
        /// Whether it was queued as a batch call (promoted or not).
        var isBatch = false
        /// For a batch call: when it is promoted (see the type's comment).
        var promoteAt: Int64 = .min
        /// Its place in the key's arrivals, which orders promoted batch calls among
        /// interactive ones.
        var arrival: UInt64 = 0
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
    /// How many batch waiters not yet promoted sit at the tail of the queue.
    private var lowCount = 0
    /// Batch waiters queued, promoted or not (for readouts).
    private(set) var batchQueued = 0
    /// Waiters queued so far (their `arrival`).
    private var arrivals: UInt64 = 0
    /// Admissions so far.
    private var sequence: UInt64 = 0
    /// The latest instant seen (see ``monotonic(_:)``).
    private var latest: Int64
    /// What the provider said about its own limits, shared by its keys: checked after the
    /// caps, where an admission is decided. Unmanaged: whoever holds the machine keeps it
    /// alive (``KeyStorage`` does), and a counted reference cost a retain and a release per call.
    private var feedbackReference: Unmanaged<ProviderFeedbackState>?
    /// The key's spend, while its limits have spend caps (``CompiledLimits/hasCostCaps``):
    /// checked with the provider's feedback, after the caps, where an admission is decided.
    private var spend: SpendWindows?

    init(limits: CompiledLimits, now: Int64, feedback: ProviderFeedbackState? = nil, costs: CostPolicy? = nil) {
        self.limits = limits
        self.feedbackReference = feedback.map { Unmanaged.passUnretained($0) }
        latest = now
        if limits.hasCostCaps, let costs {
            spend = SpendWindows(caps: costs.caps, calendar: costs.calendar, now: now, firstSequence: 1)
        }
        for w in 0..<3 where limits.tracks(w) {
            windows[w] = SlidingWindow(length: PolicyWindow.at(w).nanoseconds, now: now, firstSequence: 1)
            if limits.countsSplit(w) { windows[w]?.countSplit(firstSequence: 1) }
        }
    }

    /// Records that the limits in force are the key's own tier's (``CompiledLimits/isTierVerified``).
    mutating func markTierVerified() {
        limits.isTierVerified = true
    }

    /// Consults `feedback` from now on (the provider's feedback scope changed). The caller
    /// keeps it alive.
    mutating func adopt(feedback: ProviderFeedbackState?) {
        feedbackReference = feedback.map { Unmanaged.passUnretained($0) }
    }

    /// Takes a call of `tokens` from what the provider said is left, or says why not.
    /// A spend cap's refusal comes first: the provider's feedback takes what it gives.
    @inline(__always)
    private func providerRefusal(tokens: TokenCounts, now: Int64) -> Rejection? {
        if limits.hasCostCaps, let refusal = spendRefusal(tokens: tokens, now: now) { return refusal }
        return feedbackReference?._withUnsafeGuaranteedRef { $0.take(tokens: tokens.total, now: now) }
    }

    /// Why the provider's feedback or a spend cap would refuse a call of `tokens`, taking nothing.
    private func providerBlock(tokens: TokenCounts, now: Int64) -> Rejection? {
        if limits.hasCostCaps, let refusal = spendRefusal(tokens: tokens, now: now) { return refusal }
        return feedbackReference?._withUnsafeGuaranteedRef { $0.refusal(tokens: tokens.total, now: now) }
    }

    /// Why the key's spend caps refuse a call costing `tokens.cost` (spend advanced to `now`).
    /// Out of line: only providers with spend caps get here.
    @inline(never)
    private func spendRefusal(tokens: TokenCounts, now: Int64) -> Rejection? {
        guard let spend else { return nil }
        spend.advance(to: now)
        return spend.refusal(cost: tokens.cost, now: now)
    }

    /// Records an admitted call's cost. Out of line, as ``spendRefusal(tokens:now:)``.
    @inline(never)
    private func recordSpend(_ tokens: TokenCounts, now: Int64) {
        spend?.record(cost: tokens.cost, now: now)
    }

    /// `now`, or the latest instant seen if that is later. Two callers may read the clock in one
    /// order and take the lock in the other; the windows never go back, so the later instant is
    /// the one whose buckets a call is recorded in, and its admission must name that instant.
    @inline(__always)
    private mutating func monotonic(_ now: Int64) -> Int64 {
        if now > latest { latest = now }
        return latest
    }

    var queued: Int { queue.count }
    /// Batch waiters promoted by aging (the batch waiters not at the tail).
    var promotedBatch: Int { batchQueued - lowCount }
    var hasWaiters: Bool { !queue.isEmpty }

    // MARK: Admission

    /// Admits a call at once if nobody is queued and it fits; otherwise says why not.
    /// Runs due work first (waiters whose time has come), returned in the effects.
    /// An interactive call passes batch waiters not yet promoted (it would queue ahead of
    /// them); a batch call checks the caps less the reserve.
    @inline(__always)
    mutating func tryAdmit(
        tokens: TokenCounts, now: Int64, priority: PolicyPriority = .interactive
    ) -> (Result<Admission, Rejection>, Effects) {
        let now = monotonic(now)
        if !queue.isEmpty || priority != .interactive { return tryAdmitSlowly(tokens: tokens, now: now, priority: priority) }
        let effects = Effects()
        if inFlight >= limits.maxConcurrent { return (.failure(.concurrency), effects) }
        advanceWindows(to: now)
        guard windowsFit(tokens, now: now) else { return (.failure(windowRefusal(tokens: tokens, now: now)), effects) }
        if let refusal = providerRefusal(tokens: tokens, now: now) { return (.failure(refusal), effects) }
        return (.success(admit(tokens: tokens, now: now)), effects)
    }

    /// ``tryAdmit(tokens:now:priority:)`` with someone queued, or for a batch call: out of line,
    /// so that the uncontended interactive path stays as small as it was.
    @inline(never)
    private mutating func tryAdmitSlowly(
        tokens: TokenCounts, now: Int64, priority: PolicyPriority
    ) -> (Result<Admission, Rejection>, Effects) {
        var effects = Effects()
        if !queue.isEmpty {
            effects = pump(now: now)
            if let head = queue.first {
                guard priority == .interactive, lowCount == queue.count else {
                    return (.failure(rejection(forQueued: head, at: 0, now: now)), effects)
                }
                return (admitAhead(tokens: tokens, now: now), effects)
            }
        }
        if priority != .interactive, limits.reservesForInteractive { return (tryAdmitBatch(tokens: tokens, now: now), effects) }
        if inFlight >= limits.maxConcurrent { return (.failure(.concurrency), effects) }
        advanceWindows(to: now)
        guard windowsFit(tokens, now: now) else { return (.failure(windowRefusal(tokens: tokens, now: now)), effects) }
        if let refusal = providerRefusal(tokens: tokens, now: now) { return (.failure(refusal), effects) }
        return (.success(admit(tokens: tokens, now: now)), effects)
    }

    /// An interactive call admitted past batch waiters not yet promoted, as if queued at the
    /// head. It takes a slot from the last batch waiter holding one if it must.
    @inline(never)
    private mutating func admitAhead(tokens: TokenCounts, now: Int64) -> Result<Admission, Rejection> {
        if inFlight >= limits.maxConcurrent { return .failure(.concurrency) }
        advanceWindows(to: now)
        guard windowsFit(tokens, now: now) else { return .failure(windowRefusal(tokens: tokens, now: now)) }
        if let refusal = providerRefusal(tokens: tokens, now: now) { return .failure(refusal) }
        let admission = admit(tokens: tokens, now: now)
        slotted = min(slotted, max(0, limits.maxConcurrent - inFlight))
        return .success(admission)
    }

    /// ``tryAdmit(tokens:now:priority:)`` for a batch call with nobody queued, against the caps
    /// less the reserve.
    @inline(never)
    private mutating func tryAdmitBatch(tokens: TokenCounts, now: Int64) -> Result<Admission, Rejection> {
        let caps = limits.reservingForInteractive()
        if inFlight >= caps.maxConcurrent { return .failure(Rejection(kind: .concurrency, retryAt: nil, forBatch: true)) }
        advanceWindows(to: now)
        guard fits(tokens, now: now, caps: caps) else {
            return .failure(batchRefusal(tokens: tokens, caps: caps, promoteAt: .max, now: now))
        }
        if let refusal = providerRefusal(tokens: tokens, now: now) { return .failure(refusal) }
        return .success(admit(tokens: tokens, now: now))
    }

    /// Queues a call that could not be admitted at once, or admits/rejects it if the state
    /// changed meanwhile or its deadline can never be met.
    /// - Parameters:
    ///   - priority: Its class: an interactive call queues ahead of batch calls not yet promoted.
    ///   - batchAging: For a batch call, how long until it is promoted (nanoseconds).
    mutating func enqueue(
        id: UInt64, tokens: TokenCounts, deadline: Int64, payload: Payload, now: Int64,
        priority: PolicyPriority = .interactive, batchAging: Int64 = PolicyLimits.defaultBatchAging.nanosecondsSaturating
    ) -> EnqueueResult {
        let now = monotonic(now)
        var effects = queue.isEmpty ? Effects() : pump(now: now)
        if let oversized = AdmissionRules.oversized(tokens, limits: limits) {
            // Limits were lowered below the estimate since the caller checked it.
            return .rejected(AdmissionRules.oversizedError(oversized, tokens: tokens), effects)
        }
        advanceWindows(to: now)
        let isBatch = priority == .batch
        // Never before an earlier batch call: promotions then leave the tail in order.
        let promoteAt = isBatch ? max(now.clampedAdding(max(1, batchAging)), lowCount > 0 ? queue[queue.count - 1].promoteAt : .min) : .min
        let caps = isBatch ? limits.reservingForInteractive() : limits
        // Past `validUntil` the schedule's next limits are due: neither admit nor refuse on
        // these, queue (handing over the next limits pumps the queue).
        let current = now < limits.validUntil
        // Nobody it would queue behind: an interactive call goes ahead of unpromoted batch calls.
        let first = queue.isEmpty || (!isBatch && lowCount == queue.count)
        var refusedByProvider: Rejection?
        if current && first && inFlight < caps.maxConcurrent && fits(tokens, now: now, caps: caps) {
            refusedByProvider = providerRefusal(tokens: tokens, now: now)
            if let refusal = refusedByProvider, refusal.exceededCap != nil {
                // A spend cap lowered below the call's cost since the caller checked it.
                return .rejected(AdmissionRules.refusal(refusal, now: now, waited: false), effects)
            }
            if refusedByProvider == nil {
                let admission = admit(tokens: tokens, now: now)
                slotted = min(slotted, max(0, limits.maxConcurrent - inFlight))
                return .admitted(admission, effects)
            }
        }
        if deadline != .max {
            // The earliest this call could start, ignoring everyone ahead: a lower bound.
            let windowBlock: Rejection?
            if isBatch && caps.reservesForInteractive {
                windowBlock =
                    fits(tokens, now: now, caps: caps)
                    ? refusedByProvider ?? providerBlock(tokens: tokens, now: now)
                    : batchRefusal(tokens: tokens, caps: caps, promoteAt: promoteAt, now: now)
            } else {
                windowBlock =
                    windowsFit(tokens, now: now)
                    ? refusedByProvider ?? providerBlock(tokens: tokens, now: now) : windowRefusal(tokens: tokens, now: now)
            }
            if current, AdmissionRules.isHopeless(windowBlock ?? .concurrency, now: now, deadline: deadline) {
                let rejection = windowBlock ?? queue.first.map { self.rejection(forQueued: $0, at: 0, now: now) } ?? .concurrency
                return .rejected(AdmissionRules.refusal(rejection, now: now, waited: false), effects)
            }
            deadlineCount += 1
        }
        arrivals += 1
        let waiter = Waiter(
            id: id, tokens: tokens, deadline: deadline, payload: payload, isBatch: isBatch, promoteAt: promoteAt, arrival: arrivals)
        if isBatch {
            queue.append(waiter)
            lowCount += 1
            batchQueued += 1
        } else if lowCount == 0 {
            queue.append(waiter)
        } else {
            queue.insert(waiter, at: queue.count - lowCount)
        }
        effects.merge(pump(now: now))
        return .enqueued(effects)
    }

    /// Why a batch call of `tokens` does not fit `caps` (the caps less the reserve; windows
    /// advanced), and when it could start: when the reduced caps have room, or once promoted
    /// at `promoteAt` and the whole caps have room, whichever comes first.
    private func batchRefusal(tokens: TokenCounts, caps: CompiledLimits, promoteAt: Int64, now: Int64) -> Rejection {
        var refusal = AdmissionRules.windowRefusal(in: windows, limits: caps, tokens: tokens, now: now)
        // Above a reduced cap (within the whole one: the caller checked): only promotion helps.
        let reducedAt = refusal.exceededCap != nil ? Int64.max : refusal.retryAt ?? .max
        var promotedAt = promoteAt
        if promoteAt != .max, !windowsFit(tokens, now: now) {
            promotedAt = max(promoteAt, windowRefusal(tokens: tokens, now: now).retryAt ?? .max)
        }
        let at = min(reducedAt, promotedAt)
        refusal = Rejection(kind: refusal.kind, retryAt: at == .max && refusal.kind != nil ? nil : at, forBatch: true)
        return refusal
    }

    /// Removes a waiter that gave up (cancelled). Returns its payload if it was still queued.
    mutating func cancel(id: UInt64, now: Int64) -> (Payload?, Effects) {
        guard let index = queue.firstIndex(where: { $0.id == id }) else { return (nil, Effects()) }
        let now = monotonic(now)
        let waiter = remove(at: index)
        return (waiter.payload, pump(now: now))
    }

    /// Fails every waiter with `error` (the gate is shutting down); the queue is empty after.
    mutating func failAll(_ error: PolicyError) -> Effects {
        var effects = Effects()
        while !queue.isEmpty { effects.resume(queue.removeFirst().payload, .failure(error)) }
        slotted = 0
        deadlineCount = 0
        // Priority's counts of the queue, which is now empty.
        lowCount = 0
        batchQueued = 0
        return effects
    }

    /// Runs what time made due: expired deadlines, admissions that now fit.
    mutating func tick(now: Int64) -> Effects {
        queue.isEmpty ? Effects() : pump(now: monotonic(now))
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
    mutating func commit(_ admission: Admission, from old: TokenCounts, to new: TokenCounts) throws(PolicyError) -> Bool {
        if limits.hasCostCaps { return try commitWithSpend(admission, from: old, to: new) }
        return try commitCounts(admission, from: old, to: new)
    }

    /// ``commit(_:from:to:)`` for a key with spend caps: the cost is checked first and
    /// adjusted last, so that a commit that throws changes nothing.
    @inline(never)
    private mutating func commitWithSpend(_ admission: Admission, from old: TokenCounts, to new: TokenCounts) throws(PolicyError) -> Bool {
        let costDelta = new.cost - old.cost  // both in 0...Int64.max: cannot overflow
        if let spend, !spend.canAdjust(admission, by: costDelta) {
            throw PolicyError(
                .invalidTokenCount, message: "committing a cost of \(PolicyMoney(microUnits: new.cost)) would overflow the spend's total")
        }
        let freed = try commitCounts(admission, from: old, to: new)
        guard costDelta != 0, let spend else { return freed }
        spend.adjust(admission, by: costDelta)
        return freed || (costDelta < 0 && !queue.isEmpty)
    }

    @inline(__always)
    private mutating func commitCounts(_ admission: Admission, from old: TokenCounts, to new: TokenCounts) throws(PolicyError) -> Bool {
        let delta = new.total - old.total  // all counts are non-negative: cannot overflow
        let (time, sequence) = (admission.time, admission.sequence)
        guard limits.hasSplitCaps else {
            if delta == 0 { return false }
            if windows.minute?.canAdjust(admittedAt: time, sequence: sequence, by: delta) == false
                || windows.hour?.canAdjust(admittedAt: time, sequence: sequence, by: delta) == false
                || windows.day?.canAdjust(admittedAt: time, sequence: sequence, by: delta) == false
            {
                throw PolicyError(.invalidTokenCount, message: "committing \(new.total) tokens would overflow the window's total")
            }
            windows.minute?.adjust(admittedAt: time, sequence: sequence, by: delta)
            windows.hour?.adjust(admittedAt: time, sequence: sequence, by: delta)
            windows.day?.adjust(admittedAt: time, sequence: sequence, by: delta)
            return delta < 0 && !queue.isEmpty
        }
        return try commitSplit(admission, from: old, to: new)
    }

    /// ``commit(_:from:to:)`` for a provider with input or output caps.
    private mutating func commitSplit(_ admission: Admission, from old: TokenCounts, to new: TokenCounts) throws(PolicyError) -> Bool {
        let (time, sequence) = (admission.time, admission.sequence)
        let (delta, inputDelta, outputDelta) = (new.total - old.total, new.input - old.input, new.output - old.output)
        // Written out per window, as everywhere on these paths: a loop over `windows[w]` goes
        // through the subscript's coroutine and retains each window.
        if windows.minute?.canAdjust(admittedAt: time, sequence: sequence, by: delta, input: inputDelta, output: outputDelta) == false
            || windows.hour?.canAdjust(admittedAt: time, sequence: sequence, by: delta, input: inputDelta, output: outputDelta) == false
            || windows.day?.canAdjust(admittedAt: time, sequence: sequence, by: delta, input: inputDelta, output: outputDelta) == false
        {
            throw PolicyError(.invalidTokenCount, message: "committing \(new.total) tokens would overflow the window's total")
        }
        windows.minute?.adjust(admittedAt: time, sequence: sequence, by: delta, input: inputDelta, output: outputDelta)
        windows.hour?.adjust(admittedAt: time, sequence: sequence, by: delta, input: inputDelta, output: outputDelta)
        windows.day?.adjust(admittedAt: time, sequence: sequence, by: delta, input: inputDelta, output: outputDelta)
        return (delta < 0 || inputDelta < 0 || outputDelta < 0) && !queue.isEmpty
    }

    // MARK: Administration

    /// Adopts newer limits, keeping the usage of every window that stays tracked.
    ///
    /// Permits in flight keep their slots. Waiters holding slots beyond the new concurrency cap
    /// give them back, the last first, and stay queued in their place: from now on nobody is
    /// admitted while the permits in flight reach the new cap.
    mutating func setLimits(_ new: CompiledLimits, costs: CostPolicy? = nil, now: Int64) -> Effects {
        guard new.supersedes(limits) else { return Effects() }
        let now = monotonic(now)
        advanceWindows(to: now)
        if new.hasCostCaps, let costs {
            if let spend {
                spend.advance(to: now)
                spend.adopt(caps: costs.caps, calendar: costs.calendar, now: now, firstSequence: sequence + 1)
            } else {
                spend = SpendWindows(caps: costs.caps, calendar: costs.calendar, now: now, firstSequence: sequence + 1)
            }
        } else {
            spend = nil
        }
        for w in 0..<3 {
            if !new.tracks(w) {
                windows[w] = nil
                continue
            } else if windows[w] == nil {
                windows[w] = SlidingWindow(length: PolicyWindow.at(w).nanoseconds, now: now, firstSequence: sequence + 1)
            }
            if new.hasSplitCaps && new.countsSplit(w) {
                windows[w]?.countSplit(firstSequence: sequence + 1)
            } else {
                windows[w]?.dropSplit()
            }
        }
        limits = new
        slotted = min(slotted, max(0, new.maxConcurrent - inFlight))
        return queue.isEmpty ? Effects() : pump(now: now)
    }

    /// Forgets all recorded usage (permits and waiters stay).
    mutating func reset(now: Int64) -> Effects {
        let now = monotonic(now)
        for w in 0..<3 where windows[w] != nil {
            windows[w]?.clear(firstSequence: sequence + 1)
        }
        spend?.clear(firstSequence: sequence + 1)
        return queue.isEmpty ? Effects() : pump(now: now)
    }

    /// Whether nothing is held, queued or counted any more: the key can be forgotten.
    mutating func isIdle(now: Int64) -> Bool {
        guard inFlight == 0, queue.isEmpty else { return false }
        advanceWindows(to: monotonic(now))
        if let spend {
            spend.advance(to: latest)
            guard spend.isEmpty else { return false }
        }
        return windows.minute?.isEmpty != false && windows.hour?.isEmpty != false && windows.day?.isEmpty != false
    }

    /// The key's spend per capped window at `now` (advancing it), in micro-units; empty
    /// without spend caps.
    mutating func spendUsage(now: Int64) -> [(cap: PolicyCostCap, spent: Int64, limit: Int64, resetsAt: Int64?)] {
        guard let spend else { return [] }
        spend.advance(to: monotonic(now))
        return spend.usage
    }

    // MARK: Readouts

    struct WindowUsage: Sendable {
        let window: PolicyWindow
        let requests: Int64
        let tokens: Int64
        /// Input and output tokens, when an input or output cap over the window is set.
        var inputTokens: Int64? = nil
        var outputTokens: Int64? = nil
    }

    /// Usage per tracked window at `now` (advancing the windows).
    mutating func usage(now: Int64) -> [WindowUsage] {
        advanceWindows(to: monotonic(now))
        var result: [WindowUsage] = []
        for w in 0..<3 {
            if let window = windows[w] {
                let split = window.split
                result.append(
                    WindowUsage(
                        window: PolicyWindow.at(w), requests: window.requestTotal, tokens: window.tokenTotal,
                        inputTokens: limits.inputCaps[w] == .max ? nil : split?.inputTotal,
                        outputTokens: limits.outputCaps[w] == .max ? nil : split?.outputTotal))
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
        if let t = spend?.nextExpiry() { earliest = min(earliest ?? .max, t) }
        return earliest
    }

    /// Why a call of `tokens` could not be admitted now (nil if it could), for readouts.
    mutating func blocker(tokens: TokenCounts, now: Int64) -> Rejection? {
        let now = monotonic(now)
        advanceWindows(to: now)
        if let head = queue.first { return rejection(forQueued: head, at: 0, now: now) }
        if inFlight >= limits.maxConcurrent { return .concurrency }
        guard windowsFit(tokens, now: now) else { return windowRefusal(tokens: tokens, now: now) }
        guard limits.hasCostCaps else { return nil }
        // Any paid call: spend at its cap refuses it.
        var probe = tokens
        probe.cost = max(1, tokens.cost)
        return spendRefusal(tokens: probe, now: now)
    }

    // MARK: Internals

    @inline(__always)
    private mutating func advanceWindows(to now: Int64) {
        windows.minute?.advance(to: now)
        windows.hour?.advance(to: now)
        windows.day?.advance(to: now)
    }

    /// Whether a call of `tokens` fits every window now and the gate is open (windows
    /// advanced). ``windowRefusal(tokens:now:)`` says why not, by the same arithmetic.
    @inline(__always)
    private func windowsFit(_ tokens: TokenCounts, now: Int64) -> Bool {
        !limits.isClosed(at: now)
            && windows.minute?.fits(tokens: tokens.total, requestCap: limits.requestCap(0), tokenCap: limits.tokenCaps[0]) != false
            && windows.hour?.fits(tokens: tokens.total, requestCap: limits.requestCap(1), tokenCap: limits.tokenCaps[1]) != false
            && windows.day?.fits(tokens: tokens.total, requestCap: limits.requestCap(2), tokenCap: limits.tokenCaps[2]) != false
            && (!limits.hasSplitCaps || splitFits(tokens))
    }

    /// ``windowsFit(_:now:)`` against other caps (a batch call's, less the reserve). Apart from
    /// it, so that the hot path's reads of `limits` stay as they are.
    private func fits(_ tokens: TokenCounts, now: Int64, caps: CompiledLimits) -> Bool {
        let (input, output) = (tokens.input, tokens.output)
        return !caps.isClosed(at: now)
            && windows.minute?.fits(tokens: tokens.total, requestCap: caps.requestCap(0), tokenCap: caps.tokenCaps[0]) != false
            && windows.hour?.fits(tokens: tokens.total, requestCap: caps.requestCap(1), tokenCap: caps.tokenCaps[1]) != false
            && windows.day?.fits(tokens: tokens.total, requestCap: caps.requestCap(2), tokenCap: caps.tokenCaps[2]) != false
            && (!caps.hasSplitCaps
                || windows.minute?.splitFits(input: input, output: output, inputCap: caps.inputCaps[0], outputCap: caps.outputCaps[0])
                    != false
                    && windows.hour?.splitFits(input: input, output: output, inputCap: caps.inputCaps[1], outputCap: caps.outputCaps[1])
                        != false
                    && windows.day?.splitFits(input: input, output: output, inputCap: caps.inputCaps[2], outputCap: caps.outputCaps[2])
                        != false)
    }

    /// Records an admitted call's input and output. Out of line, as ``splitFits(_:)``: the
    /// admission of a provider without such caps stays as small as it was.
    @inline(never)
    private func recordSplit(_ tokens: TokenCounts) {
        windows.minute?.recordSplit(input: tokens.input, output: tokens.output)
        windows.hour?.recordSplit(input: tokens.input, output: tokens.output)
        windows.day?.recordSplit(input: tokens.input, output: tokens.output)
    }

    /// Whether a call's input and output fit every input and output cap (windows advanced).
    @inline(never)
    private func splitFits(_ tokens: TokenCounts) -> Bool {
        let (input, output) = (tokens.input, tokens.output)
        return windows.minute?.splitFits(input: input, output: output, inputCap: limits.inputCaps[0], outputCap: limits.outputCaps[0])
            != false
            && windows.hour?.splitFits(input: input, output: output, inputCap: limits.inputCaps[1], outputCap: limits.outputCaps[1])
                != false
            && windows.day?.splitFits(input: input, output: output, inputCap: limits.inputCaps[2], outputCap: limits.outputCaps[2]) != false
    }

    @inline(__always)
    private mutating func admit(tokens: TokenCounts, now: Int64) -> Admission {
        sequence += 1
        windows.minute?.record(tokens: tokens.total)
        windows.hour?.record(tokens: tokens.total)
        windows.day?.record(tokens: tokens.total)
        if limits.hasSplitCaps { recordSplit(tokens) }
        if limits.hasCostCaps { recordSpend(tokens, now: now) }
        inFlight += 1
        return Admission(time: now, sequence: sequence)
    }

    /// Why a call of `tokens` does not fit now (windows advanced): ``AdmissionRules``' rule.
    private func windowRefusal(tokens: TokenCounts, now: Int64) -> Rejection {
        AdmissionRules.windowRefusal(in: windows, limits: limits, tokens: tokens, now: now)
    }

    private func rejection(forQueued waiter: Waiter, at index: Int, now: Int64) -> Rejection {
        guard index < slotted else { return .concurrency }
        if index >= queue.count - lowCount && limits.reservesForInteractive {
            // A batch waiter not yet promoted: the caps less the reserve.
            let caps = limits.reservingForInteractive()
            if inFlight >= caps.maxConcurrent { return Rejection(kind: .concurrency, retryAt: nil, forBatch: true) }
            guard fits(waiter.tokens, now: now, caps: caps) else {
                return batchRefusal(tokens: waiter.tokens, caps: caps, promoteAt: waiter.promoteAt, now: now)
            }
            return providerBlock(tokens: waiter.tokens, now: now) ?? .concurrency
        }
        // A slotted waiter is blocked by windows or by the provider's feedback; if neither, it
        // is about to be admitted.
        guard windowsFit(waiter.tokens, now: now) else { return windowRefusal(tokens: waiter.tokens, now: now) }
        return providerBlock(tokens: waiter.tokens, now: now) ?? .concurrency
    }

    private mutating func remove(at index: Int) -> Waiter {
        if index >= queue.count - lowCount { lowCount -= 1 }
        let waiter = queue.remove(at: index)
        if waiter.isBatch { batchQueued -= 1 }
        if index < slotted { slotted -= 1 }
        if waiter.deadline != .max { deadlineCount -= 1 }
        return waiter
    }

    /// Expires deadlines, hands free slots to the front of the queue and admits the head while
    /// it fits; reports when to look again.
    private mutating func pump(now: Int64) -> Effects {
        var effects = Effects()
        if lowCount > 0 { promote(now: now) }
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
        // The next promotion: the earliest batch waiter not yet promoted (they are in order).
        if lowCount > 0 { effects.wake = min(effects.wake ?? .max, queue[queue.count - lowCount].promoteAt) }
        return effects
    }

    /// Promotes the batch waiters whose `promoteAt` has come (a prefix of the tail): they join
    /// the interactive waiters in arrival order. Slots stay with the front of the queue, so a
    /// promoted waiter may take one from a batch waiter behind it.
    private mutating func promote(now: Int64) {
        let start = queue.count - lowCount
        var end = start
        while end < queue.count && queue[end].promoteAt <= now { end += 1 }
        guard end > start else { return }
        var merged: [Waiter] = []
        merged.reserveCapacity(end)
        var (i, j) = (0, start)
        while i < start || j < end {
            if j == end || (i < start && queue[i].arrival < queue[j].arrival) {
                merged.append(queue[i])
                i += 1
            } else {
                merged.append(queue[j])
                j += 1
            }
        }
        for (position, waiter) in merged.enumerated() { queue[position] = waiter }
        lowCount -= end - start
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
                effects.resume(waiter.payload, .failure(AdmissionRules.refusal(why, now: now, waited: true)))
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
            // `inFlight < maxConcurrent` holds whenever a waiter is slotted (setLimits gives
            // back slots beyond a lowered cap); checked anyway, as the rule it is.
            guard slotted > 0, inFlight < limits.maxConcurrent, let head = queue.first else { break }
            // The schedule's next limits are due and not here yet: admit nobody on stale
            // limits. Handing over the new ones (`setLimits`) pumps again; the service's
            // schedule timer, or a caller that sees them first, does that.
            if now >= limits.validUntil { break }
            if let oversized = AdmissionRules.oversized(head.tokens, limits: limits) {
                // Limits lowered below this estimate while it waited: it can never fit.
                _ = remove(at: 0)
                effects.resume(head.payload, .failure(AdmissionRules.oversizedError(oversized, tokens: head.tokens)))
                continue
            }
            if !advanced {
                advanceWindows(to: now)
                advanced = true
            }
            let refusal: Rejection
            if lowCount == queue.count && limits.reservesForInteractive {
                // A batch head not yet promoted: the caps less the reserve. (A full reduced
                // concurrency cap waits for a release or the promotion, which `pump` wakes.)
                let caps = limits.reservingForInteractive()
                if inFlight < caps.maxConcurrent && fits(head.tokens, now: now, caps: caps) {
                    if let providerBlock = providerRefusal(tokens: head.tokens, now: now) {
                        refusal = providerBlock
                    } else {
                        _ = remove(at: 0)
                        effects.resume(head.payload, .success(admit(tokens: head.tokens, now: now)))
                        continue
                    }
                } else if inFlight >= caps.maxConcurrent {
                    break
                } else {
                    refusal = batchRefusal(tokens: head.tokens, caps: caps, promoteAt: .max, now: now)
                }
            } else if windowsFit(head.tokens, now: now) {
                if let providerBlock = providerRefusal(tokens: head.tokens, now: now) {
                    refusal = providerBlock
                } else {
                    _ = remove(at: 0)  // gives back the waiter's slot, which `admit` takes as in-flight
                    effects.resume(head.payload, .success(admit(tokens: head.tokens, now: now)))
                    continue
                }
            } else {
                refusal = windowRefusal(tokens: head.tokens, now: now)
            }
            // `.max`: closed beyond the schedule's horizon; the schedule's own timer reopens it.
            let retryAt = refusal.retryAt
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
