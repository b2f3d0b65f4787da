// swift-tools-version:6.0
//
// GiantVM in Swift: one virtual machine over many physical nodes.
// This manifest reads as the architecture: small targets with one job each (docs/architecture.md
// draws their dependencies). Every target:
//
// The ABI
//   PluginAPI      C headers: the versioned plugin ABI (giantvm_plugin.h) and the one duration/size
//                  grammar (giantvm_units.h, units.c) shared by the host and every plugin
//   PluginKit      Swift helper linked statically into each Swift plugin (never into the host)
// Host libraries, bottom up
//   CSystem        C shims for what Swift cannot call directly (ioctl numbers, uffd/KVM structs, sockets)
//   Config         the YAML config model, bounded reader and validator; typed fault rules; units
//   Metrics        counters, HdrHistogram latency histograms, the standard DSM statistics, JSON
//   PluginHost     plugin loader (dlopen, ABI and table-size checks) and the host-services tables
//   UserfaultFD    typed layer over userfaultfd
//   GuestMemory    guest RAM over userfaultfd, page operations, pin/unpin, per-page fault counts
//   Cluster        node runtime: channels, message-type registry, handshake/auth, heartbeats, failure,
//                  fault injection
//   KVM            typed layer over /dev/kvm ioctls (and the VirtualCPU protocol the run loop drives)
//   Interrupts     local APIC, IOAPIC, interrupt router, APIC timers, vCPU entry decision (no KVM)
//   TimeSync       leader/follower clock offset by minimum round trip
//   Firmware       boot loaders (multiboot, Linux) and firmware tables (e820, MP, ACPI)
//   Machine        vCPUs and their run loop, the I/O bus, devices, the VM on one node
//   Launch         the one launcher of node processes (local, ssh), node identity (--id auto)
//   Distributed    one VM across nodes, one component per sub-protocol: interrupt forwarding, clock
//                  alignment, start-up barrier, I/O forwarding
//   Telemetry      live Prometheus metrics of a node, `giantvm top`
//   NodeAssembly   one node from a config (VMNode, CoherenceStack, GuestImage), typed stop causes
//   DsmWorkloads   thread-driven DSM workloads with exact checkers
//   CoherenceKit   protocol conformance: simulated nodes, seeded schedules, invariants, litmus tests,
//                  shrinking and certificates (`giantvm conformance`)
//   Bench          cluster tools as a library: channel probe, net-bench, bench dsm node, reports
//   ABTest         `giantvm ab`: interleaved runs of several configs, statistics, reports
//   Host           the `giantvm` executable: the CLI only
// Plugins (each product is one .so)
//   TransportTCP, TransportRDMA (+ RDMALane: its slot/credit logic in pure C), IvyCore + DsmIvy,
//   TSOCore + DsmTSO, DsmLocal, PlacementCore + Placement, DeviceModels + Devices, ExampleC (a device plugin in plain C)
// Test fixtures and support
//   TestAbiTooOld, TestAbiTooNew, TestNoEntry, TestSmallOps, TestSwiftDevice (plugins the loader
//   tests load), TestBroken* (coherence plugins broken on purpose: conformance must fail them),
//   TestSupport (paths, processes, requirements)
// Tests: one target per library (ConfigTests, PluginHostTests, DsmIvyTests, GuestMemoryTests,
//   DsmTSOTests, PlacementTests, CLITests, InterruptsTests, TimeSyncTests, MachineTests, DistributedTests, DevicesTests,
//   GuestTests, ClusterTests, LaunchTests, SlurmTests, NodeAssemblyTests, BenchTests,
//   TelemetryTests, ABTests, FirmwareTests, RDMALaneTests, PCDevicesTests, BootTests)

import PackageDescription

let swiftSettings: [SwiftSetting] = []
// C plugins: linked without the Swift start-up object (swiftrt.o), which would register the image
// with the Swift runtime; an image registered there can never be unloaded, and the loader unloads
// C plugins it refuses.
let pureCPlugin: [LinkerSetting] = [.unsafeFlags(["-nostartfiles"])]

let package = Package(
    name: "GiantVM",
    products: [
        .executable(name: "giantvm", targets: ["Host"]),
        // The Swift helper for plugins written out of tree (templates/coherence-swift depends on it).
        .library(name: "PluginKit", targets: ["PluginKit"]),
        // Plugins: each product is one shared object, lib<name>.so, found by name at run time.
        .library(name: "transport-tcp", type: .dynamic, targets: ["TransportTCP"]),
        .library(name: "transport-rdma", type: .dynamic, targets: ["TransportRDMA"]),
        .library(name: "dsm-ivy", type: .dynamic, targets: ["DsmIvy"]),
        .library(name: "dsm-tso", type: .dynamic, targets: ["DsmTSO"]),
        .library(name: "dsm-local", type: .dynamic, targets: ["DsmLocal"]),
        .library(name: "devices", type: .dynamic, targets: ["Devices"]),
        .library(name: "placement", type: .dynamic, targets: ["Placement"]),
        .library(name: "example-c", type: .dynamic, targets: ["ExampleC"]),
        // Deliberately broken plugins the loader tests load (built like any plugin).
        .library(name: "test-abi-too-old", type: .dynamic, targets: ["TestAbiTooOld"]),
        .library(name: "test-abi-too-new", type: .dynamic, targets: ["TestAbiTooNew"]),
        .library(name: "test-no-entry", type: .dynamic, targets: ["TestNoEntry"]),
        .library(name: "test-small-ops", type: .dynamic, targets: ["TestSmallOps"]),
        .library(name: "test-swift-device", type: .dynamic, targets: ["TestSwiftDevice"]),
        // Coherence plugins broken on purpose (templates/coherence-c plus one bug): conformance fails them.
        .library(name: "test-broken-no-invalidate", type: .dynamic, targets: ["TestBrokenNoInvalidate"]),
        .library(name: "test-broken-lost-writeback", type: .dynamic, targets: ["TestBrokenLostWriteback"]),
        .library(name: "test-broken-no-wake", type: .dynamic, targets: ["TestBrokenNoWake"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.0.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.1.0"),
        // Live metrics: Prometheus text exposition (pulls apple/swift-metrics and swift-atomics).
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.4.1"),
    ],
    targets: [
        // --- the ABI and its Swift helper -------------------------------------------------
        .target(name: "PluginAPI", path: "Sources/PluginAPI"),
        .target(name: "PluginKit", dependencies: ["PluginAPI"], path: "Sources/PluginKit",
                swiftSettings: swiftSettings),

        // --- host libraries ------------------------------------------------------------------
        .target(name: "CSystem", path: "Sources/CSystem"),
        .target(name: "Config", dependencies: ["PluginAPI", .product(name: "Yams", package: "Yams")],
                path: "Sources/Config", swiftSettings: swiftSettings),
        .target(name: "Metrics", dependencies: ["PluginAPI", .product(name: "Histogram", package: "hdrhistogram-swift")],
                path: "Sources/Metrics", swiftSettings: swiftSettings),
        .target(name: "PluginHost",
                dependencies: ["PluginAPI", "Config", "Metrics", .product(name: "Logging", package: "swift-log")],
                path: "Sources/PluginHost", swiftSettings: swiftSettings),
        .target(name: "UserfaultFD", dependencies: ["CSystem"], path: "Sources/UserfaultFD",
                swiftSettings: swiftSettings),
        .target(name: "GuestMemory",
                dependencies: ["UserfaultFD", "PluginAPI", "CSystem", .product(name: "Logging", package: "swift-log"),
                               .product(name: "Histogram", package: "hdrhistogram-swift"), "Metrics"],
                path: "Sources/GuestMemory", swiftSettings: swiftSettings),
        .target(name: "Cluster",
                dependencies: ["PluginAPI", "PluginHost", "Config", "Metrics", "CSystem",
                               .product(name: "Crypto", package: "swift-crypto"),
                               .product(name: "Logging", package: "swift-log")],
                path: "Sources/Cluster", swiftSettings: swiftSettings),
        .target(name: "KVM", dependencies: ["CSystem"], path: "Sources/KVM", swiftSettings: swiftSettings),
        .target(name: "Interrupts", path: "Sources/Interrupts", swiftSettings: swiftSettings),
        .target(name: "TimeSync", path: "Sources/TimeSync", swiftSettings: swiftSettings),
        .target(name: "Firmware", path: "Sources/Firmware", swiftSettings: swiftSettings),
        .target(name: "Machine",
                dependencies: ["KVM", "GuestMemory", "Interrupts", "Firmware", "PluginAPI", "PluginHost", "Config", "Metrics",
                               "CSystem", .product(name: "Logging", package: "swift-log")],
                path: "Sources/Machine", swiftSettings: swiftSettings),
        // Starting node processes: the one launcher (spawn, relay, stop together).
        .target(name: "Launch", dependencies: ["CSystem"], path: "Sources/Launch", swiftSettings: swiftSettings),
        // One VM across nodes, one component per sub-protocol: interrupt forwarding, clock
        // alignment, the start-up barrier (device maps, READY), I/O forwarding.
        .target(name: "Distributed",
                dependencies: ["Cluster", "Interrupts", "Machine", "Metrics", "TimeSync",
                               .product(name: "Logging", package: "swift-log")],
                path: "Sources/Distributed", swiftSettings: swiftSettings),
        // Live metrics of a node: a Prometheus registry fed from the node's MetricsRegistry and
        // guest memory's per-page fault counts, a small HTTP listener, and the `top` client.
        .target(name: "Telemetry",
                dependencies: ["Config", "Metrics", "PluginAPI", .product(name: "Prometheus", package: "swift-prometheus"),
                               // swift-metrics has a module named Metrics, like ours: aliased here so
                               // that both can be in one package graph.
                               .product(name: "Metrics", package: "swift-metrics", moduleAliases: ["Metrics": "SwiftMetrics"])],
                path: "Sources/Telemetry", swiftSettings: swiftSettings),
        // One node from a config: cluster node, guest memory + coherence plugin, machine, devices,
        // the distributed components; typed stop causes and the exit-status mapping.
        .target(name: "NodeAssembly",
                dependencies: ["Cluster", "Config", "Distributed", "Firmware", "GuestMemory", "Machine", "Metrics",
                               "PluginAPI", "PluginHost", "Telemetry", .product(name: "Logging", package: "swift-log")],
                path: "Sources/NodeAssembly", swiftSettings: swiftSettings),
        // The protocol conformance kit (simulated nodes, seeded schedules, invariants, litmus tests,
        // shrinking, certificates): `giantvm conformance` and the plugin tests run it.
        .target(name: "CoherenceKit", dependencies: ["PluginAPI", .product(name: "Crypto", package: "swift-crypto")],
                path: "Sources/CoherenceKit", swiftSettings: swiftSettings),
        // Tools run on a cluster, testable without the binary: the channel probe, net-bench, the
        // bench dsm node driver, its control protocol and report models.
        .target(name: "Bench",
                dependencies: ["Cluster", "Config", "DsmWorkloads", "GuestMemory", "Metrics", "NodeAssembly", "PluginAPI",
                               "PluginHost", .product(name: "Histogram", package: "hdrhistogram-swift"),
                               .product(name: "Logging", package: "swift-log")],
                path: "Sources/Bench", swiftSettings: swiftSettings),
        // `giantvm ab`: the same workload under several configs, interleaved runs, statistics
        // (bootstrap intervals, Mann-Whitney U, Holm), a YAML diff, report.json and an offline report.html.
        .target(name: "ABTest",
                dependencies: ["Config", "Launch", "Metrics", "PluginHost", .product(name: "Crypto", package: "swift-crypto"),
                               .product(name: "Yams", package: "Yams")],
                path: "Sources/ABTest", swiftSettings: swiftSettings),
        .executableTarget(
            name: "Host",
            dependencies: ["ABTest", "Bench", "Cluster", "CoherenceKit", "Config", "DsmWorkloads", "GuestMemory", "Launch", "Machine", "Metrics", "NodeAssembly",
                           "PluginAPI", "PluginHost", "Telemetry",
                           .product(name: "ArgumentParser", package: "swift-argument-parser"),
                           .product(name: "Logging", package: "swift-log")],
            path: "Sources/Host", swiftSettings: swiftSettings),

        // --- plugins -------------------------------------------------------------------------
        .target(name: "TransportTCP", dependencies: ["PluginKit", "CSystem"], path: "Plugins/transport-tcp",
                swiftSettings: swiftSettings),
        // Needs libibverbs-dev (scripts/setup.sh installs it); fails at create() without an RDMA device.
        .target(name: "TransportRDMA", dependencies: ["PluginAPI"], path: "Plugins/transport-rdma",
                linkerSettings: [.linkedLibrary("ibverbs")]),
        .target(name: "IvyCore", dependencies: ["PluginKit"], path: "Plugins/dsm-ivy/Core", swiftSettings: swiftSettings),
        .target(name: "DsmIvy", dependencies: ["IvyCore", "PluginKit"], path: "Plugins/dsm-ivy", exclude: ["Core"],
                swiftSettings: swiftSettings),
        .target(name: "TSOCore", dependencies: ["IvyCore", "PluginKit"], path: "Plugins/dsm-tso/Core", swiftSettings: swiftSettings),
        .target(name: "DsmTSO", dependencies: ["TSOCore", "PluginKit"], path: "Plugins/dsm-tso", exclude: ["Core"],
                swiftSettings: swiftSettings),
        .target(name: "DsmLocal", dependencies: ["PluginKit"], path: "Plugins/dsm-local", swiftSettings: swiftSettings),
        .target(name: "DeviceModels", dependencies: ["PluginKit", "CSystem"], path: "Plugins/devices/Models", swiftSettings: swiftSettings),
        .target(name: "Devices", dependencies: ["DeviceModels", "PluginKit"], path: "Plugins/devices", exclude: ["Models"],
                swiftSettings: swiftSettings),
        // vCPU placement policies (co-locate, follow-memory): the deciders in PlacementCore, the entry in Placement.
        .target(name: "PlacementCore", dependencies: ["PluginKit"], path: "Plugins/placement/Core", swiftSettings: swiftSettings),
        .target(name: "Placement", dependencies: ["PlacementCore", "PluginKit"], path: "Plugins/placement", exclude: ["Core"],
                swiftSettings: swiftSettings),
        .target(name: "ExampleC", dependencies: ["PluginAPI"], path: "Plugins/example-c", linkerSettings: pureCPlugin),
        .target(name: "TestAbiTooOld", dependencies: ["PluginAPI"], path: "Tests/Fixtures/abi-too-old", linkerSettings: pureCPlugin),
        .target(name: "TestAbiTooNew", dependencies: ["PluginAPI"], path: "Tests/Fixtures/abi-too-new", linkerSettings: pureCPlugin),
        .target(name: "TestNoEntry", dependencies: ["PluginAPI"], path: "Tests/Fixtures/no-entry", linkerSettings: pureCPlugin),
        .target(name: "TestSmallOps", dependencies: ["PluginAPI"], path: "Tests/Fixtures/small-ops",
                linkerSettings: pureCPlugin),
        .target(name: "TestBrokenNoInvalidate", dependencies: ["PluginAPI"], path: "Tests/Fixtures/broken-no-invalidate",
                linkerSettings: pureCPlugin),
        .target(name: "TestBrokenLostWriteback", dependencies: ["PluginAPI"], path: "Tests/Fixtures/broken-lost-writeback",
                linkerSettings: pureCPlugin),
        .target(name: "TestBrokenNoWake", dependencies: ["PluginAPI"], path: "Tests/Fixtures/broken-no-wake",
                linkerSettings: pureCPlugin),
        .target(name: "TestSwiftDevice", dependencies: ["PluginKit"], path: "Tests/Fixtures/swift-device",
                swiftSettings: swiftSettings),

        // --- tests ---------------------------------------------------------------------------
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "ConfigTests", dependencies: ["Config", "PluginAPI", "PluginKit", "IvyCore", "Firmware", "TestSupport"],
                    path: "Tests/ConfigTests"),
        .testTarget(name: "PluginHostTests", dependencies: ["PluginHost", "PluginAPI", "Config", "Metrics", "TestSupport"],
                    path: "Tests/PluginHostTests"),
        .target(name: "DsmWorkloads", dependencies: ["CSystem"], path: "Sources/DsmWorkloads", swiftSettings: swiftSettings),
        .testTarget(name: "DsmIvyTests",
                    dependencies: ["IvyCore", "DsmLocal", "PluginKit", "CoherenceKit", "DsmWorkloads", "TestSupport", "GuestMemory", "PluginHost",
                                   "Config", "Metrics", .product(name: "Logging", package: "swift-log")],
                    path: "Tests/DsmIvyTests"),
        .testTarget(name: "DsmTSOTests",
                    dependencies: ["TSOCore", "IvyCore", "PluginKit", "CoherenceKit", "PluginAPI", "TestSupport"],
                    path: "Tests/DsmTSOTests"),
        .testTarget(name: "PlacementTests", dependencies: ["PlacementCore", "PluginKit", "PluginAPI", "PluginHost", "GuestMemory", "CSystem", "Config",
                                                         "Metrics", "TestSupport", .product(name: "Logging", package: "swift-log")],
                    path: "Tests/PlacementTests"),
        .testTarget(name: "GuestMemoryTests",
                    dependencies: ["GuestMemory", "UserfaultFD", "CSystem", "PluginAPI", "DsmLocal", "PluginHost",
                                   "Metrics", "TestSupport", .product(name: "Logging", package: "swift-log")],
                    path: "Tests/GuestMemoryTests"),
        .testTarget(name: "CLITests", dependencies: ["TestSupport", "PluginAPI"], path: "Tests/CLITests"),
        .testTarget(name: "InterruptsTests", dependencies: ["Interrupts"], path: "Tests/InterruptsTests"),
        .testTarget(name: "TimeSyncTests", dependencies: ["TimeSync"], path: "Tests/TimeSyncTests"),
        .testTarget(name: "MachineTests", dependencies: ["Machine", "KVM", "Interrupts", "Metrics", "TestSupport",
                                                         .product(name: "Logging", package: "swift-log")], path: "Tests/MachineTests"),
        .testTarget(name: "DistributedTests",
                    dependencies: ["Distributed", "Cluster", "Config", "Interrupts", "Machine", "Metrics", "PluginAPI", "PluginHost", "TestSupport",
                                   .product(name: "Logging", package: "swift-log")],
                    path: "Tests/DistributedTests"),
        .testTarget(name: "DevicesTests", dependencies: ["DeviceModels", "PluginKit"], path: "Tests/DevicesTests"),
        .testTarget(name: "GuestTests", dependencies: [], path: "Tests/GuestTests"),
        // Multi-process and unit tests of the network layer. TransportWire.swift is a symlink to
        // the plugin's pure wire code (the plugin itself is only loaded as a .so, never linked).
        .testTarget(name: "ClusterTests", dependencies: ["Cluster", "Config", "PluginHost", "PluginAPI", "Metrics",
                                                         .product(name: "Logging", package: "swift-log")],
                    path: "Tests/ClusterTests"),
        .testTarget(name: "LaunchTests", dependencies: ["Launch"], path: "Tests/LaunchTests"),
        // `node --id auto`: through the binary with launcher variables, and a real Slurm (slurm-wlm, munge;
        // scripts/deps/slurm.sh) started by the test running a VM with srun and the example batch script.
        .testTarget(name: "SlurmTests", dependencies: ["TestSupport"], path: "Tests/SlurmTests"),
        .testTarget(name: "NodeAssemblyTests",
                    dependencies: ["NodeAssembly", "Distributed", "Machine", "Cluster", "Config", "PluginHost", "TestSupport",
                                   "GuestMemory", "Metrics", "PluginAPI",
                                   .product(name: "Logging", package: "swift-log")],
                    path: "Tests/NodeAssemblyTests"),
        .testTarget(name: "BenchTests",
                    dependencies: ["Bench", "Cluster", "Config", "Metrics", "DsmWorkloads", "TestSupport",
                                   .product(name: "Logging", package: "swift-log")],
                    path: "Tests/BenchTests"),
        .testTarget(name: "TelemetryTests", dependencies: ["Telemetry", "Config", "Metrics", "TestSupport"],
                    path: "Tests/TelemetryTests"),
        .testTarget(name: "ABTests", dependencies: ["ABTest", "Metrics", "TestSupport"], path: "Tests/ABTests"),
        .testTarget(name: "FirmwareTests", dependencies: ["Firmware"], path: "Tests/FirmwareTests"),
        // transport-rdma's device-independent logic (send slots, overflow queue, handshake
        // material), built from symlinks to the plugin's own files: tested without an RDMA device.
        .target(name: "RDMALane", dependencies: ["PluginAPI"], path: "Tests/RDMALane"),
        .testTarget(name: "RDMALaneTests", dependencies: ["RDMALane", "PluginAPI"], path: "Tests/RDMALaneTests"),
        .testTarget(name: "PCDevicesTests", dependencies: ["DeviceModels", "PluginKit"], path: "Tests/PCDevicesTests"),
        .testTarget(name: "BootTests",
                    dependencies: ["DeviceModels", "PluginKit", "PluginHost", "Metrics", "TestSupport",
                                   .product(name: "Logging", package: "swift-log")],
                    path: "Tests/BootTests"),
    ],
    swiftLanguageModes: [.v5]
)
