/// Request and token counts over one sliding window, kept in a ring of fixed-width buckets.
///
/// The window of length `W` is split into 60 buckets of `W/60`, plus the bucket being filled:
/// 61 in all. A call admitted at `t` lands in bucket `⌊t / (W/60)⌋` and is counted until that
/// bucket leaves the ring, which happens between `W` and `W + W/60` after `t`. So the counts are
/// never below the exact sliding-window counts (the gate never over-admits), and an admission is
/// delayed past the exact rule by at most `W/60` (1 s for a minute, 1 min for an hour, 24 min for
/// a day). Memory is fixed: 61 × (4 + 8) bytes, however many calls pass.
///
/// A class, not a copy-on-write value: the state machine that holds it is only ever used in
/// place, and a value wrapper around the storage cost more in reference counting and generic
/// value-witness calls than all the window arithmetic on the hot path. A machine copied by value
/// would share its windows.
final class SlidingWindow {
    static let bucketCount = 61
    /// The exact window spans this many buckets; the ring holds one more, the one being filled.
    static let span: Int64 = 60

    // Only touched under the key's lock, so the runtime's exclusivity checks would add cost and
    // no safety.
    let width: Int64
    /// The bucket index of `now` as last seen; buckets `head - 60 ... head` are live.
    @exclusivity(unchecked) private var head: Int64
    @exclusivity(unchecked) private(set) var requestTotal: Int64 = 0
    @exclusivity(unchecked) private(set) var tokenTotal: Int64 = 0
    /// Sequence number of the first admission this window has recorded (after creation or a
    /// reset): commits for earlier admissions must not touch it.
    @exclusivity(unchecked) private var firstSequence: UInt64
    @exclusivity(unchecked) private var requests = InlineArray<61, UInt32>(repeating: 0)
    @exclusivity(unchecked) private var tokens = InlineArray<61, Int64>(repeating: 0)
    /// Input and output tokens in the same buckets, kept only while the provider caps input
    /// or output tokens over this window: one reference, `nil` for providers without such caps.
    @exclusivity(unchecked) private(set) var split: SplitBuckets?

    /// A window of `length` nanoseconds, empty, starting at `now`.
    init(length: Int64, now: Int64, firstSequence: UInt64) {
        width = length / Self.span
        head = now / width
        self.firstSequence = firstSequence
    }

    var isEmpty: Bool { requestTotal == 0 && tokenTotal == 0 }

    /// Adds a bucket read from a shared store (whose instants are in its own unit, the same
    /// for `length`, `now` and `index`); buckets outside the ring are ignored.
    func load(index: Int64, requests count: Int64, tokens amount: Int64) {
        guard index <= head, index > head - Self.span - 1 else { return }
        let slot = Self.slot(index)
        let requestCount = UInt32(clamping: Int64(requests[slot]).clampedAdding(count))
        requestTotal += Int64(requestCount) - Int64(requests[slot])
        requests[slot] = requestCount
        tokens[slot] = tokens[slot].clampedAdding(amount)
        tokenTotal = tokenTotal.clampedAdding(amount)
    }

    @inline(__always)
    private static func slot(_ index: Int64) -> Int { Int(index % Int64(bucketCount)) }

    /// Drops the buckets that have left the window at `now`. Time never moves backwards here:
    /// an earlier `now` leaves the window as it is.
    @inline(__always)
    func advance(to now: Int64) {
        let index = now / width
        if index <= head { return }
        advanceSlow(to: index)
    }

    private func advanceSlow(to index: Int64) {
        if index - head >= Int64(Self.bucketCount) {
            requests = InlineArray(repeating: 0)
            tokens = InlineArray(repeating: 0)
            requestTotal = 0
            tokenTotal = 0
            split?.clearAll()
        } else if requestTotal != 0 || tokenTotal != 0 {
            var i = head + 1
            while i <= index {
                let slot = Self.slot(i)
                requestTotal -= Int64(requests[slot])
                tokenTotal -= tokens[slot]
                requests[slot] = 0
                tokens[slot] = 0
                split?.clear(slot)
                i += 1
            }
        }
        head = index
    }

    // MARK: Input and output

    /// Starts counting input and output tokens (empty: admissions before `firstSequence` are
    /// not in them), unless already counting.
    func countSplit(firstSequence: UInt64) {
        if split == nil { split = SplitBuckets(firstSequence: firstSequence) }
    }

    /// Stops counting input and output tokens.
    func dropSplit() { split = nil }

    /// Whether a call's input and output fit under the caps (already advanced to now); `true`
    /// when they are not counted here.
    @inline(__always)
    func splitFits(input: Int64, output: Int64, inputCap: Int64, outputCap: Int64) -> Bool {
        guard let split else { return true }
        return split.fits(input: input, output: output, inputCap: inputCap, outputCap: outputCap)
    }

    /// Records a call's input and output in the current bucket (with ``record(tokens:)``).
    @inline(__always)
    func recordSplit(input: Int64, output: Int64) {
        split?.record(slot: Self.slot(head), input: input, output: output)
    }

    /// Whether replacing part of a call's tokens (`delta` in all, `input` and `output` of it)
    /// in the bucket of `time` would overflow: ``canAdjust(admittedAt:sequence:by:)`` with the
    /// input and output counts.
    @inline(__always)
    func canAdjust(admittedAt time: Int64, sequence: UInt64, by delta: Int64, input: Int64, output: Int64) -> Bool {
        guard holds(admittedAt: time, sequence: sequence) else { return true }
        let slot = Self.slot(time / width)
        if tokens[slot].addingReportingOverflow(delta).overflow || tokenTotal.addingReportingOverflow(delta).overflow {
            return false
        }
        guard let split, sequence >= split.firstSequence else { return true }
        return split.canAdjust(slot: slot, input: input, output: output)
    }

    /// Replaces part of a call's tokens, input and output counts: adds `delta`, `input` and
    /// `output` to the bucket it was recorded in, if that bucket is still in the window (input
    /// and output only if they were counted when it was admitted).
    @inline(__always)
    func adjust(admittedAt time: Int64, sequence: UInt64, by delta: Int64, input: Int64, output: Int64) {
        guard holds(admittedAt: time, sequence: sequence) else { return }
        let slot = Self.slot(time / width)
        tokens[slot] &+= delta
        tokenTotal &+= delta
        guard let split, sequence >= split.firstSequence else { return }
        split.adjust(slot: slot, input: input, output: output)
    }

    /// The earliest time at which `input` more input tokens and `output` more output tokens
    /// fit the caps, by the rule of ``earliestFit(requests:tokens:requestCap:tokenCap:now:)``,
    /// and which of the two binds then; `nil` if they fit now or are not counted here.
    func earliestSplitFit(input: Int64, output: Int64, inputCap: Int64, outputCap: Int64, now: Int64) -> (at: Int64, input: Bool)? {
        guard let split else { return nil }
        var inputSum = split.inputTotal
        var outputSum = split.outputTotal
        func inputFits() -> Bool { inputCap == .max || inputSum.clampedAdding(input) <= inputCap }
        func outputFits() -> Bool { outputCap == .max || outputSum.clampedAdding(output) <= outputCap }
        if inputFits() && outputFits() { return nil }
        var index = max(0, head - Self.span)  // no bucket before the epoch
        var inputAt: Int64? = inputFits() ? now : nil
        var outputAt: Int64? = outputFits() ? now : nil
        while index <= head, inputAt == nil || outputAt == nil {
            let slot = Self.slot(index)
            inputSum -= split.input[slot]
            outputSum -= split.output[slot]
            let leaves = max(now, (index + Self.span + 1) * width)
            if inputAt == nil && inputFits() { inputAt = leaves }
            if outputAt == nil && outputFits() { outputAt = leaves }
            index += 1
        }
        let last = max(now, (head + Self.span + 1) * width)
        let (i, o) = (inputAt ?? last, outputAt ?? last)
        return i >= o ? (i, true) : (o, false)
    }

    /// Whether one more request with `tokens` fits under the caps (already advanced to now).
    @inline(__always)
    func fits(tokens: Int64, requestCap: Int64, tokenCap: Int64) -> Bool {
        if requestTotal >= requestCap { return false }
        // No token cap: a total saturated by huge counts must not refuse anyone.
        if tokenCap == .max { return true }
        let (sum, overflow) = tokenTotal.addingReportingOverflow(tokens)
        return !overflow && sum <= tokenCap
    }

    /// Records one admitted request with `tokens` in the current bucket.
    @inline(__always)
    func record(tokens count: Int64) {
        let slot = Self.slot(head)
        let (requestCount, overflow) = requests[slot].addingReportingOverflow(1)
        if !overflow {  // saturates: only reachable on an uncapped request count
            requests[slot] = requestCount
            requestTotal += 1
        }
        // Cannot overflow under a token cap (admission checked the sum); saturates otherwise,
        // where the total only feeds readouts.
        tokens[slot] = tokens[slot].clampedAdding(count)
        tokenTotal = tokenTotal.clampedAdding(count)
    }

    /// Whether a call admitted at `time` with sequence `sequence` is still counted here.
    @inline(__always)
    func holds(admittedAt time: Int64, sequence: UInt64) -> Bool {
        sequence >= firstSequence && time / width > head - Self.span - 1
    }

    /// Whether replacing `delta` more tokens in the bucket of `time` would overflow.
    @inline(__always)
    func canAdjust(admittedAt time: Int64, sequence: UInt64, by delta: Int64) -> Bool {
        guard holds(admittedAt: time, sequence: sequence) else { return true }
        return !tokens[Self.slot(time / width)].addingReportingOverflow(delta).overflow
            && !tokenTotal.addingReportingOverflow(delta).overflow
    }

    /// Replaces part of a call's tokens: adds `delta` to the bucket it was recorded in, if that
    /// bucket is still in the window.
    @inline(__always)
    func adjust(admittedAt time: Int64, sequence: UInt64, by delta: Int64) {
        guard delta != 0, holds(admittedAt: time, sequence: sequence) else { return }
        tokens[Self.slot(time / width)] &+= delta
        tokenTotal &+= delta
    }

    /// Forgets all usage; admissions before `sequence` are no longer held.
    func clear(firstSequence: UInt64) {
        requests = InlineArray(repeating: 0)
        tokens = InlineArray(repeating: 0)
        requestTotal = 0
        tokenTotal = 0
        split?.clearAll()
        self.firstSequence = firstSequence
    }

    /// The earliest time at which `requests` more requests and `tokens` more tokens fit under the
    /// caps, if nothing else is admitted meanwhile; `now` if they fit already (advanced to now).
    /// `nil` if they can never fit (more than the cap itself).
    func earliestFit(requests needed: Int64, tokens wanted: Int64, requestCap: Int64, tokenCap: Int64, now: Int64) -> Int64? {
        if needed > requestCap || wanted > tokenCap { return nil }
        var requestSum = requestTotal
        var tokenSum = tokenTotal
        // The same arithmetic as `fits(tokens:requestCap:tokenCap:)`.
        func fits() -> Bool {
            requestSum + needed <= requestCap
                && (tokenCap == .max
                    || (!tokenSum.addingReportingOverflow(wanted).overflow && tokenSum + wanted <= tokenCap))
        }
        if fits() { return now }
        var index = max(0, head - Self.span)  // no bucket before the epoch
        while index <= head {
            let slot = Self.slot(index)
            requestSum -= Int64(requests[slot])
            tokenSum -= tokens[slot]
            // Bucket `index` leaves the ring when the head reaches index + 61.
            if fits() { return max(now, (index + Self.span + 1) * width) }
            index += 1
        }
        return max(now, (head + Self.span + 1) * width)
    }

    /// When the oldest non-empty bucket leaves the window, or `nil` if the window is empty.
    func nextExpiry() -> Int64? {
        if isEmpty { return nil }
        var index = max(0, head - Self.span)  // no bucket before the epoch
        while index <= head {
            let slot = Self.slot(index)
            if requests[slot] != 0 || tokens[slot] != 0 { return (index + Self.span + 1) * width }
            index += 1
        }
        return nil
    }
}

/// A window's input and output tokens per bucket, beside its totals (``SlidingWindow/split``).
///
/// Only providers with input or output caps reach it: the machine calls it from out-of-line
/// methods, so that the admission of the others stays as small as it was.
final class SplitBuckets {
    /// Admissions before this one were not counted here (the caps came later).
    let firstSequence: UInt64
    @exclusivity(unchecked) private(set) var inputTotal: Int64 = 0
    @exclusivity(unchecked) private(set) var outputTotal: Int64 = 0
    @exclusivity(unchecked) private(set) var input = InlineArray<61, Int64>(repeating: 0)
    @exclusivity(unchecked) private(set) var output = InlineArray<61, Int64>(repeating: 0)

    init(firstSequence: UInt64) { self.firstSequence = firstSequence }

    @inline(__always)
    func fits(input amount: Int64, output produced: Int64, inputCap: Int64, outputCap: Int64) -> Bool {
        // Saturating: a sum beyond `Int64` fits no cap.
        (inputCap == .max || inputTotal.clampedAdding(amount) <= inputCap)
            && (outputCap == .max || outputTotal.clampedAdding(produced) <= outputCap)
    }

    @inline(__always)
    func record(slot: Int, input amount: Int64, output produced: Int64) {
        input[slot] = input[slot].clampedAdding(amount)
        inputTotal = inputTotal.clampedAdding(amount)
        output[slot] = output[slot].clampedAdding(produced)
        outputTotal = outputTotal.clampedAdding(produced)
    }

    @inline(__always)
    func canAdjust(slot: Int, input inputDelta: Int64, output outputDelta: Int64) -> Bool {
        !input[slot].addingReportingOverflow(inputDelta).overflow && !inputTotal.addingReportingOverflow(inputDelta).overflow
            && !output[slot].addingReportingOverflow(outputDelta).overflow
            && !outputTotal.addingReportingOverflow(outputDelta).overflow
    }

    @inline(__always)
    func adjust(slot: Int, input inputDelta: Int64, output outputDelta: Int64) {
        input[slot] &+= inputDelta
        inputTotal &+= inputDelta
        output[slot] &+= outputDelta
        outputTotal &+= outputDelta
    }

    func clear(_ slot: Int) {
        inputTotal -= input[slot]
        outputTotal -= output[slot]
        input[slot] = 0
        output[slot] = 0
    }

    func clearAll() {
        input = InlineArray(repeating: 0)
        output = InlineArray(repeating: 0)
        inputTotal = 0
        outputTotal = 0
    }
}
