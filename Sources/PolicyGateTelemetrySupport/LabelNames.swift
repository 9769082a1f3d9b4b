import PolicyGate

/// The names the logging, metrics and tracing adapters give to the gate's values, kept in one
/// place so that a log line, a metric label and a span attribute always spell a value the same
/// way (`tokens_per_minute`, `rate_limited`, …). `package` access: not part of the public API.
package enum LabelNames {
    /// `tokensPerMinute` → `tokens_per_minute`, as Prometheus label values are usually written.
    /// The configuration key, except `concurrency` for the concurrency cap (a label names
    /// the limit, not the `max_concurrent` setting).
    package static func limit(_ kind: PolicyLimitKind) -> String {
        kind == .concurrency ? "concurrency" : kind.configurationKey
    }

    /// The request and token caps measured over `window`.
    package static func kinds(of window: PolicyWindow) -> (requests: PolicyLimitKind, tokens: PolicyLimitKind) {
        switch window {
        case .minute: (.requestsPerMinute, .tokensPerMinute)
        case .hour: (.requestsPerHour, .tokensPerHour)
        case .day: (.requestsPerDay, .tokensPerDay)
        }
    }

    /// The input-token and output-token caps measured over `window`.
    package static func splitKinds(of window: PolicyWindow) -> (input: PolicyLimitKind, output: PolicyLimitKind) {
        switch window {
        case .minute: (.inputTokensPerMinute, .outputTokensPerMinute)
        case .hour: (.inputTokensPerHour, .outputTokensPerHour)
        case .day: (.inputTokensPerDay, .outputTokensPerDay)
        }
    }

    /// An error code's name in snake case: `rateLimited` → `rate_limited`. Codes are an open set
    /// (new ones may be added), so this converts the name rather than listing them.
    package static func reason(_ code: PolicyError.Code) -> String {
        snakeCase(code.description)
    }

    /// `camelCase` → `camel_case`.
    package static func snakeCase(_ name: String) -> String {
        var result = ""
        result.reserveCapacity(name.utf8.count + 4)
        for character in name {
            if character.isUppercase {
                if !result.isEmpty { result.append("_") }
                result.append(contentsOf: character.lowercased())
            } else {
                result.append(character)
            }
        }
        return result
    }

    /// A duration in seconds, the base unit of time in Prometheus and OpenTelemetry.
    package static func seconds(_ duration: Duration) -> Double {
        let (seconds, attoseconds) = duration.components
        return Double(seconds) + Double(attoseconds) * 1e-18
    }

    /// A duration in whole nanoseconds, saturating (negative durations count as zero).
    package static func nanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        guard seconds >= 0, attoseconds >= 0 else { return 0 }
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return .max }
        let (sum, overflowSum) = scaled.addingReportingOverflow(attoseconds / 1_000_000_000)
        return overflowSum ? .max : sum
    }
}
