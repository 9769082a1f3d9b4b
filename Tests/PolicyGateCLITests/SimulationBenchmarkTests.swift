import Foundation
import PolicyGate
import PolicyGateCLI
import Testing

/// Replay speed, opt-in (it needs a release build to mean anything):
///
/// ```sh
/// POLICYGATE_SIMULATION_BENCHMARK=1 swift test -c release --filter SimulationBenchmark
/// ```
///
/// Replays a synthetic day (over a million calls) through the example configuration five
/// times and prints the calls replayed per second of wall time, median and range. Target: at
/// least a million.
@Suite("Simulation: benchmark", .enabled(if: ProcessInfo.processInfo.environment["POLICYGATE_SIMULATION_BENCHMARK"] != nil))
struct SimulationBenchmarkTests {
    @Test("A synthetic day replays at a million calls per second or more")
    func replaySpeed() throws {
        let calls = SyntheticWorkload.calls(seed: 1, duration: .seconds(86_400))
        #expect(calls.count >= 1_000_000)
        let simulation = Simulation(configuration: SyntheticWorkload.configuration)
        var rates: [Double] = []
        var last: SimulationReport?
        for _ in 0..<5 {
            let report = try simulation.run(calls)
            rates.append(report.callsPerSecond)
            if let last { #expect(report.providers == last.providers) }  // deterministic
            last = report
        }
        rates.sort()
        let median = rates[rates.count / 2]
        print(
            """
            simulation benchmark: \(calls.count) calls, \(Int(last!.simulatedSeconds)) s simulated; \
            \(Int(median)) calls/s median (\(Int(rates.first!))…\(Int(rates.last!))), \
            \(String(format: "%.0f", 1e9 / median)) ns per call
            """)
        #expect(median >= 1_000_000)
    }
}
