/// The `policy-gate` command: `check` a configuration file, `simulate` traffic through a gate,
/// `migrate` the shared store's schema.
///
/// Everything runs in ``run(arguments:stdout:stderr:)``, which writes to the sinks it is given and
/// returns the exit status, so tests run the command in-process; `main.swift` only passes the
/// process's arguments and streams and exits with the status.
package enum PolicyGateTool {
    /// The command's name as typed.
    package static let name = "policy-gate"

    /// Exit statuses.
    package enum ExitStatus {
        /// Everything went well (a valid file; a finished simulation).
        package static let success: Int32 = 0
        /// The input was bad: an invalid configuration or trace, a file that cannot be read.
        package static let failure: Int32 = 1
        /// The command line was bad: an unknown option, a missing or malformed value.
        package static let usage: Int32 = 2
    }

    /// The commands, in the order help lists them.
    static let commands: [(spec: CommandSpec, run: @Sendable (CommandSpec.Parsed, Context) -> Int32)] = [
        (CheckCommand.spec, CheckCommand.run),
        (SimulateCommand.spec, SimulateCommand.run),
        (MigrateCommand.spec, MigrateCommand.run),
    ]

    /// What a command writes to.
    package struct Context: Sendable {
        /// Results: tables, JSON.
        package var stdout: any TextSink
        /// Diagnostics and progress.
        package var stderr: any TextSink

        /// Prints `error: <message>` on standard error.
        package func error(_ message: String) { stderr.line("error: \(message)") }
    }

    /// Runs the command line `arguments` (those after the program's name).
    /// - Returns: The exit status: 0 on success, 1 for bad input files, 2 for a bad command line.
    package static func run(arguments: [String], stdout: any TextSink, stderr: any TextSink) -> Int32 {
        let context = Context(stdout: stdout, stderr: stderr)
        guard let first = arguments.first else {
            stdout.write(help)
            return ExitStatus.success
        }
        switch first {
        case "-h", "--help":
            stdout.write(help)
            return ExitStatus.success
        case "help":
            // `policy-gate help check` is `policy-gate check --help`.
            guard arguments.count > 1 else {
                stdout.write(help)
                return ExitStatus.success
            }
            return run(arguments: [arguments[1], "--help"], stdout: stdout, stderr: stderr)
        default:
            break
        }
        guard let command = commands.first(where: { $0.spec.name == first }) else {
            let what = first.hasPrefix("-") ? "option" : "command"
            stderr.line(UsageError("unknown \(what) '\(first)'").description)
            return ExitStatus.usage
        }
        let parsed: CommandSpec.Parsed
        do {
            parsed = try command.spec.parse(Array(arguments.dropFirst()))
        } catch {
            stderr.line(error.description)
            return ExitStatus.usage
        }
        if parsed.wantsHelp {
            stdout.write(command.spec.help)
            return ExitStatus.success
        }
        return command.run(parsed, context)
    }

    /// The top-level help: what the tool is for and its commands.
    package static var help: String {
        let width = commands.map(\.spec.name.count).max() ?? 0
        var text = """
            OVERVIEW: Check and simulate PolicyGate rate-limit configurations; migrate the shared store.

            USAGE: \(name) <command> [options]

            COMMANDS:

            """
        for (spec, _) in commands {
            let padded = "  " + spec.name + String(repeating: " ", count: width - spec.name.count + 2)
            text += padded + wrap(spec.summary, indent: padded.count).dropFirst(padded.count) + "\n"
        }
        text += """

            See '\(name) <command> --help' for a command's arguments and options.
            Exit status: 0 on success, 1 for an invalid or unreadable file, 2 for a bad
            command line.

            """
        return text
    }
}
