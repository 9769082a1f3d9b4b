// Parses (and decodes) a generated ~1 MB TOML document of provider limits.
//
//   swift run -c release --package-path Benchmarks --scratch-path Benchmarks/.build-toml TOMLDecodeBenchmark [--runs N]
//
// The document is generated deterministically (a fixed-seed generator), so runs compare. Each
// measurement is repeated `--runs` times (default 20) after one warm-up; the median and the
// minimum are printed. A 10 MB document is parsed too, to show the time grows linearly.

import PolicyGateTOML

// MARK: - The document

/// A fixed-seed generator (SplitMix64): the same document on every run and machine.
struct SplitMix64 {
    var state: UInt64

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func next(_ upperBound: Int) -> Int { Int(next() % UInt64(upperBound)) }
}

/// `value` with at least `width` digits.
func padded(_ value: Int, _ width: Int) -> String {
    let digits = String(value)
    return String(repeating: "0", count: max(0, width - digits.count)) + digits
}

/// A policy document of about `targetBytes`: a header, then `[limits.provider-N]` tables with
/// scalars of every kind, arrays, escaped and multi-line strings, date-times, inline tables and
/// an array of tables of per-user overrides each.
func makeDocument(targetBytes: Int, seed: UInt64 = 42) -> String {
    var random = SplitMix64(state: seed)
    let models = ["gpt-4o", "gpt-4o-mini", "o3", "claude-sonnet", "claude-haiku", "gemini-pro", "mistral-large", "llama-70b"]
    let scopes = ["chat", "embeddings", "images", "audio", "batch"]
    var text = """
        # PolicyGate limits (generated for the TOML decode benchmark)
        title = "Production limits \\u2014 generated"
        version = 3
        generated = 2025-06-01T12:00:00Z

        [defaults]
        requests_per_minute = 60
        tokens_per_minute = 90_000
        max_concurrent = 4
        enabled = true


        """
    var n = 0
    while text.utf8.count < targetBytes {
        let rpm = 100 + random.next(9_900)
        let tpm = 10_000 * (1 + random.next(100))
        let year = 2020 + random.next(6), month = 1 + random.next(12), day = 1 + random.next(28)
        let hour = random.next(24), minute = random.next(60), second = random.next(60)
        let offset = random.next(24) - 12
        let sign = offset < 0 ? "-" : "+"
        let chosen = (0..<(1 + random.next(4))).map { _ in "\"\(models[random.next(models.count)])\"" }
        text += """
            [limits.provider-\(n)]
            requests_per_minute = \(rpm)
            tokens_per_minute = \(padded(tpm / 1000, 1))_000
            tokens_per_day = \(tpm * 1440)
            max_concurrent = \(1 + random.next(64))
            enabled = \(random.next(2) == 0 ? "true" : "false")
            weight = \(Double(random.next(1000)) / 1000)
            cost_per_token = \(1 + random.next(9)).\(random.next(100))e-6
            fallback_mask = 0x\(String(random.next(65_536), radix: 16))
            models = [\(chosen.joined(separator: ", "))]
            description = "Provider \(n) \\"tier \(random.next(5))\\" \\u00e9t\\u00e9 \\t limits\\nsecond line"
            path = 'C:\\Users\\provider-\(n)\\limits.toml'
            created = \(padded(year, 4))-\(padded(month, 2))-\(padded(day, 2))T\(padded(hour, 2)):\(padded(minute, 2)):\(padded(second, 2))Z
            updated = \(padded(year, 4))-\(padded(month, 2))-\(padded(day, 2)) \(padded(hour, 2)):\(padded(minute, 2)):\(padded(second, 2)).\(padded(random.next(1_000_000), 6))\(sign)\(padded(abs(offset), 2)):00
            review_date = \(padded(year + 1, 4))-\(padded(month, 2))-\(padded(day, 2))
            window_start = \(padded(hour, 2)):30:00
            burst = { size = \(1 + random.next(100)), refill_ms = \(50 * (1 + random.next(20))) }
            retry = { attempts = \(1 + random.next(5)), backoff_ms = [100, 200, 400, 800], jitter = 0.\(random.next(10)) }
            notes = \"\"\"
            Limits agreed with provider \(n).
            Review before \(padded(year + 1, 4)); see the "capacity" sheet.\"\"\"


            """
        for user in 0..<(1 + random.next(3)) {
            let userScopes = (0..<(1 + random.next(3))).map { _ in "\"\(scopes[random.next(scopes.count)])\"" }
            text += """
                [[limits.provider-\(n).users]]
                id = "u-\(n)-\(user)"
                tokens_per_minute = \(1_000 * (1 + random.next(50)))
                scopes = [\(userScopes.joined(separator: ", "))]  # per-user scopes


                """
        }
        n += 1
    }
    return text
}

// MARK: - The Codable model

struct PolicyDocument: Decodable {
    var title: String
    var version: Int
    var defaults: Defaults
    var limits: [String: Provider]

    struct Defaults: Decodable {
        var requestsPerMinute: Int
        var tokensPerMinute: Int
        var maxConcurrent: Int
        var enabled: Bool
    }

    struct Provider: Decodable {
        var requestsPerMinute: Int
        var tokensPerMinute: Int
        var tokensPerDay: Int
        var maxConcurrent: Int
        var enabled: Bool
        var weight: Double
        var costPerToken: Double
        var fallbackMask: Int
        var models: [String]
        var description: String
        var path: String
        var reviewDate: TOMLLocalDate
        var windowStart: TOMLLocalTime
        var burst: Burst
        var retry: Retry
        var notes: String
        var users: [User]
    }

    struct Burst: Decodable {
        var size: Int
        var refillMs: Int
    }

    struct Retry: Decodable {
        var attempts: Int
        var backoffMs: [Int]
        var jitter: Double
    }

    struct User: Decodable {
        var id: String
        var tokensPerMinute: Int
        var scopes: [String]
    }
}

// MARK: - Timing

/// Runs `body` once to warm up, then `runs` times; returns the durations sorted.
func measure(runs: Int, _ body: () throws -> Void) rethrows -> [Duration] {
    try body()
    let clock = ContinuousClock()
    var durations: [Duration] = []
    for _ in 0..<runs {
        let start = clock.now
        try body()
        durations.append(clock.now - start)
    }
    return durations.sorted()
}

func milliseconds(_ duration: Duration) -> String {
    let ms = Double(duration.components.seconds) * 1e3 + Double(duration.components.attoseconds) * 1e-15
    let tenths = Int((ms * 100).rounded())
    return "\(tenths / 100).\(padded(tenths % 100, 2)) ms"
}

func report(_ label: String, _ durations: [Duration], bytes: Int) {
    let median = durations[durations.count / 2]
    let seconds = Double(median.components.seconds) + Double(median.components.attoseconds) * 1e-18
    let megabytesPerSecond = Int((Double(bytes) / 1_048_576 / seconds).rounded())
    let name = label + String(repeating: " ", count: max(1, 44 - label.count))
    print("\(name) median \(milliseconds(median))  min \(milliseconds(durations[0]))  (\(megabytesPerSecond) MB/s)")
}

var runs = 20
if let index = CommandLine.arguments.firstIndex(of: "--runs"), index + 1 < CommandLine.arguments.count,
    let value = Int(CommandLine.arguments[index + 1]), value > 0
{
    runs = value
}

let document = makeDocument(targetBytes: 1_048_576)
let bytes = Array(document.utf8)
let table = try TOMLTable(parsing: document)
guard case .table(let limits)? = table["limits"] else { fatalError("the generated document has no [limits]") }
print(
    "document: \(bytes.count) bytes, \(document.split(separator: "\n", omittingEmptySubsequences: false).count) lines, \(limits.count) providers; \(runs) runs each"
)

var sink = 0
report("parse String -> TOMLTable", try measure(runs: runs) { sink &+= try TOMLTable(parsing: document).count }, bytes: bytes.count)
report(
    "parse [UInt8] -> TOMLTable (validating)", try measure(runs: runs) { sink &+= try TOMLTable(parsingUTF8: bytes).count },
    bytes: bytes.count)

var decoder = TOMLDecoder()
decoder.keyDecodingStrategy = .convertFromSnakeCase
let decoded = try decoder.decode(PolicyDocument.self, from: document)
precondition(decoded.limits.count == limits.count)
report(
    "decode String -> Codable struct",
    try measure(runs: runs) { sink &+= try decoder.decode(PolicyDocument.self, from: document).limits.count }, bytes: bytes.count)

let large = makeDocument(targetBytes: 10 * 1_048_576, seed: 7)
let largeRuns = max(3, runs / 4)
report(
    "parse 10 MB String -> TOMLTable (\(largeRuns) runs)", try measure(runs: largeRuns) { sink &+= try TOMLTable(parsing: large).count },
    bytes: large.utf8.count)
if sink == 42 { print("") }  // keeps the work observable to the optimiser
