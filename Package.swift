// swift-tools-version: 6.1
import PackageDescription

// The default build has no package dependencies: PolicyGate is a library people add to their
// servers, and it must pull nothing in. Optional integrations arrive later behind package traits.
let strictSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "PolicyGate",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "PolicyGate", targets: ["PolicyGate"]),
        .library(name: "PolicyGateTestKit", targets: ["PolicyGateTestKit"]),
        .executable(name: "policy-gate-demo", targets: ["PolicyGateDemo"]),
    ],
    targets: [
        .target(name: "PolicyGate", swiftSettings: strictSettings),
        .target(name: "PolicyGateTestKit", dependencies: ["PolicyGate"], swiftSettings: strictSettings),
        .executableTarget(
            name: "PolicyGateDemo",
            dependencies: ["PolicyGate", "PolicyGateTestKit"],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "PolicyGateTests",
            dependencies: ["PolicyGate", "PolicyGateTestKit"],
            swiftSettings: strictSettings
        ),
    ]
)
