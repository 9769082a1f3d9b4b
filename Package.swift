// swift-tools-version: 6.1
import PackageDescription

// The default build has no package dependencies: PolicyGate is a library people add to their
// servers, and it must pull nothing in. Optional integrations sit behind package traits, each
// off by default; SwiftPM does not fetch a dependency whose trait is off.
let strictSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "PolicyGate",
    // Linux is first-class. On Apple platforms the floor is the OS shipping the Swift 6.2 runtime:
    // the gate's sliding windows use `InlineArray` (Swift 6.2 stdlib: macOS/iOS/tvOS/watchOS/
    // visionOS 26); `Mutex`/`Atomic`, `Clock` and typed throws need less (macOS 15, iOS 18).
    // Versions as strings: `.v26` needs tools version 6.2.
    platforms: [.macOS("26.0"), .iOS("26.0"), .tvOS("26.0"), .watchOS("26.0"), .visionOS("26.0")],
    products: [
        .library(name: "PolicyGate", targets: ["PolicyGate"]),
        .library(name: "PolicyGateTOML", targets: ["PolicyGateTOML"]),
        .library(name: "PolicyGateTestKit", targets: ["PolicyGateTestKit"]),
        // Provider wire formats (OpenAI, Anthropic) and one-call gating over URLSession; no dependencies.
        .library(name: "PolicyGateProviders", targets: ["PolicyGateProviders"]),
        .library(name: "PolicyGateFakeProvider", targets: ["PolicyGateFakeProvider"]),
        // The one-call client over AsyncHTTPClient; empty unless the `AsyncHTTPClient` trait is enabled.
        .library(name: "PolicyGateAsyncHTTPClient", targets: ["PolicyGateAsyncHTTPClient"]),
        // Observability adapters; each is empty unless its trait (below) is enabled.
        .library(name: "PolicyGateLogging", targets: ["PolicyGateLogging"]),
        .library(name: "PolicyGateMetrics", targets: ["PolicyGateMetrics"]),
        .library(name: "PolicyGateTracing", targets: ["PolicyGateTracing"]),
        // A shared quota on PostgreSQL; empty unless the `Postgres` trait is enabled.
        .library(name: "PolicyGatePostgres", targets: ["PolicyGatePostgres"]),
        // The gate as a swift-service-lifecycle `Service`; empty unless the `ServiceLifecycle` trait is enabled.
        .library(name: "PolicyGateServiceLifecycle", targets: ["PolicyGateServiceLifecycle"]),
        .executable(name: "policy-gate-demo", targets: ["PolicyGateDemo"]),
        .executable(name: "toml-test-decoder", targets: ["toml-test-decoder"]),
        .executable(name: "policy-gate", targets: ["policy-gate"]),
    ],
    // Each trait turns on one adapter module and the one dependency it needs; all are off by
    // default, and SwiftPM fetches nothing for a trait that is off.
    traits: [
        .trait(name: "Logging", description: "PolicyGateLogging: gate events as structured swift-log lines."),
        .trait(name: "Metrics", description: "PolicyGateMetrics: counters, timers and gauges through swift-metrics."),
        .trait(name: "Tracing", description: "PolicyGateTracing: waits as spans through swift-distributed-tracing."),
        .trait(name: "Postgres", description: "PolicyGatePostgres: counters shared by many processes in PostgreSQL (postgres-nio)."),
        .trait(
            name: "AsyncHTTPClient", description: "PolicyGateAsyncHTTPClient: one gated provider call over swift-server's AsyncHTTPClient."),
        .trait(
            name: "ServiceLifecycle",
            description: "PolicyGateServiceLifecycle: the gate as a Service that shuts down gracefully in a ServiceGroup."),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-distributed-tracing.git", from: "1.7.3"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.100.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
    ],
    targets: [
        // The gate. Reads TOML configuration through PolicyGateTOML without re-exporting it.
        .target(name: "PolicyGate", dependencies: ["PolicyGateTOML"], swiftSettings: strictSettings),
        // A TOML 1.0.0 decoder (value tree and Decodable), with no dependencies.
        .target(name: "PolicyGateTOML", swiftSettings: strictSettings),
        .target(name: "PolicyGateTestKit", dependencies: ["PolicyGate"], swiftSettings: strictSettings),
        // Estimates and usage from OpenAI's and Anthropic's request and response bodies, and a
        // URLSession client that gates a call in one line. Foundation only.
        .target(name: "PolicyGateProviders", dependencies: ["PolicyGate"], swiftSettings: strictSettings),
        .target(
            name: "PolicyGateAsyncHTTPClient",
            dependencies: [
                "PolicyGate", "PolicyGateProviders",
                .product(name: "AsyncHTTPClient", package: "async-http-client", condition: .when(traits: ["AsyncHTTPClient"])),
                .product(name: "NIOCore", package: "swift-nio", condition: .when(traits: ["AsyncHTTPClient"])),
                .product(name: "NIOHTTP1", package: "swift-nio", condition: .when(traits: ["AsyncHTTPClient"])),
            ],
            swiftSettings: strictSettings
        ),
        // A loopback HTTP/1.1 server playing a provider, for tests and the example.
        .target(name: "PolicyGateFakeProvider", dependencies: ["PolicyGate"], swiftSettings: strictSettings),
        // `swift run gated-call-example`: one gated call against the fake provider, no network.
        .executableTarget(
            name: "gated-call-example",
            dependencies: ["PolicyGate", "PolicyGateProviders", "PolicyGateFakeProvider"],
            path: "Examples/GatedCall",
            swiftSettings: strictSettings
        ),
        // The adapters. Their sources are wrapped in `#if <Trait>`, so with the trait off each is
        // an empty module that depends on nothing outside this package.
        .target(
            name: "PolicyGateLogging",
            dependencies: [
                "PolicyGate",
                .target(name: "PolicyGateTelemetrySupport", condition: .when(traits: ["Logging"])),
                .product(name: "Logging", package: "swift-log", condition: .when(traits: ["Logging"])),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "PolicyGateMetrics",
            dependencies: [
                "PolicyGate",
                .target(name: "PolicyGateTelemetrySupport", condition: .when(traits: ["Metrics"])),
                .product(name: "CoreMetrics", package: "swift-metrics", condition: .when(traits: ["Metrics"])),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "PolicyGateTracing",
            dependencies: [
                "PolicyGate",
                .target(name: "PolicyGateTelemetrySupport", condition: .when(traits: ["Tracing"])),
                .product(name: "Tracing", package: "swift-distributed-tracing", condition: .when(traits: ["Tracing"])),
                .product(name: "Instrumentation", package: "swift-distributed-tracing", condition: .when(traits: ["Tracing"])),
            ],
            swiftSettings: strictSettings
        ),
        // The PostgreSQL store: the gate's counters in a database many processes share. The
        // migrations are plain SQL files, read by `migrate()` and by a DBA.
        .target(
            name: "PolicyGatePostgres",
            dependencies: [
                "PolicyGate",
                .product(name: "PostgresNIO", package: "postgres-nio", condition: .when(traits: ["Postgres"])),
                .product(name: "Logging", package: "swift-log", condition: .when(traits: ["Postgres"])),
            ],
            resources: [.copy("Migrations")],
            swiftSettings: strictSettings
        ),
        // The gate as a `Service`: graceful shutdown in a `ServiceGroup` (see `PolicyService.shutDown`).
        .target(
            name: "PolicyGateServiceLifecycle",
            dependencies: [
                "PolicyGate",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle", condition: .when(traits: ["ServiceLifecycle"])),
            ],
            swiftSettings: strictSettings
        ),
        // A worker process for the many-processes tests and benchmark: it hammers one shared key.
        .executableTarget(
            name: "policy-gate-store-worker",
            dependencies: ["PolicyGatePostgres", "PolicyGate"],
            swiftSettings: strictSettings
        ),
        // Label and attribute spellings shared by the adapters (package access only).
        .target(name: "PolicyGateTelemetrySupport", dependencies: ["PolicyGate"], swiftSettings: strictSettings),
        .executableTarget(
            name: "PolicyGateDemo",
            dependencies: ["PolicyGate", "PolicyGateTestKit"],
            swiftSettings: strictSettings
        ),
        // The `policy-gate` command's logic (check, simulate, migrate), a library so tests run it
        // in-process. migrate needs the Postgres trait (PolicyGatePostgres is empty without it).
        .target(
            name: "PolicyGateCLI",
            dependencies: ["PolicyGate", "PolicyGateTOML", "PolicyGateTestKit", "PolicyGatePostgres"],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "policy-gate",
            dependencies: ["PolicyGateCLI"],
            swiftSettings: strictSettings
        ),
        // The toml-test corpus's decoder interface: TOML on stdin, tagged JSON on stdout.
        .executableTarget(
            name: "toml-test-decoder",
            dependencies: ["PolicyGateTOML"],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "PolicyGateTests",
            dependencies: ["PolicyGate", "PolicyGateTestKit"],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "PolicyGateProvidersTests",
            dependencies: ["PolicyGateProviders", "PolicyGateFakeProvider", "PolicyGate", "PolicyGateTestKit"],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "PolicyGateAsyncHTTPClientTests",
            dependencies: [
                "PolicyGateAsyncHTTPClient", "PolicyGateProviders", "PolicyGateFakeProvider", "PolicyGate",
                .product(name: "AsyncHTTPClient", package: "async-http-client", condition: .when(traits: ["AsyncHTTPClient"])),
                .product(name: "NIOHTTP1", package: "swift-nio", condition: .when(traits: ["AsyncHTTPClient"])),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "PolicyGateCLITests",
            dependencies: ["PolicyGateCLI", "PolicyGate", "PolicyGateTestKit"],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "PolicyGateTOMLTests",
            dependencies: ["PolicyGateTOML"],
            swiftSettings: strictSettings
        ),
        // Against a real PostgreSQL server (skipped, saying why, when none is reachable).
        .testTarget(
            name: "PolicyGatePostgresTests",
            dependencies: [
                "PolicyGatePostgres", "PolicyGate", "PolicyGateTestKit",
                .product(name: "PostgresNIO", package: "postgres-nio", condition: .when(traits: ["Postgres"])),
                .product(name: "Logging", package: "swift-log", condition: .when(traits: ["Postgres"])),
            ],
            swiftSettings: strictSettings
        ),
        // Against a real `ServiceGroup`; empty unless the trait is enabled.
        .testTarget(
            name: "PolicyGateServiceLifecycleTests",
            dependencies: [
                "PolicyGateServiceLifecycle", "PolicyGate", "PolicyGateTestKit",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle", condition: .when(traits: ["ServiceLifecycle"])),
                .product(name: "Logging", package: "swift-log", condition: .when(traits: ["ServiceLifecycle"])),
            ],
            swiftSettings: strictSettings
        ),
        // Checked against each library's own test backend; empty unless the trait is enabled.
        .testTarget(
            name: "PolicyGateLoggingTests",
            dependencies: [
                "PolicyGateLogging", "PolicyGate", "PolicyGateTestKit",
                .product(name: "Logging", package: "swift-log", condition: .when(traits: ["Logging"])),
                .product(name: "InMemoryLogging", package: "swift-log", condition: .when(traits: ["Logging"])),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "PolicyGateMetricsTests",
            dependencies: [
                "PolicyGateMetrics", "PolicyGate", "PolicyGateTestKit",
                .product(name: "CoreMetrics", package: "swift-metrics", condition: .when(traits: ["Metrics"])),
                .product(name: "MetricsTestKit", package: "swift-metrics", condition: .when(traits: ["Metrics"])),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "PolicyGateTracingTests",
            dependencies: [
                "PolicyGateTracing", "PolicyGate", "PolicyGateTestKit",
                .product(name: "Tracing", package: "swift-distributed-tracing", condition: .when(traits: ["Tracing"])),
                .product(name: "Instrumentation", package: "swift-distributed-tracing", condition: .when(traits: ["Tracing"])),
                .product(name: "InMemoryTracing", package: "swift-distributed-tracing", condition: .when(traits: ["Tracing"])),
            ],
            swiftSettings: strictSettings
        ),
    ]
)
