// swift-tools-version:6.0
//
// A GiantVM coherence plugin in Swift, built out of tree: `swift build` makes
// .build/debug/libdsm-migratory-swift.so, which `giantvm conformance` and any config can load by path.
//
// It depends on GiantVM's PluginKit product. By default it uses the copy of the GiantVM package that
// `scripts/install.sh PREFIX` installs at PREFIX/share/giantvm/GiantVM (PREFIX=/usr/local here);
// point GIANTVM_PACKAGE at another one (an install elsewhere, or a GiantVM checkout in a directory
// named GiantVM):
//     GIANTVM_PACKAGE=$HOME/giantvm/share/giantvm/GiantVM swift build

import PackageDescription

let giantvm = Context.environment["GIANTVM_PACKAGE"] ?? "/usr/local/share/giantvm/GiantVM"

let package = Package(
    name: "coherence-swift",
    products: [
        // One dynamic library: the plugin .so (lib<name>.so, the name its descriptor carries).
        .library(name: "dsm-migratory-swift", type: .dynamic, targets: ["MigratorySwift"]),
    ],
    dependencies: [.package(path: giantvm)],
    targets: [
        .target(name: "MigratorySwift", dependencies: [.product(name: "PluginKit", package: "GiantVM")],
                path: "Sources/MigratorySwift"),
    ],
    swiftLanguageModes: [.v5]
)
