import Foundation
import PolicyGate

/// `policy-gate simulate`: replays traffic through a real gate on a virtual clock.
package enum SimulateCommand {
    /// The command's options.
    package static let spec = CommandSpec(
        name: "simulate",
        summary: "Replay traffic through a real PolicyService on a virtual clock; report waits, refusals and "
            + "which cap bites first.",
        discussion: [
            "Every call of the trace (or of a synthetic workload) goes through PolicyService's own acquire, "
                + "commit and release on a virtual clock, so a day of traffic (a million calls) replays in seconds. "
                + "Without options it simulates the built-in example configuration under a synthetic workload.",
            "The summary gives, per provider: calls admitted and refused by limit, queue wait percentiles, "
                + "peak calls in flight and queued, and each cap against the most used of it, with the first "
                + "moment it held a call back (times are offsets from the start, +1m 05s).",
            "Trace format (JSON Lines, see Examples/calls.jsonl): one object per call with at (seconds "
                + "from the start, or an ISO 8601 instant), provider, scope (optional: global, user:<id>, "
                + "org:<id>, project:<id>), estimated_tokens, actual_tokens, duration (seconds), and "
                + "optionally max_wait and cancel_after (seconds). For input and output caps, give "
                + "estimated_input_tokens with estimated_output_tokens, and actual_input_tokens with "
                + "actual_output_tokens (and optionally actual_cache_read_tokens); the totals may then be left "
                + "out (given, each must be the sum of its parts).",
        ],
        options: [
            OptionSpec(
                "--config", value: "file",
                "The configuration to simulate (TOML, or JSON by extension). Default: the built-in example."),
            OptionSpec("--trace", value: "file", "Calls to replay, JSON Lines. Default: a synthetic workload."),
            OptionSpec(
                "--duration", value: "time",
                "How long the synthetic workload runs: 90s, 30m, 2h, 1h30m, up to 7d (default 1d, about a "
                    + "million calls). Not with --trace."),
            OptionSpec("--seed", value: "n", "The synthetic workload's random seed (default 1). Not with --trace."),
            OptionSpec(
                "--from", value: "date",
                "The wall-clock date at the start, against which schedules are read: ISO 8601 with an offset, "
                    + "or 'now'. Default: the trace's first ISO 8601 instant, else now; for the synthetic "
                    + "workload, Monday 2026-01-05 00:00 UTC."),
            OptionSpec(
                "--capacity", value: "provider=limits",
                "Answer the provider's calls with a model of the provider that returns 429 above a hidden capacity "
                    + "(600rpm, 150000tpm, or both: openai=600rpm,150000tpm); the client reports each 429 to the gate "
                    + "and gives the call up. The workload then runs twice, with adaptive caps off and on, and the "
                    + "report compares their 429s and goodput."),
            OptionSpec(
                "--chart", value: "file", "Also write an SVG chart of queue, calls in flight and usage over time."),
            OptionSpec("--json", "Print the report as JSON on standard output instead of the summary."),
            OptionSpec("--quiet", "Show no progress on standard error."),
        ])

    /// The synthetic workload's defaults.
    static let defaultDuration = Duration.seconds(86_400)
    static let defaultSeed: UInt64 = 1
    /// The longest synthetic workload: about 8 million calls, which the simulator holds in
    /// memory at once (about 1.7 GB); longer would exhaust a small machine.
    static let maximumDuration = Duration.seconds(7 * 86_400)

    static func run(_ parsed: CommandSpec.Parsed, _ context: PolicyGateTool.Context) -> Int32 {
        let options: Options
        do {
            options = try Options(parsed)
        } catch {
            context.stderr.line(error.description)
            return PolicyGateTool.ExitStatus.usage
        }
        // Found out before the simulation rather than after it has run for seconds.
        if let chart = options.chart, let reason = unwritable(chart) {
            context.error("cannot write the chart to '\(chart)': \(reason)")
            return PolicyGateTool.ExitStatus.failure
        }
        guard let configuration = configuration(options, context), let workload = workload(options, context) else {
            return PolicyGateTool.ExitStatus.failure
        }
        warnAboutUnknownProviders(workload.calls, configuration, context)

        let progress = options.quiet ? nil : ProgressBar(sink: context.stderr, label: "simulating")
        var simulationOptions = SimulationOptions(startDate: workload.startDate)
        if let progress { simulationOptions.progress = { progress.update($0) } }
        simulationOptions.capacities = options.capacities
        var report: SimulationReport
        do {
            report = try Simulation(configuration: configuration, options: simulationOptions).run(workload.calls)
            if !options.capacities.isEmpty {
                report.adaptiveComparison = try compareAdaptive(configuration, simulationOptions, workload.calls, report)
            }
        } catch {
            progress?.finish()
            context.error("the simulation failed: \(error)")
            return PolicyGateTool.ExitStatus.failure
        }
        progress?.finish()

        if let chart = options.chart, let reason = writeFile(chart, SVGChart.render(report)) {
            context.error("cannot write the chart to '\(chart)': \(reason)")
            return PolicyGateTool.ExitStatus.failure
        }
        if options.json {
            context.stdout.write(encodeJSON(report))
        } else {
            context.stdout.write(SimulationSummary.text(report, source: workload.source))
            if let chart = options.chart { context.stdout.line("\nChart written to \(chart).") }
        }
        return PolicyGateTool.ExitStatus.success
    }

    /// Runs the calls again with adaptive caps switched the other way for every modelled
    /// provider, and pairs both runs' figures.
    static func compareAdaptive(
        _ configuration: PolicyConfiguration, _ options: SimulationOptions, _ calls: [SimulatedCall],
        _ report: SimulationReport
    ) throws(SimulationError) -> [AdaptiveComparison] {
        var other = configuration
        var options = options
        options.progress = nil
        for provider in options.capacities.keys {
            if other.adaptive.contains(provider) { other.adaptive.remove(provider) } else { other.adaptive.insert(provider) }
        }
        let second = try Simulation(configuration: other, options: options).run(calls)
        return options.capacities.keys.sorted().compactMap { provider in
            guard let first = report[provider: provider]?.providerModel, let again = second[provider: provider]?.providerModel
            else { return nil }
            let (off, on) = first.adaptive ? (again, first) : (first, again)
            return AdaptiveComparison(provider: provider, capacity: first.capacity, off: off, on: on)
        }
    }

    /// `openai=600rpm,150000tpm`: a provider and its hidden capacity.
    static func capacity(_ text: String) -> (String, ProviderCapacity)? {
        guard let equals = text.lastIndex(of: "=") else { return nil }
        let provider = String(text[..<equals])
        var capacity = ProviderCapacity()
        for part in text[text.index(after: equals)...].split(separator: ",", omittingEmptySubsequences: false) {
            let part = part.lowercased().filter { $0 != "_" }
            if part.hasSuffix("rpm"), let n = Int(part.dropLast(3)), n > 0, capacity.requestsPerMinute == nil {
                capacity.requestsPerMinute = n
            } else if part.hasSuffix("tpm"), let n = Int(part.dropLast(3)), n > 0, capacity.tokensPerMinute == nil {
                capacity.tokensPerMinute = n
            } else {
                return nil
            }
        }
        return provider.isEmpty ? nil : (provider, capacity)
    }

    /// The configuration of `--config`, or the built-in example; `nil` (its problems printed)
    /// when it cannot be used.
    private static func configuration(_ options: Options, _ context: PolicyGateTool.Context) -> PolicyConfiguration? {
        guard let path = options.config else {
            do {
                return try PolicyConfiguration(toml: SyntheticWorkload.exampleTOML)
            } catch {
                context.error("the built-in example configuration is invalid:\n\(error)")
                return nil
            }
        }
        if let reason = unreadable(path) {
            context.error("cannot read '\(path)': \(reason)")
            return nil
        }
        do {
            let configuration = try PolicyConfiguration(contentsOfFile: path)
            if !configuration.warnings.isEmpty {
                context.stderr.line(PolicyConfigurationError(diagnostics: configuration.warnings, file: path).description)
            }
            return configuration
        } catch {
            context.stderr.line(error.description)
            context.error("\(path) is not a valid configuration (\(plural(error.errors.count, "error")))")
            return nil
        }
    }

    /// The calls to replay, the date their time zero stands for, and a few words on where they
    /// come from; `nil` (the problem printed) when the trace cannot be used.
    private static func workload(
        _ options: Options, _ context: PolicyGateTool.Context
    ) -> (calls: [SimulatedCall], startDate: Date, source: String)? {
        guard let path = options.trace else {
            let calls = SyntheticWorkload.calls(seed: options.seed, duration: options.duration)
            // The workload's day starts at midnight UTC of a fixed Monday unless told otherwise,
            // so that a seed always gives the same report.
            let source = "synthetic workload, \(Values.readable(options.duration)), seed \(options.seed)"
            return (calls, options.from ?? SyntheticWorkload.startDate, source)
        }
        let text: String
        switch readText(path) {
        case .success(let contents): text = contents
        case .failure(let reason):
            context.error("cannot read '\(path)': \(reason.message)")
            return nil
        }
        do {
            let trace = try TraceReader.readTrace(text, startDate: options.from)
            if trace.calls.isEmpty { context.stderr.line("warning: \(path) holds no calls") }
            return (trace.calls, trace.startDate ?? options.now, "trace \(path)")
        } catch {
            // Compiler style, so editors can jump to the line.
            let place = error.line.map { "\(path):\($0): " } ?? "\(path): "
            context.stderr.line(place + "error: " + (error.field.map { "\($0): " } ?? "") + error.message)
            return nil
        }
    }

    /// A provider the configuration does not know is let through unchecked: most likely a
    /// misspelt name, which would leave the simulation with nothing to say about it.
    private static func warnAboutUnknownProviders(
        _ calls: [SimulatedCall], _ configuration: PolicyConfiguration, _ context: PolicyGateTool.Context
    ) {
        let known = Set(configuration.limits.keys).union(configuration.schedules.keys)
        let unknown = Set(calls.map(\.provider)).subtracting(known).sorted()
        guard !unknown.isEmpty else { return }
        let names = unknown.map { "'\($0)'" }.joined(separator: ", ")
        let (noun, their) = unknown.count == 1 ? ("provider", "its") : ("providers", "their")
        context.stderr.line("warning: the configuration has no limits for \(noun) \(names): \(their) calls are not gated")
    }

    /// The options, checked.
    struct Options {
        var config: String?
        var trace: String?
        var chart: String?
        var json: Bool
        var quiet: Bool
        var seed: UInt64
        var duration: Duration
        var from: Date?
        var now = Date()
        var capacities: [String: ProviderCapacity] = [:]

        init(_ parsed: CommandSpec.Parsed) throws(UsageError) {
            config = parsed.value("--config")
            trace = parsed.value("--trace")
            chart = parsed.value("--chart")
            json = parsed.flag("--json")
            quiet = parsed.flag("--quiet")
            if trace != nil {
                for option in ["--seed", "--duration"] where parsed.value(option) != nil {
                    throw UsageError(
                        "\(option) shapes the synthetic workload; it does not apply with --trace", command: spec)
                }
            }
            if let text = parsed.value("--seed") {
                guard let value = UInt64(text) else {
                    throw UsageError("--seed '\(text)' is not a whole number from 0 to \(UInt64.max)", command: spec)
                }
                seed = value
            } else {
                seed = SimulateCommand.defaultSeed
            }
            if let text = parsed.value("--duration") {
                guard let value = Values.parseDuration(text), value <= SimulateCommand.maximumDuration else {
                    throw UsageError(
                        "--duration '\(text)' is not a duration such as 90s, 30m, 2h or 1h30m, at most 7d",
                        command: spec)
                }
                duration = value
            } else {
                duration = SimulateCommand.defaultDuration
            }
            if let text = parsed.value("--capacity") {
                guard let (provider, capacity) = SimulateCommand.capacity(text) else {
                    throw UsageError(
                        "--capacity '\(text)' is not a provider's capacity such as openai=600rpm, openai=150000tpm "
                            + "or openai=600rpm,150000tpm", command: spec)
                }
                capacities[provider] = capacity
            }
            from = try parsed.value("--from").map { text throws(UsageError) in
                try instantOption(text, name: "--from", command: spec, now: now)
            }
        }
    }
}
