/// What a model costs, per million tokens, in the provider's currency: the prices a spend budget
/// (``PolicyLimits/costPerHour``, ``PolicyLimits/costPerDay``, ``PolicyLimits/costPerMonth``)
/// counts calls at.
///
/// In a configuration file, under the provider:
/// ```toml
/// [limits.openai.prices."gpt-4o*"]
/// input = 2.50          # per million input tokens
/// output = 10.00        # per million output tokens
/// cache_read = 1.25     # per million input tokens read from the prompt cache
/// ```
public struct PolicyModelPrice: Hashable, Sendable, CustomStringConvertible {
    /// The price of a million input (prompt) tokens.
    public var input: PolicyMoney
    /// The price of a million output (completion) tokens.
    public var output: PolicyMoney
    /// The price of a million input tokens read from the provider's prompt cache; `nil`: the
    /// input price.
    public var cacheRead: PolicyMoney?

    /// A model's prices per million tokens.
    public init(input: PolicyMoney, output: PolicyMoney, cacheRead: PolicyMoney? = nil) {
        self.input = input
        self.output = output
        self.cacheRead = cacheRead
    }

    /// `input=… output=… cache_read=…` per million tokens.
    public var description: String {
        "input=\(input) output=\(output)" + (cacheRead.map { " cache_read=\($0)" } ?? "") + " per million tokens"
    }
}

/// A spend budget's window, as refusals and readouts name it.
public enum PolicyCostCap: String, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    /// ``PolicyLimits/costPerHour``: spend in any hour (a sliding window, as the token caps').
    case costPerHour
    /// ``PolicyLimits/costPerDay``: spend in any 24 h (sliding).
    case costPerDay
    /// ``PolicyLimits/costPerMonth``: spend in the calendar month (in the provider's time
    /// zone), reset at the first instant of each month, the way invoices are.
    case costPerMonth

    /// The cap's name, such as `costPerDay`.
    public var description: String { rawValue }

    /// The cap's key in a configuration file: `cost_per_hour`, `cost_per_day`, `cost_per_month`.
    public var configurationKey: String {
        switch self {
        case .costPerHour: "cost_per_hour"
        case .costPerDay: "cost_per_day"
        case .costPerMonth: "cost_per_month"
        }
    }

    /// 0 hour, 1 day, 2 month.
    var index: Int {
        switch self {
        case .costPerHour: 0
        case .costPerDay: 1
        case .costPerMonth: 2
        }
    }

    static func at(_ index: Int) -> PolicyCostCap {
        switch index {
        case 0: .costPerHour
        case 1: .costPerDay
        default: .costPerMonth
        }
    }
}

/// A model's prices in micro-units per million tokens, as the gate computes with them: trivial,
/// so that a permit can carry it to its commit at no cost.
///
/// A call's cost is `(input × input price + output × output price + cache reads × cache-read
/// price) / 1 000 000`, computed exactly and **rounded up** to the next micro-unit, once per
/// call (never per part): the gate never counts less than the call cost. A count known only as
/// a total (an estimate or a commit without parts) is priced at the higher of the input and
/// output prices, so it is never undercounted either.
struct CostPrice: Hashable, Sendable {
    var input: Int64
    var output: Int64
    var cacheRead: Int64

    static let zero = CostPrice(input: 0, output: 0, cacheRead: 0)

    init(input: Int64, output: Int64, cacheRead: Int64) {
        self.input = input
        self.output = output
        self.cacheRead = cacheRead
    }

    init(_ price: PolicyModelPrice) {
        input = price.input.microUnits
        output = price.output.microUnits
        cacheRead = (price.cacheRead ?? price.input).microUnits
    }

    var isZero: Bool { input == 0 && output == 0 && cacheRead == 0 }

    /// The cost of `tokens` counted as a total only: at the higher of the input and output price.
    func cost(total tokens: Int64) -> Int64 {
        var sum = Sum()
        sum.add(tokens, max(input, output))
        return sum.rounded
    }

    /// The cost of a call's parts.
    func cost(input inputTokens: Int64, output outputTokens: Int64, cacheReads: Int64 = 0) -> Int64 {
        var sum = Sum()
        sum.add(inputTokens, input)
        sum.add(outputTokens, output)
        sum.add(cacheReads, cacheRead)
        return sum.rounded
    }

    /// `Σ tokens × price / 10⁶`, rounded up, exactly, without overflow for counts up to 2^48
    /// and prices up to ``PolicyMoney/maximum``: with `tokens = q × 10⁶ + r` and
    /// `price = pq × 10⁶ + pr`, `tokens × price / 10⁶ = q × price + r × pq + r × pr / 10⁶`, and
    /// only the last term (below 10¹² per part) has a fraction. Saturates at `Int64.max`, an
    /// amount no cap admits.
    private struct Sum {
        var whole: Int64 = 0
        var millionths: Int64 = 0

        mutating func add(_ tokens: Int64, _ price: Int64) {
            guard tokens > 0, price > 0 else { return }
            let (q, r) = tokens.quotientAndRemainder(dividingBy: 1_000_000)
            let (pq, pr) = price.quotientAndRemainder(dividingBy: 1_000_000)
            let (product, overflow) = q.multipliedReportingOverflow(by: price)
            whole = overflow ? .max : whole.clampedAdding(product).clampedAdding(r * pq)
            millionths += r * pr
        }

        var rounded: Int64 {
            let (q, r) = millionths.quotientAndRemainder(dividingBy: 1_000_000)
            return whole.clampedAdding(q + (r > 0 ? 1 : 0))
        }
    }
}

/// A provider's prices by model name or pattern, resolved the way model groups are: an exact
/// name first, then the most specific `*` pattern (``ModelTable``); a `"*"` entry prices every
/// model no other entry matches, and calls that name no model.
struct PriceTable: Sendable {
    private let table: ModelTable<CostPrice>
    private let fallback: CostPrice?

    init(_ prices: [String: PolicyModelPrice]) {
        var entries: [(pattern: ModelPattern, value: CostPrice)] = []
        var fallback: CostPrice?
        for (name, price) in prices {
            if let pattern = ModelPattern(name) {
                entries.append((pattern, CostPrice(price)))
            } else if !name.isEmpty {
                fallback = CostPrice(price)  // "*" (or "**"…): every model
            }
        }
        table = ModelTable(entries)
        self.fallback = fallback
    }

    /// The price of `model`, or `nil` when nothing prices it.
    func price(for model: String?) -> CostPrice? {
        guard let model else { return fallback }
        return table.match(model)?.value ?? fallback
    }

    /// The pattern that prices `model` (`"*"` for the fallback), for readouts.
    func pattern(for model: String) -> String? {
        table.match(model)?.pattern.text ?? (fallback != nil ? "*" : nil)
    }
}
