internal import PolicyGateTOML

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension PolicyConfiguration {
    /// Reads a configuration from TOML text.
    /// - Parameter toml: The document, such as the contents of `policy.toml`.
    /// - Throws: ``PolicyConfigurationError`` with every problem, each with its line and
    ///   column (a syntax error stops reading, so it comes alone).
    public init(toml: String) throws(PolicyConfigurationError) {
        try self.init(tomlTable: Self.parse { () throws(TOMLError) in try TOMLTable(parsing: toml) })
    }

    /// Reads a configuration from a file: JSON when its name ends in `.json`, TOML otherwise.
    /// - Throws: ``PolicyConfigurationError`` naming the file, with every problem found (or
    ///   why the file could not be read).
    public init(contentsOfFile path: String) throws(PolicyConfigurationError) {
        let bytes: [UInt8]
        switch Self.readFile(path) {
        case .success(let contents): bytes = contents
        case .failure(let reason):
            throw PolicyConfigurationError(
                diagnostics: [.init(.error, keyPath: "", message: "cannot read the file: \(reason.message)")], file: path)
        }
        do {
            if path.lowercased().hasSuffix(".json") {
                try self.init(json: Data(bytes))
            } else {
                try self.init(tomlTable: Self.parse { () throws(TOMLError) in try TOMLTable(parsingUTF8: bytes) })
            }
        } catch var error {
            error.file = path
            throw error
        }
    }

    /// Reads a configuration from JSON with the same keys as the TOML form. Diagnostics carry
    /// key paths but no line and column.
    public init(json: Data) throws(PolicyConfigurationError) {
        do {
            self = try JSONDecoder().decode(PolicyConfiguration.self, from: json)
        } catch let error as PolicyConfigurationError {
            throw error
        } catch {
            throw PolicyConfigurationError(diagnostics: [
                .init(.error, keyPath: "", message: "not valid JSON: \(Self.describe(error))")
            ])
        }
    }

    /// Decodes from a parsed document and points every diagnostic at the key it is about.
    init(tomlTable table: TOMLTable) throws(PolicyConfigurationError) {
        do {
            self = try TOMLDecoder().decode(PolicyConfiguration.self, from: table)
            warnings = Self.locate(warnings, in: table)
        } catch let error as PolicyConfigurationError {
            throw PolicyConfigurationError(diagnostics: Self.locate(error.diagnostics, in: table))
        } catch {
            throw PolicyConfigurationError(diagnostics: [Self.diagnostic(for: error)])
        }
    }

    private static func parse(_ body: () throws(TOMLError) -> TOMLTable) throws(PolicyConfigurationError) -> TOMLTable {
        do {
            return try body()
        } catch {
            throw PolicyConfigurationError(diagnostics: [diagnostic(for: error)])
        }
    }

    /// Adds line and column to diagnostics from where their keys were written; keeps
    /// document order (a stable sort, so problems of one key stay in the order found).
    private static func locate(_ diagnostics: [Diagnostic], in table: TOMLTable) -> [Diagnostic] {
        let located = diagnostics.map { diagnostic in
            var diagnostic = diagnostic
            let position = table.position(at: diagnostic.path)
            diagnostic.line = position.line
            diagnostic.column = position.column
            return diagnostic
        }
        return located.enumerated().sorted { lhs, rhs in
            let l = (lhs.element.line ?? 0, lhs.element.column ?? 0, lhs.offset)
            let r = (rhs.element.line ?? 0, rhs.element.column ?? 0, rhs.offset)
            return l < r
        }.map(\.element)
    }

    private static func diagnostic(for error: any Error) -> Diagnostic {
        guard let error = error as? TOMLError else {
            return .init(.error, keyPath: "", message: describe(error))
        }
        return .init(
            .error, keyPath: error.keyPath.dottedKey, line: error.position?.line, column: error.position?.column,
            message: error.message)
    }

    private static func describe(_ error: any Error) -> String {
        if let error = error as? DecodingError, case .dataCorrupted(let context) = error {
            return context.underlyingError.map { "\($0)" } ?? context.debugDescription
        }
        return "\(error)"
    }

    struct ReadFailure: Error { var message: String }

    /// The whole file, or the system's reason it cannot be read (`No such file or directory`).
    static func readFile(_ path: String) -> Result<[UInt8], ReadFailure> {
        guard let file = fopen(path, "rb") else {
            return .failure(ReadFailure(message: String(cString: strerror(errno))))
        }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, file) }
            bytes.append(contentsOf: chunk[..<count])
            if count < chunk.count {
                if ferror(file) != 0 { return .failure(ReadFailure(message: String(cString: strerror(errno)))) }
                return .success(bytes)
            }
        }
    }
}
