extension GateCore {
    /// Prices a call of a provider with spend caps: finds `model`'s price and sets the cost of
    /// `tokens` (an estimate given as a total is priced at the higher of the input and output
    /// prices, cache reads at the input price: the estimate never undercounts).
    /// Out of line: only providers with spend caps get here.
    /// - Returns: The counts with their cost, and the price, for the permit to settle its commit at.
    /// - Throws: ``PolicyError/Code/unpriced`` when the model has no price (and no `"*"` entry
    ///   prices it), ``PolicyError/Code/oversized`` when the cost exceeds a spend cap; both
    ///   reported to telemetry.
    @inline(never)
    func priced(
        _ key: PolicyKey, model: String?, tokens: TokenCounts, split: Bool, priority: PolicyPriority
    ) throws(PolicyError) -> (TokenCounts, CostPrice) {
        var tokens = tokens
        guard let costs = costs(for: key) else { return (tokens, .zero) }  // changed meanwhile: nothing to count
        guard let price = costs.prices.price(for: model) else {
            let what = model.map { "model '\($0)' has no price" } ?? "the call names no model"
            throw reject(
                key, Int(tokens.total),
                PolicyError(
                    .unpriced, key: key,
                    message:
                        "\(what) and provider '\(key.provider)' has spend caps: add it to [limits.\(key.provider).prices] (or a \"*\" entry) so that its cost is counted"
                ),
                priority: priority)
        }
        tokens.cost = split ? price.cost(input: tokens.input, output: tokens.output) : price.cost(total: tokens.total)
        for index in 0..<3 where tokens.cost > costs.caps[index] {
            let rejection = Rejection(cost: PolicyCostCap.at(index), retryAt: nil, exceededCap: costs.caps[index])
            throw reject(
                key, Int(tokens.total),
                AdmissionRules.error(.oversized, rejection, now: 0, "estimated cost \(PolicyMoney(microUnits: tokens.cost))").with(
                    key: key), priority: priority)
        }
        return (tokens, price)
    }
}
