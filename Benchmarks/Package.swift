// swift-tools-version: 6.3
import PackageDescription

// Benchmarks for PolicyGate, kept in their own package so the library itself depends on nothing.
//
//   swift run -c release --package-path Benchmarks PolicyGateFloors   # floors + gate, one ratio table
//   cd Benchmarks && swift package benchmark                           # the same cases under ordo-one/benchmark
//   cd Benchmarks && swift package benchmark thresholds check          # fails on a regression past Benchmarks/Thresholds
//   swift run -c release --package-path Benchmarks TOMLDecodeBenchmark # parse/decode a ~1 MB TOML document
//   swift run -c release --package-path Benchmarks ProviderOverhead    # the one-call wrapper's cost, no HTTP
//   bash Benchmarks/callgrind-cycles.sh                                # instructions per gate cycle (callgrind)
//   swift run -c release --package-path Benchmarks --traits Postgres PostgresStoreBenchmark
//                                        # shared store: full calls/s, p50/p99, statements and NOTIFYs per call, pgbench floor
//
// ordo-one/benchmark enables the "MallocInterposer" and "RuntimeInterposer" traits by default;
// naming only "MallocInterposer" turns the Linux Swift 6.3 ARC runtime interposer off, so
// ordo-one/swift-runtime-interposer is never built (nor needs to be fetched).
let settings: [SwiftSetting] = [
    .swiftLanguageMode(.v6)
]

let package = Package(
    name: "PolicyGateBenchmarks",
    platforms: [.macOS("26.0")],  // the root package's floor (InlineArray: the Swift 6.2 runtime)
    // Off by default, so that building the benchmarks does not build postgres-nio.
    traits: [
        .trait(name: "Postgres", description: "PostgresStoreBenchmark against a local PostgreSQL server.")
    ],
    dependencies: [
        .package(
            name: "PolicyGate", path: "..",
            traits: [.trait(name: "Postgres", condition: .when(traits: ["Postgres"]))]),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        // The floors' targets, the gate's limits and RSS readings, shared by both executables.
        .target(
            name: "BenchmarkFixtures",
            dependencies: [.product(name: "PolicyGate", package: "PolicyGate")],
            path: "Sources/BenchmarkFixtures",
            swiftSettings: settings
        ),
        // Plain timing program: floors (actor hop, Mutex) and gate operations measured in one run,
        // printed as one table with the ratios to the floors.
        .executableTarget(
            name: "PolicyGateFloors",
            dependencies: [
                "BenchmarkFixtures",
                .product(name: "PolicyGate", package: "PolicyGate"),
            ],
            path: "Sources/PolicyGateFloors",
            swiftSettings: settings
        ),
        // Instructions per tryAcquire + commit + release, for callgrind (Benchmarks/callgrind-cycles.sh).
        .executableTarget(
            name: "CycleCount",
            dependencies: [
                "BenchmarkFixtures",
                .product(name: "PolicyGate", package: "PolicyGate"),
            ],
            path: "Sources/CycleCount",
            swiftSettings: settings
        ),
        // The one-call wrapper's cost without the HTTP exchange (PolicyGateProviders):
        //   swift run -c release --package-path Benchmarks ProviderOverhead
        .executableTarget(
            name: "ProviderOverhead",
            dependencies: [
                "BenchmarkFixtures",
                .product(name: "PolicyGate", package: "PolicyGate"),
                .product(name: "PolicyGateProviders", package: "PolicyGate"),
            ],
            path: "Sources/ProviderOverhead",
            swiftSettings: settings
        ),
        // Parsing and decoding a generated ~1 MB TOML document (PolicyGateTOML alone):
        //   swift run -c release --package-path Benchmarks --scratch-path Benchmarks/.build-toml TOMLDecodeBenchmark
        .executableTarget(
            name: "TOMLDecodeBenchmark",
            dependencies: [.product(name: "PolicyGateTOML", package: "PolicyGate")],
            path: "Sources/TOMLDecodeBenchmark",
            swiftSettings: settings
        ),
        // The shared PostgreSQL store, 1 and 4 processes (it runs copies of itself); needs the
        // `Postgres` trait and a server (`eval "$(bash .ci/postgres.sh start)"`).
        .executableTarget(
            name: "PostgresStoreBenchmark",
            dependencies: [
                .product(name: "PolicyGate", package: "PolicyGate"),
                .product(name: "PolicyGatePostgres", package: "PolicyGate"),
            ],
            path: "Sources/PostgresStoreBenchmark",
            swiftSettings: settings
        ),
        // The same cases for `swift package benchmark` (sources must live under Benchmarks/).
        .executableTarget(
            name: "PolicyGateBenchmarks",
            dependencies: [
                "BenchmarkFixtures",
                .product(name: "PolicyGate", package: "PolicyGate"),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/PolicyGateBenchmarks",
            swiftSettings: settings,
            plugins: [
                .plugin(name: "BenchmarkPlugin", package: "benchmark")
            ]
        ),
    ]
)
