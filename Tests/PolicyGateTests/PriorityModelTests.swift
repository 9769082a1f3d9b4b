import PolicyGateTestKit
import Testing

@testable import PolicyGate

/// Seeded random traces through the state machine with interactive and batch callers mixed:
/// immediate attempts and waiters of both classes, deadlines, cancellations, commits above and
/// below the estimate, releases, and limit changes (request, token and concurrency caps and
/// the reserve for interactive calls raised, lowered, added and removed). An exact sliding log
/// kept here checks at every step:
/// - **caps**: every admission fits every cap in force at its instant, counted exactly; a batch
///   call not yet promoted fits the caps less the reserve (`cap − ⌈cap × share⌉`, computed
///   here apart), the concurrency cap included;
/// - **order**: a waiter is admitted only if it is first among the waiting: interactive and
///   promoted batch waiters by arrival, then the others by arrival; an immediate admission
///   finds no interactive (or promoted) waiter ahead, and a batch one finds nobody;
/// - **no waiter stranded**: while someone waits, a timer is armed or a permit is in flight,
///   and at the end, with everything released and time run on, every waiter was admitted,
///   timed out at or after its deadline, or found oversized under lowered caps.
@Suite("Priority classes against an exact model")
struct PriorityModelTests {
    @Test("mixed classes, cancellations, deadlines and limit changes never break a cap, the reserve or the order")
    func replay() {
        let seeds: [UInt64] = Environment.soak ? Array(1...200) : Array(1...16)
        var total = PriorityHarness.Counts()
        for seed in seeds {
            let harness = PriorityHarness(seed: seed)
            harness.run(steps: Environment.soak ? 20_000 : 1_500)
            harness.drain()
            total.add(harness.counts)
        }
        #expect(
            total.interactiveAdmitted > 1_000 && total.batchAdmitted > 500 && total.promotedAdmitted > 50
                && total.passedBatch > 50 && total.underReserve > 100 && total.timedOut > 50 && total.cancelled > 100
                && total.changes > 200 && total.oversized > 5,
            "not every path was exercised: \(total)")
        print("priority model: \(seeds.count) seeds: \(total)")
    }
}

private final class PriorityHarness {
    typealias Machine = GateStateMachine<Int>
    static let second: Int64 = 1_000_000_000
    static let lengths: [Int64] = [60 * second, 3_600 * second]

    struct Call {
        let at: Int64
        var tokens: Int64
        var alive: Bool
        let admission: Admission
        let estimate: Int64
    }

    struct Waiter {
        let id: Int
        let tokens: Int64
        let deadline: Int64
        let batch: Bool
        let promoteAt: Int64
        let arrival: Int
    }

    struct Counts: CustomStringConvertible {
        var interactiveAdmitted = 0, batchAdmitted = 0, promotedAdmitted = 0, passedBatch = 0, underReserve = 0
        var timedOut = 0, cancelled = 0, changes = 0, oversized = 0, refused = 0

        mutating func add(_ o: Counts) {
            interactiveAdmitted += o.interactiveAdmitted; batchAdmitted += o.batchAdmitted; promotedAdmitted += o.promotedAdmitted
            passedBatch += o.passedBatch; underReserve += o.underReserve; timedOut += o.timedOut; cancelled += o.cancelled
            changes += o.changes; oversized += o.oversized; refused += o.refused
        }

        var description: String {
            "interactive \(interactiveAdmitted) batch \(batchAdmitted) (promoted \(promotedAdmitted), under the reserve \(underReserve)) "
                + "interactive past batch waiters \(passedBatch) timed out \(timedOut) cancelled \(cancelled) "
                + "limit changes \(changes) oversized \(oversized) refused \(refused)"
        }
    }

    let seed: UInt64
    var rng: SeededGenerator
    var machine: Machine
    var limits: PolicyLimits
    var generation: UInt64 = 1
    var now: Int64 = 0
    let aging: Int64
    var calls: [Call] = []
    var queue: [Waiter] = []
    var timerAt: Int64?
    var nextID = 0
    var arrivals = 0
    var counts = Counts()

    init(seed: UInt64) {
        self.seed = seed
        rng = SeededGenerator(seed: seed)
        aging = Int64.random(in: 10...90, using: &rng) * Self.second
        limits = PolicyLimits()
        limits = Self.randomLimits(&rng)
        machine = Machine(limits: CompiledLimits(limits, generation: 1), now: 0)
    }

    /// Both windows always capped (so both are always tracked and the log needs no history
    /// rules); the concurrency cap and the reserve come and go.
    static func randomLimits(_ rng: inout SeededGenerator) -> PolicyLimits {
        var limits = PolicyLimits(
            requestsPerMinute: Int.random(in: 3...20, using: &rng), requestsPerHour: Int.random(in: 150...600, using: &rng),
            tokensPerMinute: Int.random(in: 0..<5, using: &rng) == 0
                ? Int.random(in: 300...900, using: &rng) : Int.random(in: 1_000...5_000, using: &rng))
        if Int.random(in: 0..<4, using: &rng) > 0 { limits.maxConcurrent = Int.random(in: 1...5, using: &rng) }
        limits.reservedForInteractive = [nil, 0.1, 0.2, 0.25, 0.5, 0.9].randomElement(using: &rng)!
        return limits
    }

    // MARK: The model

    /// `cap − ⌈cap × share⌉`, in floating point with a check in integers: what a batch call may use.
    func batchCap(_ cap: Int) -> Int {
        guard let share = limits.reservedForInteractive, share > 0 else { return cap }
        var reserve = Int((Double(cap) * share).rounded(.up))
        if Double(reserve - 1) >= Double(cap) * share { reserve -= 1 }  // binary fractions just above a whole number
        return cap - reserve
    }

    func used(_ w: Int, at t: Int64) -> (requests: Int, tokens: Int64) {
        let from = t - Self.lengths[w]
        var requests = 0, tokens: Int64 = 0
        for call in calls.reversed() {
            if call.at <= from { break }
            requests += 1
            tokens += call.tokens
        }
        return (requests, tokens)
    }

    var inFlight: Int { calls.reduce(0) { $0 + ($1.alive ? 1 : 0) } }

    /// Whether a call of `tokens` fits the caps in force at `t`, whole or less the reserve.
    func fits(_ tokens: Int64, at t: Int64, batch: Bool) -> Bool {
        func cap(_ value: Int) -> Int { batch ? batchCap(value) : value }
        let (minute, hour) = (used(0, at: t), used(1, at: t))
        let concurrency = limits.maxConcurrent.map(cap) ?? .max
        return minute.requests + 1 <= cap(limits.requestsPerMinute!) && hour.requests + 1 <= cap(limits.requestsPerHour!)
            && minute.tokens + tokens <= Int64(cap(limits.tokensPerMinute!)) && inFlight < concurrency
    }

    func isHigh(_ w: Waiter, at t: Int64) -> Bool { !w.batch || w.promoteAt <= t }

    /// The waiter that must be admitted first at `t`.
    func first(at t: Int64) -> Waiter? {
        queue.filter { isHigh($0, at: t) }.min { $0.arrival < $1.arrival } ?? queue.min { $0.arrival < $1.arrival }
    }

    func record(_ admission: Admission, tokens: Int64, batch: Bool, promoted: Bool, what: String) {
        let t = admission.time
        #expect(t == now, "seed \(seed): \(what) admitted at \(t), now \(now)")
        let reduced = batch && !promoted
        #expect(
            fits(tokens, at: t, batch: reduced),
            "seed \(seed): \(what) of \(tokens) breaks a cap at \(t) (limits \(limits), in flight \(inFlight), used \(used(0, at: t)) \(used(1, at: t)), machine \(machine.usage(now: t).map { "\($0.requests)/\($0.tokens)" }))"
        )
        if reduced && limits.reservedForInteractive ?? 0 > 0 { counts.underReserve += 1 }
        if batch { counts.batchAdmitted += 1 } else { counts.interactiveAdmitted += 1 }
        if batch && promoted { counts.promotedAdmitted += 1 }
        calls.append(Call(at: t, tokens: tokens, alive: true, admission: admission, estimate: tokens))
    }

    func apply(_ effects: Machine.Effects) {
        for resume in effects.resumes.items ?? [] {
            guard let index = queue.firstIndex(where: { $0.id == resume.payload }) else {
                Issue.record("seed \(seed): resumed waiter \(resume.payload) is not queued")
                continue
            }
            let waiter = queue[index]
            switch resume.result {
            case .success(let admission):
                let expected = first(at: now)
                #expect(
                    expected?.id == waiter.id,
                    "seed \(seed): admitted waiter \(waiter.id) at \(now), but \(expected.map { "\($0.id)" } ?? "none") comes first (\(queue))"
                )
                queue.remove(at: index)
                record(
                    admission, tokens: waiter.tokens, batch: waiter.batch, promoted: waiter.promoteAt <= now, what: "waiter \(waiter.id)")
            case .failure(let error):
                queue.remove(at: index)
                switch error.code {
                case .timedOut:
                    #expect(
                        waiter.deadline <= now,
                        "seed \(seed): waiter \(waiter.id) timed out at \(now) before its deadline \(waiter.deadline)")
                    counts.timedOut += 1
                case .oversized:
                    #expect(Int64(limits.tokensPerMinute!) < waiter.tokens, "seed \(seed): waiter \(waiter.id) oversized under \(limits)")
                    counts.oversized += 1
                default:
                    Issue.record("seed \(seed): waiter \(waiter.id) failed with \(error)")
                }
            }
        }
        if queue.isEmpty {
            timerAt = nil
        } else if let wake = effects.wake, wake < timerAt ?? .max {
            timerAt = wake
        }
    }

    /// Moves time to `t`, firing the timer on the way as the shell would.
    func advance(to t: Int64) {
        while let at = timerAt, at <= t {
            now = max(now, at)
            timerAt = nil
            apply(machine.tick(now: now))
        }
        now = t
    }

    func checkNotStranded() {
        if !queue.isEmpty {
            #expect(timerAt != nil || inFlight > 0, "seed \(seed): \(queue.count) waiting at \(now) with no timer and nothing in flight")
        }
        #expect(machine.queued == queue.count && machine.batchQueued == queue.filter(\.batch).count, "seed \(seed): queue readouts")
        #expect(machine.inFlight == inFlight, "seed \(seed): in flight \(machine.inFlight), model \(inFlight)")
    }

    // MARK: Steps

    func estimate() -> Int64 {
        Int64.random(in: 1...100, using: &rng) < 97 ? Int64.random(in: 20...600, using: &rng) : Int64.random(in: 600...1_400, using: &rng)
    }

    func run(steps: Int) {
        for _ in 0..<steps {
            switch Int.random(in: 0..<100, using: &rng) {
            case 0..<20: tryAdmit()
            case 20..<38: enqueue()
            case 38..<60: release()
            case 60..<66: commit()
            case 66..<72: cancel()
            case 72..<76: changeLimits()
            default: advance(to: now + Int64.random(in: 1...(15 * Self.second), using: &rng))
            }
            checkNotStranded()
        }
    }

    /// Releases everything and runs time on until nobody waits.
    func drain() {
        var rounds = 0
        while !queue.isEmpty && rounds < 10_000 {
            rounds += 1
            while calls.contains(where: \.alive) { release() }
            if !queue.isEmpty {
                guard let at = timerAt else {
                    Issue.record("seed \(seed): \(queue.count) stranded at the end with nothing in flight and no timer")
                    return
                }
                advance(to: at)
            }
        }
        #expect(queue.isEmpty, "seed \(seed): \(queue.count) never admitted")
    }

    func tryAdmit() {
        let tokens = estimate()
        guard tokens <= Int64(limits.tokensPerMinute!) else { return }  // the service refuses it before the machine
        let batch = Bool.random(using: &rng)
        let waitingAhead = queue.contains { isHigh($0, at: now) } || (batch && !queue.isEmpty)
        let batchWaiting = !queue.isEmpty
        let (result, effects) = machine.tryAdmit(tokens: TokenCounts(total: tokens), now: now, priority: batch ? .batch : .interactive)
        apply(effects)
        if case .success(let admission) = result {
            #expect(!waitingAhead, "seed \(seed): tryAdmit (\(batch ? "batch" : "interactive")) jumped the queue at \(now)")
            if !batch && batchWaiting { counts.passedBatch += 1 }
            record(admission, tokens: tokens, batch: batch, promoted: false, what: "tryAdmit")
        } else {
            counts.refused += 1
        }
    }

    func enqueue() {
        let tokens = estimate()
        guard tokens <= Int64(limits.tokensPerMinute!) else { return }
        let batch = Int.random(in: 0..<5, using: &rng) < 2
        let deadline = Int.random(in: 0..<3, using: &rng) == 0 ? now + Int64.random(in: 0...(90 * Self.second), using: &rng) : .max
        nextID += 1
        let id = nextID
        let waitingAhead = queue.contains { isHigh($0, at: now) } || (batch && !queue.isEmpty)
        let batchWaiting = !queue.isEmpty
        // The machine promotes a batch call never before an earlier one; with one aging per run
        // and time never going back, that is its arrival plus the aging.
        let promoteAt = batch ? now + aging : .min
        let result = machine.enqueue(
            id: UInt64(id), tokens: TokenCounts(total: tokens), deadline: deadline, payload: id, now: now,
            priority: batch ? .batch : .interactive, batchAging: aging)
        switch result {
        case .admitted(let admission, let effects):
            apply(effects)
            #expect(!waitingAhead, "seed \(seed): waiter \(id) admitted at once ahead of others at \(now)")
            if !batch && batchWaiting { counts.passedBatch += 1 }
            record(admission, tokens: tokens, batch: batch, promoted: false, what: "enqueue \(id)")
        case .rejected(let error, let effects):
            apply(effects)
            #expect(deadline != .max && error.code == .rateLimited, "seed \(seed): waiter \(id) rejected: \(error)")
            counts.refused += 1
        case .enqueued(let effects):
            arrivals += 1
            queue.append(Waiter(id: id, tokens: tokens, deadline: deadline, batch: batch, promoteAt: promoteAt, arrival: arrivals))
            apply(effects)
        }
    }

    func release() {
        let alive = calls.indices.filter { calls[$0].alive }
        guard let index = alive.randomElement(using: &rng) else { return }
        calls[index].alive = false
        if machine.release() { apply(machine.tick(now: now)) }
    }

    func commit() {
        let alive = calls.indices.filter { calls[$0].alive }
        guard let index = alive.randomElement(using: &rng) else { return }
        let call = calls[index]
        let actual = max(0, call.tokens + Int64.random(in: -300...200, using: &rng))
        do {
            let freed = try machine.commit(call.admission, from: TokenCounts(total: call.tokens), to: TokenCounts(total: actual))
            calls[index].tokens = actual  // before the waiters it lets through are checked
            if freed { apply(machine.tick(now: now)) }
        } catch {
            Issue.record("seed \(seed): commit refused: \(error)")
        }
    }

    func cancel() {
        guard let waiter = queue.randomElement(using: &rng) else { return }
        let (payload, effects) = machine.cancel(id: UInt64(waiter.id), now: now)
        #expect(payload == waiter.id, "seed \(seed): cancelling \(waiter.id) found \(String(describing: payload))")
        queue.removeAll { $0.id == waiter.id }
        counts.cancelled += 1
        apply(effects)
    }

    func changeLimits() {
        limits = Self.randomLimits(&rng)
        generation += 1
        counts.changes += 1
        apply(machine.setLimits(CompiledLimits(limits, generation: generation), now: now))
    }
}

@Suite("A shared key's turns in one process, by class")
struct SharedTurnsPriorityTests {
    @Test("an interactive caller queues ahead of unpromoted batch callers, never ahead of the head or a promoted one")
    func order() {
        var turns = SharedTurns<Int>()
        let heads = [
            turns.enter(1, promoteAt: 100, now: 0),  // a batch head, asking the store
            turns.enter(2, promoteAt: 100, now: 0),
            turns.enter(3, now: 10),  // interactive: behind the head, ahead of 2
            turns.enter(4, promoteAt: 40, now: 10),  // promoted no earlier than 2: at 100
            turns.enter(5, now: 20),
        ]
        #expect(heads == [true, false, false, false, false])
        var parked: [Bool] = []
        for id in 2...5 { parked.append(turns.park(UInt64(id), id)) }
        #expect(parked == [true, true, true, true])
        var order: [Int] = []
        var leaving: UInt64 = 1
        while let next = turns.leave(leaving) {
            order.append(next)
            leaving = UInt64(next)
        }
        #expect(order == [3, 5, 2, 4])
        // Once promoted, batch callers are no longer passed.
        var aged = SharedTurns<Int>()
        let agedHeads = [aged.enter(1, now: 0), aged.enter(2, promoteAt: 30, now: 0), aged.enter(3, now: 31)]
        #expect(agedHeads == [true, false, false])
        var agedParked: [Bool] = []
        for id in 2...3 { agedParked.append(aged.park(UInt64(id), id)) }
        let next = aged.leave(1)
        #expect(agedParked == [true, true] && next == 2)
    }
}
