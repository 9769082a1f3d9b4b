import Foundation
import PolicyGate
import PolicyGateCLI
import Testing

#if canImport(FoundationXML)
import FoundationXML
#endif

@Suite("Simulation: report, chart and synthetic workload")
struct SimulationReportTests {
    /// One synthetic hour through the example configuration (about 8 000 calls): every
    /// provider, schedule and kind of outcome shows up.
    static let hour: SimulationReport = {
        let calls = SyntheticWorkload.calls(seed: 7, duration: .seconds(3_600))
        let start = Values.parseInstant("2026-01-05T01:40:00Z")!  // over the 02:00 maintenance window
        return try! Simulation(configuration: SyntheticWorkload.configuration, options: SimulationOptions(startDate: start))
            .run(calls)
    }()

    @Test("The report round-trips through JSON")
    func jsonRoundTrip() throws {
        let report = Self.hour
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = try encoder.encode(report)
        let decoded = try JSONDecoder().decode(SimulationReport.self, from: data)
        #expect(decoded == report)
        #expect(try encoder.encode(decoded) == data)
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(
            Set(object.keys) == [
                "calls", "callsPerSecond", "providers", "sampleIntervalSeconds", "schemaVersion", "simulatedSeconds", "startDate",
                "wallSeconds",
            ])
    }

    @Test("simulate --json writes snake_case keys only, with schema_version; and the limit names it is keyed by")
    func snakeCaseJSON() throws {
        let json = Data(Self.hour.json.utf8)
        let object = try #require(try JSONSerialization.jsonObject(with: json) as? [String: Any])
        #expect(
            Set(object.keys) == [
                "calls", "calls_per_second", "providers", "sample_interval_seconds", "schema_version", "simulated_seconds",
                "start_date", "wall_seconds",
            ])
        #expect(object["schema_version"] as? Int == 1)
        var keys: Set<String> = []
        func collect(_ value: Any) {
            if let dictionary = value as? [String: Any] {
                keys.formUnion(dictionary.keys)
                dictionary.values.forEach(collect)
            } else if let array = value as? [Any] {
                array.forEach(collect)
            }
        }
        collect(object)
        #expect(keys.filter { $0.contains(where: \.isUppercase) }.isEmpty)
        #expect(keys.isSuperset(of: ["admitted_at_once", "peak_in_flight", "timed_out", "in_flight", "peak_used"]))
    }

    @Test("The synthetic workload is reproducible and exercises every limit of the example")
    func syntheticWorkload() throws {
        let calls = SyntheticWorkload.calls(seed: 7, duration: .seconds(3_600))
        #expect(calls == SyntheticWorkload.calls(seed: 7, duration: .seconds(3_600)))
        #expect(calls != SyntheticWorkload.calls(seed: 8, duration: .seconds(3_600)))
        #expect(zip(calls, calls.dropFirst()).allSatisfy { $0.at <= $1.at })
        #expect(calls.allSatisfy { $0.at < .seconds(3_600) && $0.estimatedTokens > 0 && $0.duration > .zero })
        #expect(Set(calls.map(\.provider)) == ["openai", "anthropic", "mistral"])
        #expect(calls.contains { $0.cancelAfter != nil } && calls.contains { $0.maxWait != nil })
        #expect(calls.contains { $0.actualTokens > $0.estimatedTokens } && calls.contains { $0.actualTokens < $0.estimatedTokens })
        #expect(SyntheticWorkload.configuration.warnings.isEmpty)

        let report = Self.hour
        #expect(report.calls == calls.count)
        #expect(report.providers.map(\.provider) == ["anthropic", "mistral", "openai"])
        let mistral = try #require(report[provider: "mistral"])
        // 02:00 is 20 min after the start: the first call then finds the gate closed.
        let closedAt = try #require(mistral[limit: "closed"]?.firstHitAt)
        #expect(closedAt >= 1_200 && closedAt < 1_210)
        #expect(mistral.timeline.closed.contains(true))
        for provider in report.providers {
            #expect(
                provider.calls == provider.admitted + provider.refused + provider.timedOut.values.reduce(0, +)
                    + provider.cancelled + provider.unfinished)
            #expect(
                provider.admitted == provider.admittedAtOnce + provider.delayed.values.reduce(0, +)
                    - provider.timedOut.values.reduce(0, +) - provider.cancelled - provider.unfinished)
            #expect(provider.wait.p50 <= provider.wait.p95 && provider.wait.p95 <= provider.wait.p99)
            #expect(provider.wait.p99 <= provider.wait.max)
            for series in provider.timeline.series {
                #expect(series.used.count == provider.timeline.time.count && series.cap.count == series.used.count)
            }
        }
    }

    @Test("The SVG chart is well-formed XML with a usage and a cap series per window cap, and the queue")
    func svgChart() throws {
        let report = Self.hour
        let svg = SVGChart.render(report)
        #if canImport(FoundationXML) || canImport(Darwin)
        let collector = PathCollector()
        let parser = XMLParser(data: Data(svg.utf8))
        parser.delegate = collector
        #expect(parser.parse(), "\(parser.parserError.map { "\($0)" } ?? "") at line \(parser.lineNumber)")
        #expect(collector.root == "svg")
        var expected = Set<String>()
        for provider in report.providers {
            for series in provider.timeline.series {
                expected.insert("used \(provider.provider) \(series.limit)")
                expected.insert("cap \(provider.provider) \(series.limit)")
            }
            expected.insert("queued \(provider.provider) queued")
            expected.insert("in_flight \(provider.provider) in_flight")
        }
        #expect(collector.series == expected)
        #expect(expected.contains("used openai tokens_per_minute") && expected.contains("cap mistral requests_per_minute"))
        #expect(collector.titles.contains { $0.contains("closed by schedule") })
        #endif
    }

    @Test("Names that need escaping stay well-formed in the chart")
    func escaping() throws {
        let configuration = try PolicyConfiguration(toml: "[limits.\"a<b>&'c\"]\nrequests_per_minute = 1")
        let report = try Simulation(configuration: configuration).run([
            SimulatedCall(at: .zero, provider: "a<b>&'c", estimatedTokens: 0, actualTokens: 0, duration: .seconds(1)),
            SimulatedCall(at: .zero, provider: "a<b>&'c", estimatedTokens: 0, actualTokens: 0, duration: .seconds(1)),
        ])
        let svg = SVGChart.render(report)
        #expect(!svg.contains("a<b>"))
        #if canImport(FoundationXML) || canImport(Darwin)
        let collector = PathCollector()
        let parser = XMLParser(data: Data(svg.utf8))
        parser.delegate = collector
        #expect(parser.parse())
        #expect(collector.series.contains("used a<b>&'c requests_per_minute"))
        #endif
    }

    @Test("Percentiles: the value at position ⌊q·n⌋ of the sorted waits")
    func percentiles() throws {
        let configuration = try PolicyConfiguration(toml: "[limits.p]\nmax_concurrent = 1")
        // Twenty 1 s calls at 0: waits 0, 1, …, 19 s.
        let report = try Simulation(configuration: configuration).run(
            (0..<20).map { _ in
                SimulatedCall(at: .zero, provider: "p", estimatedTokens: 0, actualTokens: 0, duration: .seconds(1))
            })
        let wait = try #require(report[provider: "p"]?.wait)
        #expect(wait.p50 == 10 && wait.p95 == 19 && wait.p99 == 19 && wait.max == 19 && wait.mean == 9.5)
    }
}

#if canImport(FoundationXML) || canImport(Darwin)
/// Collects the chart's series (`class provider series` of each `path`) and its titles.
final class PathCollector: NSObject, XMLParserDelegate {
    var root: String?
    var series = Set<String>()
    var titles: [String] = []
    private var inTitle = false

    func parser(
        _ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?, qualifiedName: String?,
        attributes: [String: String] = [:]
    ) {
        if root == nil { root = elementName }
        if elementName == "path", let style = attributes["class"], let provider = attributes["data-provider"],
            let name = attributes["data-series"]
        {
            series.insert("\(style) \(provider) \(name)")
        }
        if elementName == "title" {
            inTitle = true
            titles.append("")
        }
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) {
        if inTitle { titles[titles.count - 1] += string }
    }

    func parser(_ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName: String?) {
        if elementName == "title" { inTitle = false }
    }
}
#endif
