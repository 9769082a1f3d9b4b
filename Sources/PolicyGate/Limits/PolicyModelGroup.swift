/// Caps shared by a family of a provider's models, the way providers limit them: OpenAI and
/// Anthropic count, say, every `claude-sonnet-4…` model against one per-minute budget.
///
/// Configured as `[limits.<provider>.models.<group>]` with `match` and caps, or in code through
/// ``PolicyConfiguration/modelGroups``. A call that names its model (the `model:` argument of
/// ``PolicyService/acquire(_:estimatedTokens:model:maxWait:priority:)``) is admitted only when it
/// fits its group's caps as well as the provider's, and is recorded in both at once. A group
/// counts where the provider's caps count: per key for a provider without per-scope tables,
/// for the whole account for one with them (``PolicyConfiguration/scopeLimits``). A call
/// without a model, or for a model no group matches, counts under the provider's caps only.
public struct PolicyModelGroup: Hashable, Sendable {
    /// The model names and patterns of the group: `gpt-4o` matches that name only,
    /// `claude-sonnet-4*` every name starting so (`*` stands for any run of characters). Where
    /// several groups match a model, the most specific pattern wins: an exact name, else the
    /// pattern with the most literal characters (ties: the group whose pattern sorts first).
    public var match: [String]
    /// The group's caps: any of ``PolicyLimits``'s windows and ``PolicyLimits/maxConcurrent``.
    public var limits: PolicyLimits

    /// Creates a group matching `match` with `limits`.
    public init(match: [String], limits: PolicyLimits) {
        self.match = match
        self.limits = limits
    }

    /// The scope kind naming a group's level in refusals and readouts
    /// (``PolicyError/level``): `model:<group>`.
    public static let scopeKind = "model"

    /// Checks the patterns and the caps.
    /// - Throws: ``PolicyError/Code/invalidLimits`` for an empty `match`, a pattern that is empty
    ///   or only `*`, a pattern given twice, a bad cap, or spend caps and prices (a group has
    ///   none of its own yet).
    public func validate(provider: String, group: String) throws(PolicyError) {
        let name = "\(provider)' model group '\(group)"
        if match.isEmpty {
            throw PolicyError(
                .invalidLimits, message: "model group '\(group)' of provider '\(provider)' matches no model: give match = [\"pattern\", …]")
        }
        for pattern in match where ModelPattern(pattern) == nil {
            throw PolicyError(
                .invalidLimits, message: "model group '\(group)' of provider '\(provider)': '\(pattern)' is not a model name or pattern")
        }
        if Set(match).count != match.count {
            throw PolicyError(.invalidLimits, message: "model group '\(group)' of provider '\(provider)' lists a pattern twice")
        }
        if limits.hasCostCaps || !limits.prices.isEmpty {
            throw PolicyError(
                .invalidLimits,
                message:
                    "model group '\(group)' of provider '\(provider)': spend caps and prices belong to the provider's table (and its per tables)"
            )
        }
        if limits.reservedForInteractive != nil || limits.batchAging != nil {
            throw PolicyError(
                .invalidLimits,
                message: "model group '\(group)' of provider '\(provider)': priority settings belong to the provider's table")
        }
        try limits.validate(provider: name)
    }
}

extension PolicyConfiguration {
    /// The name of `provider`'s model group that `model` counts in, or `nil` when it is in
    /// none (it then counts under the provider's caps only). Most specific pattern first, as
    /// the gate matches: an exact name, else the pattern with the most literal characters.
    public func modelGroup(for model: String, provider: String) -> String? {
        guard let groups = modelGroups[provider], !groups.isEmpty else { return nil }
        let table = ModelTable(
            groups.flatMap { name, group in
                group.match.compactMap(ModelPattern.init).map { (pattern: $0, value: name) }
            })
        return table.match(model)?.value
    }
}

/// What a provider counts besides its own caps: per-scope caps (nested limits) and model groups.
struct ProviderLevels: Hashable, Sendable {
    /// Caps per scope kind (``PolicyConfiguration/scopeLimits``).
    var kinds: [String: PolicyLimits] = [:]
    /// Model groups by name (``PolicyConfiguration/modelGroups``).
    var groups: [String: PolicyModelGroup] = [:]

    /// Neither: the provider counts each key on its own, in the flat machine.
    var isEmpty: Bool { kinds.isEmpty && groups.isEmpty }

    /// The groups in the order a tree numbers them (by name), compiled with `generation`.
    func compiledGroups(generation: UInt64) -> [ModelGroupCaps] {
        groups.sorted { $0.key < $1.key }.map { name, group in
            ModelGroupCaps(
                name: name, patterns: group.match.compactMap(ModelPattern.init),
                limits: CompiledLimits(group.limits, generation: generation))
        }
    }
}
