/// A key's windows checked against caps, for the nested levels of ``ChainStateMachine``: the
/// same arithmetic as ``GateStateMachine``'s (which keeps its own copy, written out for its hot
/// path), each window only where a cap over it is set.
extension WindowSlots {
    /// Windows for `limits`, empty, counting admissions from `firstSequence` on.
    init(limits: CompiledLimits, now: Int64, firstSequence: UInt64) {
        self.init()
        adopt(limits, now: now, firstSequence: firstSequence)
    }

    /// Keeps the windows `limits` caps (with their usage), adds the missing ones empty and
    /// drops the rest.
    mutating func adopt(_ limits: CompiledLimits, now: Int64, firstSequence: UInt64) {
        for w in 0..<3 {
            if !limits.tracks(w) {
                self[w] = nil
                continue
            } else if self[w] == nil {
                self[w] = SlidingWindow(length: PolicyWindow.at(w).nanoseconds, now: now, firstSequence: firstSequence)
            }
            if limits.hasSplitCaps && limits.countsSplit(w) {
                self[w]?.countSplit(firstSequence: firstSequence)
            } else {
                self[w]?.dropSplit()
            }
        }
    }

    @inline(__always)
    func advance(to now: Int64) {
        minute?.advance(to: now)
        hour?.advance(to: now)
        day?.advance(to: now)
    }

    /// Whether a call of `tokens` fits every window under `limits` and the gate is open
    /// (windows advanced).
    @inline(__always)
    func fit(_ tokens: TokenCounts, limits: CompiledLimits, now: Int64) -> Bool {
        guard !limits.isClosed(at: now),
            minute?.fits(tokens: tokens.total, requestCap: limits.requestCap(0), tokenCap: limits.tokenCaps[0]) != false,
            hour?.fits(tokens: tokens.total, requestCap: limits.requestCap(1), tokenCap: limits.tokenCaps[1]) != false,
            day?.fits(tokens: tokens.total, requestCap: limits.requestCap(2), tokenCap: limits.tokenCaps[2]) != false
        else { return false }
        guard limits.hasSplitCaps else { return true }
        return minute?.splitFits(input: tokens.input, output: tokens.output, inputCap: limits.inputCaps[0], outputCap: limits.outputCaps[0])
            != false
            && hour?.splitFits(input: tokens.input, output: tokens.output, inputCap: limits.inputCaps[1], outputCap: limits.outputCaps[1])
                != false
            && day?.splitFits(input: tokens.input, output: tokens.output, inputCap: limits.inputCaps[2], outputCap: limits.outputCaps[2])
                != false
    }

    /// Records an admitted call.
    @inline(__always)
    func record(_ tokens: TokenCounts, limits: CompiledLimits) {
        minute?.record(tokens: tokens.total)
        hour?.record(tokens: tokens.total)
        day?.record(tokens: tokens.total)
        guard limits.hasSplitCaps else { return }
        minute?.recordSplit(input: tokens.input, output: tokens.output)
        hour?.recordSplit(input: tokens.input, output: tokens.output)
        day?.recordSplit(input: tokens.input, output: tokens.output)
    }

    /// Whether replacing a call's counts by these deltas overflows no window.
    func canAdjust(_ admission: Admission, by delta: Int64, input: Int64, output: Int64) -> Bool {
        let (time, sequence) = (admission.time, admission.sequence)
        return minute?.canAdjust(admittedAt: time, sequence: sequence, by: delta, input: input, output: output) != false
            && hour?.canAdjust(admittedAt: time, sequence: sequence, by: delta, input: input, output: output) != false
            && day?.canAdjust(admittedAt: time, sequence: sequence, by: delta, input: input, output: output) != false
    }

    /// Replaces a call's counts by these deltas in every window still holding it.
    func adjust(_ admission: Admission, by delta: Int64, input: Int64, output: Int64) {
        let (time, sequence) = (admission.time, admission.sequence)
        minute?.adjust(admittedAt: time, sequence: sequence, by: delta, input: input, output: output)
        hour?.adjust(admittedAt: time, sequence: sequence, by: delta, input: input, output: output)
        day?.adjust(admittedAt: time, sequence: sequence, by: delta, input: input, output: output)
    }

    /// Whether no window holds usage any more (windows advanced).
    var isEmpty: Bool { minute?.isEmpty != false && hour?.isEmpty != false && day?.isEmpty != false }

    /// When some recorded usage next leaves a window.
    func nextExpiry() -> Int64? {
        [minute?.nextExpiry(), hour?.nextExpiry(), day?.nextExpiry()].compactMap { $0 }.min()
    }
}
