import Synchronization

/// A provider's tiers and per-scope overrides, as configured (``PolicyConfiguration/tiers``,
/// ``PolicyConfiguration/scopeOverrides``).
struct ProviderTiers: Sendable, Equatable {
    var tiers: [String: PolicyLimits] = [:]
    var overrides: [PolicyScope: PolicyLimits] = [:]

    var isEmpty: Bool { tiers.isEmpty && overrides.isEmpty }

    /// Whether a tier or an override sets an input or output cap.
    var hasSplitCaps: Bool {
        tiers.values.contains { $0.hasInputOutputCaps } || overrides.values.contains { $0.hasInputOutputCaps }
    }

    /// The caps a scope gets over `limits` (the provider's caps in force): its override's if it
    /// has one, else its tier's, each cap by cap over the provider's. `nil` when `tier` is not
    /// one of the provider's and the scope has no override.
    /// `entryTiers` are the applying schedule entry's caps per tier
    /// (``PolicyScheduleEntry/tierLimits``), over the tier's own.
    func limits(
        over limits: PolicyLimits, scope: PolicyScope, tier: String?, entryTiers: [String: PolicyLimits] = [:]
    ) -> PolicyLimits? {
        if let override = overrides[scope] { return limits.overlaid(with: override) }
        // A provider without tiers ignores the tier a call names.
        guard let tier, !tiers.isEmpty else { return limits }
        return caps(ofTier: tier, over: limits, entryTiers: entryTiers)
    }

    /// The caps of tier `name` over `limits`, with the applying schedule entry's caps for the
    /// tier over both; `nil` when the provider has no such tier.
    func caps(ofTier name: String, over limits: PolicyLimits, entryTiers: [String: PolicyLimits]) -> PolicyLimits? {
        tiers[name].map { limits.overlaid(with: $0).overlaid(with: entryTiers[name] ?? PolicyLimits()) }
    }
}

extension PolicySchedule {
    /// The caps per tier of the entry named `entry` (``PolicyScheduleEntry/tierLimits``); none
    /// without one.
    func tierLimits(ofEntry entry: String?) -> [String: PolicyLimits] {
        guard let entry else { return [:] }
        return entries.first { $0.name == entry }?.tierLimits ?? [:]
    }
}

extension PolicyLimits {
    /// `self` with every cap `other` sets replacing its own: how a tier or an override sits on
    /// the provider's caps (as a schedule entry does).
    func overlaid(with other: PolicyLimits) -> PolicyLimits {
        var result = self
        for kind in PolicyLimitKind.allCases {
            if let cap = other[kind] { result[kind] = cap }
        }
        return result
    }
}

/// A provider's cap sets compiled with one generation: its own, each tier's and each
/// overridden scope's. A key's limits are one of them, told apart by their
/// ``CompiledLimits/variant``. A class: the per-call lookup takes one reference out of the
/// provider table instead of copying the sets.
final class CompiledTiers: Sendable {
    /// The variant's bit of an overridden scope's limits.
    static let overrideVariant: UInt8 = 0x80
    /// The variant's bit of limits whose tier the call named (``PolicyKey/tier``) rather than
    /// the resolver: a new resolver moves only the other keys.
    static let namedVariant: UInt8 = 0x40
    /// The most tiers a provider may have: their numbers are the variant's low six bits.
    static let maximumTiers = 63

    /// Tier names, sorted; a tier's variant is its position plus one.
    let names: [String]
    let tiers: [CompiledLimits]
    let overrides: [PolicyScope: CompiledLimits]
    /// The same, by the key of the provider's scope (``HashedKey``): a key without parents
    /// finds its scope's override with the hash it computed once, hashing no string.
    private let overridesByKey: [HashedKey: CompiledLimits]
    /// The provider's own caps, for scopes without a tier or an override.
    let base: CompiledLimits

    /// Compiles each set with `compile`, which applies what the provider's own compiled
    /// limits have (generation, adaptive factor, schedule validity, routing).
    init(
        _ configured: ProviderTiers, over limits: PolicyLimits, provider: String = "", entryTiers: [String: PolicyLimits] = [:],
        compile: (PolicyLimits) -> CompiledLimits
    ) {
        names = configured.tiers.keys.sorted().prefix(Self.maximumTiers).map { $0 }
        var tiers: [CompiledLimits] = []
        for (index, name) in names.enumerated() {
            var compiled = compile(configured.caps(ofTier: name, over: limits, entryTiers: entryTiers) ?? limits)
            compiled.variant = UInt8(index + 1)
            tiers.append(compiled)
        }
        self.tiers = tiers
        let overrides = configured.overrides.mapValues {
            var compiled = compile(limits.overlaid(with: $0))
            compiled.variant = Self.overrideVariant
            return compiled
        }
        self.overrides = overrides
        overridesByKey = Dictionary(
            overrides.map { (HashedKey(PolicyKey(provider: provider, scope: $0.key)), $0.value) }, uniquingKeysWith: { first, _ in first })
        base = compile(limits)
    }

    /// The number of tier `name` (its variant), or `nil` if the provider lacks it. Tiers are
    /// few: a scan comparing short strings beats hashing one.
    @inline(__always)
    func number(of name: String) -> UInt8? {
        for (index, candidate) in names.enumerated() where candidate == name { return UInt8(index + 1) }
        return nil
    }

    /// The limits of `key`'s scope in `tier` (see ``limits(scope:tier:named:)``), finding its
    /// override with the key's own hash when the key has no parents.
    @inline(__always)
    func limits(for key: PolicyKey, tier: String?, named: Bool) -> CompiledLimits? {
        guard !overrides.isEmpty else { return limits(override: nil, tier: tier, named: named) }
        let override = key.hasParents ? overrides[key.scope] : overridesByKey[HashedKey(key)]
        return limits(override: override, tier: tier, named: named)
    }

    /// The limits of `scope` in `tier`: its override's, else the tier's, else the provider's;
    /// `nil` when `tier` is not one of the provider's (and the scope has no override). An
    /// override's variant keeps the tier's number in its low bits, so that the key is back in
    /// its tier when the override goes. `named` says the tier is the call's own
    /// (``namedVariant``).
    func limits(scope: PolicyScope, tier: String?, named: Bool = false) -> CompiledLimits? {
        limits(override: overrides.isEmpty ? nil : overrides[scope], tier: tier, named: named)
    }

    @inline(__always)
    private func limits(override: CompiledLimits?, tier: String?, named: Bool) -> CompiledLimits? {
        // A provider without tiers (overrides only) ignores the tier a call names.
        let number: UInt8? = names.isEmpty ? 0 : tier.map { self.number(of: $0) } ?? 0
        let flags = named ? Self.namedVariant : 0
        if var override {
            override.variant = Self.overrideVariant | flags | (number ?? 0)
            return override
        }
        guard let number else { return nil }
        var limits = number == 0 ? base : tiers[Int(number) - 1]
        if named { limits.variant |= flags }
        return limits
    }

    /// The name of the tier in `variant` (an override's included), if it has one.
    func name(of variant: UInt8) -> String? {
        let number = Int(variant & 0x3F)
        return number == 0 || number > names.count ? nil : names[number - 1]
    }
}

/// The application's tier resolver (``PolicyService/setTierResolver(_:)``) with its answers
/// cached per key, so that it runs once per key, not once per call.
final class TierResolver: Sendable {
    typealias Resolve = @Sendable (PolicyScope) -> String?

    private struct State {
        var resolve: Resolve?
        /// Bumped when the resolver is replaced, so an answer of the old one is not cached.
        var version = 0
        var answers: [HashedKey: String?] = [:]
    }

    /// Answers kept at most; beyond, the cache starts over (the resolver is asked again).
    static let capacity = 100_000

    private let state = Locked(State())

    /// Installs `resolve` (or none) and forgets every answer of the previous one.
    func replace(_ resolve: Resolve?) {
        state.withLock {
            $0.resolve = resolve
            $0.version &+= 1
            $0.answers = [:]
        }
    }

    /// Bumped by every ``replace(_:)``: read before asking, it dates the answers.
    var version: Int { state.withLock { $0.version } }

    /// The tier of `key`'s scope: the cached answer, else the resolver's (asked outside the
    /// lock, then cached), else `nil` without a resolver.
    func tier(for key: PolicyKey) -> String? {
        let hashed = HashedKey(key)
        let (cached, resolve, version) = state.withLock { state -> (String??, Resolve?, Int) in
            (state.answers[hashed], state.resolve, state.version)
        }
        if let cached { return cached }
        guard let resolve else { return nil }
        let tier = resolve(key.scope)
        state.withLock { state in
            guard state.version == version else { return }
            if state.answers.count >= Self.capacity { state.answers = [:] }
            state.answers[hashed] = .some(tier)
        }
        return tier
    }

    /// The cached answer for `key`, without asking the resolver: `.some(nil)` for "no tier",
    /// `nil` when not known. For callers under a lock, where the application's code must not run.
    func cachedTier(for key: PolicyKey) -> String?? {
        state.withLock { state -> String?? in
            guard state.resolve != nil else { return .some(nil) }
            return state.answers[HashedKey(key)]
        }
    }
}
