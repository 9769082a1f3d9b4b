import Foundation
import PolicyGate
import PolicyGateTestKit
import Testing

@Suite("PROBE")
struct StoreConfigurationProbe {
    func show(_ text: String) {
        do {
            let c = try PolicyConfiguration(toml: text)
            print("PROBE OK storage=\(c.storage) default=\(c.defaultStorage) pg=\(String(describing: c.postgres)) warnings=\(c.warnings)")
        } catch {
            print("PROBE ERR \(error.diagnostics.map { "\($0.line ?? 0):\($0.column ?? 0) [\($0.keyPath)] \($0.message) / \($0.suggestion ?? "-")" })")
        }
    }

    @Test func probe() async throws {
        show("[limits.openai]\nrequests_per_minute = 5\n[limits.openai.store]\ndefault = \"postgres\"\n")
        show("[limits.openai]\nrequests_per_minute = 5\nstore = { name = \"postgres\" }\n")
        show("[limits.openai]\nrequests_per_minute = 5\nstore.name = \"postgres\"\n")
        show("[store.postgres]\nurl = \"postgres://gate@db/app?password=hunter2\"\n")
        show("[store.postgres]\nurl = \"postgres://gate:hun ter2@db/app\"\n")
        show("[store.postgres]\nurl = \"postgres://gate:hunter2@db/app\"\n")
        show("[store.postgres]\nurl = \"postgresql://gate:hunter2@db/app\"\n")
        show("[store.postgres]\nurl = \"postgres://:hunter2@db/app\"\n")
        show("[store.postgres]\nurl = \"postgres://gate:@db/app\"\n")
        show("[store.postgres]\nurl = \"postgres://gate:p@ss@db/app\"\n")
        show("[store.postgres]\nurl = \"host=db user=gate password=hunter2\"\n")
        show("[store.postgres]\nurl = \"postgres://gate:hunter2@[::1/app\"\n")
        show("[store.postgres]\nurl = \"postgres://gate:hunter2@db:notaport/app\"\n")
        show("[store.postgres]\ntimeout_msec = 5\nPassword = \"x\"\npassword_env = \"\"\nport = 70000\n")
        show("[store]\ndefualt = \"postgres\"\npostgres = 5\n")
        show("store = \"postgres\"\n")
        show("[limits.openai]\nstore = \"postgres\"\n")
        show("[store]\n[store.postgres]\n")
        print("PROBE desc \(PolicyPostgresSettings(url: "postgres://gate:hunter2@db/app"))")
        let gate = try PolicyService(configuration: PolicyConfiguration(toml: "[limits.openai]\nrequests_per_minute = 5\n"))
        do {
            try await gate.apply(PolicyConfiguration(toml: "[store]\ndefault = \"postgres\"\n[limits.openai]\nrequests_per_minute = 5\n"))
            print("PROBE apply default postgres accepted; storage now \(gate.configuration.storage)")
        } catch { print("PROBE apply threw \(error)") }
        do {
            try await gate.apply(PolicyConfiguration(toml: "[limits.openai]\nrequests_per_minute = 5\nstore = \"postgres\"\n"))
            print("PROBE apply own postgres accepted")
        } catch { print("PROBE apply own threw \(error)") }
        let json = try JSONEncoder().encode(PolicyConfiguration(toml: "[store]\ndefault = \"postgres\"\non_failure = \"fail_open\"\n[store.postgres]\nhost = \"db\"\n[limits.a]\nmax_concurrent = 1\nstore = \"memory\"\n"))
        print("PROBE json \(String(decoding: json, as: UTF8.self))")
    }
}
