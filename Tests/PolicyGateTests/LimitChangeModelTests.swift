import PolicyGateTestKit
import Testing

@testable import PolicyGate

/// Seeded random traces through the state machine while its limits change: every cap raised,
/// lowered, removed and added at random points (the concurrency cap and token caps included),
/// schedule-like transitions (closed periods, limits that expire and are handed over late),
/// several waiters at once with deadlines and cancellations, commits above and below the
/// estimate; input and output token caps that come and go, calls estimated and committed in
/// parts or as a total (which counts in full as input and as output). An exact sliding log, written here independently of the machine, checks at every
/// step:
/// - **safety**: every admission fits every cap in force at its instant, counted exactly, and
///   finds fewer permits in flight than the concurrency cap in force (permits admitted before
///   a lower cap run on; nobody new is admitted past it);
/// - **liveness**: a waiter at the head of the queue that fits even when every window counts
///   1/60 of its length more (the gate's documented delay bound) has been admitted, so a
///   wake-up was armed for it; a waiter past its deadline has been told;
/// - **FIFO**: waiters are admitted only from the head;
/// - readouts never below the exact counts, never above the relaxed ones; nothing traps.
@Suite("The machine against an exact model while limits change")
struct LimitChangeModelTests {
    @Test("random changes of limits never break a cap and never strand a waiter")
    func replay() {
        // Seeds 1...12 by default (a few seconds in a debug build); with POLICYGATE_SOAK=1, 200 seeds of
        // 20 000 steps each.
        let seeds: [UInt64] = Environment.soak ? Array(1...200) : Array(1...12)
        var total = Harness.Counts()
        for seed in seeds {
            let harness = Harness(seed: seed)
            harness.run(steps: Environment.soak ? 20_000 : 2_000)
            total.add(harness.counts)
        }
        // Every path was taken, so that the checks above were not vacuous.
        #expect(
            total.admitted > 1_000 && total.waited > 500 && total.timedOut > 100 && total.cancelled > 100
                && total.oversized > 50 && total.changes > 1_000 && total.transitions > 100 && total.lateTransitions > 50
                && total.staleArrivals > 100
                && total.closedRefusals > 20 && total.feedback > 200 && total.providerRefusals > 50 && total.slotsTakenBack > 50
                && total.rejected > 1_000
                && total.splitAdmitted > 500 && total.splitRefusals > 100,
            "not every path was exercised: \(total)")
        print("limit-change model: \(seeds.count) seeds: \(total)")
    }
}

/// The machine, the model beside it, and the shell's timer, driven step by step.
private final class Harness {
    typealias Machine = GateStateMachine<Int>
    static let lengths: [Int64] = [60_000_000_000, 3_600_000_000_000, 86_400_000_000_000]
    static let second: Int64 = 1_000_000_000

    struct Call {
        let at: Int64
        var tokens: TokenCounts
        var alive: Bool
        let admission: Admission
    }

    struct Waiter {
        let id: Int
        let tokens: TokenCounts
        let deadline: Int64
    }

    /// A schedule's next limits, due at `at`, handed over at `deliverAt` (a late timer).
    struct Transition {
        let at: Int64
        let deliverAt: Int64
        let limits: PolicyLimits
    }

    struct Counts: CustomStringConvertible {
        var admitted = 0, rejected = 0, waited = 0, timedOut = 0, cancelled = 0, oversized = 0
        var changes = 0, transitions = 0, lateTransitions = 0, closedRefusals = 0, slotsTakenBack = 0, staleArrivals = 0
        var feedback = 0, providerRefusals = 0
        /// Admissions while an input or output cap was in force; refusals by one of them.
        var splitAdmitted = 0, splitRefusals = 0

        mutating func add(_ o: Counts) {
            admitted += o.admitted; rejected += o.rejected; waited += o.waited; timedOut += o.timedOut
            cancelled += o.cancelled; oversized += o.oversized; changes += o.changes; transitions += o.transitions
            lateTransitions += o.lateTransitions; feedback += o.feedback; providerRefusals += o.providerRefusals;
            staleArrivals += o.staleArrivals; closedRefusals += o.closedRefusals; slotsTakenBack += o.slotsTakenBack
            splitAdmitted += o.splitAdmitted; splitRefusals += o.splitRefusals
        }

        var description: String {
            "admitted \(admitted) rejected \(rejected) waited \(waited) timed out \(timedOut) cancelled \(cancelled) "
                + "oversized \(oversized) changes \(changes) transitions \(transitions) (late \(lateTransitions), callers meanwhile \(staleArrivals)) "
                + "closed \(closedRefusals) slots taken back \(slotsTakenBack) feedback \(feedback) (refusals \(providerRefusals)) "
                + "under input/output caps \(splitAdmitted) (refused by them \(splitRefusals))"
        }
    }

    let seed: UInt64
    var rng: SeededGenerator
    var machine: Machine
    var now: Int64 = 0
    var compiled: CompiledLimits
    var generation: UInt64 = 1
    /// Per window, the number of the first call it counts (`nil`: not tracked). A window tracked
    /// anew starts empty, as documented for ``PolicyService/setLimits(_:for:)``.
    var trackedSince: [Int?] = [nil, nil, nil]
    /// The same for the input and output counts of each window (kept while an input or an
    /// output cap over it is set).
    var splitSince: [Int?] = [nil, nil, nil]
    var calls: [Call] = []
    var queue: [Waiter] = []
    var timerAt: Int64?
    var transition: Transition?
    /// The latest instant the machine was given: where it records what it admits.
    var seen: Int64 = 0
    /// Whether callers arrived at the start of the late hand-over's stretch already.
    var staleVisited = false
    var nextWaiter = 0
    var counts = Counts()
    /// What the provider said, as the machine sees it, and as the model keeps it.
    let feedback = ProviderFeedbackState()
    var pausedUntil: Int64 = .min
    var requestsLeft: (remaining: Int64, until: Int64)?
    var tokensLeft: (remaining: Int64, until: Int64)?

    init(seed: UInt64) {
        self.seed = seed
        rng = SeededGenerator(seed: seed)
        let limits = Self.randomLimits(&rng)
        compiled = CompiledLimits(limits, generation: 1)
        machine = Machine(limits: compiled, now: 0, feedback: feedback)
        for w in 0..<3 {
            if compiled.tracks(w) { trackedSince[w] = 0 }
            if compiled.countsSplit(w) { splitSince[w] = 0 }
        }
    }

    /// Random caps, with input and output caps half of the time.
    static func randomLimits(_ rng: inout SeededGenerator) -> PolicyLimits {
        var limits = SlidingWindowModelTests.randomLimits(&rng)
        guard Bool.random(using: &rng) else { return limits }
        if Bool.random(using: &rng) { limits.inputTokensPerMinute = Int.random(in: 300...2_000, using: &rng) }
        if Bool.random(using: &rng) { limits.outputTokensPerMinute = Int.random(in: 100...1_000, using: &rng) }
        if Int.random(in: 0..<4, using: &rng) == 0 { limits.inputTokensPerHour = Int.random(in: 2_000...20_000, using: &rng) }
        if Int.random(in: 0..<4, using: &rng) == 0 { limits.outputTokensPerDay = Int.random(in: 2_000...20_000, using: &rng) }
        return limits
    }

    // MARK: The model

    func usage(_ w: Int, at t: Int64, slack: Bool) -> (requests: Int64, tokens: Int64) {
        guard let first = trackedSince[w] else { return (0, 0) }
        var requests: Int64 = 0, tokens: Int64 = 0
        for call in counted(w, since: first, at: t, slack: slack) {
            requests += 1
            tokens += call.tokens.total
        }
        return (requests, tokens)
    }

    /// Input and output tokens in window `w` at `t`, each counted since its window is tracked.
    func splitUsage(_ w: Int, at t: Int64, slack: Bool) -> (input: Int64, output: Int64) {
        guard let first = splitSince[w] else { return (0, 0) }
        let held = counted(w, since: first, at: t, slack: slack)
        return (held.reduce(0) { $0 + $1.tokens.input }, held.reduce(0) { $0 + $1.tokens.output })
    }

    /// The calls from number `first` on that window `w` holds at `t`, exactly or relaxed.
    func counted(_ w: Int, since first: Int, at t: Int64, slack: Bool) -> [Call] {
        let length = Self.lengths[w]
        let from = t - length - (slack ? length / 60 : 0)
        var result: [Call] = []
        var i = calls.count - 1
        while i >= first, i >= 0 {
            let call = calls[i]
            if call.at <= from { break }  // calls are in admission order
            if call.at <= t { result.append(call) }
            i -= 1
        }
        return result
    }

    var inFlight: Int { calls.reduce(0) { $0 + ($1.alive ? 1 : 0) } }

    /// The caps a call of `tokens` breaks at `t` under the limits in force (exact, or relaxed
    /// by 1/60 of each window), including the concurrency cap and a closed or expired period.
    func broken(tokens: TokenCounts, at t: Int64, relaxed: Bool) -> Set<String> {
        var result: Set<String> = []
        for w in 0..<3 where compiled.tracks(w) {
            let used = usage(w, at: t, slack: relaxed)
            if used.requests + 1 > compiled.requestCap(w) { result.insert("requests\(w)") }
            if compiled.tokenCaps[w] != .max && used.tokens + tokens.total > compiled.tokenCaps[w] { result.insert("tokens\(w)") }
        }
        for w in 0..<3 where compiled.inputCaps[w] != .max || compiled.outputCaps[w] != .max {
            let used = splitUsage(w, at: t, slack: relaxed)
            if compiled.inputCaps[w] != .max && used.input + tokens.input > compiled.inputCaps[w] { result.insert("input\(w)") }
            if compiled.outputCaps[w] != .max && used.output + tokens.output > compiled.outputCaps[w] { result.insert("output\(w)") }
        }
        if inFlight >= compiled.maxConcurrent { result.insert("concurrency") }
        if t < compiled.closedUntil { result.insert("closed") }
        if t >= compiled.validUntil { result.insert("expired") }
        if t < pausedUntil || (requestsLeft.map { t < $0.until && $0.remaining < 1 } ?? false)
            || (tokensLeft.map { t < $0.until && $0.remaining < tokens.total } ?? false)
        {
            result.insert("provider")
        }
        return result
    }

    func fail(_ message: String) {
        Issue.record("seed \(seed) at \(Double(now) / 1e9) s: \(message)")
    }

    // MARK: Effects, as the shell carries them out

    func settle(_ effects: Machine.Effects) {
        for resume in effects.resumes.items ?? [] {
            guard let index = queue.firstIndex(where: { $0.id == resume.payload }) else {
                fail("resumed waiter \(resume.payload), which is not queued")
                continue
            }
            let waiter = queue[index]
            switch resume.result {
            case .success(let admission):
                if index != 0 { fail("admitted waiter \(waiter.id) at position \(index): not FIFO") }
                admitted(tokens: waiter.tokens, admission, "waiter \(waiter.id)")
                counts.waited += 1
            case .failure(let error):
                switch error.code {
                case .timedOut:
                    if waiter.deadline > now { fail("waiter \(waiter.id) timed out before its deadline") }
                    counts.timedOut += 1
                case .oversized:
                    if compiled.oversized(waiter.tokens) == nil { fail("waiter \(waiter.id) refused as oversized but fits") }
                    counts.oversized += 1
                default:
                    fail("waiter \(waiter.id) failed with \(error)")
                }
            }
            queue.remove(at: index)
        }
        if !machine.hasWaiters {
            timerAt = nil
        } else if let wake = effects.wake, wake < (timerAt ?? .max) {
            timerAt = wake
        }
    }

    func admitted(tokens: TokenCounts, _ admission: Admission, _ what: String) {
        // A caller's reading may be older than what the machine has seen: it acts at the latest.
        if admission.time != seen { fail("\(what) admitted at \(admission.time), not at the latest instant \(seen)") }
        let broken = broken(tokens: tokens, at: admission.time, relaxed: false)
        if !broken.isEmpty { fail("admitted \(what) (\(tokens) tokens, \(inFlight) in flight) although \(broken)") }
        calls.append(Call(at: admission.time, tokens: tokens, alive: true, admission: admission))
        counts.admitted += 1
        if compiled.hasSplitCaps { counts.splitAdmitted += 1 }
        if let left = requestsLeft, admission.time < left.until { requestsLeft?.remaining -= 1 }
        if let left = tokensLeft, admission.time < left.until { tokensLeft?.remaining -= tokens.total }
    }

    // MARK: Invariants after every step

    func check() {
        if machine.inFlight != inFlight { fail("machine has \(machine.inFlight) in flight, model \(inFlight)") }
        if machine.queued != queue.count { fail("machine has \(machine.queued) queued, model \(queue.count)") }
        if let late = queue.first(where: { $0.deadline < now }) { fail("waiter \(late.id) is past its deadline and still queued") }
        if let head = queue.first, compiled.oversized(head.tokens) == nil,
            broken(tokens: head.tokens, at: now, relaxed: true).isEmpty
        {
            fail(
                "the head waiter \(head.id) (\(head.tokens) tokens) fits even counting 1/60 more, but waits (timer \(timerAt.map { "\($0)" } ?? "none"))"
            )
        }
        for usage in machine.usage(now: passing(now)) {
            let w = usage.window.rawValue
            let exact = self.usage(w, at: now, slack: false)
            let relaxed = self.usage(w, at: now, slack: true)
            if usage.requests < exact.requests || usage.requests > relaxed.requests
                || usage.tokens < exact.tokens || usage.tokens > relaxed.tokens
            {
                fail("\(usage.window) readout \(usage.requests)/\(usage.tokens) outside \(exact)...\(relaxed)")
            }
            let exactSplit = splitUsage(w, at: now, slack: false)
            let relaxedSplit = splitUsage(w, at: now, slack: true)
            if (usage.inputTokens != nil) != (compiled.inputCaps[w] != .max)
                || (usage.outputTokens != nil) != (compiled.outputCaps[w] != .max)
            {
                fail(
                    "\(usage.window) reads input \(String(describing: usage.inputTokens)) output \(String(describing: usage.outputTokens)) under caps \(compiled.asLimits)"
                )
            }
            if let input = usage.inputTokens, input < exactSplit.input || input > relaxedSplit.input {
                fail("\(usage.window) input readout \(input) outside \(exactSplit.input)...\(relaxedSplit.input)")
            }
            if let output = usage.outputTokens, output < exactSplit.output || output > relaxedSplit.output {
                fail("\(usage.window) output readout \(output) outside \(exactSplit.output)...\(relaxedSplit.output)")
            }
        }
    }

    // MARK: Steps

    func run(steps: Int) {
        for _ in 0..<steps {
            switch Int.random(in: 0..<100, using: &rng) {
            case 0..<22: advance()
            case 22..<42: tryAdmit()
            case 42..<60: enqueue()
            case 60..<65: cancel()
            case 65..<73: commit()
            case 73..<88: release()
            case 88..<94: change()
            case 94..<97: provider()
            default: schedule()
            }
            check()
        }
    }

    func advance() {
        let jump: Int64 =
            switch Int.random(in: 0..<30, using: &rng) {
            case 0: Int64.random(in: 600...90_000, using: &rng) * Self.second
            case 1..<5: Int64.random(in: 20...300, using: &rng) * Self.second
            default: Int64.random(in: 0...3_000, using: &rng) * 1_000_000
            }
        let target = now + jump
        while true {
            // A hand-over that comes late leaves a stretch where the limits have expired and
            // callers still arrive holding them: visit its start.
            let due = transition.flatMap { $0.deliverAt > $0.at && !staleVisited ? $0.at : nil }
            let next = min(timerAt ?? .max, transition?.deliverAt ?? .max, due ?? .max)
            guard next <= target else { break }
            if next > now {
                now = next - 1
                check()  // just before the event, nothing may be overdue
                now = next
            }
            if let t = transition, t.deliverAt <= now {
                deliver()
            } else if next == due {
                staleVisited = true
                for _ in 0..<Int.random(in: 1...3, using: &rng) {
                    enqueue()
                    counts.staleArrivals += 1
                }
                check()
            } else {
                timerAt = nil
                settle(machine.tick(now: passing(now)))
            }
        }
        now = target
    }

    /// Hands `t` to the machine, noting the latest instant it has seen.
    func passing(_ t: Int64) -> Int64 {
        seen = max(seen, t)
        return t
    }

    /// What a caller read from the clock: usually now, sometimes a little earlier (it read the
    /// clock, then another caller took the lock first). The machine must act at the latest
    /// instant it has seen, `now`.
    func reading() -> Int64 {
        guard Int.random(in: 0..<4, using: &rng) == 0 else { return now }
        return max(0, now - Int64.random(in: 0...1_500, using: &rng) * 1_000_000)
    }

    /// A call's estimate: a total, or in parts when input or output caps are set (mostly).
    func estimate() -> TokenCounts {
        let smallest = [compiled.tokenCaps[0], compiled.tokenCaps[1], compiled.tokenCaps[2]].min() ?? .max
        let cap = smallest == .max ? 3_000 : smallest
        let oversized = Int.random(in: 0..<12, using: &rng) == 0
        let total = oversized ? Int64.random(in: 1...(cap * 2), using: &rng) : Int64.random(in: 1...max(1, cap / 3), using: &rng)
        guard compiled.hasSplitCaps, Int.random(in: 0..<4, using: &rng) != 0 else { return TokenCounts(total: total) }
        let smallestInput = min(compiled.inputCaps[0], compiled.inputCaps[1], compiled.inputCaps[2], cap)
        let smallestOutput = min(compiled.outputCaps[0], compiled.outputCaps[1], compiled.outputCaps[2], cap)
        let input =
            oversized
            ? Int64.random(in: 1...(smallestInput * 2), using: &rng) : Int64.random(in: 1...max(1, smallestInput / 3), using: &rng)
        let output = Int64.random(in: 1...max(1, smallestOutput / 3), using: &rng)
        return TokenCounts(input: input, output: output)
    }

    func noteSplitRefusal(_ kind: PolicyLimitKind?) {
        if kind?.isInputTokenCap == true || kind?.isOutputTokenCap == true { counts.splitRefusals += 1 }
    }

    func tryAdmit() {
        // The service refreshes limits whose schedule transition is due before asking.
        if let t = transition, t.at <= now { deliver() }
        let tokens = estimate()
        let (result, effects) = machine.tryAdmit(tokens: tokens, now: passing(reading()))
        settle(effects)
        switch result {
        case .success(let admission):
            if !queue.isEmpty { fail("tryAdmit admitted past \(queue.count) waiters") }
            admitted(tokens: tokens, admission, "tryAdmit(\(tokens))")
        case .failure(let rejection):
            counts.rejected += 1
            noteSplitRefusal(rejection.kind)
            if let cap = rejection.exceededCap {
                if compiled.oversized(tokens)?.cap != cap { fail("refused \(tokens) as over a cap of \(cap)") }
                counts.oversized += 1
            } else if queue.isEmpty {
                let relaxed = broken(tokens: tokens, at: now, relaxed: true)
                if relaxed.isEmpty { fail("refused \(tokens) (\(String(describing: rejection.kind))) though it fits even relaxed") }
                if rejection.provider != nil {
                    if !relaxed.contains("provider") { fail("refused by the provider's feedback, which allows it") }
                    counts.providerRefusals += 1
                } else if rejection.kind == nil {
                    if !relaxed.contains("closed") { fail("refused as closed while open") }
                    counts.closedRefusals += 1
                }
            }
        }
    }

    func enqueue() {
        // Waiters hold the limits they read earlier: transitions are not refreshed here.
        let tokens = estimate()
        let deadline = Bool.random(using: &rng) ? Int64.max : now + Int64.random(in: 0...120_000, using: &rng) * 1_000_000
        nextWaiter += 1
        let id = nextWaiter
        switch machine.enqueue(id: UInt64(id), tokens: tokens, deadline: deadline, payload: id, now: passing(reading())) {
        case .admitted(let admission, let effects):
            settle(effects)
            if !queue.isEmpty { fail("enqueue admitted past \(queue.count) waiters") }
            admitted(tokens: tokens, admission, "enqueue(\(tokens))")
        case .rejected(let error, let effects):
            settle(effects)
            counts.rejected += 1
            switch error.code {
            case .oversized:
                if compiled.oversized(tokens) == nil { fail("enqueue refused \(tokens) as oversized but it fits") }
                noteSplitRefusal(error.limit)
                counts.oversized += 1
            case .rateLimited:
                if deadline > now && broken(tokens: tokens, at: now, relaxed: true).isEmpty && queue.isEmpty {
                    fail("enqueue refused \(tokens) with a future deadline though it fits now")
                }
            default:
                fail("enqueue failed with \(error)")
            }
        case .enqueued(let effects):
            queue.append(Waiter(id: id, tokens: tokens, deadline: deadline))
            settle(effects)
        }
    }

    func cancel() {
        guard let waiter = queue.randomElement(using: &rng) else { return }
        let (payload, effects) = machine.cancel(id: UInt64(waiter.id), now: passing(now))
        if payload != waiter.id { fail("cancelling \(waiter.id) returned \(String(describing: payload))") }
        queue.removeAll { $0.id == waiter.id }
        counts.cancelled += 1
        settle(effects)
    }

    func commit() {
        let alive = calls.indices.filter { calls[$0].alive }
        guard let i = alive.randomElement(using: &rng) else { return }
        let old = calls[i].tokens
        let new: TokenCounts
        if Int.random(in: 0..<4, using: &rng) == 0 {
            new = 0
        } else if Bool.random(using: &rng) {
            new = TokenCounts(total: Int64.random(in: 0...(old.total * 2 + 1), using: &rng))
        } else {
            new = TokenCounts(
                input: Int64.random(in: 0...(old.input * 2 + 1), using: &rng),
                output: Int64.random(in: 0...(old.output * 2 + 1), using: &rng))
        }
        do {
            let waiters = try machine.commit(calls[i].admission, from: old, to: new)
            calls[i].tokens = new
            if waiters { settle(machine.tick(now: passing(now))) }
        } catch {
            fail("commit failed: \(error)")
        }
    }

    func release() {
        let alive = calls.indices.filter { calls[$0].alive }
        guard let i = alive.randomElement(using: &rng) else { return }
        calls[i].alive = false
        if machine.release() { settle(machine.tick(now: passing(now))) }
    }

    /// The provider says something: a pause (429), or what is left of requests or tokens
    /// until a reset. Parked waiters look again when that may admit more, as the service does.
    func provider() {
        var pause: Int64?
        var requests: ProviderFeedbackState.Allowance?
        var tokens: ProviderFeedbackState.Allowance?
        switch Int.random(in: 0..<3, using: &rng) {
        case 0:
            pause = now + Int64.random(in: 100...30_000, using: &rng) * 1_000_000
            pausedUntil = max(pausedUntil, pause ?? .min)
        case 1:
            requests = .init(
                remaining: Int64.random(in: 0...6, using: &rng), until: now + Int64.random(in: 1...90, using: &rng) * Self.second)
            requestsLeft = requests.map { ($0.remaining, $0.until) }
        default:
            tokens = .init(
                remaining: Int64.random(in: 0...3_000, using: &rng), until: now + Int64.random(in: 1...90, using: &rng) * Self.second)
            tokensLeft = tokens.map { ($0.remaining, $0.until) }
        }
        let applied = feedback.apply(pauseUntil: pause, cause: "test", requests: requests, tokens: tokens, now: now)
        if applied.mayAdmitMore { settle(machine.tick(now: passing(now))) }
        counts.feedback += 1
    }

    /// A reload or `setLimits`: one cap moved up, down, away or in, or all of them anew.
    func change() {
        var limits = compiled.asLimits
        switch Int.random(in: 0..<11, using: &rng) {
        case 0: limits = Self.randomLimits(&rng)
        case 8:
            limits.inputTokensPerMinute =
                limits.inputTokensPerMinute.map { Bool.random(using: &rng) ? max(1, $0 / 2) : $0 * 2 }
                ?? Int.random(in: 300...2_000, using: &rng)
        case 9: limits.outputTokensPerMinute = limits.outputTokensPerMinute == nil ? Int.random(in: 100...1_000, using: &rng) : nil
        case 10: limits.inputTokensPerHour = limits.inputTokensPerHour == nil ? Int.random(in: 2_000...20_000, using: &rng) : nil
        case 1: limits.maxConcurrent = Bool.random(using: &rng) ? Int.random(in: 1...4, using: &rng) : nil
        case 2: limits.maxConcurrent = limits.maxConcurrent.map { max(1, $0 - 1) } ?? 2
        case 3: limits.tokensPerMinute = limits.tokensPerMinute.map { max(1, $0 / 2) } ?? Int.random(in: 200...2_000, using: &rng)
        case 4: limits.tokensPerMinute = limits.tokensPerMinute.map { $0 * 2 }
        case 5: limits.requestsPerMinute = limits.requestsPerMinute.map { max(1, $0 / 2) } ?? Int.random(in: 2...12, using: &rng)
        case 6: limits.requestsPerHour = limits.requestsPerHour == nil ? Int.random(in: 10...80, using: &rng) : nil
        default: limits.tokensPerDay = limits.tokensPerDay == nil ? Int.random(in: 5_000...40_000, using: &rng) : nil
        }
        // A reload keeps the schedule's period: same expiry, same closing.
        adopt(limits, validUntil: compiled.validUntil, closedUntil: compiled.closedUntil)
        counts.changes += 1
    }

    /// A schedule entry starts now: new limits, maybe closed for a while, until a transition
    /// whose hand-over may come late.
    func schedule() {
        guard transition == nil else { return }
        let length = Int64.random(in: 1...600, using: &rng) * Self.second / 2
        let closed = Int.random(in: 0..<3, using: &rng) == 0
        let at = now + length
        let delay = Bool.random(using: &rng) ? 0 : Int64.random(in: 1...5_000, using: &rng) * 1_000_000
        transition = Transition(at: at, deliverAt: at + delay, limits: Self.randomLimits(&rng))
        staleVisited = false
        adopt(Self.randomLimits(&rng), validUntil: at, closedUntil: closed ? at : .min)
        counts.changes += 1
    }

    func deliver() {
        guard let t = transition else { return }
        transition = nil
        if t.deliverAt > t.at && now > t.at { counts.lateTransitions += 1 }
        adopt(t.limits, validUntil: .max, closedUntil: .min)
        counts.transitions += 1
    }

    func adopt(_ limits: PolicyLimits, validUntil: Int64, closedUntil: Int64) {
        generation += 1
        var next = CompiledLimits(limits, generation: generation)
        next.validUntil = validUntil
        next.closedUntil = closedUntil
        for w in 0..<3 {
            if !next.tracks(w) {
                trackedSince[w] = nil
            } else if trackedSince[w] == nil {
                trackedSince[w] = calls.count
            }
            // Input and output are counted only while a cap over them is set.
            if !next.countsSplit(w) { splitSince[w] = nil } else if splitSince[w] == nil { splitSince[w] = calls.count }
        }
        let slottedBefore = machine.slotted
        compiled = next
        let effects = machine.setLimits(next, now: passing(now))
        if machine.slotted + (effects.resumes.items?.count ?? 0) < slottedBefore { counts.slotsTakenBack += 1 }
        settle(effects)
    }
}

extension CompiledLimits {
    /// The caps as ``PolicyLimits`` (schedule fields aside), for tests that change one of them.
    var asLimits: PolicyLimits {
        func cap(_ value: Int64) -> Int? { value == .max ? nil : Int(value) }
        var limits = PolicyLimits()
        limits.requestsPerMinute = cap(requestCap(0))
        limits.requestsPerHour = cap(requestCap(1))
        limits.requestsPerDay = cap(requestCap(2))
        limits.tokensPerMinute = cap(tokenCaps[0])
        limits.tokensPerHour = cap(tokenCaps[1])
        limits.tokensPerDay = cap(tokenCaps[2])
        limits.inputTokensPerMinute = cap(inputCaps[0])
        limits.inputTokensPerHour = cap(inputCaps[1])
        limits.inputTokensPerDay = cap(inputCaps[2])
        limits.outputTokensPerMinute = cap(outputCaps[0])
        limits.outputTokensPerHour = cap(outputCaps[1])
        limits.outputTokensPerDay = cap(outputCaps[2])
        limits.countsCacheReads = countsCacheReads
        limits.maxConcurrent = maxConcurrent == .max ? nil : maxConcurrent
        return limits
    }
}
