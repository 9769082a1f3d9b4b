import Foundation
import Synchronization

/// The gate: per-provider request, token and concurrency caps, counted per ``PolicyKey``.
///
/// ```swift
/// let gate = try PolicyService(limits: [
///     "openai": PolicyLimits(requestsPerMinute: 500, tokensPerMinute: 200_000, maxConcurrent: 16),
/// ])
/// var permit = try await gate.acquire(PolicyKey(provider: "openai", scope: .user("u-42")),
///                                     estimatedTokens: 1_200)
/// ```
///
/// ## Guarantees
/// - **Never over-admits.** A call is admitted only if, in every capped sliding window (the
///   60 s, hour and 24 h ending now), the requests and tokens already there plus its own fit
///   under the cap. Windows are counted in 60 buckets each, conservatively: a call may be
///   admitted later than an exact sliding log would admit it, by at most 1/60 of the window.
/// - **FIFO per key.** Waiters are served in arrival order: first a concurrency slot, then,
///   holding it, window capacity. ``tryAcquire(_:estimatedTokens:model:priority:)`` does not jump the queue.
/// - **Cancellation-safe.** A waiter that is cancelled or times out has recorded nothing and
///   holds no slot.
/// - **Caps hold while limits change.** An admission fits the caps in force at its instant.
///   Permits admitted before a change run to completion; after it nobody is admitted while the
///   permits in flight reach the new concurrency cap, and waiters give back slots beyond it.
/// - **Bounded memory.** A key's memory is fixed (≈ 0.8 KB per capped window length), and keys
///   with nothing left in any window, in flight or waiting are dropped as the gate is used.
///
/// The actor owns configuration changes; acquiring, committing and releasing run synchronously
/// on the caller's executor under short per-shard locks and never hop onto the actor.
public actor PolicyService {
    nonisolated let core: GateCore

    /// Creates a gate on the continuous clock.
    /// - Parameters:
    ///   - limits: Caps per provider name. Providers not listed, or listed with no caps, are
    ///     not gated: acquiring for them returns an inert permit at once.
    ///   - telemetry: Receives every acquire, commit, reject and release, if given.
    /// - Throws: ``PolicyError`` (``PolicyError/Code/invalidLimits``) if a cap is not positive.
    public init(limits: [String: PolicyLimits] = [:], telemetry: (any PolicyTelemetry)? = nil) throws(PolicyError) {
        try self.init(limits: limits, clock: ContinuousClock(), telemetry: telemetry)
    }

    /// Creates a gate whose windows and waits run on `clock`, such as a manual clock in tests
    /// or a virtual one in a simulation.
    /// - Parameters:
    ///   - limits: Caps per provider name.
    ///   - clock: The clock every window and wait is measured on.
    ///   - telemetry: Receives every acquire, commit, reject and release, if given.
    /// - Throws: ``PolicyError`` (``PolicyError/Code/invalidLimits``) if a cap is not positive.
    public init<C: Clock>(limits: [String: PolicyLimits] = [:], clock: C, telemetry: (any PolicyTelemetry)? = nil)
        throws(PolicyError) where C.Duration == Duration
    {
        try self.init(limits: limits, schedules: [:], clock: clock, startDate: Date(), telemetry: telemetry)
    }

    /// The designated initialiser: limits and schedules per provider, the clock, and the
    /// wall-clock date at the clock's current instant (what schedules are read against).
    init<C: Clock>(
        limits: [String: PolicyLimits], schedules: [String: PolicySchedule], storage: [String: PolicyStorage] = [:],
        store: (any PolicyQuotaStore)? = nil, clock: C, startDate: Date, telemetry: (any PolicyTelemetry)?,
        feedbackScopes: [String: PolicyFeedbackScope] = [:], adaptive: Set<String> = [],
        scopeLimits: [String: [String: PolicyLimits]] = [:], modelGroups: [String: [String: PolicyModelGroup]] = [:],
        tiers: [String: ProviderTiers] = [:]
    ) throws(PolicyError) where C.Duration == Duration {
        try Self.validate(limits: limits, schedules: schedules)
        try Self.validate(tiers: tiers, storage: storage, scopeLimits: scopeLimits, modelGroups: modelGroups, schedules: schedules)
        try Self.validate(storage: storage, store: store)
        try Self.validate(split: limits, schedules: schedules, storage: storage)
        try Self.validate(reserve: limits, storage: storage)
        try Self.validate(adaptive: adaptive, feedbackScopes: feedbackScopes)
        try Self.validate(scopeLimits: scopeLimits, storage: storage, limits: limits, store: store)
        try Self.validate(modelGroups: modelGroups, storage: storage, limits: limits, feedbackScopes: feedbackScopes)
        core = GateCore(
            limits: limits, schedules: schedules, storage: storage, store: store, time: makeTimeSource(clock),
            startDate: startDate, telemetry: telemetry, feedbackScopes: feedbackScopes, adaptive: adaptive,
            scopeLimits: scopeLimits, modelGroups: modelGroups, tiers: tiers)
    }

    /// Creates a gate whose providers' limits also count per model group (see
    /// ``PolicyModelGroup``), with nested limits if `scopeLimits` has any, on `clock`.
    /// - Parameters:
    ///   - limits: The caps per provider name: per key, or for the whole account when the
    ///     provider has `scopeLimits`.
    ///   - scopeLimits: Caps per provider and scope kind (see ``PolicyConfiguration/scopeLimits``).
    ///   - modelGroups: Model groups per provider, by group name.
    ///   - clock: The clock every window and wait is measured on.
    ///   - telemetry: Receives every acquire, commit, reject and release, if given.
    /// - Throws: ``PolicyError/Code/invalidLimits`` for a bad cap or pattern.
    public init<C: Clock>(
        limits: [String: PolicyLimits] = [:], scopeLimits: [String: [String: PolicyLimits]] = [:],
        modelGroups: [String: [String: PolicyModelGroup]], clock: C, telemetry: (any PolicyTelemetry)? = nil
    ) throws(PolicyError) where C.Duration == Duration {
        try self.init(
            limits: limits, schedules: [:], clock: clock, startDate: Date(), telemetry: telemetry, scopeLimits: scopeLimits,
            modelGroups: modelGroups)
    }

    static let groupsNotShared = "model groups are not supported for a provider kept in a shared store yet"
    static let groupsNotPerKeyFeedback =
        "model groups need feedback_scope = \"provider\": a provider with model groups reads provider feedback for the whole provider"
    static let reserveNotGrouped =
        "reserved_for_interactive is not supported with model groups yet: the reserve is not applied per group"

    /// Checks model groups: every pattern and cap valid, no pattern in two groups of a
    /// provider, no shared provider, no feedback kept per key, no reserve for interactive calls.
    static func validate(
        modelGroups: [String: [String: PolicyModelGroup]], storage: [String: PolicyStorage], limits: [String: PolicyLimits],
        feedbackScopes: [String: PolicyFeedbackScope]
    ) throws(PolicyError) {
        for (provider, groups) in modelGroups.sorted(by: { $0.key < $1.key }) where !groups.isEmpty {
            if let place = storage[provider], place.store != .memory {
                throw PolicyError(.invalidLimits, message: "provider '\(provider)': \(groupsNotShared)")
            }
            if feedbackScopes[provider] == .key {
                throw PolicyError(.invalidLimits, message: "provider '\(provider)': \(groupsNotPerKeyFeedback)")
            }
            if limits[provider]?.reservedForInteractive ?? 0 > 0 {
                throw PolicyError(.invalidLimits, message: "provider '\(provider)': \(reserveNotGrouped)")
            }
            var owners: [String: String] = [:]
            for (name, group) in groups.sorted(by: { $0.key < $1.key }) {
                guard !name.isEmpty else {
                    throw PolicyError(.invalidLimits, message: "provider '\(provider)': a model group needs a name")
                }
                try group.validate(provider: provider, group: name)
                for pattern in group.match {
                    if let other = owners[pattern] {
                        throw PolicyError(
                            .invalidLimits,
                            message:
                                "provider '\(provider)': '\(pattern)' is in model groups '\(other)' and '\(name)'; a model counts in one group"
                        )
                    }
                    owners[pattern] = name
                }
            }
        }
    }

    /// Creates a gate with nested limits: each provider's `limits` count once for its whole
    /// account, and `scopeLimits` give caps for every scope of a kind inside it (see
    /// ``PolicyConfiguration/scopeLimits``), on `clock`.
    /// - Parameters:
    ///   - limits: The account's caps per provider name.
    ///   - scopeLimits: Caps per provider and scope kind (`"org"`, `"user"`…).
    ///   - clock: The clock every window and wait is measured on.
    ///   - telemetry: Receives every acquire, commit, reject and release, if given.
    /// - Throws: ``PolicyError/Code/invalidLimits`` if a cap is not positive.
    public init<C: Clock>(
        limits: [String: PolicyLimits] = [:], scopeLimits: [String: [String: PolicyLimits]], clock: C,
        telemetry: (any PolicyTelemetry)? = nil
    ) throws(PolicyError) where C.Duration == Duration {
        try self.init(
            limits: limits, schedules: [:], clock: clock, startDate: Date(), telemetry: telemetry, scopeLimits: scopeLimits)
    }

    /// Creates a gate with nested limits on the continuous clock (see
    /// ``init(limits:scopeLimits:clock:telemetry:)``).
    public init(
        limits: [String: PolicyLimits] = [:], scopeLimits: [String: [String: PolicyLimits]],
        telemetry: (any PolicyTelemetry)? = nil
    ) throws(PolicyError) {
        try self.init(limits: limits, scopeLimits: scopeLimits, clock: ContinuousClock(), telemetry: telemetry)
    }

    static let nestedNotShared =
        "nested limits (per.<kind> tables) need a shared store that admits a chain at once (PolicyQuotaStore.supportsChains)"

    static let reserveNotNested =
        "reserved_for_interactive is not supported with nested limits (per.<kind> tables) yet: the reserve is not applied per level"

    /// Checks nested limits: every cap valid, no kind named `global`, no shared provider, no
    /// reserve for interactive calls.
    static func validate(
        scopeLimits: [String: [String: PolicyLimits]], storage: [String: PolicyStorage], limits: [String: PolicyLimits],
        store: (any PolicyQuotaStore)? = nil
    ) throws(PolicyError) {
        for (provider, kinds) in scopeLimits.sorted(by: { $0.key < $1.key }) {
            if let place = storage[provider], place.store != .memory, !kinds.isEmpty {
                // Without a store at all, validate(storage:store:) says so.
                if let store, !store.supportsChains {
                    throw PolicyError(.invalidLimits, message: "provider '\(provider)': \(nestedNotShared)")
                }
                for (kind, caps) in kinds.sorted(by: { $0.key < $1.key }) {
                    if let split = splitCap(caps, nil) {
                        throw PolicyError(
                            .invalidLimits, limit: split, message: "provider '\(provider)' level '\(kind)': \(splitCapsNotShared)")
                    }
                }
            }
            if !kinds.isEmpty,
                limits[provider]?.reservedForInteractive ?? 0 > 0 || kinds.values.contains(where: { $0.reservedForInteractive ?? 0 > 0 })
            {
                throw PolicyError(.invalidLimits, message: "provider '\(provider)': \(reserveNotNested)")
            }
            for (kind, caps) in kinds.sorted(by: { $0.key < $1.key }) {
                guard !kind.isEmpty, kind != "global", kind != PolicyModelGroup.scopeKind else {
                    throw PolicyError(
                        .invalidLimits, message: "provider '\(provider)': a nested level must name a kind of scope, got '\(kind)'")
                }
                try caps.validate(provider: "\(provider)' level '\(kind)")
                if !caps.prices.isEmpty {
                    throw PolicyError(
                        .invalidLimits,
                        message: "provider '\(provider)' level '\(kind)': prices are set on the provider only (every level counts at them)")
                }
            }
        }
    }

    /// Checks that no adaptive provider keeps its feedback per key: its adapted caps are shared
    /// by all its keys, and one account's 429 must not lower another account's caps.
    static func validate(adaptive: Set<String>, feedbackScopes: [String: PolicyFeedbackScope]) throws(PolicyError) {
        let perKey = adaptive.filter { feedbackScopes[$0] == .key }.sorted()
        guard perKey.isEmpty else {
            throw PolicyError(
                .invalidArgument,
                message: "provider(s) \(perKey.map { "'\($0)'" }.joined(separator: ", ")) are adaptive with feedback_scope = \"key\"; "
                    + "adaptive caps are shared by all keys of a provider, so they need feedback_scope = \"provider\"")
        }
    }

    /// Checks that every provider kept in a shared store has one to be kept in.
    static func validate(storage: [String: PolicyStorage], store: (any PolicyQuotaStore)?) throws(PolicyError) {
        guard store == nil else { return }
        let shared = storage.filter { $0.value.store != .memory }.keys.sorted()
        guard shared.isEmpty else {
            throw PolicyError(
                .invalidArgument,
                message: "provider(s) \(shared.map { "'\($0)'" }.joined(separator: ", ")) keep their counters in a shared store, "
                    + "but the gate was created without one (PolicyGatePostgres: PolicyService.connecting(configuration:))")
        }
    }

    /// Checks that no provider kept in a shared store sets input or output caps: the store's
    /// schema counts one token total per call.
    static func validate(
        split limits: [String: PolicyLimits], schedules: [String: PolicySchedule], storage: [String: PolicyStorage]
    ) throws(PolicyError) {
        for (provider, place) in storage.sorted(by: { $0.key < $1.key }) where place.store != .memory {
            if let kind = splitCap(limits[provider], schedules[provider]) {
                throw PolicyError(.invalidLimits, limit: kind, message: "provider '\(provider)': \(splitCapsNotShared)")
            }
        }
    }

    /// Checks that no provider kept in a shared store reserves capacity for interactive calls:
    /// the store's admission knows no classes yet (its callers in one process are still
    /// ordered by class).
    static func validate(
        reserve limits: [String: PolicyLimits], storage: [String: PolicyStorage]
    ) throws(PolicyError) {
        for (provider, place) in storage.sorted(by: { $0.key < $1.key }) where place.store != .memory {
            if limits[provider]?.reservePermille ?? 0 > 0 {
                throw PolicyError(.invalidLimits, message: "provider '\(provider)': \(reserveNotShared)")
            }
            if let cap = PolicyCostCap.allCases.first(where: { limits[provider]?[cost: $0] != nil }) {
                throw PolicyError(.invalidLimits, costCap: cap, message: "provider '\(provider)': \(costsNotShared)")
            }
        }
    }

    static let costsNotShared =
        "spend caps (cost_per_hour, cost_per_day, cost_per_month) are not supported for a provider kept in a shared store yet "
        + "(the store's schema counts requests and tokens only); keep the provider in memory"

    static let reserveNotShared =
        "reserved_for_interactive is not supported for a provider kept in a shared store yet (the store admits calls without classes); "
        + "remove it or keep the provider in memory"

    static let splitCapsNotShared =
        "input and output token caps are not supported for a provider kept in a shared store yet; use total-token caps there"

    /// The first input or output cap set by `limits` or an entry of `schedule`.
    static func splitCap(_ limits: PolicyLimits?, _ schedule: PolicySchedule?) -> PolicyLimitKind? {
        let all = [limits].compactMap { $0 } + (schedule?.entries.map(\.limits) ?? [])
        for caps in all {
            if let kind = PolicyLimitKind.allCases.first(where: { ($0.isInputTokenCap || $0.isOutputTokenCap) && caps[$0] != nil }) {
                return kind
            }
        }
        return nil
    }

    /// Checks caps and schedules before anything is changed.
    static func validate(limits: [String: PolicyLimits], schedules: [String: PolicySchedule]) throws(PolicyError) {
        for (provider, caps) in limits.sorted(by: { $0.key < $1.key }) { try caps.validate(provider: provider) }
        for (provider, schedule) in schedules.sorted(by: { $0.key < $1.key }) {
            for entry in schedule.entries { try entry.limits.validate(provider: "\(provider)' schedule entry '\(entry.name)") }
            do {
                try schedule.validate()
            } catch {
                throw PolicyError(.invalidLimits, message: "schedule of provider '\(provider)': \(error)")
            }
        }
    }

    deinit {
        core.shutdown()
    }

    // MARK: Acquiring

    /// Waits until `key` may make one call with `estimatedTokens`, and returns its permit.
    ///
    /// The caller queues behind earlier waiters of the same key: first for a concurrency slot,
    /// then, holding it, for room in every window. Cancelling the task removes it from the
    /// queue at once, having recorded nothing.
    ///
    /// When the provider also caps input or output tokens, an estimate given only as a total
    /// counts in full against both (each part is at most the total, so no cap is exceeded);
    /// ``acquire(_:estimatedInputTokens:estimatedOutputTokens:model:maxWait:priority:)`` counts each part.
    ///
    /// - Parameters:
    ///   - key: The provider and scope to count the call under.
    ///   - estimatedTokens: The pre-flight token estimate, replaced later by
    ///     ``PolicyPermit/commitTokens(_:)``. Required (positive) when the provider has token
    ///     caps; may be 0 otherwise.
    ///   - model: The model the call is for, such as `"claude-sonnet-4-5"`, when the provider's
    ///     limits depend on it (model groups, prices): the model names which of them apply.
    ///     `nil` (the default) counts the call under the provider's caps only.
    ///   - maxWait: The longest to wait; `nil` waits as long as it takes. If the call could
    ///     not be admitted within it even with nobody ahead, it fails at once.
    ///   - priority: Its class (``PolicyPriority``): a waiting interactive call is admitted
    ///     before any waiting batch call of the key; batch calls cannot take the provider's
    ///     ``PolicyLimits/reservedForInteractive`` share of the caps until they have waited
    ///     ``PolicyLimits/batchAging``. Interactive by default.
    /// - Returns: A permit that holds the call's slot until released.
    /// - Throws: ``PolicyError`` — ``PolicyError/Code/rateLimited`` when it cannot be admitted
    ///   within `maxWait`, ``PolicyError/Code/timedOut`` when the wait ran out,
    ///   ``PolicyError/Code/oversized`` when the estimate exceeds a token cap,
    ///   ``PolicyError/Code/invalidTokenCount``; or `CancellationError`.
    nonisolated(nonsending) public func acquire(
        _ key: PolicyKey, estimatedTokens: Int = 0, model: String? = nil, maxWait: Duration? = nil,
        priority: PolicyPriority = .interactive
    ) async throws -> PolicyPermit {
        try await acquire(key, estimate: .total(estimatedTokens), model: model, maxWait: maxWait, priority: priority)
    }

    /// Waits until `key` may make one call estimated at `estimatedInputTokens` in and
    /// `estimatedOutputTokens` out, and returns its permit.
    ///
    /// The input estimate counts against the input-token caps, the output estimate (usually
    /// the request's `max_tokens`) against the output-token caps, and their sum against the
    /// total-token caps. ``PolicyPermit/commitTokens(input:output:cacheReads:)`` replaces them
    /// with what the provider reports. Otherwise as ``acquire(_:estimatedTokens:model:maxWait:priority:)``.
    /// - Throws: As ``acquire(_:estimatedTokens:model:maxWait:priority:)``; ``PolicyError/Code/invalidTokenCount``
    ///   also when a part is 0 while a cap counts it.
    nonisolated(nonsending) public func acquire(
        _ key: PolicyKey, estimatedInputTokens: Int, estimatedOutputTokens: Int, model: String? = nil, maxWait: Duration? = nil,
        priority: PolicyPriority = .interactive
    ) async throws -> PolicyPermit {
        try await acquire(
            key, estimate: .split(input: estimatedInputTokens, output: estimatedOutputTokens), model: model, maxWait: maxWait,
            priority: priority)
    }

    @inline(__always)
    nonisolated(nonsending) func acquire(
        _ key: PolicyKey, estimate: Estimate, model: String? = nil, maxWait: Duration?, priority: PolicyPriority = .interactive
    ) async throws -> PolicyPermit {
        var pending: Pending?
        if let permit = try admitAtOnce(key, estimate: estimate, model: model, priority: priority, pending: &pending) { return permit }
        guard let waiting = pending else { throw Self.unreachable(key) }
        let deadline = maxWait.map { waiting.now.clampedAdding(max(0, $0.nanosecondsSaturating)) } ?? .max
        return try await acquireSlowly(key, estimate: estimate, model: model, priority: priority, pending: waiting, deadline: deadline)
    }

    /// Waits until `key` may make one call, or until `deadline` on the service's clock.
    ///
    /// Like ``acquire(_:estimatedTokens:model:maxWait:priority:)`` with the maximum wait given as an instant.
    /// - Throws: As ``acquire(_:estimatedTokens:model:maxWait:priority:)``, and ``PolicyError/Code/invalidArgument``
    ///   if `deadline` is an instant of another clock than the service's.
    nonisolated(nonsending) public func acquire<I: InstantProtocol>(
        _ key: PolicyKey, estimatedTokens: Int = 0, model: String? = nil, deadline: I, priority: PolicyPriority = .interactive
    ) async throws -> PolicyPermit where I.Duration == Duration {
        try await acquire(key, estimate: .total(estimatedTokens), model: model, deadline: deadline, priority: priority)
    }

    /// Waits until `key` may make one call estimated at `estimatedInputTokens` in and
    /// `estimatedOutputTokens` out, or until `deadline` on the service's clock.
    ///
    /// Like ``acquire(_:estimatedInputTokens:estimatedOutputTokens:model:maxWait:priority:)`` with the maximum
    /// wait given as an instant.
    nonisolated(nonsending) public func acquire<I: InstantProtocol>(
        _ key: PolicyKey, estimatedInputTokens: Int, estimatedOutputTokens: Int, model: String? = nil, deadline: I,
        priority: PolicyPriority = .interactive
    ) async throws -> PolicyPermit where I.Duration == Duration {
        try await acquire(
            key, estimate: .split(input: estimatedInputTokens, output: estimatedOutputTokens), model: model, deadline: deadline,
            priority: priority)
    }

    nonisolated(nonsending) func acquire<I: InstantProtocol>(
        _ key: PolicyKey, estimate: Estimate, model: String? = nil, deadline: I, priority: PolicyPriority = .interactive
    ) async throws -> PolicyPermit where I.Duration == Duration {
        var pending: Pending?
        if let permit = try admitAtOnce(key, estimate: estimate, model: model, priority: priority, pending: &pending) { return permit }
        guard let waiting = pending else { throw Self.unreachable(key) }
        guard let offset = core.environment.time.offset(of: deadline) else {
            throw core.reject(
                key, estimate.total,
                PolicyError(
                    .invalidArgument, key: key, message: "the deadline is an instant of another clock than the service's"),
                priority: priority)
        }
        return try await acquireSlowly(
            key, estimate: estimate, model: model, priority: priority, pending: waiting, deadline: offset == .max ? .max - 1 : offset)
    }

    /// Admits one call for `key` now or throws at once; never waits and never jumps the queue.
    ///
    /// - Throws: ``PolicyError/Code/rateLimited`` naming the cap that refused the call and,
    ///   unless it was the concurrency cap, the ``PolicyError/retryAfter`` after which the same
    ///   call succeeds if nothing else arrives. While other callers of the key are queued it is
    ///   refused with the limit the head of the queue waits for (its `retryAfter` is then a
    ///   lower bound). Also ``PolicyError/Code/oversized`` and ``PolicyError/Code/invalidTokenCount``.
    ///
    /// An interactive call is admitted past queued batch calls not yet promoted (it would be
    /// queued ahead of them). A batch call is checked against the caps less the provider's
    /// ``PolicyLimits/reservedForInteractive`` share; refused there, its error names the cap
    /// and says it is exhausted for batch calls.
    public nonisolated func tryAcquire(
        _ key: PolicyKey, estimatedTokens: Int = 0, model: String? = nil, priority: PolicyPriority = .interactive
    ) throws(PolicyError) -> PolicyPermit {
        try tryAcquire(key, estimate: .total(estimatedTokens), model: model, priority: priority)
    }

    /// Admits one call estimated at `estimatedInputTokens` in and `estimatedOutputTokens` out
    /// now, or throws at once: ``tryAcquire(_:estimatedTokens:model:priority:)`` with the estimate in parts.
    public nonisolated func tryAcquire(
        _ key: PolicyKey, estimatedInputTokens: Int, estimatedOutputTokens: Int, model: String? = nil,
        priority: PolicyPriority = .interactive
    ) throws(PolicyError) -> PolicyPermit {
        try tryAcquire(
            key, estimate: .split(input: estimatedInputTokens, output: estimatedOutputTokens), model: model, priority: priority)
    }

    @inline(__always)
    nonisolated func tryAcquire(
        _ key: PolicyKey, estimate: Estimate, model: String? = nil, priority: PolicyPriority = .interactive
    ) throws(PolicyError) -> PolicyPermit {
        var pending: Pending?
        if let permit = try admitAtOnce(key, estimate: estimate, model: model, priority: priority, pending: &pending) { return permit }
        guard let waiting = pending else { throw Self.unreachable(key) }
        if waiting.isShared {
            throw core.reject(
                key, estimate.total,
                PolicyError(
                    .invalidArgument, key: key,
                    message: "tryAcquire cannot ask a shared store without waiting; use acquire(_:estimatedTokens:maxWait: .zero)"),
                priority: priority)
        }
        var error =
            waiting.rejection.exceededCap != nil
            ? AdmissionRules.oversizedError(waiting.rejection, tokens: waiting.tokens)
            : AdmissionRules.error(.rateLimited, waiting.rejection, now: waiting.now, "not admitted now")
        if waiting.nestedLevel == Pending.groupLevel, let model,
            let level = core.chainGate(for: key, now: waiting.now).groupLevel(of: key, model: model)
        {
            error = error.at(level: level)
        } else if waiting.nestedLevel >= 0 {
            error = error.at(level: key.level(Int(waiting.nestedLevel)))
        }
        throw core.reject(key, estimate.total, core.naming(error.with(key: key)), priority: priority)
    }

    /// A pre-flight estimate as the caller gave it.
    enum Estimate: Sendable {
        case total(Int)
        case split(input: Int, output: Int)

        /// The total, as telemetry reports it (saturating: an invalid part is refused anyway).
        var total: Int {
            switch self {
            case .total(let tokens): tokens
            case .split(let input, let output):
                input.addingReportingOverflow(output).overflow ? .max : input + output
            }
        }

        /// The parts, when the caller gave them.
        var parts: (input: Int, output: Int)? {
            if case .split(let input, let output) = self { return (input, output) }
            return nil
        }

        /// The estimate as the machine counts it, checked against `limits`
        /// (``AdmissionRules``): the refusal is not reported.
        func checked(against limits: CompiledLimits, key: PolicyKey) throws(PolicyError) -> TokenCounts {
            switch self {
            case .total(let tokens): try AdmissionRules.checkedEstimate(tokens, limits: limits, key: key)
            case .split(let input, let output): try AdmissionRules.checkedEstimate(input: input, output: output, limits: limits, key: key)
            }
        }
    }

    /// What a call that could not be admitted at once carries into its wait.
    struct Pending {
        let limits: CompiledLimits
        let tokens: TokenCounts
        let now: Int64
        let rejection: Rejection
        /// The provider's counters are in the shared store: nothing was asked yet.
        var isShared = false
        /// For a provider with nested limits: the depth of the level that refused (0 the
        /// account); -1 otherwise. A plain integer: `Pending` is built on every call, and a
        /// reference or a key in it made that cost a value witness each time.
        var nestedLevel: Int8 = -1
        /// ``nestedLevel`` when the model's group refused the call.
        static var groupLevel: Int { Int(Int8.max) }
        /// The model's prices, for a provider with spend caps.
        var price = CostPrice.zero
    }

    /// The synchronous fast path shared by every way of acquiring: an inert permit for a
    /// provider without caps, a permit if the call fits now, or `nil` with `pending` set.
    @inline(__always)
    nonisolated func admitAtOnce(
        _ key: PolicyKey, estimate: Estimate, model: String? = nil, priority: PolicyPriority = .interactive,
        pending: inout Pending?
    ) throws(PolicyError) -> PolicyPermit? {
        if core.environment.lifecycle.isStopping { throw core.reject(key, estimate.total, GateLifecycle.refusal(key)) }
        // A provider without caps costs a lookup, not a clock read.
        guard let stored = core.compiledLimits(for: key) else { return try Self.inertPermit(estimate) }
        let now = core.environment.time.now()
        guard var limits = core.limits(stored, for: key, at: now) else { return try Self.inertPermit(estimate) }
        // Tiers and overrides: the key's own set, found in the key (flat, in memory, without
        // spend caps; ``CompiledLimits/isTierVerified``), else looked up out of line.
        let tiered = limits.isTiered
        if tiered {
            if !limits.isRouted && !limits.hasCostCaps,
                let (storage, result, tokens) = core.admitVerifiedTier(
                    key, estimate: estimate, generation: limits.generation, now: now, priority: priority)
            {
                switch result {
                case .success(let admission):
                    return admitted(
                        key, estimate: estimate, storage: storage, admission: admission, tokens: tokens, priority: priority, costed: false)
                case .failure(let rejection):
                    let own = try core.tieredLimits(limits, for: key, estimate: estimate.total)
                    pending = Pending(limits: own, tokens: tokens, now: now, rejection: rejection)
                    return nil
                }
            }
            limits = try core.tieredLimits(limits, for: key, estimate: estimate.total)
        }
        var tokens: TokenCounts
        switch estimate {
        case .total(let estimatedTokens):
            tokens = try core.validate(estimate: estimatedTokens, limits: limits, key: key, priority: priority)
        case .split(let input, let output):
            tokens = try core.validate(input: input, output: output, limits: limits, key: key, priority: priority)
        }
        // Spend caps: the call's cost reserved from its estimate and its model's price, out of
        // line and returned by value (passing the counts or `pending` by address to a call out
        // of line cost the path without spend caps ≈ 60 instructions).
        var price = CostPrice.zero
        if limits.hasCostCaps {
            (tokens, price) = try core.priced(key, model: model, tokens: tokens, split: estimate.parts != nil, priority: priority)
        }
        if limits.isRouted {
            // A nested provider's tree, out of line: the flat path below stays as it was.
            if limits.isNested && !limits.isShared {
                return try admitNested(
                    key, estimate: estimate, model: model, tokens: tokens, limits: limits, now: now, pending: &pending,
                    priority: priority, price: price)
            }
            // The store is asked on the asynchronous path, in the key's turn (a nested
            // provider's whole chain at once).
            pending = Pending(limits: limits, tokens: tokens, now: now, rejection: Rejection(kind: nil, retryAt: nil), isShared: true)
            return nil
        }
        let (storage, result) = core.admitNow(key, tokens: tokens, limits: limits, now: now, priority: priority)
        // The key's tier looked up: its next calls find it in the key.
        if tiered { core.verifyTier(of: storage, for: key, limits: limits) }
        switch result {
        case .success(let admission):
            return admitted(
                key, estimate: estimate, storage: storage, admission: admission, tokens: tokens, priority: priority,
                costed: limits.hasCostCaps, price: price)
        case .failure(let rejection):
            pending = Pending(limits: limits, tokens: tokens, now: now, rejection: rejection, price: price)
            return nil
        }
    }

    /// The permit of a call admitted at once, reported to telemetry.
    @inline(__always)
    nonisolated private func admitted(
        _ key: PolicyKey, estimate: Estimate, storage: KeyStorage, admission: Admission, tokens: TokenCounts,
        priority: PolicyPriority, costed: Bool, price: CostPrice = .zero
    ) -> PolicyPermit {
        if core.environment.hasTelemetry {
            reportAdmission(
                key, estimate: estimate, storage: storage, admission: admission, tokens: tokens, waited: 0, priority: priority,
                costed: costed)
        }
        return PolicyPermit(storage: storage, admission: admission, estimated: tokens, price: price)
    }

    nonisolated(nonsending) func acquireSlowly(
        _ key: PolicyKey, estimate: Estimate, model: String? = nil, priority: PolicyPriority = .interactive, pending: Pending,
        deadline: Int64
    ) async throws -> PolicyPermit {
        if pending.isShared {
            return try await acquireShared(key, estimate: estimate, model: model, priority: priority, pending: pending, deadline: deadline)
        }
        do {
            if pending.nestedLevel >= 0 {
                let gate = core.chainGate(for: key, now: pending.now)
                let tiers = pending.limits.hasLevelTiers ? try core.levelTiers(for: key, reporting: false) : nil
                let grant = try await core.wait(
                    in: gate, key, model: model, tokens: pending.tokens, limits: pending.limits, deadline: deadline, priority: priority,
                    tiers: tiers)
                if core.environment.hasTelemetry {
                    reportChainAdmission(
                        key, estimate: estimate, gate: gate, admission: grant.admission, tokens: pending.tokens,
                        waited: grant.admission.time - pending.now, priority: priority, costed: pending.limits.hasCostCaps)
                }
                return PolicyPermit(
                    chain: gate, leaf: grant.leaf, admission: grant.admission, estimated: pending.tokens, price: pending.price)
            }
            let grant = try await core.wait(key, tokens: pending.tokens, limits: pending.limits, deadline: deadline, priority: priority)
            if core.environment.hasTelemetry {
                reportAdmission(
                    key, estimate: estimate, storage: grant.storage, admission: grant.admission, tokens: pending.tokens,
                    waited: grant.admission.time - pending.now, priority: priority, costed: pending.limits.hasCostCaps)
            }
            return PolicyPermit(storage: grant.storage, admission: grant.admission, estimated: pending.tokens, price: pending.price)
        } catch var error as PolicyError {
            error = core.naming(error)
            if core.environment.hasTelemetry {
                var event = PolicyRejectEvent(key: key, estimatedTokens: estimate.total, error: error)
                event.priority = priority
                core.environment.telemetry?.didReject(event)
            }
            throw error
        }
    }

    /// The shared store's path: the key's turn in this process, then the store.
    nonisolated(nonsending) func acquireShared(
        _ key: PolicyKey, estimate: Estimate, model: String?, priority: PolicyPriority, pending: Pending, deadline: Int64
    ) async throws -> PolicyPermit {
        guard let shared = core.shared else {
            // Unreachable: a shared provider is refused (invalidArgument) by a service without a store.
            throw core.reject(
                key, estimate.total,
                PolicyError(
                    .storeUnavailable, key: key, message: "the provider is shared but the gate has no store"), priority: priority)
        }
        let environment = core.environment
        let outcome: SharedGate.Outcome
        do {
            let aging = priority == .batch ? core.providers.read { $0.batchAging(ProviderName(of: key)) } : nil
            outcome = try await shared.acquire(key, tokens: pending.tokens.total, deadline: deadline, core: core, batchAging: aging)
        } catch var error as PolicyError {
            error = core.naming(error.key == nil ? error.with(key: key) : error)
            if environment.hasTelemetry {
                var event = PolicyRejectEvent(key: key, estimatedTokens: estimate.total, error: error)
                event.priority = priority
                environment.telemetry?.didReject(event)
            }
            throw error
        }
        switch outcome {
        case .admitted(let lease, let since):
            let now = environment.time.now()
            let sharedLease = SharedLease(key: key, lease: lease, gate: shared)
            if environment.hasTelemetry {
                environment.telemetry?.didAcquire(
                    PolicyAcquireEvent(key: key, estimate: estimate, waited: .nanoseconds(now - since), priority: priority))
                environment.holdWatch.admitted(.init(sharedLease), key: key, at: now, estimated: Int(pending.tokens.total))
            }
            return PolicyPermit(shared: sharedLease, admission: Admission(time: now, sequence: 0), estimated: pending.tokens)
        case .uncounted:
            return try Self.inertPermit(estimate)
        case .notShared:
            // A reload moved the provider into this process meanwhile. That path reports its
            // own refusals: outside the `do` above, so that none is reported twice.
            var again: Pending?
            if let permit = try admitAtOnce(key, estimate: estimate, model: model, priority: priority, pending: &again) { return permit }
            guard let again else { throw Self.unreachable(key) }
            return try await acquireSlowly(key, estimate: estimate, model: model, priority: priority, pending: again, deadline: deadline)
        }
    }

    /// Waits until every commit and release of shared permits made so far has been written to
    /// the store (or given up after the store's retry period). Returns at once without a store.
    ///
    /// Commits and releases of shared permits are written in the background, so that
    /// ``PolicyPermit/commitTokens(_:)`` and a permit's release never wait on the network; call
    /// this before shutting down, or in tests before reading the store.
    public nonisolated func flushStoreWrites() async {
        await core.shared?.flush()
    }

    /// `admitAtOnce` returns a permit or sets `pending`: an error rather than a trap if a
    /// change to it ever broke that.
    private static func unreachable(_ key: PolicyKey) -> PolicyError {
        PolicyError(.invalidArgument, key: key, message: "internal error: neither admitted nor pending")
    }

    private static func inertPermit(_ estimate: Estimate) throws(PolicyError) -> PolicyPermit {
        switch estimate {
        case .total(let estimatedTokens):
            guard AdmissionRules.isRecordable(estimatedTokens) else {
                throw AdmissionRules.unrecordable(estimatedTokens, "estimated tokens", key: nil)
            }
            return PolicyPermit(
                storage: nil, admission: Admission(time: 0, sequence: 0), estimated: TokenCounts(total: Int64(estimatedTokens)))
        case .split(let input, let output):
            guard AdmissionRules.isRecordable(input) else { throw AdmissionRules.unrecordable(input, "estimated input tokens", key: nil) }
            guard AdmissionRules.isRecordable(output) else {
                throw AdmissionRules.unrecordable(output, "estimated output tokens", key: nil)
            }
            return PolicyPermit(
                storage: nil, admission: Admission(time: 0, sequence: 0), estimated: TokenCounts(input: Int64(input), output: Int64(output))
            )
        }
    }

    // MARK: Provider feedback

    /// How long a 429 without a retry hint pauses the provider.
    public static let defaultThrottlePause: Duration = .seconds(1)

    /// Tells the gate what `key`'s provider said about its limits in a response's headers
    /// (see ``PolicyProviderFeedback`` for the headers understood).
    ///
    /// From then on, for every key of the provider, the gate admits no more requests or
    /// tokens than the provider said are left until each resets, and nothing while a
    /// `retry-after` runs. Feedback only ever tightens the configured caps, and expires at its
    /// reset; a newer report of a quantity replaces the older one. Values that cannot be
    /// believed are ignored and listed in the telemetry event
    /// (``PolicyTelemetry/didObserveFeedback(_:)``). A provider without caps is not gated, and
    /// its feedback is not kept.
    ///
    /// A permit's ``PolicyPermit/observe(headers:)-([String:String])`` does the same for its own key.
    public nonisolated func observe(headers: [String: String], for key: PolicyKey) {
        observe(headers: headers.map { ($0.key, $0.value) }, for: key)
    }

    /// Tells the gate what `key`'s provider said, from headers given as name and value pairs.
    public nonisolated func observe<S: Sequence>(headers: S, for key: PolicyKey) where S.Element == (String, String) {
        core.observe(headers: headers, for: key)
    }

    /// Tells the gate what `key`'s provider said, already read (from a response body, say).
    public nonisolated func observe(_ feedback: PolicyProviderFeedback, for key: PolicyKey) {
        core.observe(feedback, for: key, at: core.environment.time.now())
    }

    /// Tells the gate the provider refused a call of `key` (an HTTP 429): every key of the
    /// provider is paused until `retryAfter` from now (``defaultThrottlePause`` without one);
    /// waiters are woken at that instant. ``currentState(for:)`` shows the pause and its cause.
    public nonisolated func reportThrottled(_ key: PolicyKey, retryAfter: Duration? = nil) {
        core.reportThrottled(key, retryAfter: retryAfter)
    }

    // MARK: Configuration

    /// The limits configured for `provider`, or `nil` if it is not gated.
    public nonisolated func limits(for provider: String) -> PolicyLimits? {
        core.entry(for: provider)?.limits
    }

    /// Replaces the limits of `provider` at runtime, keeping the usage already recorded.
    ///
    /// Windows whose length stays capped keep their counts, so lowering a cap below what was
    /// used makes the next calls wait. A window length capped for the first time starts
    /// counting now. Waiters that fit the new limits are admitted at once; waiters whose
    /// estimate exceeds a new token cap fail with ``PolicyError/Code/oversized``. Permits in
    /// flight keep their slots; under a lower `maxConcurrent` nobody new is admitted until
    /// the permits in flight drop below it, and waiters holding slots beyond it give them back,
    /// keeping their place in the queue.
    /// - Parameters:
    ///   - limits: The new caps; `nil` or ``PolicyLimits/unlimited`` stops gating the provider
    ///     (everyone waiting is admitted; held permits still release normally).
    ///   - provider: The provider name.
    /// - Throws: ``PolicyError/Code/invalidLimits``; nothing changes then.
    public func setLimits(_ limits: PolicyLimits?, for provider: String) throws(PolicyError) {
        let limits = limits ?? .unlimited
        try limits.validate(provider: provider)
        let entry = core.entry(for: provider)
        try Self.validate(split: [provider: limits], schedules: [:], storage: [provider: entry?.storage ?? .memory])
        try Self.validate(reserve: [provider: limits], storage: [provider: entry?.storage ?? .memory])
        try Self.validate(scopeLimits: [provider: entry?.levels.kinds ?? [:]], storage: [:], limits: [provider: limits])
        try Self.validate(
            modelGroups: [provider: entry?.levels.groups ?? [:]], storage: [:], limits: [provider: limits], feedbackScopes: [:])
        var change = entry.map(ProviderChange.init(keeping:)) ?? ProviderChange()
        change.limits = limits
        swap([provider: change], replacingAll: false)
    }

    /// What a reload sets for one provider (`init(keeping:)`, in an extension so that the
    /// memberwise initialiser stays, starts from what a provider has).
    struct ProviderChange {
        var limits: PolicyLimits = .unlimited
        var schedule: PolicySchedule? = nil
        var storage: PolicyStorage = .memory
        var adaptive = false
        var scopes = ProviderLevels()
        var tiers = ProviderTiers()
    }

    /// Replaces the limits and schedules of the providers in `changes` at once (and, when
    /// `replacingAll`, stops gating every other provider). Acquirers see either the old table
    /// or the new one, never a mix. Unchanged providers keep their compiled limits and their
    /// keys are not touched; changed ones are re-limited key by key (waiters that now fit are
    /// admitted) and reported to telemetry. An adaptive provider that stays adaptive keeps its
    /// factor, applied to its new caps. Call only with validated limits and schedules.
    /// `recompiling` treats the providers in `changes` as changed even when they are not (a
    /// new tier resolver: their keys are handed the same sets under a new generation).
    func swap(_ changes: [String: ProviderChange], replacingAll: Bool, reporting: Bool = true, recompiling: Bool = false) {
        let now = core.environment.time.now()
        var changed: [GateCore.LimitsChange] = []
        core.providers.withLock { table in
            var names = Set(changes.keys)
            if replacingAll { names.formUnion(table.names.map(\.name)) }
            for provider in names.sorted() {
                let name = ProviderName(provider)
                let previous = table[name]
                let change = changes[provider] ?? ProviderChange()
                let (limits, schedule, storage, adaptive) = (change.limits, change.schedule, change.storage, change.adaptive)
                guard
                    recompiling && changes[provider] != nil || limits != (previous?.limits ?? .unlimited)
                        || schedule != previous?.schedule?.schedule
                        || storage != (previous?.storage ?? .memory) || adaptive != (previous?.adaptive != nil)
                        || change.scopes != (previous?.levels ?? ProviderLevels())
                        || change.tiers != (previous?.tiers ?? ProviderTiers())
                else { continue }
                let current =
                    limits.isUnlimited && schedule == nil && change.scopes.isEmpty && change.tiers.isEmpty
                    ? nil
                    : GateCore.entry(
                        limits, schedule, storage: storage, generation: core.nextGeneration(), now: now,
                        wallClock: core.wallClock, adaptive: adaptive ? previous?.adaptive ?? AdaptiveState() : nil,
                        scopes: change.scopes, tiers: change.tiers, provider: provider)
                table[name] = current
                changed.append(GateCore.LimitsChange(provider: provider, previous: previous, current: current, isReported: reporting))
            }
        }
        guard !changed.isEmpty else { return }
        core.armScheduleTimer()
        core.handOver(changed, cause: .configuration, now: now)
    }

    /// Forgets the usage recorded for `key` in every window. Permits in flight keep their
    /// slots; waiters that now fit are admitted.
    public func reset(_ key: PolicyKey) {
        let now = core.environment.time.now()
        if let gate = core.chains.withLock({ $0[ProviderName(of: key)] }) {
            gate.withMachine { machine in
                guard let leaf = machine.existingLeaf(for: key) else { return ((), .init()) }
                return ((), machine.reset(leaf, now: now))
            }
        }
        let shard = core.shard(for: key)
        let aftermath = shard.table.withLock { table in
            var aftermath = Aftermath()
            if let storage = table.lookup(key) {
                storage.settle(storage.machine.reset(now: now), into: &aftermath)
            }
            return aftermath
        }
        aftermath.run()
    }

    // MARK: Readouts

    /// A snapshot of `key`: usage per capped window, permits in flight, callers queued.
    public nonisolated func currentState(for key: PolicyKey) -> PolicyState {
        currentState(for: key, model: nil)
    }

    /// A snapshot of `key` as calls for `model` see it: ``currentState(for:)``, with the level
    /// of the model's group (``PolicyModelGroup``) in ``PolicyState/levels`` when it is in one.
    public nonisolated func currentState(for key: PolicyKey, model: String?) -> PolicyState {
        let now = core.environment.time.now()
        if let stored = core.compiledLimits(for: key) { _ = core.limits(stored, for: key, at: now) }  // applies a due transition
        let entry = core.entry(for: key.provider)
        var limits = entry?.effectiveLimits ?? .unlimited
        var tier: String?
        var hasScopeOverride = false
        if let entry, !entry.tiers.isEmpty {
            // The key's own caps: its override's, else its tier's (unknown tiers show the provider's).
            tier = key.tier ?? core.tierResolver.tier(for: key)
            hasScopeOverride = entry.tiers.overrides[key.scope] != nil
            limits = entry.tiers.limits(over: limits, scope: key.scope, tier: tier, entryTiers: entry.schedule?.entryTiers ?? [:]) ?? limits
        }
        let factor = entry?.adaptive?.factor(at: now) ?? AdaptiveState.full
        let enforced = limits.adapted(by: factor)
        let resolution = entry?.schedule?.resolution
        if let entry, entry.compiled.isNested { return nestedState(for: key, model: model, entry: entry, now: now) }
        struct Raw {
            var usage: [GateStateMachine<Void>.WindowUsage] = []
            var inFlight = 0, queued = 0, slotted = 0, batch = 0, promoted = 0
            var blockedBy: PolicyLimitKind?
            var nextExpiry: Int64?
            var spend: [(cap: PolicyCostCap, spent: Int64, limit: Int64, resetsAt: Int64?)] = []
            var blockedByCost: PolicyCostCap?
        }
        let raw: Raw? = core.shard(for: key).table.withLock { table in
            guard let storage = table.lookup(key) else { return nil }
            let usage = storage.machine.usage(now: now).map {
                GateStateMachine<Void>.WindowUsage(
                    window: $0.window, requests: $0.requests, tokens: $0.tokens, inputTokens: $0.inputTokens,
                    outputTokens: $0.outputTokens)
            }
            let blocker = storage.machine.blocker(tokens: 0, now: now)
            return Raw(
                usage: usage, inFlight: storage.machine.inFlight, queued: storage.machine.queued,
                slotted: storage.machine.slotted, batch: storage.machine.batchQueued, promoted: storage.machine.promotedBatch,
                blockedBy: blocker?.kind,
                nextExpiry: storage.machine.nextExpiry(), spend: storage.machine.spendUsage(now: now),
                blockedByCost: blocker?.costCap)
        }
        let windows = Self.readouts(enforced, raw?.usage ?? [])
        var state = PolicyState(
            key: key, limits: limits, windows: windows, inFlight: raw?.inFlight ?? 0, queued: raw?.queued ?? 0,
            waitingForCapacity: raw?.slotted ?? 0, blockedBy: raw?.blockedBy,
            scheduleEntry: resolution?.entry, isClosed: resolution?.isClosed ?? false,
            nextTransition: resolution?.validUntil,
            nextCapacityIn: raw?.nextExpiry.map { .nanoseconds(max(0, $0 - now)) })
        state.providerFeedback = core.existingFeedback(for: key)?.readout(at: now)
        state.tier = tier
        state.hasScopeOverride = hasScopeOverride
        state.queuedBatch = raw?.batch ?? 0
        state.promotedBatch = raw?.promoted ?? 0
        state.blockedByCost = raw?.blockedByCost
        if let raw {
            state.spend = raw.spend.map {
                PolicyState.Spend(
                    cap: $0.cap, spent: PolicyMoney(microUnits: $0.spent), limit: PolicyMoney(microUnits: $0.limit),
                    resetsAt: $0.resetsAt.map { core.wallClock.date(at: $0) })
            }
        } else if let costs = entry?.costs {
            // A key not seen yet (or forgotten when idle) has spent nothing.
            state.spend = PolicyCostCap.allCases.filter { costs.caps[$0.index] != .max }.map {
                PolicyState.Spend(cap: $0, spent: .zero, limit: PolicyMoney(microUnits: costs.caps[$0.index]), resetsAt: nil)
            }
        }
        if let adaptive = entry?.adaptive {
            let next = adaptive.nextStep(after: now)
            state.adaptive = PolicyState.Adaptive(
                factor: Double(factor) / 1_000, limits: enforced,
                nextIncreaseIn: next == .max ? nil : .nanoseconds(next - now))
        }
        return state
    }

    /// The keys the gate holds state for: anything in flight, queued or counted in a window.
    /// Idle keys are dropped on the way.
    public nonisolated func activeKeys() -> [PolicyKey] {
        let now = core.environment.time.now()
        var keys: [PolicyKey] = []
        for shard in core.shards {
            let (found, aftermath) = shard.table.withLock { table in
                var aftermath = Aftermath()
                table.sweepAll(now: now, aftermath: &aftermath)
                return (table.storages.map(\.key), aftermath)
            }
            aftermath.run()
            keys += found
        }
        for gate in core.chains.withLock({ Array($0.values) }) {
            keys += gate.withMachine { machine in (machine.activeKeys(now: now), .init()) }
        }
        return keys
    }

    /// How many keys the gate holds in memory now, idle ones not yet dropped included (for a
    /// provider with nested limits: every level's bucket below the account).
    public nonisolated var storedKeyCount: Int {
        core.shards.reduce(0) { sum, shard in sum + shard.table.withLock { $0.count } }
            + core.chains.withLock { $0.values.reduce(0) { sum, gate in sum + gate.lock.withLock { _ in gate.machine.bucketCount - 1 } } }
    }

    /// Drops every idle key now. The gate also does this gradually as it is used; call this
    /// from a maintenance task if traffic can stop entirely after a burst of many keys.
    /// - Returns: How many keys remain.
    @discardableResult
    public nonisolated func purgeIdleKeys() -> Int {
        activeKeys().count
    }
}

extension PolicyService.ProviderChange {
    /// Everything `entry` has, for a change of one part of it.
    init(keeping entry: ProviderEntry) {
        self.init(
            limits: entry.limits, schedule: entry.schedule?.schedule, storage: entry.storage, adaptive: entry.adaptive != nil,
            scopes: entry.levels, tiers: entry.tiers)
    }
}
