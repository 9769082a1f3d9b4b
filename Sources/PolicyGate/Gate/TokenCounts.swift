/// The tokens one call counts for: the total, which the total-token caps count, and the parts
/// the input and output caps count.
///
/// A call known only by its total counts that total in full as input and as output: each
/// unknown part is at most the total, so the input and output caps are never exceeded (at the
/// price of counting more than the call used, until a commit with the parts corrects it).
struct TokenCounts: Hashable, Sendable, ExpressibleByIntegerLiteral {
    var total: Int64
    var input: Int64
    var output: Int64
    /// What the call costs in micro-units, for a provider with spend caps
    /// (``CompiledLimits/hasCostCaps``); 0 otherwise, and ignored then.
    var cost: Int64 = 0

    /// A call known by its total only.
    @inline(__always)
    init(total: Int64) {
        self.total = total
        input = total
        output = total
    }

    /// A call known by its parts; both are at most ``PolicyLimits/maximumTokenCount``, so the
    /// sum cannot overflow.
    @inline(__always)
    init(input: Int64, output: Int64) {
        total = input + output
        self.input = input
        self.output = output
    }

    init(integerLiteral value: Int64) { self.init(total: value) }

    static let zero = TokenCounts(total: 0)

    /// The counts of a call that reported `input`, `output` and `cacheReads` apart, cache reads
    /// counted as input when `countsCacheReads`.
    static func usage(input: Int, output: Int, cacheReads: Int, countsCacheReads: Bool) -> TokenCounts {
        TokenCounts(input: Int64(input) + (countsCacheReads ? Int64(cacheReads) : 0), output: Int64(output))
    }
}
