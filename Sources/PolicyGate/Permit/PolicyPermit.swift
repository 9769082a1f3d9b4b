/// The right to make one provider call, handed out by ``PolicyService/acquire(_:estimatedTokens:model:maxWait:priority:)``.
///
/// A permit holds a concurrency slot of its key from admission until it is released, which
/// happens exactly once: when the permit goes out of scope (its `deinit`) or when ``release()``
/// consumes it. Releasing wakes the next waiter synchronously, on the releasing thread.
///
/// Its call was recorded in every window with its estimated tokens. Once the provider has
/// answered, ``commitTokens(_:)`` replaces the estimate with the actual count in every window
/// still holding the call; if the actual count is higher, later callers wait for the overrun.
///
/// ```swift
/// var permit = try await gate.acquire(key, estimatedTokens: 1_200)
/// let reply = try await client.chat(request)
/// try permit.commitTokens(reply.usage.totalTokens)
/// // leaving scope releases the slot
/// ```
///
/// A permit is `~Copyable`: it cannot be duplicated, so it cannot be released twice. Move it
/// into a `Task` explicitly (`Task { [permit = consume permit] in … }`) if the call runs there.
/// Permits of providers without caps are *inert*: they track nothing and cost nothing.
public struct PolicyPermit: ~Copyable, Sendable {
    let storage: KeyStorage?
    /// For a provider kept in a shared store: where commits and the release go. Held with a
    /// retain taken in `init` and given back in `deinit` (the permit is `~Copyable`, so that
    /// happens exactly once): an `Unmanaged` is trivial to destroy, whereas a second optional
    /// class reference made every permit's destruction go through `Optional`'s value
    /// witnesses, ≈ 70 instructions per call for permits that never have one.
    let sharedLease: Unmanaged<SharedLease>?
    /// For a provider with nested limits: the tree the call was recorded in (held like
    /// `sharedLease`, for the same reason) and its innermost bucket there.
    let chainGate: Unmanaged<ChainGate>?
    let leaf: Int32
    /// Whether commits settle a cost (``price`` is the model's): beside `leaf`, in its padding,
    /// so that a commit without spend caps tests one byte.
    let isCosted: Bool
    let admission: Admission
    /// What the call counts for now: the estimate until a commit replaces it.
    private(set) var counted: TokenCounts
    /// The model's prices, for a provider with spend caps (``PolicyLimits/prices``): a commit
    /// settles the call's actual cost at them. Zero otherwise.
    let price: CostPrice

    /// The tokens estimated when acquiring (input plus output when estimated in parts).
    public let estimatedTokens: Int
    /// The tokens this call counts for now: the estimate until a commit replaces it.
    public var committedTokens: Int { Int(counted.total) }
    /// The tokens this call counts for against the provider's input-token caps. A count given
    /// only as a total (an estimate or a commit without parts) counts in full as input and as
    /// output, since each part is at most the total.
    public var countedInputTokens: Int { Int(counted.input) }
    /// The tokens this call counts for against the provider's output-token caps.
    public var countedOutputTokens: Int { Int(counted.output) }
    /// What this call counts for against the provider's spend caps: its estimated cost until a
    /// commit settles the actual cost (rounded up to the micro-unit). Zero for a provider
    /// without spend caps.
    public var countedCost: PolicyMoney { PolicyMoney(microUnits: counted.cost) }

    init(storage: KeyStorage?, admission: Admission, estimated: TokenCounts, price: CostPrice = .zero) {
        self.storage = storage
        self.sharedLease = nil
        self.chainGate = nil
        self.leaf = 0
        self.admission = admission
        self.estimatedTokens = Int(estimated.total)
        self.counted = estimated
        self.price = price
        self.isCosted = !price.isZero
    }

    init(shared: SharedLease, admission: Admission, estimated: TokenCounts, price: CostPrice = .zero) {
        self.storage = nil
        self.sharedLease = .passRetained(shared)
        self.chainGate = nil
        self.leaf = 0
        self.admission = admission
        self.estimatedTokens = Int(estimated.total)
        self.counted = estimated
        self.price = price
        self.isCosted = !price.isZero
    }

    init(chain: ChainGate, leaf: Int32, admission: Admission, estimated: TokenCounts, price: CostPrice = .zero) {
        self.storage = nil
        self.sharedLease = nil
        self.chainGate = .passRetained(chain)
        self.leaf = leaf
        self.admission = admission
        self.estimatedTokens = Int(estimated.total)
        self.counted = estimated
        self.price = price
        self.isCosted = !price.isZero
    }

    /// The shared lease, if any, without taking a reference.
    var shared: SharedLease? { sharedLease?.takeUnretainedValue() }

    /// The nested provider's tree, if any, without taking a reference.
    var chain: ChainGate? { chainGate?.takeUnretainedValue() }

    /// The gate's time and telemetry, or `nil` for an inert permit.
    private var environment: GateEnvironment? { storage?.environment ?? shared?.gate.environment ?? chain?.environment }

    /// The key this permit was acquired for, or `nil` for an inert permit.
    public var key: PolicyKey? { storage?.key ?? shared?.key ?? chain?.key(of: leaf) }

    /// Whether this permit tracks nothing: its provider has no caps, or its shared store
    /// failed and the provider fails open.
    public var isInert: Bool { storage == nil && sharedLease == nil && chainGate == nil }

    /// Replaces the token count of this call with `actual` in every window still holding it.
    ///
    /// Call it once the provider reported usage; call it again to replace the count again.
    /// A call whose provider request failed may commit 0.
    /// - Parameter actual: The tokens the call really used, `0...PolicyLimits.maximumTokenCount`.
    /// - Throws: ``PolicyError`` with code ``PolicyError/Code/invalidTokenCount`` if `actual` is
    ///   negative or too large; the permit and the windows are then unchanged.
    public mutating func commitTokens(_ actual: Int) throws(PolicyError) {
        guard AdmissionRules.isRecordable(actual) else { throw refuse(actual, "committed tokens") }
        var new = TokenCounts(total: Int64(actual))
        if isCosted { new.cost = price.cost(total: new.total) }
        guard let storage else {
            if let chain {
                let previous = counted
                try chain.commit(leaf: leaf, admission, from: previous, to: new)
                counted = new
                if chain.environment.hasTelemetry {
                    reportChainCommit(
                        PolicyCommitEvent(
                            key: chain.key(of: leaf), estimatedTokens: estimatedTokens, previousTokens: Int(previous.total),
                            actualTokens: actual),
                        chain, previous: previous)
                }
            } else if let shared {
                shared.commit(tokens: actual, estimated: estimatedTokens, previous: committedTokens)
            }
            counted = new
            return
        }
        let previous = counted
        try storage.commit(admission, from: previous, to: new)
        counted = new
        if storage.environment.hasTelemetry {
            reportCommit(
                PolicyCommitEvent(
                    key: storage.key, estimatedTokens: estimatedTokens, previousTokens: Int(previous.total), actualTokens: actual),
                previous: previous)
        }
    }

    /// Replaces the token counts of this call with what the provider reported, in parts, in
    /// every window still holding it.
    ///
    /// `input` counts against the input-token caps, `output` against the output-token caps,
    /// and their sum against the total-token caps. `cacheReads` (input served from the
    /// provider's prompt cache, which Anthropic reports apart as `cache_read_input_tokens` and
    /// OpenAI inside `prompt_tokens` as `cached_tokens`) counts as input only where the
    /// provider's ``PolicyLimits/countsCacheReads`` says so. For OpenAI's usage, pass
    /// `input: prompt_tokens - cached_tokens, cacheReads: cached_tokens`.
    /// - Throws: ``PolicyError/Code/invalidTokenCount`` if a count is negative or too large;
    ///   the permit and the windows are then unchanged.
    public mutating func commitTokens(input: Int, output: Int, cacheReads: Int = 0) throws(PolicyError) {
        guard AdmissionRules.isRecordable(input) else { throw refuse(input, "committed input tokens") }
        guard AdmissionRules.isRecordable(output) else { throw refuse(output, "committed output tokens") }
        guard AdmissionRules.isRecordable(cacheReads) else { throw refuse(cacheReads, "committed cache reads") }
        let previous = counted
        guard let storage else {
            if let chain {
                let cost = !isCosted ? 0 : price.cost(input: Int64(input), output: Int64(output), cacheReads: Int64(cacheReads))
                let new = try chain.commit(
                    leaf: leaf, admission, from: previous, input: input, output: output, cacheReads: cacheReads, cost: cost)
                counted = new
                if chain.environment.hasTelemetry {
                    reportChainCommit(
                        PolicyCommitEvent(
                            key: chain.key(of: leaf), estimatedTokens: estimatedTokens, previousTokens: Int(previous.total),
                            actualTokens: Int(new.total), inputTokens: input, outputTokens: output, cacheReadTokens: cacheReads),
                        chain, previous: previous)
                }
            } else if let shared {
                counted = shared.commit(
                    input: input, output: output, cacheReads: cacheReads, estimated: estimatedTokens, previous: committedTokens)
            } else {
                counted = TokenCounts.usage(input: input, output: output, cacheReads: cacheReads, countsCacheReads: true)
            }
            return
        }
        let cost = !isCosted ? 0 : price.cost(input: Int64(input), output: Int64(output), cacheReads: Int64(cacheReads))
        let new = try storage.commit(admission, from: previous, input: input, output: output, cacheReads: cacheReads, cost: cost)
        counted = new
        if storage.environment.hasTelemetry {
            reportCommit(
                PolicyCommitEvent(
                    key: storage.key, estimatedTokens: estimatedTokens, previousTokens: Int(previous.total), actualTokens: Int(new.total),
                    inputTokens: input, outputTokens: output, cacheReadTokens: cacheReads),
                previous: previous)
        }
    }

    /// Tells telemetry and the hold warning of a commit of a nested provider's permit.
    @inline(never)
    private func reportChainCommit(_ event: PolicyCommitEvent, _ chain: ChainGate, previous: TokenCounts) {
        var event = event
        if isCosted {
            event.previousCost = PolicyMoney(microUnits: previous.cost)
            event.actualCost = PolicyMoney(microUnits: counted.cost)
        }
        chain.environment.telemetry?.didCommit(event)
        chain.environment.holdWatch.committed(.init(chain, admission), tokens: event.actualTokens)
    }

    /// Reports a commit of an in-process permit to telemetry and to the hold warning. Kept out
    /// of line: the commit path without telemetry stays as small as it was.
    @inline(never)
    private func reportCommit(_ event: PolicyCommitEvent, previous: TokenCounts) {
        guard let storage else { return }
        var event = event
        if isCosted {
            event.previousCost = PolicyMoney(microUnits: previous.cost)
            event.actualCost = PolicyMoney(microUnits: counted.cost)
        }
        storage.environment.telemetry?.didCommit(event)
        storage.environment.holdWatch.committed(.init(storage, admission), tokens: event.actualTokens)
    }

    /// Reports a count outside `0...PolicyLimits.maximumTokenCount` and returns its error.
    func refuse(_ count: Int, _ what: String) -> PolicyError {
        let error = AdmissionRules.unrecordable(count, what, key: key)
        report(error)
        return error
    }

    /// Reports an error about this permit to telemetry as a rejection.
    func report(_ error: PolicyError) {
        if let environment, environment.hasTelemetry, let key {
            environment.telemetry?.didReject(PolicyRejectEvent(key: key, estimatedTokens: estimatedTokens, error: error))
        }
    }

    /// Tells the gate what the provider said about its limits in this call's response headers
    /// (see ``PolicyService/observe(headers:for:)-([String:String],_)``): it applies to every key of the provider.
    /// Does nothing for an inert permit.
    public func observe(headers: [String: String]) {
        observe(headers: headers.map { ($0.key, $0.value) })
    }

    /// Tells the gate what the provider said, from headers given as name and value pairs.
    public func observe<S: Sequence>(headers: S) where S.Element == (String, String) {
        guard let key, let core = environment?.core else { return }
        core.observe(headers: headers, for: key)
    }

    /// Tells the gate the provider refused this call (an HTTP 429): see
    /// ``PolicyService/reportThrottled(_:retryAfter:)``. Does nothing for an inert permit.
    public func reportThrottled(retryAfter: Duration? = nil) {
        guard let key, let core = environment?.core else { return }
        core.reportThrottled(key, retryAfter: retryAfter)
    }

    /// Releases the concurrency slot now instead of at the end of the scope.
    public consuming func release() {}

    deinit {
        guard let storage else {
            if let chainGate {
                let chain = chainGate.takeRetainedValue()
                let environment = chain.environment
                // The key first: once released, the bucket may be dropped.
                let key = environment.hasTelemetry ? chain.key(of: leaf) : nil
                chain.release(leaf: leaf)
                if key != nil { environment.holdWatch.released(.init(chain, admission)) }
                if let key, let telemetry = environment.telemetry {
                    let held = environment.time.now() - admission.time
                    telemetry.didRelease(PolicyReleaseEvent(key: key, held: .nanoseconds(held), tokens: committedTokens))
                }
                return
            }
            sharedLease?.takeRetainedValue().release(admittedAt: admission.time, tokens: committedTokens)
            return
        }
        storage.release()
        if storage.environment.hasTelemetry, let telemetry = storage.environment.telemetry {
            let held = storage.environment.time.now() - admission.time
            telemetry.didRelease(PolicyReleaseEvent(key: storage.key, held: .nanoseconds(held), tokens: committedTokens))
            storage.environment.holdWatch.released(.init(storage, admission))
        }
    }
}
