extension PolicyService {
    /// Acquires a permit for `key`, runs `body` with it, and releases it when `body` returns,
    /// throws or is cancelled; returns what `body` returns.
    ///
    /// The permit is held exactly for the body: it cannot escape (it is `~Copyable` and lent
    /// `inout`), so the slot cannot leak. The body commits what the provider reported; a call
    /// that commits nothing counts for its estimate.
    ///
    /// ```swift
    /// let reply = try await gate.withPermit(key, estimatedTokens: 1_200) { permit in
    ///     let reply = try await client.chat(request)
    ///     permit.commitTokensClamping(reply.usage.totalTokens)  // never throws after the provider answered
    ///     return reply
    /// }
    /// ```
    ///
    /// To hold a permit somewhere else than a scope:
    /// - **In a task group**, acquire inside each child: `group.addTask { try await
    ///   gate.withPermit(key, estimatedTokens: n) { permit in … } }`. A child's result cannot be
    ///   a permit (generic results must be copyable), and the group waits for its children, so
    ///   every slot is released when the group ends.
    /// - **In a `Task`**, acquire inside it (`Task { try await gate.withPermit(…) { … } }`), or
    ///   move the permit in explicitly: `Task { [permit = consume permit] in … }` holds it until
    ///   the task ends and can read it and feed back headers, but cannot commit (a captured value
    ///   cannot be mutated; commit through a holder, below). `Task { try await gate.acquire(…) }`
    ///   would drop the permit at once, since a task's result must be copyable.
    /// - **In a stored property**, keep it in a `~Copyable` struct field or, in a class, as a
    ///   `Mutex<PolicyPermit?>` (take it out with `withLock { $0.take() }` to release it early).
    ///   `[PolicyPermit]` is not possible; use an array of such holders.
    ///
    /// - Parameters:
    ///   - key: The provider and scope to count the call under.
    ///   - estimatedTokens: The pre-flight estimate, as in ``acquire(_:estimatedTokens:model:maxWait:priority:)``.
    ///   - model: The model the call is for, as in ``acquire(_:estimatedTokens:model:maxWait:priority:)``.
    ///   - maxWait: The longest to wait for admission; `nil` waits as long as it takes.
    ///   - priority: Its class, as in ``acquire(_:estimatedTokens:model:maxWait:priority:)``.
    ///   - body: The call, given the permit to commit usage or feed back headers on.
    /// - Throws: What ``acquire(_:estimatedTokens:model:maxWait:priority:)`` throws (the body then never runs),
    ///   or what `body` throws.
    nonisolated(nonsending) public func withPermit<R: ~Copyable>(
        _ key: PolicyKey, estimatedTokens: Int = 0, model: String? = nil, maxWait: Duration? = nil,
        priority: PolicyPriority = .interactive,
        _ body: nonisolated(nonsending) (inout PolicyPermit) async throws -> R
    ) async throws -> R {
        var permit = try await acquire(key, estimate: .total(estimatedTokens), model: model, maxWait: maxWait, priority: priority)
        let result = try await body(&permit)
        permit.release()
        return result
    }

    /// ``withPermit(_:estimatedTokens:model:maxWait:priority:_:)`` with the estimate in parts, as in
    /// ``acquire(_:estimatedInputTokens:estimatedOutputTokens:model:maxWait:priority:)``: the input estimate
    /// counts against the input-token caps, the output estimate (usually the request's
    /// `max_tokens`) against the output-token caps.
    nonisolated(nonsending) public func withPermit<R: ~Copyable>(
        _ key: PolicyKey, estimatedInputTokens: Int, estimatedOutputTokens: Int, model: String? = nil, maxWait: Duration? = nil,
        priority: PolicyPriority = .interactive,
        _ body: nonisolated(nonsending) (inout PolicyPermit) async throws -> R
    ) async throws -> R {
        var permit = try await acquire(
            key, estimate: .split(input: estimatedInputTokens, output: estimatedOutputTokens), model: model, maxWait: maxWait,
            priority: priority)
        let result = try await body(&permit)
        permit.release()
        return result
    }
}

extension PolicyPermit {
    /// Commits `actual` like ``commitTokens(_:)`` but never throws: a count the gate cannot
    /// record is clamped into `0...PolicyLimits.maximumTokenCount` first.
    ///
    /// Use it after the provider has answered, when a throw would lose the reply for a
    /// bookkeeping problem. Anything clamped, or a commit the windows refuse (the permit then
    /// keeps its previous count), is reported to telemetry as a ``PolicyRejectEvent`` with code
    /// ``PolicyError/Code/invalidTokenCount``.
    /// - Returns: The tokens the call counts for afterwards.
    @discardableResult
    public mutating func commitTokensClamping(_ actual: Int) -> Int {
        let clamped = Self.clamp(actual)
        if clamped != actual { _ = refuse(actual, "committed tokens (clamped to \(clamped))") }
        do { try commitTokens(clamped) } catch { report(error) }
        return committedTokens
    }

    /// Commits usage in parts like ``commitTokens(input:output:cacheReads:)`` but never throws:
    /// each count the gate cannot record is clamped into `0...PolicyLimits.maximumTokenCount`
    /// and reported to telemetry, as in ``commitTokensClamping(_:)``.
    /// - Returns: The tokens the call counts for afterwards.
    @discardableResult
    public mutating func commitTokensClamping(input: Int, output: Int, cacheReads: Int = 0) -> Int {
        let (i, o, c) = (Self.clamp(input), Self.clamp(output), Self.clamp(cacheReads))
        if i != input { _ = refuse(input, "committed input tokens (clamped to \(i))") }
        if o != output { _ = refuse(output, "committed output tokens (clamped to \(o))") }
        if c != cacheReads { _ = refuse(cacheReads, "committed cache reads (clamped to \(c))") }
        do { try commitTokens(input: i, output: o, cacheReads: c) } catch { report(error) }
        return committedTokens
    }

    static func clamp(_ count: Int) -> Int { min(max(count, 0), PolicyLimits.maximumTokenCount) }
}
