// swift-tools-version:6.1
import PackageDescription

// Layers, low to high: CUring → SIP → Engine → Script → ringsipd. A lower layer never imports a higher one.
let package = Package(
    name: "ringsip",
    products: [
        .executable(name: "ringsipd", targets: ["ringsipd"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        .target(
            name: "CUring",
            linkerSettings: [.linkedLibrary("uring")]
        ),
        .target(name: "SIP"),
        .target(
            name: "Engine",
            dependencies: [
                "CUring", "SIP",
            ]
        ),
        .target(name: "Script", dependencies: ["SIP", "Engine"]),
        .executableTarget(
            name: "ringsipd",
            dependencies: [
                "Engine", "SIP", "Script",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Counts heap allocations; linked only into benchmarks and allocation tests, never the daemon.
        .target(name: "CAllocCounter"),
        .executableTarget(
            name: "ringsip-bench",
            dependencies: ["SIP", "Engine", "CAllocCounter"],
            path: "perf/microbench"
        ),
        .testTarget(name: "SIPTests", dependencies: ["SIP"]),
        .testTarget(name: "EngineTests", dependencies: ["Engine", "CUring", "SIP"]),
        .testTarget(name: "ScriptTests", dependencies: ["Script", "Engine", "SIP"]),
    ]
)
