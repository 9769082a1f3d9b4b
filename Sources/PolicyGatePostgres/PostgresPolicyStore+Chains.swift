#if Postgres
import PolicyGate
import PostgresNIO

extension PostgresPolicyStore {
    /// `true`: `policygate.admit_chain` admits a nested chain in one statement.
    public var supportsChains: Bool { true }

    /// One statement: `policygate.admit_chain` locks every level's key row (in key order),
    /// checks every level and records the call at all of them or none, waiting for the locks
    /// no longer than the request's `PolicyStoreChainRequest.maximumWait`. The lease is the
    /// chain's: ``commit(_:tokens:)``, ``release(_:committing:)`` and the renewals act on every
    /// level. A refusal registers this store as waiting for each refusing level's key.
    /// - Throws: As ``admit(_:)``.
    public func admitChain(_ request: PolicyStoreChainRequest) async throws -> PolicyStoreChainDecision {
        if isFenced {
            throw PostgresStoreError("no lease renewal succeeded in time: admitting nothing until the database answers again")
        }
        guard let leaf = request.levels.last else { throw PolicyStoreRequestError("a chain without levels") }
        let levels = request.levels
        let keys = levels.map(\.keyName)
        let labels = levels.map(\.keyLabel)
        // Arrays of optionals do not bind: "no cap" travels as -1 (caps are positive) and the
        // statement turns it back into NULL.
        let requestCaps = levels.flatMap { $0.requestCaps.map { $0.map(Int64.init) ?? -1 } }
        let tokenCaps = levels.flatMap { $0.tokenCaps.map { $0.map(Int64.init) ?? -1 } }
        let concurrency = levels.map { $0.maxConcurrent.map { Int32(clamping: $0) } ?? -1 }
        let leaseMicroseconds = options.lease.nanosecondsSaturating / 1_000
        let nonce = Int64.random(in: .min ... .max)
        let waitMilliseconds = request.maximumWait.flatMap { wait in
            wait < options.callTimeout ? Int32(clamping: (wait.nanosecondsSaturating + 999_999) / 1_000_000) : nil
        }
        let sent = ContinuousClock.now
        typealias Row = (Bool, Int64?, Int64, Int32?, String?, Int64?, [Int16]?, [Int64]?, [Int64]?, [Int64]?, Bool)
        let rows: [Row] = try await describing {
            var rows: [Row] = []
            for try await row in try await client.query(
                """
                SELECT admitted, admission_id, now_us, level, refused_by, lease_expiry_us, wins, buckets, requests, tokens, registered
                FROM policygate.admit_chain(\(keys)::text[], \(labels)::text[], \(request.tokens),
                    pg_catalog.array_replace(\(requestCaps)::bigint[], -1, NULL),
                    pg_catalog.array_replace(\(tokenCaps)::bigint[], -1, NULL),
                    pg_catalog.array_replace(\(concurrency)::integer[], -1, NULL), \(leaseMicroseconds),
                    \(holder), \(nonce), \(waitMilliseconds)::integer, \(waiterID))
                """, logger: logger
            ).decode(Row.self) {
                rows.append(row)
            }
            return rows
        }
        var refusals: [PolicyStoreLevelRefusal] = []
        for (admitted, id, now, level, refusedBy, leaseExpiry, wins, buckets, requests, tokens, registered) in rows {
            if admitted, let id {
                let lease = PolicyStoreLease(id: id, admittedAt: now, nonce: nonce)
                holdLease(lease, key: leaf.key, confirmed: sent)
                return .admitted(lease)
            }
            guard let level, levels.indices.contains(Int(level)) else { continue }
            if registered { self.registered(keys[Int(level)], token: nonce) }
            let decision: PolicyStoreDecision
            if refusedBy == "concurrency" {
                decision = .concurrencyFull(retryAfter: leaseExpiry.map { .microseconds(max(0, $0 - now)) })
            } else {
                let (wins, buckets, requests, tokens) = (wins ?? [], buckets ?? [], requests ?? [], tokens ?? [])
                var found: [PolicyStoreUsage.Bucket] = []
                for i in wins.indices where i < buckets.count && i < requests.count && i < tokens.count {
                    guard let window = PolicyWindow(rawValue: Int(wins[i])) else { continue }
                    found.append(.init(window: window, index: buckets[i], requests: requests[i], tokens: tokens[i]))
                }
                decision = .windowsFull(PolicyStoreUsage(now: now, buckets: found))
            }
            refusals.append(PolicyStoreLevelRefusal(level: Int(level), decision: decision))
        }
        guard !refusals.isEmpty else { throw PostgresStoreError("policygate.admit_chain returned no row") }
        return .refused(refusals)
    }
}
#endif
