internal import PolicyGateTOML

extension PolicyConfiguration {
    /// One problem found in a configuration: where, how bad, what, and what was probably meant.
    public struct Diagnostic: Sendable, Hashable, CustomStringConvertible {
        /// How bad a problem is.
        public enum Severity: String, Sendable, Hashable {
            /// The configuration cannot be used.
            case error
            /// The configuration works, but this is most likely a mistake.
            case warning
        }

        /// How bad it is.
        public var severity: Severity
        /// The key concerned as a TOML dotted key (`limits.openai.tokens_per_minute`); empty
        /// for the document as a whole.
        public var keyPath: String
        /// The line (from 1) where the key was written, when the source had positions (TOML).
        public var line: Int?
        /// The column (from 1, in Unicode scalars), with ``line``.
        public var column: Int?
        /// What is wrong.
        public var message: String
        /// The key that was probably meant, for an unknown key close to a known one.
        public var suggestion: String?

        /// The path as components, for locating the key in a parsed document.
        var path: [TOMLPathComponent]

        /// Creates a diagnostic.
        public init(
            _ severity: Severity, keyPath: String, line: Int? = nil, column: Int? = nil, message: String,
            suggestion: String? = nil
        ) {
            self.severity = severity
            self.keyPath = keyPath
            self.line = line
            self.column = column
            self.message = message
            self.suggestion = suggestion
            self.path = []
        }

        init(_ severity: Severity, path: [TOMLPathComponent], message: String, suggestion: String? = nil) {
            self.init(severity, keyPath: path.dottedKey, message: message, suggestion: suggestion)
            self.path = path
        }

        /// `3:1: error: limits.openai.tokens_pre_minute: unknown key; did you mean 'tokens_per_minute'?`
        public var description: String {
            var text = ""
            if let line, let column { text += "\(line):\(column): " }
            text += "\(severity.rawValue): "
            if !keyPath.isEmpty { text += "\(keyPath): " }
            text += message
            if let suggestion { text += "; did you mean '\(suggestion)'?" }
            return text
        }

        /// Equal when every public field is equal.
        public static func == (lhs: Diagnostic, rhs: Diagnostic) -> Bool {
            (lhs.severity, lhs.keyPath, lhs.line, lhs.column, lhs.message, lhs.suggestion)
                == (rhs.severity, rhs.keyPath, rhs.line, rhs.column, rhs.message, rhs.suggestion)
        }

        /// Hashes every public field.
        public func hash(into hasher: inout Hasher) {
            hasher.combine(severity)
            hasher.combine(keyPath)
            hasher.combine(line)
            hasher.combine(column)
            hasher.combine(message)
            hasher.combine(suggestion)
        }
    }
}

/// A configuration could not be read: every problem found, in document order where known.
///
/// Nothing is applied from a configuration that failed: reading happens before any change.
public struct PolicyConfigurationError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Every problem, errors and warnings, in the order found.
    public var diagnostics: [PolicyConfiguration.Diagnostic]
    /// The file read, when there was one.
    public var file: String?

    /// Creates the error.
    public init(diagnostics: [PolicyConfiguration.Diagnostic], file: String? = nil) {
        self.diagnostics = diagnostics
        self.file = file
    }

    /// The problems that make the configuration unusable.
    public var errors: [PolicyConfiguration.Diagnostic] { diagnostics.filter { $0.severity == .error } }

    /// One line per problem, each prefixed with the file name when known
    /// (`policy.toml:3:1: error: …`), as compilers print them.
    public var description: String {
        diagnostics.map { diagnostic in
            guard let file else { return diagnostic.description }
            return diagnostic.line == nil ? "\(file): \(diagnostic)" : "\(file):\(diagnostic)"
        }.joined(separator: "\n")
    }
}
