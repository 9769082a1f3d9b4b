/// The toml-test decoder interface for PolicyGateTOML: reads a TOML document from standard
/// input, writes it as tagged JSON to standard output and exits 0, or writes the error to
/// standard error and exits 1.
///
/// Against the official runner (github.com/toml-lang/toml-test, `go install
/// github.com/toml-lang/toml-test/cmd/toml-test@latest`):
///
///     swift build -c release --product toml-test-decoder
///     toml-test test -toml 1.0.0 -decoder "$(swift build -c release --show-bin-path)/toml-test-decoder"
///
/// The package's own `TOMLCorpusTests` run the same corpus without Go.
import PolicyGateTOML

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// All of standard input, as bytes (not a `String`: invalid UTF-8 must reach the parser).
func readStandardInput() -> [UInt8] {
    var input: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65_536)
    while true {
        let count = buffer.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
        if count > 0 {
            input.append(contentsOf: buffer[0..<count])
        } else if count == 0 || errno != EINTR {
            return input
        }
    }
}

/// Writes `text` to a file descriptor (not `stderr`, a global C variable Swift 6 rejects).
func write(_ text: String, to descriptor: Int32) {
    var text = text
    text.withUTF8 { bytes in
        var offset = 0
        while offset < bytes.count {
            let written = write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
            if written <= 0 {
                if written < 0 && errno == EINTR { continue }
                return
            }
            offset += written
        }
    }
}

do {
    let table = try TOMLTable(parsingUTF8: readStandardInput())
    write(table.taggedJSON + "\n", to: 1)
} catch {
    write(error.description + "\n", to: 2)
    exit(1)
}
