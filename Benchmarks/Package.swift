// swift-tools-version: 6.3
import PackageDescription

// Benchmarks for PolicyGate, kept in their own package so the library itself depends on nothing.
//
//   swift run -c release --package-path Benchmarks PolicyGateFloors   # floors + gate, one ratio table
//   cd Benchmarks && swift package benchmark                           # the same cases under ordo-one/benchmark
//   swift run -c release --package-path Benchmarks TOMLDecodeBenchmark # parse/decode a ~1 MB TOML document
//
// ordo-one/benchmark enables the "MallocInterposer" and "RuntimeInterposer" traits by default;
// naming only "MallocInterposer" turns the Linux Swift 6.3 ARC runtime interposer off, so
// ordo-one/swift-runtime-interposer is never built (nor needs to be fetched).
let settings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
]

let package = Package(
    name: "PolicyGateBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "PolicyGate", path: ".."),
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
        // Parsing and decoding a generated ~1 MB TOML document (PolicyGateTOML alone):
        //   swift run -c release --package-path Benchmarks --scratch-path Benchmarks/.build-toml TOMLDecodeBenchmark
        .executableTarget(
            name: "TOMLDecodeBenchmark",
            dependencies: [.product(name: "PolicyGateTOML", package: "PolicyGate")],
            path: "Sources/TOMLDecodeBenchmark",
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
                .plugin(name: "BenchmarkPlugin", package: "benchmark"),
            ]
        ),
    ]
)
