// swift-tools-version:6.1
import PackageDescription

/// The hot path runs single-threaded per shard over preallocated state; Swift's dynamic exclusivity checks
/// (swift_beginAccess on class properties) cost ~3 % of the daemon's CPU at 4000 calls/s in `perf record`
/// (perf/RESULTS.md), with nothing to catch: each shard's objects are touched by one thread. Release only.
let hotPath: [SwiftSetting] = [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]

// Layers, low to high: CUring (and CMariaDB, CCurl, linked only by Ops) → SIP → Engine → TM → Script → Ops → ringsipd. A lower layer never imports a higher one.
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
        // libcurl's variadic setopt/getinfo as typed C functions, for Ops' HTTPRunner.
        .target(
            name: "CCurl",
            linkerSettings: [.linkedLibrary("curl")]
        ),
        // MariaDB Connector/C (libmariadb-dev); pkg-config supplies -I/usr/include/mariadb.
        .systemLibrary(name: "CMariaDB", pkgConfig: "libmariadb", providers: [.apt(["libmariadb-dev"])]),
        .target(name: "SIP", swiftSettings: hotPath),
        .target(
            name: "Engine",
            dependencies: [
                "CUring", "SIP",
            ],
            swiftSettings: hotPath
        ),
        .target(name: "TM", dependencies: ["SIP", "Engine"], swiftSettings: hotPath),
        .target(name: "Script", dependencies: ["SIP", "Engine", "TM"], swiftSettings: hotPath),
        // Async operations (exec, …) on the shard's ring; will depend on Script once the builtins are registered.
        .target(name: "Ops", dependencies: ["CCurl", "CMariaDB", "Engine", "SIP", "Script", "TM"], swiftSettings: hotPath),
        .executableTarget(
            name: "ringsipd",
            dependencies: [
                "Engine", "SIP", "Script", "Ops",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Counts heap allocations; linked only into benchmarks and allocation tests, never the daemon.
        .target(name: "CAllocCounter"),
        .executableTarget(
            name: "ringsip-bench",
            dependencies: ["SIP", "Engine", "Script", "CAllocCounter"],
            path: "perf/microbench"
        ),
        // libFuzzer targets (`make fuzz`: built with -sanitize=fuzzer,address -DFUZZING); a plain build makes
        // replayers that run saved inputs.
        .target(name: "FuzzReplay", path: "Fuzz/FuzzReplay"),
        .executableTarget(name: "fuzz-script", dependencies: ["Script", "Engine", "FuzzReplay"], path: "Fuzz/FuzzScript"),
        .executableTarget(name: "fuzz-sip", dependencies: ["SIP", "FuzzReplay"], path: "Fuzz/FuzzSIP"),
        .executableTarget(name: "fuzz-radius", dependencies: ["Ops", "SIP", "FuzzReplay"], path: "Fuzz/FuzzRadius"),
        .executableTarget(name: "fuzz-results", dependencies: ["Ops", "FuzzReplay"], path: "Fuzz/FuzzResults"),
        .testTarget(name: "SIPTests", dependencies: ["SIP"]),
        .testTarget(name: "EngineTests", dependencies: ["Engine", "CUring", "SIP"]),
        .testTarget(name: "ScriptTests", dependencies: ["Script", "Engine", "SIP"]),
        .testTarget(name: "TMTests", dependencies: ["TM", "SIP", "Engine"]),
        .testTarget(name: "OpsTests", dependencies: ["Ops", "Engine"], exclude: ["Fixtures"]),
    ]
)
