import PolicyGate

/// The simulator's pending events, soonest first: a binary min-heap of two-word entries.
///
/// An event is its time and a tag: the kind's rank in the top byte (completions, then
/// arrivals, then retries, then deadlines, at one instant) and a call's or key's index below, so
/// events of one instant and kind run in index order, that is in arrival order.
struct SimulationEvents {
    struct Event {
        var time: Int64
        var tag: UInt64

        @inline(__always) var index: Int { Int(truncatingIfNeeded: tag & 0x00FF_FFFF_FFFF_FFFF) }
        @inline(__always) var kind: UInt64 { tag >> 56 }

        @inline(__always)
        static func precedes(_ a: Event, _ b: Event) -> Bool {
            a.time < b.time || (a.time == b.time && a.tag < b.tag)
        }
    }

    /// Ranks of the kinds at one instant: what frees capacity first, then new calls, then the
    /// queue's retries, then deadlines (a waiter may still be admitted at its deadline).
    static let completion: UInt64 = 0
    static let arrival: UInt64 = 1
    static let retry: UInt64 = 2
    static let deadline: UInt64 = 3

    private var heap: [Event] = []

    var first: Event? { heap.first }

    @inline(__always)
    mutating func push(time: Int64, kind: UInt64, index: Int) {
        let event = Event(time: time, tag: kind << 56 | UInt64(index))
        heap.append(event)
        heap.withUnsafeMutableBufferPointer { heap in
            var position = heap.count - 1
            while position > 0 {
                let parent = (position - 1) / 2
                guard Event.precedes(event, heap[parent]) else { break }
                heap[position] = heap[parent]
                position = parent
            }
            heap[position] = event
        }
    }

    @inline(__always)
    mutating func pop() -> Event {
        let top = heap[0]
        let last = heap.removeLast()
        guard !heap.isEmpty else { return top }
        heap.withUnsafeMutableBufferPointer { heap in
            let count = heap.count
            var position = 0
            while true {
                let left = 2 * position + 1
                guard left < count else { break }
                let right = left + 1
                let child = right < count && Event.precedes(heap[right], heap[left]) ? right : left
                guard Event.precedes(heap[child], last) else { break }
                heap[position] = heap[child]
                position = child
            }
            heap[position] = last
        }
        return top
    }
}

/// The permits of the calls in flight, in numbered slots: permits cannot be copied, so they
/// cannot live in an array; here they sit in raw memory, moved in on admission and out on
/// completion, and slots are reused.
struct PermitSlots: ~Copyable {
    private var base: UnsafeMutablePointer<PolicyPermit?>
    private var capacity: Int
    private var free: [Int32] = []
    /// Slots ever used (the rest of `capacity` is spare).
    private var used = 0

    init(capacity: Int = 64) {
        self.capacity = capacity
        base = .allocate(capacity: capacity)
        for i in 0..<capacity { (base + i).initialize(to: nil) }
    }

    deinit {
        base.deinitialize(count: capacity)
        base.deallocate()
    }

    /// Moves `permit` into a free slot and returns its number.
    @inline(__always)
    mutating func store(_ permit: consuming PolicyPermit) -> Int32 {
        let slot: Int
        if let reused = free.popLast() {
            slot = Int(reused)
        } else {
            if used == capacity { grow() }
            slot = used
            used += 1
        }
        base[slot] = consume permit
        return Int32(slot)
    }

    /// Moves the permit out of `slot`, freeing it.
    @inline(__always)
    mutating func take(_ slot: Int32) -> PolicyPermit {
        free.append(slot)
        return base[Int(slot)].take()!
    }

    private mutating func grow() {
        let larger = UnsafeMutablePointer<PolicyPermit?>.allocate(capacity: capacity * 2)
        larger.moveInitialize(from: base, count: capacity)
        for i in capacity..<capacity * 2 { (larger + i).initialize(to: nil) }
        base.deallocate()
        base = larger
        capacity *= 2
    }
}

/// The limits a simulation reports on, as indices into small fixed tables: the twelve window
/// caps in ``PolicyLimitKind`` order (requests, tokens, input tokens, output tokens; minute,
/// hour, day each), concurrency, and a schedule's closing.
enum SimulationLimit {
    static let count = 15
    /// The window caps are the indices below this; the request caps the first three.
    static let concurrency = 12
    static let closed = 13
    /// The provider's own feedback held the call (a 429's pause, what it said is left).
    static let provider = 14

    /// `requests_per_minute` … `max_concurrent`, `closed`, `provider`.
    static let names: [String] = PolicyLimitKind.allCases.map(\.configurationKey) + ["closed", "provider"]

    /// The label of a refusal: its cap, a closed schedule, or the provider's feedback.
    @inline(__always)
    static func index(of error: PolicyError) -> Int {
        error.providerCause != nil ? provider : index(of: error.limit)
    }

    @inline(__always)
    static func index(of kind: PolicyLimitKind?) -> Int {
        switch kind {
        case .requestsPerMinute?: 0
        case .requestsPerHour?: 1
        case .requestsPerDay?: 2
        case .tokensPerMinute?: 3
        case .tokensPerHour?: 4
        case .tokensPerDay?: 5
        case .inputTokensPerMinute?: 6
        case .inputTokensPerHour?: 7
        case .inputTokensPerDay?: 8
        case .outputTokensPerMinute?: 9
        case .outputTokensPerHour?: 10
        case .outputTokensPerDay?: 11
        case .concurrency?: 12
        case nil: 13
        }
    }

    /// The kind at a window index (0…11).
    static func kind(_ index: Int) -> PolicyLimitKind { PolicyLimitKind.allCases[index] }
}

/// One counter per ``SimulationLimit``.
typealias LimitCounts = InlineArray<15, Int>
