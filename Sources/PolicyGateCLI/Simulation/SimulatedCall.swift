import Foundation
import PolicyGate

/// One provider call to replay: when it arrives, under which key, what it estimates and really
/// uses, how long the provider takes, and how long its caller is willing to wait.
///
/// The key is built once, when the call is made (hashing its strings), so replaying a million
/// calls hashes nothing.
package struct SimulatedCall: Sendable, Hashable {
    // Times are stored as nanoseconds: a simulation reads them a million times, and turning a
    // `Duration` (128-bit attoseconds) into nanoseconds costs more than the rest of reading a call.
    private var atNanoseconds: Int64
    private var durationNanoseconds: Int64
    private var maxWaitNanoseconds: Int64?
    private var cancelAfterNanoseconds: Int64?

    /// The provider and scope the call is counted under.
    package var key: PolicyKey
    /// The pre-flight estimate the call acquires with: the sum of ``estimatedParts`` when it
    /// has them.
    package var estimatedTokens: Int
    /// The tokens the provider reports; committed when the call completes. With
    /// ``actualParts``, what the provider reported in all: input, output and cache reads.
    package var actualTokens: Int
    /// The estimate in parts, when the call acquires with input and output estimates
    /// (`acquire(_:estimatedInputTokens:estimatedOutputTokens:maxWait:)`); `nil` acquires with
    /// ``estimatedTokens`` alone, which the gate counts in full as input and as output.
    package var estimatedParts: SimulatedTokenParts?
    /// The reported usage in parts, when the call commits them
    /// (`commitTokens(input:output:cacheReads:)`); `nil` commits ``actualTokens`` alone.
    package var actualParts: SimulatedTokenParts?
    /// The class it acquires in (the trace's `priority`): interactive unless it says `batch`.
    package var priority: PolicyPriority = .interactive

    /// When the call arrives, from the start of the simulation (to the nanosecond).
    package var at: Duration {
        get { .nanoseconds(atNanoseconds) }
        set { atNanoseconds = newValue.nanosecondsSaturating }
    }

    /// How long the provider call takes once admitted.
    package var duration: Duration {
        get { .nanoseconds(durationNanoseconds) }
        set { durationNanoseconds = newValue.nanosecondsSaturating }
    }

    /// The longest the caller waits for admission (`acquire`'s `maxWait`); `nil` waits as long as
    /// it takes.
    package var maxWait: Duration? {
        get { maxWaitNanoseconds.map { .nanoseconds($0) } }
        set { maxWaitNanoseconds = newValue?.nanosecondsSaturating }
    }

    /// The caller gives up this long after arriving: while waiting, it leaves the queue having
    /// used nothing; while running, its provider call stops then (see ``Simulation``).
    package var cancelAfter: Duration? {
        get { cancelAfterNanoseconds.map { .nanoseconds($0) } }
        set { cancelAfterNanoseconds = newValue?.nanosecondsSaturating }
    }

    /// The times in nanoseconds, as the simulator reads them.
    var nanoseconds: (at: Int64, duration: Int64, maxWait: Int64?, cancelAfter: Int64?) {
        (atNanoseconds, durationNanoseconds, maxWaitNanoseconds, cancelAfterNanoseconds)
    }

    /// The provider whose limits apply.
    package var provider: String {
        get { key.provider }
        set { key = PolicyKey(provider: newValue, scope: key.scope, within: key.parents, tier: key.tier) }
    }

    /// Whose counters the call uses under its provider.
    package var scope: PolicyScope {
        get { key.scope }
        set { key = PolicyKey(provider: key.provider, scope: newValue, within: key.parents, tier: key.tier) }
    }

    /// The tier the call names for its scope (the trace's `tier`), or `nil` for none: the
    /// provider's caps, unless the scope has an override.
    package var tier: String? {
        get { key.tier }
        set { key = key.inTier(newValue) }
    }

    /// Gives the call an estimate and a usage in parts (`nil` keeps a total), setting
    /// ``estimatedTokens`` and ``actualTokens`` to their sums.
    package func withParts(estimated: SimulatedTokenParts?, actual: SimulatedTokenParts?) -> SimulatedCall {
        var call = self
        if let estimated {
            call.estimatedParts = estimated
            call.estimatedTokens = estimated.total
        }
        if let actual {
            call.actualParts = actual
            call.actualTokens = actual.total
        }
        return call
    }

    /// Creates a call for `provider` and `scope`.
    package init(
        at: Duration, provider: String, scope: PolicyScope = .global, estimatedTokens: Int, actualTokens: Int,
        duration: Duration, maxWait: Duration? = nil, cancelAfter: Duration? = nil
    ) {
        self.init(
            at: at, key: PolicyKey(provider: provider, scope: scope), estimatedTokens: estimatedTokens,
            actualTokens: actualTokens, duration: duration, maxWait: maxWait, cancelAfter: cancelAfter)
    }

    /// Creates a call for an existing key (cheaper when many calls share it).
    package init(
        at: Duration, key: PolicyKey, estimatedTokens: Int, actualTokens: Int, duration: Duration,
        maxWait: Duration? = nil, cancelAfter: Duration? = nil
    ) {
        self.atNanoseconds = at.nanosecondsSaturating
        self.key = key
        self.estimatedTokens = estimatedTokens
        self.actualTokens = actualTokens
        self.durationNanoseconds = duration.nanosecondsSaturating
        self.maxWaitNanoseconds = maxWait?.nanosecondsSaturating
        self.cancelAfterNanoseconds = cancelAfter?.nanosecondsSaturating
    }

    /// Creates a call from times in nanoseconds (what the trace reader and the synthetic
    /// workload produce).
    init(
        atNanoseconds: Int64, key: PolicyKey, estimatedTokens: Int, actualTokens: Int, durationNanoseconds: Int64,
        maxWaitNanoseconds: Int64?, cancelAfterNanoseconds: Int64?
    ) {
        self.atNanoseconds = atNanoseconds
        self.key = key
        self.estimatedTokens = estimatedTokens
        self.actualTokens = actualTokens
        self.durationNanoseconds = durationNanoseconds
        self.maxWaitNanoseconds = maxWaitNanoseconds
        self.cancelAfterNanoseconds = cancelAfterNanoseconds
    }
}

/// A call's tokens in parts: input, output, and (for a reported usage) cache reads, which the
/// gate counts as input only where the provider's `count_cache_reads` says so.
package struct SimulatedTokenParts: Sendable, Hashable {
    /// Input tokens (without cache reads).
    package var input: Int
    /// Output tokens.
    package var output: Int
    /// Input tokens read from the provider's prompt cache; always 0 in an estimate.
    package var cacheReads: Int

    /// Creates parts.
    package init(input: Int, output: Int, cacheReads: Int = 0) {
        self.input = input
        self.output = output
        self.cacheReads = cacheReads
    }

    /// All of them (saturating: counts out of range are refused anyway).
    package var total: Int {
        let (sum, overflow) = input.addingReportingOverflow(output)
        let (all, overflow2) = sum.addingReportingOverflow(cacheReads)
        return overflow || overflow2 ? .max : all
    }
}

/// The calls of a trace, and the date its time zero stands for when the trace says.
package struct SimulatedTrace: Sendable, Hashable {
    /// The calls, in the order of the file.
    package var calls: [SimulatedCall]
    /// The wall-clock date of time zero: the `startDate` given to the reader, or else the
    /// earliest ISO 8601 `at` of the trace; `nil` when every `at` is in seconds and none was
    /// given. Schedules are read against it.
    package var startDate: Date?

    /// Creates a trace.
    package init(calls: [SimulatedCall], startDate: Date?) {
        self.calls = calls
        self.startDate = startDate
    }
}

/// Why a trace or a simulation could not be used, with the trace line (1-based) and field.
package struct SimulationError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The trace line, when the problem is in one.
    package var line: Int?
    /// The field of that line (`estimated_tokens`), when the problem is about one.
    package var field: String?
    /// What is wrong.
    package var message: String

    /// Creates an error.
    package init(line: Int? = nil, field: String? = nil, _ message: String) {
        self.line = line
        self.field = field
        self.message = message
    }

    /// `line 3: estimated_tokens: expected a whole number, got 1.5`.
    package var description: String {
        var text = ""
        if let line { text += "line \(line): " }
        if let field { text += "\(field): " }
        return text + message
    }
}

extension PolicyScope {
    /// Reads the form ``PolicyScope/description`` prints: `global`, `user:<id>`, `org:<id>`,
    /// `project:<id>`, or `<kind>:<id>` for a custom kind. `nil` for anything else.
    package init?(simulationText text: String) {
        if text == "global" {
            self = .global
            return
        }
        guard let colon = text.firstIndex(of: ":"), colon != text.startIndex else { return nil }
        let kind = String(text[..<colon])
        let id = String(text[text.index(after: colon)...])
        guard !id.isEmpty else { return nil }
        switch kind {
        case "user": self = .user(id)
        case "org": self = .org(id)
        case "project": self = .project(id)
        default: self = .custom(kind: kind, id: id)
        }
    }
}
