import Foundation
import PolicyGate
import PolicyGateCLI
import Testing

/// Tiers and per-scope overrides in `policy-gate check` (the listing, `--scope`, `--tier`) and
/// `simulate` (a trace line's `tier`).
@Suite("CLI tiers")
struct CLITiersTests {
    /// A provider with a business-hours entry, two tiers and one scope with a contract, and a
    /// provider without tiers. At Thursday 2026-12-24 10:00 UTC the `office` entry holds:
    /// 40 requests per minute and 500 000 tokens per day for the provider.
    static let config = """
        [limits.openai]
        requests_per_minute = 60
        tokens_per_day      = 1_000_000

        [[limits.openai.schedule]]
        name           = "office"
        cron           = "* 9-17 * * *"
        requests_per_minute = 40
        tokens_per_day      = 500_000

        [limits.openai.tiers.free]
        requests_per_minute = 2
        tokens_per_day      = 200_000

        [limits.openai.tiers.pro]
        requests_per_minute = 120

        [limits.openai.scopes."org:acme"]
        requests_per_minute = 1_000

        [limits.anthropic]
        requests_per_minute = 50
        """

    static let office = "2026-12-24T10:00:00Z"

    @Test("check lists each provider's tiers and overrides, with the provider's caps in force for the rest")
    func listing() throws {
        let directory = try TemporaryDirectory()
        let path = try directory.write("tiers.toml", Self.config)
        let run = runTool(["check", path, "--from", Self.office, "--days", "1"])
        #expect(run.status == 0, "\(run.stderr)")
        // The pro tier sets requests only: its tokens are the office entry's 500,000.
        let expected = """
              provider          req/min  tok/day  in force
              anthropic              50        -  base
              openai                 40  500,000  office
                tier free             2  200,000  scopes in tier free
                tier pro            120  500,000  scopes in tier pro
                scope org:acme    1,000  500,000  org:acme's own, over any tier
              (- no cap)
              (a tier or a scope's caps: the ones it sets, the provider's in force for the rest)
            """
        #expect(run.stdout.contains(expected), "\(run.stdout)")
        #expect(!run.stdout.contains("Caps of"))

        let json = try #require(parseJSON(runTool(["check", path, "--json"]).stdout))
        let providers = try #require(json["providers"] as? [[String: Any]])
        let openai = try #require(providers.first { $0["name"] as? String == "openai" })
        #expect(
            openai["tiers"] as? [String: [String: Int]]
                == [
                    "free": ["requests_per_minute": 2, "tokens_per_day": 200_000],
                    "pro": ["requests_per_minute": 120],
                ])
        #expect(openai["scopes"] as? [String: [String: Int]] == ["org:acme": ["requests_per_minute": 1_000]])
        #expect(openai["scope_caps"] == nil)  // only with --scope
        #expect(json["scope"] == nil && json["tier"] == nil)
        let anthropic = try #require(providers.first { $0["name"] as? String == "anthropic" })
        #expect(anthropic["tiers"] as? [String: [String: Int]] == [:])
        #expect(anthropic["scopes"] as? [String: [String: Int]] == [:])
    }

    /// What `check --scope <scope> [--tier <tier>] --json` says of each provider: its
    /// `scope_caps` by provider name.
    private func scopeCaps(_ path: String, _ extra: [String]) throws -> [String: [String: Any]] {
        let run = runTool(["check", path, "--from", Self.office, "--json"] + extra)
        #expect(run.status == 0, "\(run.stderr)")
        let providers = try #require(parseJSON(run.stdout)?["providers"] as? [[String: Any]])
        var result: [String: [String: Any]] = [:]
        for provider in providers {
            result[try #require(provider["name"] as? String)] = try #require(provider["scope_caps"] as? [String: Any])
        }
        return result
    }

    @Test("check --scope: the override's caps, the tier's, or the provider's, each said, in text and JSON")
    func scopeCaps() throws {
        let directory = try TemporaryDirectory()
        let path = try directory.write("tiers.toml", Self.config)

        // An override wins over the tier named; a provider without tiers ignores the tier.
        let acme = runTool(["check", path, "--from", Self.office, "--scope", "org:acme", "--tier", "free"])
        #expect(acme.status == 0, "\(acme.stderr)")
        #expect(
            acme.stdout.contains(
                """
                Caps of org:acme in tier free at Thu 2026-12-24 10:00 UTC:

                  provider   req/min  tok/day  from      in force
                  anthropic       50        -  provider  base
                  openai       1,000  500,000  override  office
                  anthropic: no tiers, so a key naming tier 'free' gets the provider's caps

                """), "\(acme.stdout)")
        let acmeJSON = try scopeCaps(path, ["--scope", "org:acme", "--tier", "free"])
        #expect(acmeJSON["openai"]?["source"] as? String == "override")
        #expect(acmeJSON["openai"]?["tier"] is NSNull)
        #expect(acmeJSON["openai"]?["entry"] as? String == "office")
        #expect(acmeJSON["openai"]?["limits"] as? [String: Int] == ["requests_per_minute": 1_000, "tokens_per_day": 500_000])
        #expect(acmeJSON["anthropic"]?["source"] as? String == "provider")
        #expect(acmeJSON["anthropic"]?["limits"] as? [String: Int] == ["requests_per_minute": 50])
        #expect((acmeJSON["anthropic"]?["note"] as? String)?.contains("no tiers") == true)

        // A tier's caps over the entry in force.
        let free = try scopeCaps(path, ["--scope", "user:u-1", "--tier", "free"])
        #expect(free["openai"]?["source"] as? String == "tier")
        #expect(free["openai"]?["tier"] as? String == "free")
        #expect(free["openai"]?["limits"] as? [String: Int] == ["requests_per_minute": 2, "tokens_per_day": 200_000])
        #expect(free["openai"]?["note"] == nil)
        let pro = try scopeCaps(path, ["--scope", "user:u-1", "--tier", "pro"])
        #expect(pro["openai"]?["limits"] as? [String: Int] == ["requests_per_minute": 120, "tokens_per_day": 500_000])

        // No tier: the provider's own caps, at night its base ones.
        let plain = runTool(["check", path, "--from", "2026-12-24T22:00:00Z", "--scope", "user:u-2", "--json"])
        let plainJSON = try #require(parseJSON(plain.stdout))
        #expect(plainJSON["scope"] as? String == "user:u-2")
        #expect(plainJSON["tier"] is NSNull)
        let openai = try #require((plainJSON["providers"] as? [[String: Any]])?.first { $0["name"] as? String == "openai" })
        let caps = try #require(openai["scope_caps"] as? [String: Any])
        #expect(caps["source"] as? String == "provider")
        #expect(caps["entry"] is NSNull)
        #expect(caps["limits"] as? [String: Int] == ["requests_per_minute": 60, "tokens_per_day": 1_000_000])
    }

    @Test("check --tier a provider does not define: said for that provider, not a failure")
    func unknownTier() throws {
        let directory = try TemporaryDirectory()
        let path = try directory.write("tiers.toml", Self.config)
        let run = runTool(["check", path, "--from", Self.office, "--scope", "user:u-1", "--tier", "gold"])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stdout.contains("  openai                       unknown tier  refused"), "\(run.stdout)")
        #expect(
            run.stdout.contains("  openai: tier 'gold' is not one of its tiers (free, pro): the gate refuses a call naming it"),
            "\(run.stdout)")
        let json = try scopeCaps(path, ["--scope", "user:u-1", "--tier", "gold"])
        #expect(json["openai"]?["source"] as? String == "unknown_tier")
        #expect(json["openai"]?["limits"] is NSNull)
        #expect(json["anthropic"]?["source"] as? String == "provider")
        // The scope with an override is not refused whatever tier it names.
        let acme = try scopeCaps(path, ["--scope", "org:acme", "--tier", "gold"])
        #expect(acme["openai"]?["source"] as? String == "override")
    }

    @Test(
        "check: a bad --scope, an empty --tier, or --tier without --scope is a usage error",
        arguments: [
            (
                ["--scope", "acme"],
                "error: --scope 'acme' is not a scope: expected 'global' or '<kind>:<id>', such as org:acme or user:u-1"
            ),
            (["--scope", "org:"], "error: --scope 'org:' is not a scope"),
            (["--tier", "pro"], "error: --tier needs --scope"),
            (["--scope", "org:acme", "--tier", ""], "error: --tier needs a tier name"),
        ])
    func badScope(options: [String], message: String) throws {
        let directory = try TemporaryDirectory()
        let path = try directory.write("tiers.toml", Self.config)
        let run = runTool(["check", path] + options)
        #expect(run.status == 2)
        #expect(run.stdout == "")
        #expect(run.stderr.hasPrefix(message), "\(run.stderr)")
        #expect(run.stderr.hasSuffix("see 'policy-gate check --help'\n"), "\(run.stderr)")
    }

    // MARK: simulate

    /// 5 calls each at t = 0, lasting 1 s, for four scopes under 3 requests per minute: one
    /// naming no tier (3 at once, 2 when the first second's bucket leaves the minute, at 61 s),
    /// one in tier free (2 per minute: 2 at once, 2 at 61 s, the last at 122 s), one in tier pro
    /// (10 per minute: all at once), and org:acme, whose override (4 per minute) beats the
    /// free tier it names (4 at once, 1 at 61 s).
    static let simulateConfig = """
        [limits.api]
        requests_per_minute = 3

        [limits.api.tiers.free]
        requests_per_minute = 2

        [limits.api.tiers.pro]
        requests_per_minute = 10

        [limits.api.scopes."org:acme"]
        requests_per_minute = 4
        """

    static func line(_ scope: String, tier: String?, maxWait: Int? = nil) -> String {
        let tierField = tier.map { #", "tier": "\#($0)""# } ?? ""
        let wait = maxWait.map { #", "max_wait": \#($0)"# } ?? ""
        return
            #"{"at": 0, "provider": "api", "scope": "\#(scope)"\#(tierField), "estimated_tokens": 1, "actual_tokens": 1, "duration": 1\#(wait)}"#
    }

    static func trace(maxWait: Int? = nil) -> String {
        let scopes: [(String, String?)] = [("user:none", nil), ("user:free", "free"), ("user:pro", "pro"), ("org:acme", "free")]
        return scopes.map { scope, tier in Array(repeating: line(scope, tier: tier, maxWait: maxWait), count: 5) }
            .joined().joined(separator: "\n") + "\n"
    }

    @Test("simulate: a trace line's tier gives its call the tier's caps; free waits where pro is admitted at once")
    func simulateTiers() throws {
        let calls = try TraceReader.read(Self.trace())
        #expect(
            calls.map(\.tier) == Array(repeating: nil, count: 5) + Array(repeating: "free", count: 5) + Array(repeating: "pro", count: 5)
                + Array(repeating: "free", count: 5))
        let configuration = try PolicyConfiguration(toml: Self.simulateConfig)
        let (_, outcomes) = try Simulation(configuration: configuration).runWithOutcomes(calls)
        let admitted = outcomes.map { $0.admittedAt.map { Int($0.components.seconds) } ?? -1 }
        #expect(Array(admitted[0..<5]) == [0, 0, 0, 61, 61])
        #expect(Array(admitted[5..<10]) == [0, 0, 61, 61, 122])
        #expect(Array(admitted[10..<15]) == [0, 0, 0, 0, 0])
        #expect(Array(admitted[15..<20]) == [0, 0, 0, 0, 61])

        // The same through the command: the summary and the JSON group the calls by tier.
        let directory = try TemporaryDirectory()
        let config = try directory.write("policy.toml", Self.simulateConfig)
        let trace = try directory.write("calls.jsonl", Self.trace())
        let run = runTool(["simulate", "--config", config, "--trace", trace, "--from", "2026-01-05T09:00:00Z", "--quiet"])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(
            run.stdout.contains(
                """
                  caps from  keys  calls  admitted  at once  refused  timed out  wait p95     max
                  override      1      5         5        4        0          0    1m 01s  1m 01s
                  provider      1      5         5        3        0          0    1m 01s  1m 01s
                  tier free     1      5         5        2        0          0    2m 02s  2m 02s
                  tier pro      1      5         5        5        0          0        0s      0s
                """), "\(run.stdout)")
        // The busiest key is pro's, above the provider's cap: no share of that cap is shown.
        #expect(run.stdout.contains("  requests_per_minute    3          5    +0s  +0s                 6\n"), "\(run.stdout)")
        #expect(run.stdout.contains("(cap: the provider's own; its tiers and overrides set their own caps over it)"))

        // With 30 s to wait, what free cannot admit at once is refused; pro is not.
        let impatient = try directory.write("impatient.jsonl", Self.trace(maxWait: 30))
        let json = runTool(["simulate", "--config", config, "--trace", impatient, "--json", "--quiet"])
        let api = try #require((parseJSON(json.stdout)?["providers"] as? [[String: Any]])?.first)
        let tiers = try #require(api["tiers"] as? [[String: Any]])
        let bySource = Dictionary(uniqueKeysWithValues: tiers.map { ($0["source"] as? String ?? "?", $0) })
        #expect(bySource.keys.sorted() == ["override", "provider", "tier free", "tier pro"])
        #expect(bySource["tier free"]?["admitted"] as? Int == 2 && bySource["tier free"]?["refused"] as? Int == 3)
        #expect(bySource["tier pro"]?["admitted"] as? Int == 5 && bySource["tier pro"]?["refused"] as? Int == 0)
        #expect(bySource["provider"]?["admitted"] as? Int == 3 && bySource["provider"]?["refused"] as? Int == 2)
        #expect(bySource["override"]?["admitted_at_once"] as? Int == 4 && bySource["override"]?["refused"] as? Int == 1)
        #expect(api["rejected"] as? [String: Int] == ["requests_per_minute": 6])
    }

    @Test("simulate: a tier with more slots than the provider is not held to the provider's max_concurrent")
    func tierSlots() throws {
        // The provider allows 1 call at a time, pro 3 and 2 per minute. Three pro calls of 100 s
        // at t = 0: two are admitted, the third waits for the minute (not for a slot), at 61 s.
        let configuration = try PolicyConfiguration(
            toml: """
                [limits.api]
                max_concurrent = 1

                [limits.api.tiers.pro]
                max_concurrent      = 3
                requests_per_minute = 2
                """)
        let call = SimulatedCall(
            at: .zero, key: PolicyKey(provider: "api", scope: .user("p"), tier: "pro"), estimatedTokens: 1, actualTokens: 1,
            duration: .seconds(100))
        let (_, outcomes) = try Simulation(configuration: configuration).runWithOutcomes(Array(repeating: call, count: 3))
        #expect(outcomes.map { $0.admittedAt } == [.zero, .zero, .seconds(61)])
        // Without the tier, the provider's single slot: one after the other.
        var plain = call
        plain.tier = nil
        let (_, serial) = try Simulation(configuration: configuration).runWithOutcomes(Array(repeating: plain, count: 3))
        #expect(serial.map { $0.admittedAt } == [.zero, .seconds(100), .seconds(200)])
    }

    @Test("simulate: a scope whose tier changes within the trace is asked for in each call's own tier")
    func tierChange() throws {
        // user:u is free (2 per minute) for its first 3 calls, then pro (10): the third waits for
        // the minute; the pro calls at t = 1 fit at once, counted in the same windows.
        let configuration = try PolicyConfiguration(toml: Self.simulateConfig)
        func call(_ at: Int, _ tier: String) -> SimulatedCall {
            SimulatedCall(
                at: .seconds(at), key: PolicyKey(provider: "api", scope: .user("u"), tier: tier), estimatedTokens: 1, actualTokens: 1,
                duration: .seconds(1), maxWait: .seconds(30))
        }
        let calls = [call(0, "free"), call(0, "free"), call(0, "free"), call(1, "pro"), call(1, "pro")]
        let (_, outcomes) = try Simulation(configuration: configuration).runWithOutcomes(calls)
        #expect(outcomes.map(\.kind) == [.completed, .completed, .rejected, .completed, .completed])
        #expect(outcomes.map(\.admittedAt) == [.zero, .zero, nil, .seconds(1), .seconds(1)])
    }

    @Test(
        "simulate: a tier that is not a string is an error on its line; one the provider does not define is refused",
        arguments: [
            (#""tier": 5"#, "line 2: tier: expected a tier name such as 'pro', got 5"),
            (#""tier": ["pro"]"#, "line 2: tier: expected a tier name such as 'pro', got an array"),
            (#""tier": """#, "line 2: tier: expected a tier name such as 'pro', got an empty string"),
        ])
    func badTierField(field: String, message: String) throws {
        let good = #"{"at": 0, "provider": "api", "estimated_tokens": 1, "actual_tokens": 1, "duration": 1}"#
        let bad = #"{"at": 0, "provider": "api", "estimated_tokens": 1, "actual_tokens": 1, "duration": 1, "# + field + "}"
        do {
            _ = try TraceReader.read(good + "\n" + bad + "\n")
            Issue.record("no error for \(field)")
        } catch {
            #expect(error.description == message)
            #expect(error.line == 2 && error.field == "tier")
        }
        // null is no tier.
        let none = try TraceReader.read(
            #"{"at": 0, "provider": "api", "tier": null, "estimated_tokens": 1, "actual_tokens": 1, "duration": 1}"#)
        #expect(none.first?.tier == nil)
    }

    @Test("simulate: a tier the provider does not define fails the run with its call and the provider's tiers")
    func unknownTraceTier() throws {
        let directory = try TemporaryDirectory()
        let config = try directory.write("policy.toml", Self.simulateConfig)
        let trace = try directory.write(
            "calls.jsonl",
            Self.line("user:a", tier: "pro") + "\n" + Self.line("user:a", tier: "gold") + "\n" + Self.line("org:acme", tier: "gold") + "\n")
        let run = runTool(["simulate", "--config", config, "--trace", trace, "--quiet"])
        #expect(run.status == 1)
        #expect(run.stdout == "")
        #expect(run.stderr.contains("tier: call 2: 'gold' is not one of provider 'api''s tiers (its tiers: free, pro)"), "\(run.stderr)")
        // org:acme has caps of its own: its tier does not matter, and a provider without tiers ignores it.
        let fine = try directory.write("fine.jsonl", Self.line("org:acme", tier: "gold") + "\n")
        #expect(runTool(["simulate", "--config", config, "--trace", fine, "--quiet"]).status == 0)
        let untiered = try directory.write("plain.toml", "[limits.api]\nrequests_per_minute = 3\n")
        #expect(runTool(["simulate", "--config", untiered, "--trace", trace, "--quiet"]).status == 0)
    }
}
