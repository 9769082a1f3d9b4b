/// What a counter belongs to inside one provider: the whole provider, a user, an organisation,
/// a project, or any other kind of owner (a tenant, a workflow…).
///
/// Every distinct `(provider, scope)` pair gets its own independent windows, concurrency slots
/// and queue, all governed by the provider's ``PolicyLimits``.
public enum PolicyScope: Hashable, Sendable, CustomStringConvertible {
    /// One shared set of counters for the whole provider.
    case global
    /// Counters per user id.
    case user(String)
    /// Counters per organisation id.
    case org(String)
    /// Counters per project id.
    case project(String)
    /// Counters for an owner of your own kind, such as `custom(kind: "tenant", id: "acme")`.
    case custom(kind: String, id: String)

    /// A readable form such as `user:u-42` or `global`.
    public var description: String {
        switch self {
        case .global: "global"
        case .user(let id): "user:\(id)"
        case .org(let id): "org:\(id)"
        case .project(let id): "project:\(id)"
        case .custom(let kind, let id): "\(kind):\(id)"
        }
    }

    /// Reads the form ``description`` writes: `global`, `user:<id>`, `org:<id>`,
    /// `project:<id>`, or `<kind>:<id>` for any other kind (the id is everything after the
    /// first colon). `nil` for text without a kind or an id, such as `"acme"` or `"org:"`.
    public init?(_ description: String) {
        if description == "global" {
            self = .global
            return
        }
        guard let colon = description.firstIndex(of: ":"), colon != description.startIndex else { return nil }
        let kind = String(description[..<colon])
        let id = String(description[description.index(after: colon)...])
        guard !id.isEmpty, kind != "global" else { return nil }
        switch kind {
        case "user": self = .user(id)
        case "org": self = .org(id)
        case "project": self = .project(id)
        default: self = .custom(kind: kind, id: id)
        }
    }

    /// The kind of scope without its id (`global`, `user`, `org`, `project`, or the custom kind):
    /// a low-cardinality label for metrics.
    public var kind: String {
        switch self {
        case .global: "global"
        case .user: "user"
        case .org: "org"
        case .project: "project"
        case .custom(let kind, _): kind
        }
    }
}

/// The identity of one gated counter set: a provider name and a ``PolicyScope``.
///
/// Limits are configured per provider; each key under that provider is counted on its own.
/// A key hashes its strings once, when it is created, so reusing a key value across calls makes
/// every lookup in the gate cheap.
public struct PolicyKey: Hashable, Sendable, CustomStringConvertible {
    /// The provider whose limits apply, such as `"openai"`.
    public let provider: String
    /// Whose counters these are under the provider.
    public let scope: PolicyScope
    /// The scopes that contain ``scope``, outermost first, such as `[.org("acme")]` for a user
    /// of that organisation. Only a provider with per-scope limits reads them (see
    /// ``PolicyConfiguration/scopeLimits``): a call is then admitted only when it fits the
    /// provider's account caps, every parent's caps and its own, and is recorded in all of them
    /// at once. Empty by default.
    public let parents: [PolicyScope]

    /// Whether the key has parents.
    var hasParents: Bool { !parents.isEmpty }

    /// The tier the caller says ``scope`` is in (``PolicyConfiguration/tiers``), or `nil` to
    /// let the service's tier resolver (``PolicyService/setTierResolver(_:)``) decide. Not part
    /// of the key's identity: two keys that differ only in their tier count in the same
    /// windows, under the caps of the tier the latest call named. A provider without tiers
    /// ignores it.
    // Stored in the key (16 bytes): kept with the parents in a class out of line, every copy of
    // a key went through its value witness, ≈ 270 instructions more per capped cycle
    // (`Benchmarks/callgrind-cycles.sh`).
    public let tier: String?

    // Computed once: the gate looks a key up on every call, and hashing two strings each time
    // costs more than the rest of an uncontended admission.
    @usableFromInline let providerHash: Int
    @usableFromInline let keyHash: Int

    /// Creates a key for `provider` and `scope`.
    /// - Parameters:
    ///   - provider: The provider name the limits are configured under.
    ///   - scope: Whose counters these are; `.global` when omitted.
    public init(provider: String, scope: PolicyScope = .global) {
        self.init(provider: provider, scope: scope, within: [])
    }

    /// Creates a key for `scope` nested in `parents` (outermost first), such as
    /// `PolicyKey(provider: "openai", scope: .user("u1"), within: [.org("acme")])`.
    /// - Parameters:
    ///   - provider: The provider name the limits are configured under.
    ///   - scope: Whose counters these are.
    ///   - parents: The scopes containing `scope`, outermost first; `.global` entries are
    ///     ignored (the provider's account is always the outermost level).
    public init(provider: String, scope: PolicyScope, within parents: [PolicyScope]) {
        self.init(provider: provider, scope: scope, within: parents, tier: nil)
    }

    /// Creates a key for `scope` in the named tier (``PolicyConfiguration/tiers``), such as
    /// `PolicyKey(provider: "openai", scope: .org("acme"), tier: "pro")`.
    /// - Parameters:
    ///   - provider: The provider name the limits are configured under.
    ///   - scope: Whose counters these are.
    ///   - parents: The scopes containing `scope`, outermost first (see
    ///     ``init(provider:scope:within:)``).
    ///   - tier: The tier `scope` is in; `nil` lets the service's tier resolver decide. A tier
    ///     the provider does not define is refused at acquire
    ///     (``PolicyError/Code/invalidArgument``).
    public init(provider: String, scope: PolicyScope, within parents: [PolicyScope] = [], tier: String?) {
        self.provider = provider
        self.scope = scope
        let parents = parents.filter { $0 != .global }
        self.parents = parents
        self.tier = tier
        var hasher = Hasher()
        hasher.combine(provider)
        let providerHash = hasher.finalize()
        self.providerHash = providerHash
        var keyHasher = Hasher()
        keyHasher.combine(providerHash)
        keyHasher.combine(scope)
        if !parents.isEmpty { keyHasher.combine(parents) }
        self.keyHash = keyHasher.finalize()
    }

    /// Two keys are equal when their providers, scopes and parents are equal (their tiers are
    /// not compared).
    @inlinable
    public static func == (lhs: PolicyKey, rhs: PolicyKey) -> Bool {
        lhs.keyHash == rhs.keyHash && lhs.provider == rhs.provider && lhs.scope == rhs.scope && lhs.parents == rhs.parents
    }

    /// Feeds the hash computed at creation.
    @inlinable
    public func hash(into hasher: inout Hasher) {
        hasher.combine(keyHash)
    }

    /// The same key in `tier` (or with no tier named): its identity, and so its counters, unchanged.
    public func inTier(_ tier: String?) -> PolicyKey {
        PolicyKey(provider: provider, scope: scope, within: parents, tier: tier)
    }

    /// A readable form such as `openai/user:u-42`, or `openai/org:acme/user:u-42` with parents.
    public var description: String {
        parents.isEmpty ? "\(provider)/\(scope)" : "\(provider)/" + (parents + [scope]).map(\.description).joined(separator: "/")
    }

    /// The levels a provider with per-scope limits counts this key in, outermost first after
    /// the account: each parent, then the scope (`.global` is the account itself).
    var levels: [PolicyScope] { scope == .global ? parents : parents + [scope] }
}

/// A key in the gate's hash tables: it hands the hash computed once at the key's creation (a
/// seeded SipHash) straight to the table, so a lookup hashes nothing.
struct HashedKey: Hashable {
    let key: PolicyKey

    @inline(__always) init(_ key: PolicyKey) { self.key = key }

    static func == (lhs: HashedKey, rhs: HashedKey) -> Bool { lhs.key == rhs.key }
    func hash(into hasher: inout Hasher) { hasher.combine(key.keyHash) }
    func _rawHashValue(seed: Int) -> Int { key.keyHash ^ seed }
}
