import Foundation
import PolicyGate
import PolicyGateCLI
import Testing

/// Priority classes in the simulator: a trace's `priority`, the order per class, the reserve,
/// aging, and waits reported per class.
@Suite("Simulation: priority classes")
struct SimulationPriorityTests {
    static func call(_ at: Int, _ priority: PolicyPriority, duration: Int = 10) -> SimulatedCall {
        var call = SimulationKnownAnswerTests.call(.seconds(at), duration: .seconds(duration))
        call.priority = priority
        return call
    }

    @Test("one slot: an interactive call that arrives later goes before a waiting batch call; waits per class")
    func interactiveFirst() throws {
        let calls = [Self.call(0, .interactive), Self.call(1, .batch), Self.call(2, .interactive)]
        let (report, outcomes) = try SimulationKnownAnswerTests.simulate("[limits.p]\nmax_concurrent = 1", calls)
        #expect(outcomes.map(\.admittedAt) == [0, 20, 10].map { Duration.seconds($0) })
        let p = try #require(report[provider: "p"])
        let interactive = try #require(p.waitByPriority?["interactive"])
        let batch = try #require(p.waitByPriority?["batch"])
        // Interactive waits 0 and 8: p50 is the 2nd; the batch call waited 19 s.
        #expect(interactive.p50 == 8 && interactive.max == 8 && interactive.mean == 4)
        #expect(batch.p50 == 19 && batch.max == 19)
        let text = SimulationSummary.text(report, source: "test")
        #expect(text.contains("  interactive  p50 8.0s"), "\(text)")
        #expect(text.contains("  batch        p50 19.0s"), "\(text)")
        let json = try #require(try JSONSerialization.jsonObject(with: JSONEncoder().encode(report)) as? [String: Any])
        let provider = try #require((json["providers"] as? [[String: Any]])?.first)
        let byPriority = try #require(provider["waitByPriority"] as? [String: [String: Any]])
        #expect(byPriority["batch"]?["p50"] as? Double == 19)
        // Without batch calls, no per-class waits.
        let plain = try SimulationKnownAnswerTests.simulate("[limits.p]\nmax_concurrent = 1", [Self.call(0, .interactive)])
        #expect(plain.report[provider: "p"]?.waitByPriority == nil)
    }

    @Test("a batch call that waited batch_aging_seconds goes before interactive calls that arrived after it")
    func aging() throws {
        let calls = [Self.call(0, .interactive), Self.call(1, .batch), Self.call(2, .interactive)]
        let (_, outcomes) = try SimulationKnownAnswerTests.simulate(
            "[limits.p]\nmax_concurrent = 1\nbatch_aging_seconds = 5", calls)
        #expect(outcomes.map(\.admittedAt) == [0, 10, 20].map { Duration.seconds($0) })
    }

    @Test("the reserve: batch calls get 4 of 5 requests, an interactive one passes the waiting batch call, which gets in once promoted")
    func reserve() throws {
        var calls = (0..<5).map { _ in Self.call(0, .batch, duration: 1) }
        calls.append(Self.call(0, .interactive, duration: 1))
        calls.append(Self.call(40, .batch, duration: 1))
        let (_, outcomes) = try SimulationKnownAnswerTests.simulate(
            "[limits.p]\nrequests_per_minute = 5\nreserved_for_interactive = 0.2", calls)
        // The fifth batch call waits: promoted at 30 s, the window is full until 61 s; the batch
        // call at 40 s queues behind it.
        #expect(outcomes.map(\.admittedAt) == [0, 0, 0, 0, 61, 0, 61].map { Duration.seconds($0) })
    }

    @Test("a trace line's priority: interactive, batch, null; anything else is an error naming the line")
    func traceField() throws {
        let line = { (priority: String) in
            "{\"at\": 0, \"provider\": \"p\", \"estimated_tokens\": 1, \"actual_tokens\": 1, \"duration\": 1, \"priority\": \(priority)}"
        }
        let calls = try TraceReader.read([line("\"batch\""), line("\"interactive\""), line("null")].joined(separator: "\n"))
        #expect(calls.map(\.priority) == [.batch, .interactive, .interactive])
        #expect(throws: SimulationError.self) { try TraceReader.read(line("\"urgent\"")) }
        do {
            _ = try TraceReader.read(line("\"urgent\""))
        } catch {
            #expect(error.description == "line 1: priority: expected 'interactive' or 'batch', got 'urgent'")
        }
        do {
            _ = try TraceReader.read(line("1"))
        } catch {
            #expect(error.description == "line 1: priority: expected 'interactive' or 'batch', got 1")
        }
    }
}
