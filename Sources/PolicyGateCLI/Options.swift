import Foundation

/// One option of a command: how it is spelled, whether it takes a value, and its help line.
///
/// A command's options are a plain table of these, read both by ``CommandSpec/parse(_:)`` and by
/// ``CommandSpec/help``, so the help can never disagree with what is accepted.
package struct OptionSpec: Sendable {
    /// The long spelling, such as `--from`.
    package var name: String
    /// The value's placeholder in help (`date`), or `nil` for a flag without a value.
    package var valueName: String?
    /// What the option does, one or two sentences.
    package var help: String

    /// Creates an option that takes a value, named `value` in help.
    package init(_ name: String, value: String, _ help: String) {
        self.name = name
        self.valueName = value
        self.help = help
    }

    /// Creates a flag: an option without a value.
    package init(_ name: String, _ help: String) {
        self.name = name
        self.valueName = nil
        self.help = help
    }
}

/// A command's name, arguments and options: the table its parsing and help come from.
package struct CommandSpec: Sendable {
    /// The word after `policy-gate`, such as `check`.
    package var name: String
    /// One line for the command list.
    package var summary: String
    /// The positional arguments, all required: a placeholder (`file`) and its help line.
    package var arguments: [(name: String, help: String)]
    /// Paragraphs shown in help between usage and options.
    package var discussion: [String]
    /// The options, in the order help lists them (`--help` is added).
    package var options: [OptionSpec]

    /// Creates a command description.
    package init(
        name: String, summary: String, arguments: [(name: String, help: String)] = [], discussion: [String],
        options: [OptionSpec]
    ) {
        self.name = name
        self.summary = summary
        self.arguments = arguments
        self.discussion = discussion
        self.options = options
    }

    /// `policy-gate check`.
    package var fullName: String { "\(PolicyGateTool.name) \(name)" }

    /// The arguments as parsed against the table.
    package struct Parsed: Sendable {
        /// The positional arguments, in order.
        package var arguments: [String] = []
        /// Each option given, by its long name; flags map to `""`.
        package var options: [String: String] = [:]
        /// Whether `-h` or `--help` was given (the rest is then not checked).
        package var wantsHelp = false

        /// Whether the flag `name` was given.
        package func flag(_ name: String) -> Bool { options[name] != nil }
        /// The value of option `name`, if given.
        package func value(_ name: String) -> String? { options[name] }
    }

    /// Parses `arguments` (those after the command's name): `--name value`, `--name=value`,
    /// flags, `--` before arguments that start with a dash, and the positional arguments.
    /// - Throws: ``UsageError`` for an unknown option, a missing or unexpected value, an option
    ///   given twice, or too many or too few arguments.
    package func parse(_ arguments: [String]) throws(UsageError) -> Parsed {
        var parsed = Parsed()
        var index = 0
        var onlyArguments = false
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            if onlyArguments || argument == "-" || !argument.hasPrefix("-") {
                parsed.arguments.append(argument)
                continue
            }
            if argument == "--" {
                onlyArguments = true
                continue
            }
            if argument == "-h" || argument == "--help" {
                parsed.wantsHelp = true
                continue
            }
            let name = String(argument.prefix { $0 != "=" })
            let inline: String? = name.count < argument.count ? String(argument.dropFirst(name.count + 1)) : nil
            guard let option = options.first(where: { $0.name == name }) else {
                throw UsageError("unknown option '\(name)' for '\(fullName)'", command: self)
            }
            guard parsed.options[name] == nil else {
                throw UsageError("option '\(name)' is given more than once", command: self)
            }
            guard let valueName = option.valueName else {
                if inline != nil { throw UsageError("option '\(name)' takes no value", command: self) }
                parsed.options[name] = ""
                continue
            }
            if let inline {
                parsed.options[name] = inline
            } else if index < arguments.count, !arguments[index].hasPrefix("--") {
                parsed.options[name] = arguments[index]
                index += 1
            } else {
                throw UsageError("option '\(name)' needs a value: \(name) <\(valueName)>", command: self)
            }
        }
        if parsed.wantsHelp { return parsed }
        if parsed.arguments.count > self.arguments.count {
            let extra = parsed.arguments[self.arguments.count]
            throw UsageError("unexpected argument '\(extra)' for '\(fullName)'", command: self)
        }
        if parsed.arguments.count < self.arguments.count {
            throw UsageError("'\(fullName)' needs <\(self.arguments[parsed.arguments.count].name)>", command: self)
        }
        return parsed
    }

    /// The command's help: overview, usage, discussion and every option of the table.
    package var help: String {
        var text = wrap("OVERVIEW: \(summary)", indent: 0) + "\n\nUSAGE: \(fullName)"
        for argument in arguments { text += " <\(argument.name)>" }
        if !options.isEmpty { text += " [options]" }
        text += "\n"
        for paragraph in discussion { text += "\n" + wrap(paragraph, indent: 0) + "\n" }
        let argumentRows = arguments.map { ("<\($0.name)>", $0.help) }
        let optionRows =
            options.map { option in
                (option.valueName.map { "\(option.name) <\($0)>" } ?? option.name, option.help)
            } + [("-h, --help", "Show this help.")]
        // One column width for both lists, so their help texts line up.
        let width = (argumentRows + optionRows).map(\.0.count).max() ?? 0
        func list(_ rows: [(String, String)]) -> String {
            rows.map { spelling, help in
                let padded = "  " + spelling + String(repeating: " ", count: width - spelling.count + 2)
                return padded + wrap(help, indent: padded.count).dropFirst(padded.count) + "\n"
            }.joined()
        }
        if !argumentRows.isEmpty { text += "\nARGUMENTS:\n" + list(argumentRows) }
        text += "\nOPTIONS:\n" + list(optionRows)
        return text
    }
}

/// A command line that cannot be run as written; the command exits with status 2.
package struct UsageError: Error, Sendable, CustomStringConvertible {
    /// What is wrong, without the `error:` prefix.
    package var message: String
    /// The command whose help to point to, or `nil` for the top level.
    package var command: String?

    /// Creates the error, pointing to `command`'s help.
    package init(_ message: String, command: CommandSpec? = nil) {
        self.message = message
        self.command = command?.fullName
    }

    /// `error: unknown option '--x' for 'policy-gate check'; see 'policy-gate check --help'`.
    package var description: String {
        "error: \(message); see '\(command ?? PolicyGateTool.name) --help'"
    }
}

/// Word-wraps `text` to 80 columns, indenting every line by `indent` spaces.
func wrap(_ text: String, indent: Int, width: Int = 80) -> String {
    let margin = String(repeating: " ", count: indent)
    var lines: [String] = []
    var line = margin
    for word in text.split(separator: " ") {
        if line.count > indent && line.count + 1 + word.count > width {
            lines.append(line)
            line = margin
        }
        line += (line.count > indent ? " " : "") + word
    }
    lines.append(line)
    return lines.joined(separator: "\n")
}

/// Reads `--from`: an ISO 8601 instant or `now` (the default).
func instantOption(
    _ value: String?, name: String, command: CommandSpec, now: Date = Date()
) throws(UsageError) -> Date {
    guard let value else { return now }
    guard let date = Values.parseInstant(value, now: now) else {
        throw UsageError(
            "\(name) '\(value)' is not an ISO 8601 date and time with an offset, such as 2026-12-24T09:00:00Z",
            command: command)
    }
    return date
}

/// Reads a whole-number option within `range`.
func integerOption(
    _ value: String?, name: String, in range: ClosedRange<Int>, default fallback: Int, command: CommandSpec
) throws(UsageError) -> Int {
    guard let value else { return fallback }
    guard let number = Int(value), range.contains(number) else {
        throw UsageError(
            "\(name) '\(value)' is not a whole number from \(range.lowerBound) to \(range.upperBound)",
            command: command)
    }
    return number
}
