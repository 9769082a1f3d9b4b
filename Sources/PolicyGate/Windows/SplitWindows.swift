/// A key's input-token and output-token windows, kept only while its provider sets an input or
/// output cap: one optional reference in the machine, so that providers without such caps pay
/// one branch per step and no memory.
///
/// Each cap's window is a ``SlidingWindow`` whose token count is the input (or output) count;
/// its request count is kept but never capped. Same bucket rule as the total windows, so a call
/// is recorded in and committed to the same buckets in all of them.
final class SplitWindows {
    // Only touched under the key's lock, as the machine that holds it.
    @exclusivity(unchecked) private(set) var input = WindowSlots()
    @exclusivity(unchecked) private(set) var output = WindowSlots()

    /// Windows for the caps `limits` sets, empty at `now`.
    init(limits: CompiledLimits, now: Int64, firstSequence: UInt64) {
        adopt(limits, now: now, firstSequence: firstSequence)
    }

    /// Keeps the windows of the caps `limits` sets (with their usage), drops the others, and
    /// starts missing ones empty: admissions before `firstSequence` are not in them.
    func adopt(_ limits: CompiledLimits, now: Int64, firstSequence: UInt64) {
        for w in 0..<3 {
            let length = PolicyWindow.at(w).nanoseconds
            if limits.inputCaps[w] == .max {
                input[w] = nil
            } else if input[w] == nil {
                input[w] = SlidingWindow(length: length, now: now, firstSequence: firstSequence)
            }
            if limits.outputCaps[w] == .max {
                output[w] = nil
            } else if output[w] == nil {
                output[w] = SlidingWindow(length: length, now: now, firstSequence: firstSequence)
            }
        }
    }

    @inline(__always)
    func advance(to now: Int64) {
        for w in 0..<3 {
            input[w]?.advance(to: now)
            output[w]?.advance(to: now)
        }
    }

    /// Whether the call's input and output fit every input and output cap (advanced to now).
    @inline(__always)
    func fits(_ tokens: TokenCounts, limits: CompiledLimits) -> Bool {
        for w in 0..<3 {
            if input[w]?.fits(tokens: tokens.input, requestCap: .max, tokenCap: limits.inputCaps[w]) == false { return false }
            if output[w]?.fits(tokens: tokens.output, requestCap: .max, tokenCap: limits.outputCaps[w]) == false { return false }
        }
        return true
    }

    @inline(__always)
    func record(_ tokens: TokenCounts) {
        for w in 0..<3 {
            input[w]?.record(tokens: tokens.input)
            output[w]?.record(tokens: tokens.output)
        }
    }

    /// Whether adding `input` and `output` to the buckets of a call admitted at `time` would
    /// overflow.
    func canAdjust(admittedAt time: Int64, sequence: UInt64, input inputDelta: Int64, output outputDelta: Int64) -> Bool {
        for w in 0..<3 {
            if input[w]?.canAdjust(admittedAt: time, sequence: sequence, by: inputDelta) == false { return false }
            if output[w]?.canAdjust(admittedAt: time, sequence: sequence, by: outputDelta) == false { return false }
        }
        return true
    }

    func adjust(admittedAt time: Int64, sequence: UInt64, input inputDelta: Int64, output outputDelta: Int64) {
        for w in 0..<3 {
            input[w]?.adjust(admittedAt: time, sequence: sequence, by: inputDelta)
            output[w]?.adjust(admittedAt: time, sequence: sequence, by: outputDelta)
        }
    }

    func clear(firstSequence: UInt64) {
        for w in 0..<3 {
            input[w]?.clear(firstSequence: firstSequence)
            output[w]?.clear(firstSequence: firstSequence)
        }
    }

    var isEmpty: Bool {
        (0..<3).allSatisfy { input[$0]?.isEmpty != false && output[$0]?.isEmpty != false }
    }

    /// When some recorded usage next leaves a window, or `nil` if none is recorded.
    func nextExpiry() -> Int64? {
        var earliest: Int64?
        for w in 0..<3 {
            for t in [input[w]?.nextExpiry(), output[w]?.nextExpiry()].compactMap({ $0 }) {
                earliest = min(earliest ?? .max, t)
            }
        }
        return earliest
    }

    /// The binding input or output cap for `tokens` and when it frees, if later than `after`
    /// (the same rule as ``AdmissionRules/capsRejection(in:split:limits:tokens:now:)``).
    func rejection(limits: CompiledLimits, tokens: TokenCounts, now: Int64, after worst: Rejection?) -> Rejection? {
        var worst = worst
        for w in 0..<3 {
            if let window = input[w],
                let at = window.earliestFit(requests: 0, tokens: tokens.input, requestCap: .max, tokenCap: limits.inputCaps[w], now: now),
                at > now, at > (worst?.retryAt ?? now)
            {
                worst = Rejection(kind: .inputTokens(PolicyWindow.at(w)), retryAt: at)
            }
            if let window = output[w],
                let at = window.earliestFit(requests: 0, tokens: tokens.output, requestCap: .max, tokenCap: limits.outputCaps[w], now: now),
                at > now, at > (worst?.retryAt ?? now)
            {
                worst = Rejection(kind: .outputTokens(PolicyWindow.at(w)), retryAt: at)
            }
        }
        return worst
    }
}
