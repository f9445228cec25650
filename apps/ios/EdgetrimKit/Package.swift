// swift-tools-version:5.9
// EdgetrimKit: runs edgetrim artifacts on Apple devices. EdgetrimCore is pure Swift (builds and tests on
// Linux); EdgetrimCoreML compiles where Core ML exists; edgetrim-kit is a command-line tool over the core.
import PackageDescription

let package = Package(
    name: "EdgetrimKit",
    platforms: [.iOS(.v17), .macOS(.v14)],
    products: [
        .library(name: "EdgetrimCore", targets: ["EdgetrimCore"]),
        .library(name: "EdgetrimCoreML", targets: ["EdgetrimCoreML"]),
        .executable(name: "edgetrim-kit", targets: ["edgetrim-kit"]),
    ],
    targets: [
        .target(name: "EdgetrimCore"),
        .target(name: "EdgetrimCoreML", dependencies: ["EdgetrimCore"]),
        .executableTarget(name: "edgetrim-kit", dependencies: ["EdgetrimCore"]),
        .testTarget(name: "EdgetrimCoreTests", dependencies: ["EdgetrimCore"]),
    ]
)
