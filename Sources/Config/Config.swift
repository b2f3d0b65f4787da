// Config: the cluster's YAML file as Swift values. One file describes the whole VM; every node
// reads the same file and picks its own entry by id.
//
// The reader collects every problem it finds (it does not stop at the first) and reports each as
// `file:line:column: field.path: message`, e.g. `demo.yaml:7:11: nodes[1].port: 70000 is not a port`.
// Durations and sizes use the one grammar of giantvm_units.h (Units.swift: a bare number is
// seconds or bytes), each duration field with a stated range. The document is bounded before it
// is composed (YAMLBounds.swift: size, nesting, alias expansion); fault rules are typed
// (Faults.swift); files the config names are checked with stat (Files.swift).

import Foundation

/// One node of the cluster (`nodes:` list entry).
public struct NodeConfig: Equatable, Sendable {
    public var id: UInt32
    public var address: String
    public var port: UInt16
    public var vcpus: UInt32
    /// `ssh:`: where `up --ssh` logs in to start this node (nil: its address).
    public var ssh: SSHTarget?
    public init(id: UInt32, address: String, port: UInt16, vcpus: UInt32) {
        self.id = id; self.address = address; self.port = port; self.vcpus = vcpus
    }
}

/// A plugin named in the config, with its `settings:` as ordered key/value text.
public struct PluginRef: Sendable {
    public var plugin: String
    public var settings: [(key: String, value: String)]
    public init(plugin: String, settings: [(key: String, value: String)] = []) {
        self.plugin = plugin; self.settings = settings
    }
    public func setting(_ key: String) -> String? { settings.first { $0.key == key }?.value }
}

/// A device instance and where it lives (`devices:` list entry).
public struct DeviceConfig: Sendable {
    public var name: String
    public var plugin: String
    public var model: String
    public var node: UInt32
    public var base: UInt64?
    public var irq: UInt32?
    public var settings: [(key: String, value: String)]
}

/// The guest to boot (`guest:`).
public struct GuestConfig: Sendable {
    public var image: String
    public var cmdline: String
    /// `guest.initrd`: an initial ramdisk (Linux) or extra module (multiboot), resolved absolute.
    public var initrd: String? = nil
    /// `guest.modules`: files loaded into guest RAM beside the image, resolved absolute: multiboot
    /// modules (the info block's mods list) for a multiboot image, or the boot info's module table
    /// (docs/vmm.md) for a GiantVM ELF64. Each is a regular file; together they must fit in RAM.
    public var modules: [String] = []
    /// At most this many `guest.modules` (the boot info's module table has this many slots).
    public static let maxModules = 16
    /// `guest.protocol`: auto (default: picked from the image), multiboot, linux or giantvm.
    public var bootProtocol: String = "auto"
}

/// `placement:`: the vCPU placement policy (docs/migration.md, "Placement policies").
public struct PlacementConfig: Sendable {
    /// `plugin:` and `settings:` (the plugin checks its own settings when created).
    public var plugin: PluginRef
    /// `interval:`: how often the policy sees the figures (100ms to 1h; default 1s).
    public var intervalNanoseconds: UInt64 = 1_000_000_000
    /// `sample_pages:`: distinct faulting pages remembered per vCPU per interval for the sharing
    /// matrix (16 to 4096, so that one vCPU's figures fit one frame; default 4096).
    public var samplePages: Int = 4096

    public static let intervalRange: ClosedRange<UInt64> = 100_000_000...3_600_000_000_000
    public static let samplePagesRange: ClosedRange<UInt64> = 16...4096

    public init(plugin: PluginRef, intervalNanoseconds: UInt64 = 1_000_000_000, samplePages: Int = 4096) {
        self.plugin = plugin
        self.intervalNanoseconds = intervalNanoseconds
        self.samplePages = samplePages
    }
}

/// Timeouts in seconds (`timeouts:`). Each is range-checked when read (`Durations.timeoutRange`,
/// 1ms to 24h); use the `...Nanoseconds` accessors for arithmetic (checked, never trapping).
public struct Timeouts: Sendable, Equatable {
    /// How long a node waits for all peers to be reachable at start.
    public var connect: Double = 10
    /// Interval between heartbeats.
    public var heartbeat: Double = 0.2
    /// Silence after which a peer is declared lost and every node stops.
    public var failure: Double = 3
    public init() {}

    public var connectNanoseconds: UInt64 { Durations.nanoseconds(fromSeconds: connect) }
    public var heartbeatNanoseconds: UInt64 { Durations.nanoseconds(fromSeconds: heartbeat) }
    public var failureNanoseconds: UInt64 { Durations.nanoseconds(fromSeconds: failure) }
}

/// The whole cluster configuration.
public struct ClusterConfig: Sendable {
    public var sourcePath: String
    public var cluster: String
    public var nodes: [NodeConfig]
    public var memoryBytes: UInt64
    public var pluginPath: [String]
    public var transport: PluginRef
    public var coherence: PluginRef
    public var devices: [DeviceConfig]
    public var ioapicNode: UInt32
    public var guest: GuestConfig?
    public var keyFile: String?
    /// `ssh:`: how `up --ssh` starts the nodes (SSHConfig.swift).
    public var ssh = SSHSettings()
    public var timeouts: Timeouts
    /// Extra top-level sections that belong to tools (e.g. `bench:`): their source text exactly
    /// as written in the file (never re-serialized, aliases not expanded).
    public var extra: [String: String]
    /// `transport.faults`: fault-injection rules, read and checked once (empty: no injection).
    public var faults: FaultPlan
    /// Things `validate` should say that do not make the file invalid (no key_file on a
    /// multi-node cluster, a key file other users can read).
    public var warnings: [Diagnostic]
    /// `metrics:`: every node serves live Prometheus metrics (nil: none).
    public var metrics: MetricsConfig? = nil
    /// `placement:`: a placement-policy plugin run on node 0 (nil: vCPUs stay where the YAML puts them).
    public var placement: PlacementConfig? = nil

    /// Largest `memory:` a VM supports: guest RAM must end below the 32-bit device window at
    /// 0xC0000000 (Firmware's `FirmwareLayout.maxRAM`; Machine refuses more too). Checked when the
    /// config is read, before anything is sized from it.
    public static let maxMemoryBytes: UInt64 = 0xC000_0000
    /// Smallest `memory:`.
    public static let minMemoryBytes: UInt64 = 1 << 20

    public var totalVCPUs: Int { nodes.reduce(0) { $0 + Int($1.vcpus) } }

    /// Global index of the first vCPU of `node` (vCPUs are numbered node by node).
    public func firstVCPU(of node: UInt32) -> UInt32 {
        nodes.prefix(Int(node)).reduce(0) { $0 + $1.vcpus }
    }

    /// The node that runs global vCPU `index`.
    public func node(ofVCPU index: UInt32) -> UInt32? {
        var first: UInt32 = 0
        for n in nodes {
            if index < first + n.vcpus { return n.id }
            first += n.vcpus
        }
        return nil
    }

    public init(sourcePath: String = "<memory>", cluster: String, nodes: [NodeConfig],
                memoryBytes: UInt64 = 64 << 20, pluginPath: [String] = [],
                transport: PluginRef = PluginRef(plugin: "transport-tcp"),
                coherence: PluginRef = PluginRef(plugin: "dsm-ivy"), devices: [DeviceConfig] = [],
                ioapicNode: UInt32 = 0, guest: GuestConfig? = nil, keyFile: String? = nil,
                timeouts: Timeouts = Timeouts(), extra: [String: String] = [:], faults: FaultPlan = FaultPlan(),
                warnings: [Diagnostic] = []) {
        self.sourcePath = sourcePath; self.cluster = cluster; self.nodes = nodes
        self.memoryBytes = memoryBytes; self.pluginPath = pluginPath; self.transport = transport
        self.coherence = coherence; self.devices = devices; self.ioapicNode = ioapicNode
        self.guest = guest; self.keyFile = keyFile; self.timeouts = timeouts; self.extra = extra
        self.faults = faults; self.warnings = warnings
    }
}

/// One problem in a config file.
public struct Diagnostic: Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int
    public var path: String
    public var message: String
    public init(file: String, line: Int, column: Int, path: String, message: String) {
        self.file = file; self.line = line; self.column = column; self.path = path; self.message = message
    }
    public var description: String {
        let location = line > 0 ? "\(file):\(line):\(column)" : file
        return path.isEmpty ? "\(location): \(message)" : "\(location): \(path): \(message)"
    }
}

/// Every problem found in a config file.
public struct ConfigError: Error, CustomStringConvertible, Sendable {
    public var diagnostics: [Diagnostic]
    public var description: String {
        diagnostics.map(\.description).joined(separator: "\n")
    }
}
