/// Request and token counts over one sliding window, kept in a ring of fixed-width buckets.
///
/// The window of length `W` is split into 60 buckets of `W/60`, plus the bucket being filled:
/// 61 in all. A call admitted at `t` lands in bucket `⌊t / (W/60)⌋` and is counted until that
/// bucket leaves the ring, which happens between `W` and `W + W/60` after `t`. So the counts are
/// never below the exact sliding-window counts (the gate never over-admits), and an admission is
/// delayed past the exact rule by at most `W/60` (1 s for a minute, 1 min for an hour, 24 min for
/// a day). Memory is fixed: 61 × (4 + 8) bytes, however many calls pass.
///
/// A value type with copy-on-write storage, so the state machine that holds it stays a value.
struct SlidingWindow {
    static let bucketCount = 61
    /// The exact window spans this many buckets; the ring holds one more, the one being filled.
    static let span: Int64 = 60

    private final class Storage {
        let width: Int64
        /// The bucket index of `now` as last seen; buckets `head - 60 ... head` are live.
        // Only touched under the key's lock (and copied on write), so the runtime's exclusivity
        // checks would add cost and no safety.
        @exclusivity(unchecked) var head: Int64
        @exclusivity(unchecked) var requestTotal: Int64 = 0
        @exclusivity(unchecked) var tokenTotal: Int64 = 0
        /// Sequence number of the first admission this window has recorded (after creation or a
        /// reset): commits for earlier admissions must not touch it.
        @exclusivity(unchecked) var firstSequence: UInt64
        @exclusivity(unchecked) var requests = InlineArray<61, UInt32>(repeating: 0)
        @exclusivity(unchecked) var tokens = InlineArray<61, Int64>(repeating: 0)

        init(width: Int64, head: Int64, firstSequence: UInt64) {
            self.width = width
            self.head = head
            self.firstSequence = firstSequence
        }

        func copy() -> Storage {
            let new = Storage(width: width, head: head, firstSequence: firstSequence)
            new.requestTotal = requestTotal
            new.tokenTotal = tokenTotal
            new.requests = requests
            new.tokens = tokens
            return new
        }
    }

    private var storage: Storage

    /// A window of `length` nanoseconds, empty, starting at `now`.
    init(length: Int64, now: Int64, firstSequence: UInt64) {
        let width = length / Self.span
        storage = Storage(width: width, head: now / width, firstSequence: firstSequence)
    }

    private mutating func unique() -> Storage {
        ensureUnique()
        return storage
    }

    @inline(__always)
    private mutating func ensureUnique() {
        if !isKnownUniquelyReferenced(&storage) { storage = storage.copy() }
    }

    var width: Int64 { storage.width }
    var requestTotal: Int64 { storage.requestTotal }
    var tokenTotal: Int64 { storage.tokenTotal }
    var isEmpty: Bool { storage.requestTotal == 0 && storage.tokenTotal == 0 }

    @inline(__always)
    private static func slot(_ index: Int64) -> Int { Int(index % Int64(bucketCount)) }

    /// Drops the buckets that have left the window at `now`. Time never moves backwards here:
    /// an earlier `now` leaves the window as it is.
    @inline(__always)
    mutating func advance(to now: Int64) {
        let index = now / storage.width
        if index <= storage.head { return }
        advanceSlow(to: index)
    }

    private mutating func advanceSlow(to index: Int64) {
        let s = unique()
        if index - s.head >= Int64(Self.bucketCount) {
            s.requests = InlineArray(repeating: 0)
            s.tokens = InlineArray(repeating: 0)
            s.requestTotal = 0
            s.tokenTotal = 0
        } else if s.requestTotal != 0 || s.tokenTotal != 0 {
            var i = s.head + 1
            while i <= index {
                let slot = Self.slot(i)
                s.requestTotal -= Int64(s.requests[slot])
                s.tokenTotal -= s.tokens[slot]
                s.requests[slot] = 0
                s.tokens[slot] = 0
                i += 1
            }
        }
        s.head = index
    }

    /// Whether one more request with `tokens` fits under the caps (already advanced to now).
    @inline(__always)
    func fits(tokens: Int64, requestCap: Int64, tokenCap: Int64) -> Bool {
        if storage.requestTotal >= requestCap { return false }
        let (sum, overflow) = storage.tokenTotal.addingReportingOverflow(tokens)
        return !overflow && sum <= tokenCap
    }

    /// Records one admitted request with `tokens` in the current bucket.
    @inline(__always)
    mutating func record(tokens: Int64) {
        ensureUnique()
        let slot = Self.slot(storage.head)
        let (count, overflow) = storage.requests[slot].addingReportingOverflow(1)
        if !overflow {  // saturates: only reachable on an uncapped request count
            storage.requests[slot] = count
            storage.requestTotal += 1
        }
        // Cannot overflow under a token cap (admission checked the sum); saturates otherwise,
        // where the total only feeds readouts.
        storage.tokens[slot] = storage.tokens[slot].clampedAdding(tokens)
        storage.tokenTotal = storage.tokenTotal.clampedAdding(tokens)
    }

    /// Whether a call admitted at `time` with sequence `sequence` is still counted here.
    @inline(__always)
    func holds(admittedAt time: Int64, sequence: UInt64) -> Bool {
        sequence >= storage.firstSequence && time / storage.width > storage.head - Self.span - 1
    }

    /// Whether replacing `delta` more tokens in the bucket of `time` would overflow.
    func canAdjust(admittedAt time: Int64, sequence: UInt64, by delta: Int64) -> Bool {
        guard holds(admittedAt: time, sequence: sequence) else { return true }
        return !storage.tokens[Self.slot(time / storage.width)].addingReportingOverflow(delta).overflow
            && !storage.tokenTotal.addingReportingOverflow(delta).overflow
    }

    /// Replaces part of a call's tokens: adds `delta` to the bucket it was recorded in, if that
    /// bucket is still in the window.
    mutating func adjust(admittedAt time: Int64, sequence: UInt64, by delta: Int64) {
        guard delta != 0, holds(admittedAt: time, sequence: sequence) else { return }
        ensureUnique()
        storage.tokens[Self.slot(time / storage.width)] &+= delta
        storage.tokenTotal &+= delta
    }

    /// Forgets all usage; admissions before `sequence` are no longer held.
    mutating func clear(firstSequence: UInt64) {
        let s = unique()
        s.requests = InlineArray(repeating: 0)
        s.tokens = InlineArray(repeating: 0)
        s.requestTotal = 0
        s.tokenTotal = 0
        s.firstSequence = firstSequence
    }

    /// The earliest time at which `requests` more requests and `tokens` more tokens fit under the
    /// caps, if nothing else is admitted meanwhile; `now` if they fit already (advanced to now).
    /// `nil` if they can never fit (more than the cap itself).
    func earliestFit(requests: Int64, tokens: Int64, requestCap: Int64, tokenCap: Int64, now: Int64) -> Int64? {
        if requests > requestCap || tokens > tokenCap { return nil }
        let s = storage
        var requestTotal = s.requestTotal
        var tokenTotal = s.tokenTotal
        func fits() -> Bool {
            requestTotal + requests <= requestCap && !tokenTotal.addingReportingOverflow(tokens).overflow
                && tokenTotal + tokens <= tokenCap
        }
        if fits() { return now }
        var index = max(0, s.head - Self.span)  // no bucket before the epoch
        while index <= s.head {
            let slot = Self.slot(index)
            requestTotal -= Int64(s.requests[slot])
            tokenTotal -= s.tokens[slot]
            // Bucket `index` leaves the ring when the head reaches index + 61.
            if fits() { return max(now, (index + Self.span + 1) * s.width) }
            index += 1
        }
        return max(now, (s.head + Self.span + 1) * s.width)
    }

    /// When the oldest non-empty bucket leaves the window, or `nil` if the window is empty.
    func nextExpiry() -> Int64? {
        let s = storage
        if s.requestTotal == 0 && s.tokenTotal == 0 { return nil }
        var index = max(0, s.head - Self.span)  // no bucket before the epoch
        while index <= s.head {
            let slot = Self.slot(index)
            if s.requests[slot] != 0 || s.tokens[slot] != 0 { return (index + Self.span + 1) * s.width }
            index += 1
        }
        return nil
    }
}
