/// Where a shared provider's counters live, so that many processes count against one cap.
///
/// The gate keeps every rule: which caps apply now (schedules included), the FIFO queue of a
/// key in this process, maximum waits, cancellation, `retryAfter`, the failure policy. A store
/// only keeps the counters and answers one question atomically: *record one request of
/// `tokens` in every capped window and take a concurrency slot, if all of that fits*. Its
/// windows are counted exactly as the in-process gate counts them: a window of length `W` is
/// 60 buckets of `W/60` plus the one being filled, a call lands in bucket `⌊t / (W/60)⌋` of the
/// store's clock, and is counted until that bucket leaves the ring (so nobody over-admits,
/// whatever the hosts' clocks say).
///
/// When a window refuses, the store returns its live buckets and the gate works out, with the
/// same code as in-process, which cap binds and when the call would fit.
///
/// `PolicyGatePostgres` provides one (trait `Postgres`). Implementations must be safe to call
/// concurrently.
public protocol PolicyQuotaStore: AnyObject, Sendable {
    /// One atomic admission attempt, in one round trip where the store allows.
    func admit(_ request: PolicyStoreRequest) async throws -> PolicyStoreDecision

    /// Replaces the token count of an admitted call by `tokens` in every window still holding
    /// it. Must be idempotent: the gate retries it after transient errors.
    func commit(_ lease: PolicyStoreLease, tokens: Int) async throws

    /// Gives back the call's concurrency slot. Idempotent, like ``commit(_:tokens:)``.
    func release(_ lease: PolicyStoreLease) async throws

    /// Called once by the gate: the store calls `onChange` when a key may have room again
    /// because some process released a slot or committed fewer tokens. The argument is the
    /// key's ``PolicyStoreRequest/keyName``, or `nil` when anything may have changed (the
    /// store reconnected and may have missed news).
    func observeChanges(_ onChange: @escaping @Sendable (String?) -> Void)

    /// The longest one store call may take before the gate gives up on it and applies the
    /// provider's failure policy (a caller's maximum wait shortens it further).
    var callTimeout: Duration { get }

    /// How long the gate keeps retrying a commit or a release that failed. After that, a
    /// commit is dropped (the estimate stands) and a release is left to the slot's lease.
    var writeRetryPeriod: Duration { get }

    /// Stops keeping `lease` alive: no permit owns it any more (its permit was released, or
    /// the caller it was admitted for had left). Called before ``release(_:)`` is written, so
    /// that a release that keeps failing leaves the slot to expire instead of holding it.
    /// Must be cheap and must not block: the gate calls it from a permit's release.
    func endRenewal(of lease: PolicyStoreLease)

    /// Called once by the gate: the store calls `onLoss` for each lease it held for a permit
    /// that it can no longer vouch for (it expired, or no renewal succeeded in time). The gate
    /// reports it as ``PolicyTelemetry/didLoseLease(_:)``.
    func observeLeaseLoss(_ onLoss: @escaping @Sendable (PolicyLeaseLossEvent) -> Void)

    /// Gives back the call's slot and, when `tokens` is not `nil`, first sets its token count
    /// as ``commit(_:tokens:)`` would: a permit's last commit travels with its release, so that
    /// a store can write both at once. Idempotent, like both.
    func release(_ lease: PolicyStoreLease, committing tokens: Int?) async throws

    /// How long the gate may hold a permit's commit back, waiting for its release to carry it
    /// (``release(_:committing:)``); after that it is written alone. Zero: written at once.
    var commitHold: Duration { get }

    /// A caller of this process was refused for `keyName` and waits for news of it (until the
    /// matching ``endWaiting(for:)``). A store that announces changes only to processes with
    /// waiters keeps announcing this key to this process meanwhile. Must not block.
    func beginWaiting(for keyName: String)

    /// The caller that called ``beginWaiting(for:)`` stopped waiting (admitted, refused for
    /// good, timed out or cancelled). Must not block.
    func endWaiting(for keyName: String)

    /// Called once by the gate: the store calls `onFailure` when its own background work
    /// (cleanup, waiter registrations) fails. The gate reports it as
    /// ``PolicyTelemetry/didFailStore(_:)``.
    func observeFailures(_ onFailure: @escaping @Sendable (PolicyStoreFailureEvent) -> Void)

    /// One atomic admission of a call at every level of a nested chain (the account, each
    /// parent, the key), in one round trip: recorded in all of them or in none. The lease it
    /// returns is committed and released like a single key's, and the store then corrects
    /// every level. Its changes are announced per level: ``observeChanges(_:)`` gets the
    /// ``PolicyStoreRequest/keyName`` of each level that may have room again. The default
    /// implementation throws ``PolicyStoreRequestError`` (see ``supportsChains``).
    func admitChain(_ request: PolicyStoreChainRequest) async throws -> PolicyStoreChainDecision

    /// Whether the store implements ``admitChain(_:)``; a gate refuses nested limits for a
    /// provider kept in a store without it.
    var supportsChains: Bool { get }
}

extension PolicyQuotaStore {
    /// Does nothing: a store without leases to renew.
    public func endRenewal(of lease: PolicyStoreLease) {}
    /// Does nothing: a store whose slots cannot be lost.
    public func observeLeaseLoss(_ onLoss: @escaping @Sendable (PolicyLeaseLossEvent) -> Void) {}
    /// ``commit(_:tokens:)`` (when `tokens` is not `nil`), then ``release(_:)``.
    public func release(_ lease: PolicyStoreLease, committing tokens: Int?) async throws {
        if let tokens { try await commit(lease, tokens: tokens) }
        try await release(lease)
    }
    /// Zero: commits are written at once.
    public var commitHold: Duration { .zero }
    /// Does nothing: a store that announces every change.
    public func beginWaiting(for keyName: String) {}
    /// Does nothing.
    public func endWaiting(for keyName: String) {}
    /// Does nothing: a store without background work of its own.
    public func observeFailures(_ onFailure: @escaping @Sendable (PolicyStoreFailureEvent) -> Void) {}
}

/// A store's refusal of a request it cannot record as given (a value out of its range, say),
/// as opposed to a failure to answer. The gate never applies the failure policy to it: the
/// caller gets ``PolicyError/Code/invalidArgument`` even under `fail_open`, so that a request
/// the store cannot count is never admitted uncounted.
public struct PolicyStoreRequestError: Error, Hashable, CustomStringConvertible {
    /// What the store could not record, without secrets.
    public let message: String

    /// Creates the error (stores do).
    public init(_ message: String) { self.message = message }

    /// The message.
    public var description: String { message }
}

/// One admission attempt against a store: the key, the call and the caps in force now.
public struct PolicyStoreRequest: Sendable, Hashable {
    /// The key, for readouts.
    public let key: PolicyKey
    /// The key's stable name in the store (one string per key, the same in every process):
    /// ``PolicyKey/storeName``, a fixed-size digest whatever the key's length or characters.
    public let keyName: String
    /// The key as people read it, for the store's readouts: ``PolicyKey/storeLabel``.
    public var keyLabel: String { key.storeLabel }
    /// The call's estimated tokens.
    public let tokens: Int
    /// Request caps per window (indexed by a ``PolicyWindow``'s raw value); `nil` when not capped.
    public let requestCaps: [Int?]
    /// Token caps per window; `nil` when not capped.
    public let tokenCaps: [Int?]
    /// The concurrency cap; `nil` when not capped.
    public let maxConcurrent: Int?
    /// How long the caller still waits for this answer; `nil` for no limit but the store's
    /// own. A store should give up waiting (for a lock, say) by then, so that an admission
    /// its caller left rarely commits; the gate gives back any that still does.
    public let maximumWait: Duration?

    /// Creates a request (the gate does; store tests may too).
    public init(
        key: PolicyKey, tokens: Int, requestCaps: [Int?], tokenCaps: [Int?], maxConcurrent: Int?,
        maximumWait: Duration? = nil
    ) {
        self.init(
            key: key, keyName: key.storeName, tokens: tokens, requestCaps: requestCaps, tokenCaps: tokenCaps,
            maxConcurrent: maxConcurrent, maximumWait: maximumWait)
    }

    /// A request naming the key `keyName` in the store (a level of a chain: ``PolicyKey/chainStoreName``).
    init(
        key: PolicyKey, keyName: String, tokens: Int, requestCaps: [Int?], tokenCaps: [Int?], maxConcurrent: Int?,
        maximumWait: Duration?
    ) {
        self.key = key
        self.keyName = keyName
        self.tokens = tokens
        self.requestCaps = requestCaps
        self.tokenCaps = tokenCaps
        self.maxConcurrent = maxConcurrent
        self.maximumWait = maximumWait
    }

    /// Whether any cap over `window` is set: only then is usage recorded in it.
    public func tracks(_ window: PolicyWindow) -> Bool {
        requestCaps[window.rawValue] != nil || tokenCaps[window.rawValue] != nil
    }
}

/// What a store answered to ``PolicyQuotaStore/admit(_:)``.
public enum PolicyStoreDecision: Sendable, Hashable {
    /// Recorded in every capped window, with a concurrency slot held until released.
    case admitted(PolicyStoreLease)
    /// Every concurrency slot is held. `retryAfter` is when the earliest lease expires if its
    /// holder stops renewing it (a release usually comes first, and is announced).
    case concurrencyFull(retryAfter: Duration?)
    /// A window cap would be exceeded; the usage of the capped windows at the store's `now`.
    case windowsFull(PolicyStoreUsage)
}

/// A call admitted by a store: what commit and release name.
///
/// The id alone may repeat (a database restored or failed over can hand out a sequence
/// number again); the nonce, random per admission, makes the pair unique and unguessable,
/// and a store checks both in every statement.
public struct PolicyStoreLease: Sendable, Hashable {
    /// The store's id of the admission.
    public let id: Int64
    /// When the store admitted it, in microseconds on the store's clock.
    public let admittedAt: Int64
    /// A random number drawn for this admission (0 for stores that do not use one).
    public let nonce: Int64

    /// Creates a lease (stores do).
    public init(id: Int64, admittedAt: Int64, nonce: Int64 = 0) {
        self.id = id
        self.admittedAt = admittedAt
        self.nonce = nonce
    }
}

/// The live buckets of a key's capped windows, as a store saw them when it refused a call.
public struct PolicyStoreUsage: Sendable, Hashable {
    /// The store's clock when it looked, in microseconds.
    public let now: Int64
    /// The non-empty live buckets (`index` is `⌊t / (W/60)⌋` with `t` in microseconds).
    public let buckets: [Bucket]

    /// One bucket of one window.
    public struct Bucket: Sendable, Hashable {
        /// Its window.
        public let window: PolicyWindow
        /// Its index on the store's clock.
        public let index: Int64
        /// The requests recorded in it.
        public let requests: Int64
        /// The tokens recorded in it.
        public let tokens: Int64

        /// Creates a bucket (stores do).
        public init(window: PolicyWindow, index: Int64, requests: Int64, tokens: Int64) {
            self.window = window
            self.index = index
            self.requests = requests
            self.tokens = tokens
        }
    }

    /// Creates a usage snapshot (stores do).
    public init(now: Int64, buckets: [Bucket]) {
        self.now = now
        self.buckets = buckets
    }
}

/// Where a provider's counters are kept, and what the gate does when that store fails.
public struct PolicyStorage: Sendable, Hashable, CustomStringConvertible {
    /// The store's name: `memory` (in this process) or `postgres`.
    public var store: Store
    /// What happens to calls when the store cannot be reached in time.
    public var failurePolicy: FailurePolicy

    /// Creates a storage choice.
    public init(store: Store, failurePolicy: FailurePolicy = .failClosed) {
        self.store = store
        self.failurePolicy = failurePolicy
    }

    /// Counters in this process: the default.
    public static let memory = PolicyStorage(store: .memory)

    /// A store's name, as written in configuration files.
    public struct Store: Hashable, Sendable, CustomStringConvertible {
        /// The name (`memory`, `postgres`).
        public let name: String
        /// Creates a store name.
        public init(_ name: String) { self.name = name }
        /// In this process.
        public static let memory = Store("memory")
        /// Shared through PostgreSQL (`PolicyGatePostgres`, trait `Postgres`).
        public static let postgres = Store("postgres")
        /// The name.
        public var description: String { name }
    }

    /// What a call gets when its provider's store fails (an error or no answer in time).
    public enum FailurePolicy: String, Sendable, Hashable, Codable, CaseIterable {
        /// Admit the call, untracked, and report the store's error to telemetry: availability
        /// over the cap.
        case failOpen = "fail_open"
        /// Throw ``PolicyError/Code/storeUnavailable``: the cap over availability (the default).
        case failClosed = "fail_closed"
    }

    /// `postgres (fail_closed)`.
    public var description: String { "\(store) (\(failurePolicy.rawValue))" }
}

extension PolicyKey {
    /// The key's name in a shared store: the SHA-256 of its ``storeLabel`` in hexadecimal
    /// (64 characters), the same in every process. Of fixed size whatever the key, so any key
    /// can be stored, indexed and announced (a NUL or a 10 KB identifier included).
    public var storeName: String { SHA256.hexDigest(of: unambiguousName.utf8) }

    /// The key as people read it in a store's readouts: `unambiguousName` with control
    /// characters replaced by `\u{FFFD}`, cut to ``storeLabelLimit`` characters (then ending
    /// in `…`). Not unique: ``storeName`` is what identifies the key.
    public var storeLabel: String {
        var label = String.UnicodeScalarView()
        for (index, scalar) in unambiguousName.unicodeScalars.enumerated() {
            if index == Self.storeLabelLimit {
                label.removeLast()
                label.append("…")
                break
            }
            label.append(scalar.properties.generalCategory == .control ? "\u{FFFD}" : scalar)
        }
        return String(label)
    }

    /// The key's name in a shared store as a level of a nested chain: ``storeName`` for a key
    /// without parents; otherwise the digest covers its parents too, since user `u1` of `acme`
    /// and user `u1` of another org are different levels. (A flat provider ignores parents, so
    /// its keys keep ``storeName``.)
    public var chainStoreName: String {
        guard !parents.isEmpty else { return storeName }
        // Every part length-prefixed, after a prefix no ``unambiguousName`` starts with.
        var name = "n:\(provider.utf8.count):\(provider)"
        for part in (parents + [scope]).map(Self.unambiguous) { name += "/\(part.utf8.count):\(part)" }
        return SHA256.hexDigest(of: name.utf8)
    }

    /// The most characters (Unicode scalars) of ``storeLabel``.
    public static let storeLabelLimit = 200

    /// Provider, scope and identifier in one string, unambiguous (lengths prefix the
    /// free-form parts): what ``storeName`` digests.
    var unambiguousName: String {
        "\(provider.utf8.count):\(provider)/\(Self.unambiguous(scope))"
    }

    /// A scope in one string (its kind, then its identifier).
    static func unambiguous(_ scope: PolicyScope) -> String {
        switch scope {
        case .global: "g"
        case .user(let id): "u:\(id)"
        case .org(let id): "o:\(id)"
        case .project(let id): "p:\(id)"
        case .custom(let kind, let id): "c\(kind.utf8.count):\(kind):\(id)"
        }
    }
}
