#if Postgres
import Foundation
import PolicyGate
import PolicyGatePostgres
import PostgresNIO
import Testing

extension PostgresStoreTests {
    /// `POLICYGATE_SOAK=1` runs the many-processes test for 130 s instead of 12 s, so that
    /// admissions slide across whole minute windows.
    static var manyProcessesSeconds: Int { ProcessInfo.processInfo.environment["POLICYGATE_SOAK"] == "1" ? 130 : 12 }

    @Test("many processes, one cap: 4 OS processes × 8 tasks never exceed the windows or max_concurrent")
    func manyProcessesOneCap() async throws {
        let provider = TestDatabase.uniqueProvider("many")
        let (rpm, tpm, concurrent, estimate) = (120, 6_000, 5, 100)
        let seconds = Self.manyProcessesSeconds
        try await TestDatabase.prepare()  // the workers only check the schema
        let workers = try (0..<4).map { index in
            try Worker([
                "hammer", "--provider", provider, "--tasks", "8", "--seconds", "\(seconds)", "--rpm", "\(rpm)", "--tpm", "\(tpm)",
                "--concurrent", "\(concurrent)", "--estimate", "\(estimate)", "--holder", "worker-\(index)",
            ])
        }
        var reported = 0
        var refused = 0
        for worker in workers {
            let (status, output) = worker.finish()
            #expect(status == 0, "worker exited \(status): \(output)")
            let words = output.split(whereSeparator: \.isWhitespace)
            guard words.count == 4, let admitted = Int(words[1]), let refusals = Int(words[3]) else {
                Issue.record("unexpected worker output: \(output)")
                continue
            }
            reported += admitted
            refused += refusals
        }
        struct Row { let holder: String, admitted: Int64, end: Int64, tokens: Int64 }
        let name = PolicyKey(provider: provider).storeName
        let rows: [Row] = try await TestDatabase.withConnection { connection in
            var rows: [Row] = []
            let query: PostgresQuery = """
                SELECT holder, admitted_us, coalesce(released_us, lease_lost_us, 9223372036854775807), tokens
                FROM policygate.admissions WHERE key = \(name) ORDER BY admitted_us
                """
            for try await (holder, admitted, end, tokens) in try await connection.query(query, logger: TestDatabase.logger)
                .decode((String, Int64, Int64, Int64).self)
            {
                rows.append(Row(holder: holder, admitted: admitted, end: end, tokens: tokens))
            }
            return rows
        }
        // Every process took part, and what they report is what the database logged, give or
        // take the admissions that committed just after their callers' maximum wait ran out at
        // the end of the run (given back at once; their callers counted a refusal). A refused
        // admission decides again after registering as a waiter (migration 4), in the same
        // statement, which makes such late admissions likelier than before.
        #expect(Set(rows.map(\.holder)).count == 4)
        #expect(
            rows.count >= reported && rows.count <= reported + refused, "\(rows.count) logged, \(reported) reported, \(refused) refused")
        // No sliding 60 s window ever held more than its caps (committed tokens never exceed the
        // estimates here, so the final counts bound what admission saw).
        var worstRequests = 0
        var worstTokens: Int64 = 0
        var start = 0
        var tokens: Int64 = 0
        for (index, row) in rows.enumerated() {
            tokens += row.tokens
            while rows[start].admitted <= row.admitted - 60_000_000 {
                tokens -= rows[start].tokens
                start += 1
            }
            worstRequests = max(worstRequests, index - start + 1)
            worstTokens = max(worstTokens, tokens)
        }
        #expect(worstRequests <= rpm, "a 60 s window held \(worstRequests) requests")
        #expect(worstTokens <= Int64(tpm), "a 60 s window held \(worstTokens) tokens")
        // Not vacuous: the processes pushed against the caps until they refused calls.
        #expect(refused > 0, "no call was refused: the caps were never reached")
        // In flight, from admission to the database's release time, never above the cap.
        var events: [(time: Int64, change: Int)] = []
        for row in rows {
            events.append((row.admitted, 1))
            events.append((row.end, -1))
        }
        // Releases before admissions at the same microsecond.
        events.sort { lhs, rhs in lhs.time != rhs.time ? lhs.time < rhs.time : lhs.change < rhs.change }
        var inFlight = 0
        var peak = 0
        for (_, change) in events {
            inFlight += change
            peak = max(peak, inFlight)
        }
        #expect(peak <= concurrent, "\(peak) calls in flight at once")
        #expect(peak >= 2, "the processes did overlap")
    }
}
#endif
