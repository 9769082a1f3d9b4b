// Built only with the package trait `Metrics`; without it this module is empty, so the default
// build needs no swift-metrics.
#if Metrics
import CoreMetrics
import PolicyGate
import PolicyGateTelemetrySupport

/// A `PolicyTelemetry` that records the gate's counters, timers and gauges through
/// swift-metrics, named as Prometheus users expect.
///
/// ```swift
/// let metrics = PolicyMetrics()   // after MetricsSystem.bootstrap(...)
/// let gate = try PolicyService(limits: limits, telemetry: metrics)
/// Task { await metrics.recordGauges(of: gate, every: .seconds(10)) }   // queued / remaining gauges
/// ```
///
/// With the default prefix, the metrics are (labels `provider` and `scope_kind` unless noted):
///
/// | name | type | unit | extra labels | updated |
/// |---|---|---|---|---|
/// | `policygate_acquired_total` | counter | calls | | per admission |
/// | `policygate_rejected_total` | counter | calls | `reason`, `limit` | per refusal |
/// | `policygate_estimated_tokens_total` | counter | tokens | | per admission (its estimate) |
/// | `policygate_committed_tokens_total` | counter | tokens | | per release (the count the call ended with) |
/// | `policygate_input_tokens_total` | counter | tokens | | per commit in parts (the input reported, cache reads apart) |
/// | `policygate_output_tokens_total` | counter | tokens | | per commit in parts |
/// | `policygate_cache_read_tokens_total` | counter | tokens | | per commit in parts |
/// | `policygate_store_failures_total` | counter | failures | `operation`, `outcome` | per shared-store failure |
/// | `policygate_permits_held_too_long_total` | counter | permits | | per permit held past `PolicyService.permitHoldWarning` (once each) |
/// | `policygate_estimate_ratio` | recorder (histogram) | actual ÷ estimate | labels `provider` only | per commit with an estimate and a count above 0 |
/// | `policygate_queue_wait_seconds` | timer | seconds | | per admission (0 when admitted at once) |
/// | `policygate_hold_seconds` | timer | seconds | | per release |
/// | `policygate_in_flight` | gauge (meter) | permits | | per admission and release |
/// | `policygate_queued` | gauge | callers | | sampled |
/// | `policygate_active_keys` | gauge | keys | | sampled |
/// | `policygate_remaining` | gauge | requests / tokens / slots | `limit` | sampled |
/// | `policygate_limit` | gauge | requests / tokens / slots | `limit`; no `scope_kind` | sampled and per limits change |
///
/// Label values: `scope_kind` is `global`, `user`, `org`, `project` or a custom kind; `limit`
/// is `requests_per_minute`, `requests_per_hour`, `requests_per_day`, `tokens_per_minute`,
/// `tokens_per_hour`, `tokens_per_day`, `input_tokens_per_minute` … `output_tokens_per_day` or
/// `concurrency` (`none` on a refusal no cap caused);
/// `reason` is the error code in snake case (`rate_limited`, `timed_out`, `oversized`,
/// `invalid_token_count`, `invalid_argument`).
///
/// **Estimate error.** `policygate_estimate_ratio` records `PolicyCommitEvent.estimateRatio`
/// (1 is exact, above 1 an under-estimate) per provider. Commits without an estimate (0, allowed
/// without token caps) have no ratio, and commits of 0 are left out: 0 is how a failed call is
/// recorded, which says nothing of the estimate and would pull the distribution towards 0.
///
/// **Cardinality.** Scope ids (user, org, project ids) are not labels unless `includeScopeID`
/// is set: one series per user can overwhelm a metrics backend. With it, a `scope` label holds
/// the id (empty for `.global`), and every scope ever seen keeps its counter series.
///
/// **Gauges.** The gate's events do not say how many callers wait or how much capacity is
/// left, so ``recordGauges(of:)`` reads them from the gate (`PolicyService.activeKeys()` and
/// `PolicyService.currentState(for:)`) when called, and ``recordGauges(of:every:clock:)``
/// calls it periodically. Per label set, `policygate_queued` and `policygate_active_keys` are
/// sums over the gate's active keys and `policygate_remaining` is the *least* left among them
/// (an idle key has the whole cap), so a per-user cap nearing exhaustion for any one user shows.
/// `policygate_in_flight` is kept exactly from admissions and releases, without sampling.
///
/// Metric objects are created once per label set and cached, so an event costs a dictionary
/// lookup under a short lock plus the backend's own update.
///
/// Use one `PolicyMetrics` per gate. Gates that report into the same backend should differ by
/// `prefix` or by a fixed label in `dimensions` (such as `("gate", "batch")`): otherwise their
/// counters add up, which is fine, but each gate's sampling overwrites the other's gauges.
public final class PolicyMetrics: PolicyTelemetry {
    /// The metric names in use, from the prefix given at creation.
    public struct Names: Sendable, Hashable {
        /// Calls admitted (counter).
        public let acquired: String
        /// Calls refused (counter), labelled with `reason` and `limit`.
        public let rejected: String
        /// Tokens estimated by admitted calls (counter).
        public let estimatedTokens: String
        /// Tokens counted by released calls: their committed count, else their estimate (counter).
        public let committedTokens: String
        /// Input tokens reported by commits in parts, cache reads apart (counter).
        public let inputTokens: String
        /// Output tokens reported by commits in parts (counter).
        public let outputTokens: String
        /// Input tokens read from the provider's cache, reported by commits in parts (counter).
        public let cacheReadTokens: String
        /// Time from asking to admission (timer, seconds).
        public let queueWait: String
        /// Time from admission to release (timer, seconds).
        public let hold: String
        /// Permits held now (meter).
        public let inFlight: String
        /// Callers waiting now (gauge, sampled).
        public let queued: String
        /// Keys the gate holds state for (gauge, sampled).
        public let activeKeys: String
        /// Capacity left per cap, the least among the label set's keys (gauge, sampled).
        public let remaining: String
        /// The configured cap (gauge), labelled with `provider` and `limit`.
        public let limit: String
        /// Shared-store failures (counter), labelled with `operation` and `outcome`.
        public let storeFailures: String
        /// Shared permits' leases lost (counter), labelled with `reason`.
        public let leasesLost: String
        /// Pauses a provider asked for (a 429, a `retry-after`) (counter).
        public let providerPauses: String
        /// Provider header values not believed (counter).
        public let providerFeedbackIgnored: String
        /// An adaptive provider's factor: the fraction of its configured caps enforced now
        /// (gauge, 0.1 … 1), labelled with `provider`.
        public let adaptiveFactor: String
        /// Committed ÷ estimated tokens per commit (recorder), labelled with `provider`.
        public let estimateRatio: String
        /// Permits held longer than the service's hold warning (counter).
        public let permitsHeldTooLong: String

        /// The names under `prefix`: `<prefix>_acquired_total`, … (no separator when empty).
        public init(prefix: String = "policygate") {
            let p = prefix.isEmpty ? "" : prefix + "_"
            acquired = p + "acquired_total"
            rejected = p + "rejected_total"
            estimatedTokens = p + "estimated_tokens_total"
            committedTokens = p + "committed_tokens_total"
            inputTokens = p + "input_tokens_total"
            outputTokens = p + "output_tokens_total"
            cacheReadTokens = p + "cache_read_tokens_total"
            queueWait = p + "queue_wait_seconds"
            hold = p + "hold_seconds"
            inFlight = p + "in_flight"
            queued = p + "queued"
            activeKeys = p + "active_keys"
            remaining = p + "remaining"
            limit = p + "limit"
            storeFailures = p + "store_failures_total"
            leasesLost = p + "leases_lost_total"
            providerPauses = p + "provider_pauses_total"
            providerFeedbackIgnored = p + "provider_feedback_ignored_total"
            adaptiveFactor = p + "adaptive_factor"
            estimateRatio = p + "estimate_ratio"
            permitsHeldTooLong = p + "permits_held_too_long_total"
        }
    }

    /// The label names used.
    public enum Label {
        /// The provider name.
        public static let provider = "provider"
        /// The scope's kind.
        public static let scopeKind = "scope_kind"
        /// The scope's id, only with `includeScopeID`.
        public static let scope = "scope"
        /// The cap: `tokens_per_minute`, `concurrency`, … (`none` when no cap refused a call).
        public static let limit = "limit"
        /// Why a call was refused: `rate_limited`, `timed_out`, `oversized`, …
        public static let reason = "reason"
    }

    /// The metric names.
    public let names: Names
    /// Whether the scope's id is a label (`scope`) as well as its kind.
    public let includeScopeID: Bool
    /// Labels added to every metric, such as `[("service", "chat")]`.
    public let dimensions: [(String, String)]
    private let factory: any MetricsFactory
    private let groups = Locked<[GroupKey: EventMetrics]>([:])
    private let sampled = Locked<SampledState>(SampledState())
    /// The estimate-ratio recorders, one per provider, created on first use.
    private let ratios = Locked<[String: Recorder]>([:])

    /// Records gate metrics into `factory`.
    /// - Parameters:
    ///   - prefix: The start of every metric name, `policygate` by default.
    ///   - includeScopeID: Whether to label metrics with the scope's id (per user, org…).
    ///     Off by default: it multiplies the series by the number of scopes.
    ///   - dimensions: Fixed labels added to every metric (for instance to tell two gates apart).
    ///   - factory: The metrics backend; by default the one bootstrapped in `MetricsSystem`
    ///     (or bound to the task) when this is created.
    public init(
        prefix: String = "policygate",
        includeScopeID: Bool = false,
        dimensions: [(String, String)] = [],
        factory: any MetricsFactory = MetricsSystem.factory
    ) {
        self.names = Names(prefix: prefix)
        self.includeScopeID = includeScopeID
        self.dimensions = dimensions
        self.factory = factory
    }

    // MARK: Events

    /// Counts the admission, its estimate and its wait, and one more permit in flight.
    public func didAcquire(_ event: PolicyAcquireEvent) {
        let metrics = eventMetrics(for: event.key)
        metrics.acquired.increment()
        if event.estimatedTokens > 0 { metrics.estimatedTokens.increment(by: event.estimatedTokens) }
        metrics.queueWait.recordNanoseconds(LabelNames.nanoseconds(event.waited))
        metrics.inFlight.increment()
    }

    /// Records the commit's estimate ratio (actual ÷ estimate) under its provider, and counts
    /// the input, output and cache-read tokens of a commit in parts (a commit of a total alone
    /// says nothing about them). A permit committed twice in parts counts twice.
    public func didCommit(_ event: PolicyCommitEvent) {
        if let ratio = event.estimateRatio, event.actualTokens > 0 {
            estimateRatioRecorder(for: event.key.provider).record(ratio)
        }
        guard event.inputTokens != nil || event.outputTokens != nil || event.cacheReadTokens != nil else { return }
        let counters = eventMetrics(for: event.key).split(names: names, factory: factory)
        if let input = event.inputTokens, input > 0 { counters.input.increment(by: input) }
        if let output = event.outputTokens, output > 0 { counters.output.increment(by: output) }
        if let cached = event.cacheReadTokens, cached > 0 { counters.cacheReads.increment(by: cached) }
    }

    /// Counts the refusal under its reason and limit.
    public func didReject(_ event: PolicyRejectEvent) {
        eventMetrics(for: event.key).rejected(
            code: event.error.code, limit: event.error.limit, names: names, factory: factory
        ).increment()
    }

    /// Counts the released call's tokens and hold time, and one permit fewer in flight.
    public func didRelease(_ event: PolicyReleaseEvent) {
        let metrics = eventMetrics(for: event.key)
        if event.tokens > 0 { metrics.committedTokens.increment(by: event.tokens) }
        metrics.hold.recordNanoseconds(LabelNames.nanoseconds(event.held))
        metrics.inFlight.decrement()
    }

    /// Counts a shared store's failure under its operation (`admit`, `commit`, `release`,
    /// `cleanup`, `waiters`) and what the gate did (`admitted_uncounted`, `refused`,
    /// `will_retry`, `gave_up`). Rare, so the counter is not cached.
    public func didFailStore(_ event: PolicyStoreFailureEvent) {
        var labels = self.labels(groupKey(event.key))
        labels.append(("operation", event.operation.rawValue))
        labels.append(("outcome", LabelNames.snakeCase(event.outcome.rawValue)))
        Counter(label: names.storeFailures, dimensions: labels, factory: factory).increment()
    }

    /// Counts a lost lease in `policygate_leases_lost_total`, labelled with its `reason`.
    public func didLoseLease(_ event: PolicyLeaseLossEvent) {
        var labels = self.labels(groupKey(event.key))
        labels.append(("reason", event.reason.rawValue))
        Counter(label: names.leasesLost, dimensions: labels, factory: factory).increment()
    }

    /// Counts a provider's pause in `policygate_provider_pauses_total` and the values it sent
    /// that were not believed in `policygate_provider_feedback_ignored_total`.
    public func didObserveFeedback(_ event: PolicyFeedbackEvent) {
        let labels = self.labels(groupKey(event.key))
        if event.pausedFor != nil { Counter(label: names.providerPauses, dimensions: labels, factory: factory).increment() }
        let ignored = event.feedback.ignored.count
        if ignored > 0 {
            Counter(label: names.providerFeedbackIgnored, dimensions: labels, factory: factory).increment(by: ignored)
        }
    }

    /// Counts the permit in `policygate_permits_held_too_long_total`. Rare (once per permit
    /// held past the threshold), so the counter is not cached.
    public func didHoldPermitTooLong(_ event: PolicyLongHoldEvent) {
        Counter(label: names.permitsHeldTooLong, dimensions: labels(groupKey(event.key)), factory: factory).increment()
    }

    /// Sets the provider's `policygate_adaptive_factor` gauge.
    public func didAdaptLimits(_ event: PolicyAdaptiveEvent) {
        Gauge(label: names.adaptiveFactor, dimensions: dimensions + [(Label.provider, event.provider)], factory: factory)
            .record(event.factor)
    }

    /// Updates the provider's `policygate_limit` gauges.
    public func didChangeLimits(_ event: PolicyLimitsChangeEvent) {
        sampled.withLock { state in
            updateLimitGauges(&state, provider: event.provider, limits: event.current)
        }
    }

    // MARK: Gauges

    /// Reads every active key of `gate` once and sets the sampled gauges: `policygate_queued`,
    /// `policygate_active_keys`, `policygate_remaining` and `policygate_limit`.
    ///
    /// Label sets seen earlier whose keys have all gone idle are set to idle values (nothing
    /// queued, the whole cap remaining); with `includeScopeID`, their gauges are removed instead,
    /// so the number of series follows the active keys.
    /// - Complexity: O(*k*) for *k* active keys, each read under its own short lock.
    public func recordGauges(of gate: PolicyService) {
        // Numbered so that of two overlapping samplings the older cannot overwrite the newer.
        let ticket = sampled.withLock { state in
            state.ticketsIssued += 1
            return state.ticketsIssued
        }
        // Read the gate before taking this object's lock: reading may run gate work that
        // reports events back here.
        var readings: [GroupKey: Reading] = [:]
        var limits: [String: PolicyLimits] = [:]
        for key in gate.activeKeys() {
            let state = gate.currentState(for: key)
            limits[key.provider] = state.limits
            readings[groupKey(key), default: Reading()].add(state)
        }
        // Providers seen before but idle now still get their limit and idle gauges updated.
        var known = Set(groups.withLock { $0.keys.map(\.provider) })
        sampled.withLock { state in
            known.formUnion(state.gauges.keys.map(\.provider))
            known.formUnion(state.limitGauges.keys)
        }
        for provider in known where limits[provider] == nil {
            limits[provider] = gate.limits(for: provider) ?? .unlimited
        }
        sampled.withLock { state in
            guard ticket > state.lastRecorded else { return }
            state.lastRecorded = ticket
            for (provider, providerLimits) in limits {
                updateLimitGauges(&state, provider: provider, limits: providerLimits)
            }
            for group in Set(state.gauges.keys).union(readings.keys) {
                let reading = readings[group]
                if reading == nil, includeScopeID {
                    state.gauges.removeValue(forKey: group)?.destroy()
                    continue
                }
                var gauges =
                    state.gauges[group]
                    ?? SampledGauges(
                        group: group, dimensions: labels(group), names: names, factory: factory)
                gauges.record(
                    reading ?? Reading(), limits: limits[group.provider] ?? .unlimited,
                    names: names, factory: factory)
                state.gauges[group] = gauges
            }
        }
    }

    /// Calls ``recordGauges(of:)`` now and then every `interval` on `clock`, until the task is
    /// cancelled. Run it in a task of its own (or a service group) beside the gate.
    public func recordGauges(
        of gate: PolicyService, every interval: Duration, clock: any Clock<Duration> = ContinuousClock()
    ) async {
        while !Task.isCancelled {
            recordGauges(of: gate)
            do { try await clock.sleep(for: interval) } catch { return }
        }
    }

    // MARK: Internals

    private func groupKey(_ key: PolicyKey) -> GroupKey {
        GroupKey(provider: key.provider, scopeKind: key.scope.kind, scopeID: includeScopeID ? key.scope.labelID : nil)
    }

    private func labels(_ group: GroupKey) -> [(String, String)] {
        var labels = dimensions
        labels.append((Label.provider, group.provider))
        labels.append((Label.scopeKind, group.scopeKind))
        if let scopeID = group.scopeID { labels.append((Label.scope, scopeID)) }
        return labels
    }

    /// The cached metric objects of `key`'s label set, created on first use.
    private func eventMetrics(for key: PolicyKey) -> EventMetrics {
        let group = groupKey(key)
        if let metrics = groups.withLock({ $0[group] }) { return metrics }
        // Created outside the lock (the backend may take locks of its own); a racing creator
        // loses and its objects are dropped, which backends handle (they dedupe by name and labels).
        let created = EventMetrics(dimensions: labels(group), names: names, factory: factory)
        return groups.withLock { groups in
            if let existing = groups[group] { return existing }
            groups[group] = created
            return created
        }
    }

    private func estimateRatioRecorder(for provider: String) -> Recorder {
        if let recorder = ratios.withLock({ $0[provider] }) { return recorder }
        let created = Recorder(label: names.estimateRatio, dimensions: dimensions + [(Label.provider, provider)], factory: factory)
        return ratios.withLock { ratios in
            if let existing = ratios[provider] { return existing }
            ratios[provider] = created
            return created
        }
    }

    private func updateLimitGauges(_ state: inout SampledState, provider: String, limits: PolicyLimits) {
        var gauges = state.limitGauges[provider] ?? [:]
        for kind in PolicyLimitKind.allCases {
            if let cap = limits[kind] {
                let gauge =
                    gauges[kind]
                    ?? Gauge(
                        label: names.limit,
                        dimensions: dimensions + [(Label.provider, provider), (Label.limit, LabelNames.limit(kind))],
                        factory: factory)
                gauge.record(cap)
                gauges[kind] = gauge
            } else if let gauge = gauges.removeValue(forKey: kind) {
                gauge.destroy()
            }
        }
        state.limitGauges[provider] = gauges
    }
}

/// One label set: provider, scope kind and, when asked for, scope id.
struct GroupKey: Hashable, Sendable {
    let provider: String
    let scopeKind: String
    let scopeID: String?
}

extension PolicyScope {
    /// The id without its kind, as the `scope` label; empty for `PolicyScope.global`.
    var labelID: String {
        switch self {
        case .global: ""
        case .user(let id), .org(let id), .project(let id), .custom(_, let id): id
        }
    }
}

/// The event-driven metrics of one label set, created once.
final class EventMetrics: Sendable {
    let dimensions: [(String, String)]
    let acquired: Counter
    let estimatedTokens: Counter
    let committedTokens: Counter
    let queueWait: CoreMetrics.Timer
    let hold: CoreMetrics.Timer
    let inFlight: Meter
    private let rejectedCounters = Locked<[RejectKey: Counter]>([:])
    /// Created on the first commit in parts: a gate whose callers never commit in parts shows
    /// no input, output or cache-read series.
    private let splitCounters = Locked<SplitCounters?>(nil)

    struct SplitCounters: Sendable {
        let input: Counter
        let output: Counter
        let cacheReads: Counter
    }

    /// The input, output and cache-read counters, created on first use.
    func split(names: PolicyMetrics.Names, factory: any MetricsFactory) -> SplitCounters {
        if let existing = splitCounters.withLock({ $0 }) { return existing }
        let created = SplitCounters(
            input: Counter(label: names.inputTokens, dimensions: dimensions, factory: factory),
            output: Counter(label: names.outputTokens, dimensions: dimensions, factory: factory),
            cacheReads: Counter(label: names.cacheReadTokens, dimensions: dimensions, factory: factory))
        return splitCounters.withLock { counters in
            if let existing = counters { return existing }
            counters = created
            return created
        }
    }

    struct RejectKey: Hashable {
        let code: PolicyError.Code
        let limit: PolicyLimitKind?
    }

    init(dimensions: [(String, String)], names: PolicyMetrics.Names, factory: any MetricsFactory) {
        self.dimensions = dimensions
        acquired = Counter(label: names.acquired, dimensions: dimensions, factory: factory)
        estimatedTokens = Counter(label: names.estimatedTokens, dimensions: dimensions, factory: factory)
        committedTokens = Counter(label: names.committedTokens, dimensions: dimensions, factory: factory)
        queueWait = CoreMetrics.Timer(
            label: names.queueWait, dimensions: dimensions, preferredDisplayUnit: .seconds, factory: factory)
        hold = CoreMetrics.Timer(label: names.hold, dimensions: dimensions, preferredDisplayUnit: .seconds, factory: factory)
        inFlight = Meter(label: names.inFlight, dimensions: dimensions, factory: factory)
    }

    /// The refusal counter for `code` and `limit`, created on first use (a handful per set).
    func rejected(code: PolicyError.Code, limit: PolicyLimitKind?, names: PolicyMetrics.Names, factory: any MetricsFactory) -> Counter {
        let key = RejectKey(code: code, limit: limit)
        if let counter = rejectedCounters.withLock({ $0[key] }) { return counter }
        let labels =
            dimensions + [
                (PolicyMetrics.Label.reason, LabelNames.reason(code)),
                (PolicyMetrics.Label.limit, limit.map(LabelNames.limit) ?? "none"),
            ]
        let created = Counter(label: names.rejected, dimensions: labels, factory: factory)
        return rejectedCounters.withLock { counters in
            if let existing = counters[key] { return existing }
            counters[key] = created
            return created
        }
    }
}

/// What one sampling read for one label set.
struct Reading {
    var keys = 0
    var queued = 0
    /// The least remaining per capped kind among the set's keys.
    var remaining: [PolicyLimitKind: Int] = [:]

    mutating func add(_ state: PolicyState) {
        keys += 1
        queued += state.queued
        for window in state.windows {
            let kinds = LabelNames.kinds(of: window.window)
            note(window.requests.remaining, for: kinds.requests)
            note(window.tokens.remaining, for: kinds.tokens)
            let split = LabelNames.splitKinds(of: window.window)
            note(window.inputTokens?.remaining, for: split.input)
            note(window.outputTokens?.remaining, for: split.output)
        }
        if let cap = state.limits.maxConcurrent {
            note(max(0, cap - state.inFlight), for: .concurrency)
        }
    }

    private mutating func note(_ value: Int?, for kind: PolicyLimitKind) {
        guard let value else { return }
        remaining[kind] = min(remaining[kind] ?? value, value)
    }
}

/// The sampled gauges of one label set.
struct SampledGauges {
    let dimensions: [(String, String)]
    let queued: Gauge
    let activeKeys: Gauge
    var remaining: [PolicyLimitKind: Gauge] = [:]

    init(group: GroupKey, dimensions: [(String, String)], names: PolicyMetrics.Names, factory: any MetricsFactory) {
        self.dimensions = dimensions
        queued = Gauge(label: names.queued, dimensions: dimensions, factory: factory)
        activeKeys = Gauge(label: names.activeKeys, dimensions: dimensions, factory: factory)
    }

    /// Sets the gauges from `reading`; caps with no reading (no active key) show the whole cap.
    mutating func record(_ reading: Reading, limits: PolicyLimits, names: PolicyMetrics.Names, factory: any MetricsFactory) {
        queued.record(reading.queued)
        activeKeys.record(reading.keys)
        for kind in PolicyLimitKind.allCases {
            if let cap = limits[kind] {
                let gauge =
                    remaining[kind]
                    ?? Gauge(
                        label: names.remaining, dimensions: dimensions + [(PolicyMetrics.Label.limit, LabelNames.limit(kind))],
                        factory: factory)
                gauge.record(min(cap, reading.remaining[kind] ?? cap))
                remaining[kind] = gauge
            } else if let gauge = remaining.removeValue(forKey: kind) {
                gauge.destroy()
            }
        }
    }

    func destroy() {
        queued.destroy()
        activeKeys.destroy()
        for gauge in remaining.values { gauge.destroy() }
    }
}

/// The sampled gauges, per label set, and the limit gauges, per provider.
struct SampledState {
    var gauges: [GroupKey: SampledGauges] = [:]
    var limitGauges: [String: [PolicyLimitKind: Gauge]] = [:]
    var ticketsIssued: UInt64 = 0
    var lastRecorded: UInt64 = 0
}
#endif
