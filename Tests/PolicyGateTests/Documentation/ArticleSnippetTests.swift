// swift-format-ignore-file
// (This file holds the articles' code as the articles show it: DocumentationSnippetTests compares
// them line for line, so the formatter must not reflow it.)
import Foundation
import PolicyGate
import PolicyGateTestKit
import Synchronization
import Testing

// The code of the DocC articles (Sources/PolicyGate/PolicyGate.docc), compiled and run.
// `DocumentationSnippetTests` checks that every Swift block of every article appears here (or in
// another test source) line for line, so an article cannot drift from code that compiles.

/// A telemetry sink of the Observability article: one line per refusal.
// --- article: Observability ---
final class RefusalLog: PolicyTelemetry {
    let lines = Mutex<[String]>([])

    func didReject(_ event: PolicyRejectEvent) {
        lines.withLock { $0.append("\(event.key): \(event.error)") }
    }
}
// --- end ---

@Suite("Articles' code")
struct ArticleSnippetTests {
    struct Usage { let totalTokens: Int }
    struct Reply { let usage: Usage }
    struct Client { func chat(_ request: String) async throws -> Reply { Reply(usage: Usage(totalTokens: 1_150)) } }

    let client = Client()
    let request = "Hello"

    @Test("Getting started: a scoped permit, and a refusal handled")
    func gettingStarted() async throws {
        let gate = try PolicyService(limits: ["openai": PolicyLimits(requestsPerMinute: 1, tokensPerMinute: 200_000)])
        let key = PolicyKey(provider: "openai", scope: .user("u-42"))
        // --- article: GettingStarted ---
        let reply = try await gate.withPermit(key, estimatedTokens: 1_200) { permit in
            let reply = try await client.chat(request)
            permit.commitTokensClamping(reply.usage.totalTokens)  // never throws once the provider answered
            return reply
        }
        // --- end ---
        #expect(reply.usage.totalTokens == 1_150)
        #expect(gate.currentState(for: key)[.minute]?.tokens.used == 1_150)
        var retryAfter: Duration?
        // --- article: GettingStarted ---
        do {
            var permit = try gate.tryAcquire(key, estimatedTokens: 1_200)  // admits now, or throws at once
            try permit.commitTokens(900)
        } catch {
            print(error.code, error.limit as Any)  // a PolicyError: rateLimited, and the cap that is full
            retryAfter = error.retryAfter  // when the same call would fit
        }
        // --- end ---
        let refusedFor: Duration = retryAfter ?? .zero
        #expect(refusedFor > .zero)
    }

    @Test("Configuration: read, warnings, errors with their places")
    func configuration() async throws {
        // --- article: ConfigurationReference ---
        let configuration = try PolicyConfiguration(toml: """
            [limits.openai]
            requests_per_minute = 500
            tokens_per_minute   = 200_000
            max_concurrent      = 16
            """)
        for warning in configuration.warnings { print(warning) }
        let gate = try PolicyService(configuration: configuration)
        // --- end ---
        #expect(gate.limits(for: "openai") == PolicyLimits(requestsPerMinute: 500, tokensPerMinute: 200_000, maxConcurrent: 16))
        var report = ""
        // --- article: ConfigurationReference ---
        do {
            _ = try PolicyConfiguration(toml: "[limits.openai]\ntokens_pre_minute = 1_000\n")
        } catch {
            report = error.description  // every problem, one per line, with line, column and key
        }
        // --- end ---
        #expect(report.contains("did you mean 'tokens_per_minute'"))
    }

    @Test("Schedules: queries, and a manual clock pinned to a date")
    func schedules() async throws {
        let configuration = try PolicyConfiguration(contentsOfFile: Self.examplesDirectory + "/policy.toml")
        let clock = ManualClock()
        // Monday 2026-01-05 09:00 in Berlin.
        let start = try Date("2026-01-05T08:00:00Z", strategy: .iso8601)
        // --- article: Schedules ---
        let gate = try PolicyService(configuration: configuration, clock: clock, startDate: start)
        let now = gate.effectiveLimits(for: "openai", at: start)  // caps, entry name, valid until
        let week = gate.transitions(for: "openai", from: start, to: start.addingTimeInterval(7 * 86_400))
        clock.advance(by: .seconds(9 * 3_600))  // the gate's calendar moves with its clock
        // --- end ---
        #expect(now.entry == "peak")
        #expect(now.limits.requestsPerMinute == 200)
        let peakEnds: Date = start.addingTimeInterval(32_400)  // 18:00 in Berlin
        let ends: [PolicySchedule.Transition] = week.filter { $0.date == peakEnds }
        #expect(ends.count == 1)
        #expect(ends.first?.resolution.entry == nil)
        let key = PolicyKey(provider: "openai", scope: .global)
        let baseRate: Int? = 500
        await eventually("the peak ended on the gate's clock") { gate.currentState(for: key).limits.requestsPerMinute == baseRate }
    }

    @Test("Limits that change: setLimits and apply keep the usage")
    func changingLimits() async throws {
        let gate = try PolicyService(limits: ["openai": PolicyLimits(requestsPerMinute: 500)])
        let key = PolicyKey(provider: "openai", scope: .global)
        _ = try gate.tryAcquire(key)
        // --- article: ChangingLimits ---
        try await gate.setLimits(PolicyLimits(requestsPerMinute: 200, maxConcurrent: 8), for: "openai")
        try await gate.apply(PolicyConfiguration(toml: """
            [limits.openai]
            requests_per_minute = 300
            """))
        // --- end ---
        #expect(gate.limits(for: "openai") == PolicyLimits(requestsPerMinute: 300))
        #expect(gate.currentState(for: key)[.minute]?.requests.used == 1)
    }

    @Test("Shared store: shutting down on SIGTERM")
    func shutDown() async throws {
        let gate = try PolicyService(limits: ["openai": PolicyLimits(maxConcurrent: 1)])
        // --- article: SharedStore ---
        await gate.shutDown(gracePeriod: .seconds(20))  // refuse new calls, let permits finish, flush, stop
        // --- end ---
        #expect(gate.isShutDown)
        #expect(throws: PolicyError.self) { _ = try gate.tryAcquire(PolicyKey(provider: "openai", scope: .global)) }
    }

    @Test("Observability: readouts and several sinks")
    func observability() async throws {
        let limits = ["openai": PolicyLimits(requestsPerMinute: 1)]
        let recorder = TelemetryRecorder()
        let key = PolicyKey(provider: "openai", scope: .user("u-42"))
        // --- article: Observability ---
        let refusals = RefusalLog()
        let gate = try PolicyService(limits: limits, telemetry: .fanOut(refusals, recorder))
        // --- end ---
        _ = try gate.tryAcquire(key)
        _ = try? gate.tryAcquire(key)
        #expect(refusals.lines.withLock { $0.count } == 1)
        #expect(recorder.rejects.count == 1)
        var lines: [String] = []
        // --- article: Observability ---
        let state = gate.currentState(for: key)
        if let minute = state[.minute] {
            lines.append("requests \(minute.requests.used) of \(minute.requests.cap ?? 0), \(state.inFlight) in flight, \(state.queued) queued")
        }
        // --- end ---
        #expect(lines == ["requests 1 of 1, 0 in flight, 0 queued"])
    }

    @Test("Testing: a manual clock and a telemetry recorder, no sleeping")
    func testing() async throws {
        // --- article: Testing ---
        let clock = ManualClock()
        let recorder = TelemetryRecorder()
        let gate = try PolicyService(limits: ["openai": PolicyLimits(requestsPerMinute: 2)], clock: clock, telemetry: recorder)
        let key = PolicyKey(provider: "openai", scope: .user("u-42"))

        _ = try gate.tryAcquire(key)
        _ = try gate.tryAcquire(key)
        #expect(throws: PolicyError.self) { _ = try gate.tryAcquire(key) }
        #expect(recorder.rejects.map(\.error.limit) == [.requestsPerMinute])

        let waiter = Task { try await gate.acquire(key).release() }
        while gate.currentState(for: key).queued == 0 { await Task.yield() }
        let wait = try #require(recorder.rejects.first?.error.retryAfter)  // exact: the call fits then
        clock.advance(by: wait)  // the window moves on at once; the waiter is admitted
        try await waiter.value
        #expect(recorder.acquires.count == 3)
        // --- end ---
    }

    static let examplesDirectory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Examples").path
}
