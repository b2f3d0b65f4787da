// One node of a VM, assembled from a config: the cluster node, guest memory with the coherence
// plugin, the machine (this node's vCPUs; the others as APIC state), this node's devices, and —
// when the VM spans nodes — the distributed components, each on its own message types:
// interrupt forwarding (IPI, APIC_ADDR, IRQ_LINE, EOI), clock alignment (TIME_*), the start-up
// barrier (DEVMAP, READY) and I/O forwarding (IO_REQ, IO_REP). `giantvm run` is the one-node
// case: the same assembly over an in-process transport with no peers, and no distributed part.
//
// Start-up, on every node:
//   1. the cluster node (transport plugin; not started yet);
//   2. guest RAM over userfaultfd with the coherence plugin (CoherenceStack);
//   3. the machine, then this node's devices (YAML `node:`), from their plugins;
//   4. the distributed components register their message types;
//   5. coherence start, node start (meets every peer), device maps exchanged, time aligned,
//      every node loads the modules as replicated read copies when the protocol takes
//      GVM_HINT_REPLICATED (ABI 4; not on a one-node VM), READY barrier;
//   6. the BSP's node loads the image (and the modules, unless replicated);
//   7. every node runs its vCPUs until the guest exits, a vCPU fails, or the cluster stops: the
//      first cause stops every node (`StopCause`).
//
// Threading: `init`, `startUp`, `run` and `shutdown` on the main thread; `stop` from any thread
// (signals); the fatal hooks from plugin and handler threads.

import Cluster
import Config
import Distributed
import Firmware
import Foundation
import Glibc
import GuestMemory
import Logging
import Machine
import Metrics
import PluginAPI
import PluginHost
import Synchronization
import Telemetry

public struct VMOptions: Sendable {
    /// Stop the VM after this many seconds (StopCause.timeout, exit status 124).
    public var timeout: Double?
    /// Guest command line instead of the config's.
    public var cmdline: String?
    /// Inject a TSC skew on this node (ticks), to test the time sync.
    public var tscSkew: Int64 = 0
    /// Align TSCs with node 0.
    public var timeSync = true
    /// Guest RAM: userfaultfd + the coherence plugin (true), or a plain anonymous mapping
    /// (`giantvm run --memory anonymous`, one node only, for comparison).
    public var coherentMemory = true
    /// Copy this process's stdin to the devices that take console input (the UART).
    public var consoleInput = false
    /// Run a remote device's bulk DMA on the requesting vCPU's node (DMAForwarding.swift);
    /// GIANTVM_DMA_FORWARD=0 in the environment turns it off (placement experiments).
    public var dmaForwarding = ProcessInfo.processInfo.environment["GIANTVM_DMA_FORWARD"] != "0"
    public init() {}
}

/// How a node's run ended.
public struct NodeOutcome: Sendable {
    /// This node's own cause, when it decided the stop (nil when a peer did).
    public var cause: StopCause?
    /// The cluster-wide stop: its status is the process exit status.
    public var status: Int32
    public var message: String
    /// Seconds the vCPUs ran.
    public var elapsed: Double
}

public final class VMNode: @unchecked Sendable {
    public let config: ClusterConfig
    public let id: UInt32
    public let node: Node
    public let machine: Machine
    public let metrics: MetricsRegistry
    public let coherence: CoherenceStack?
    public let devices: [PluginDevice]
    public let image: GuestImage
    let logger: Logger
    let options: VMOptions
    let say: @Sendable (String) -> Void
    // The distributed components (nil on a one-node VM; the interrupt forwarder is the machine's
    // `remote`, held by it).
    let io: IOForwarder?
    let clock: ClockAligner?
    let barrier: StartupBarrier?
    let dma: DMAForwarder?
    /// Live vCPU migration (nil on a one-node VM): docs/migration.md.
    public let migrator: VCPUMigrator?
    /// The placement policy (YAML `placement:`; nil without one or on a one-node VM).
    public let placement: PlacementService?
    /// Moves device homes off this node when it leaves (nil on a one-node VM): Evacuation.swift.
    let mover: DeviceMover?
    /// The devices homed here now (moved in and out by evacuations).
    let homes = DeviceHomes()
    private let localCause = Mutex<StopCause?>(nil)
    /// The in-process transport of a one-node VM (its endpoint holds it weakly).
    private let loopback: InMemoryNetwork?
    /// The live metrics endpoint (YAML `metrics:`), from `startUp` to `shutdown`.
    private var metricsServer: MetricsServer?
    /// Whether `startUp` loaded the modules on every node as replicated read copies (ABI 4).
    public private(set) var modulesReplicated = false

    /// Assembles node `id` of `cfg` (nothing runs yet). Errors name the file, field, node and cause.
    public init(config cfg: ClusterConfig, id: UInt32, loader: PluginLoader, logger: Logger, options: VMOptions = VMOptions(),
                say: @escaping @Sendable (String) -> Void) throws {
        config = cfg
        self.id = id
        self.logger = logger
        self.options = options
        self.say = say
        let metrics = MetricsRegistry()
        self.metrics = metrics
        guard Int(id) < cfg.nodes.count else {
            throw AssemblyError("\(cfg.sourcePath): there is no node \(id) (nodes: 0-\(cfg.nodes.count - 1))")
        }
        guard Int(cfg.ioapicNode) < cfg.nodes.count else {
            throw AssemblyError("\(cfg.sourcePath): ioapic_node \(cfg.ioapicNode) is not a node (nodes: 0-\(cfg.nodes.count - 1))")
        }
        guard cfg.totalVCPUs > 0 else { throw AssemblyError("\(cfg.sourcePath): no node has a vCPU") }
        guard options.coherentMemory || cfg.nodes.count == 1 else {
            throw AssemblyError("\(cfg.sourcePath): plain anonymous guest RAM is for one node only (the config has \(cfg.nodes.count))")
        }
        image = try GuestImage(config: cfg, cmdline: options.cmdline)
        let distributed = cfg.nodes.count > 1

        // 1. The cluster node: the configured transport, or none for a one-node VM.
        let n: Node
        let net = distributed ? nil : InMemoryNetwork(nodeCount: 1)
        loopback = net
        do {
            if let net {
                n = try Node(config: cfg, id: id, logger: logger, metrics: metrics) { net.endpoint(id, events: $0) }
            } else {
                n = try Node(config: cfg, id: id, loader: loader, logger: logger, metrics: metrics)
            }
        } catch {
            throw AssemblyError("node \(id): \(error)")
        }
        node = n

        // 2. Guest memory and the coherence plugin; their fatal errors stop the VM.
        final class Target: @unchecked Sendable { weak var vm: VMNode? }
        let target = Target()
        let ram: any GuestRAM
        if options.coherentMemory {
            let stack = try CoherenceStack(config: cfg, selfID: id, node: distributed ? n : nil, loader: loader, metrics: metrics,
                                           logger: logger) { who, why in
                if let vm = target.vm { vm.stop(.pluginFatal(plugin: who, why)) } else {
                    n.stop(StopCause.pluginFatal(plugin: who, why).stopReason(origin: id))
                }
            }
            coherence = stack
            ram = stack.memory
        } else {
            coherence = nil
            do { ram = try AnonymousGuestRAM(size: cfg.memoryBytes) } catch {
                throw AssemblyError("node \(id): cannot map guest RAM: \(error)")
            }
        }

        // 3. The machine and this node's devices.
        var mc = MachineConfiguration(memoryBytes: cfg.memoryBytes, vcpus: cfg.totalVCPUs,
                                      cmdline: options.cmdline ?? cfg.guest?.cmdline ?? "")
        mc.nodes = cfg.nodes.map { (cfg.firstVCPU(of: $0.id), $0.vcpus) }
        mc.nodeID = id
        mc.ioapic = id == cfg.ioapicNode
        // Any vCPU may migrate to any node that runs vCPUs (a device-only node takes none: it has
        // no vCPU, and so no TSC, to align).
        mc.allVCPUs = distributed && cfg.nodes[Int(id)].vcpus > 0
        // The interrupt forwarder is the machine's remote seam (absent on one node); it registers
        // its message types now and gets the machine right after it exists.
        var cpu: CPUForwarder?
        if distributed {
            var owners: [UInt32] = []
            for node in cfg.nodes { owners += Array(repeating: node.id, count: Int(node.vcpus)) }
            cpu = CPUForwarder(node: n, vcpuNode: owners, ioapicNode: cfg.ioapicNode, metrics: metrics, logger: logger)
        }
        let m: Machine
        // Multiple-writer protocols flush at the VMM's synchronisation points.
        do { m = try Machine(config: mc, ram: ram, remote: cpu, fence: coherence?.fenceHook,
                                      coherenceHint: Self.guestHints(coherence?.hintHook), logger: logger) } catch {
            throw AssemblyError("node \(id): cannot create the VM: \(error)")
        }
        cpu?.attach(m)
        machine = m
        if let cpu {
            let mig = VCPUMigrator(node: n, placement: cpu.placement, metrics: metrics, logger: logger) { why in
                if let vm = target.vm { vm.stop(.vcpuFailure(node: id, why)) } else {
                    n.stop(StopCause.vcpuFailure(node: id, why).stopReason(origin: id))
                }
            }
            mig.attach(m)
            migrator = mig
        } else {
            migrator = nil
        }
        let kernelCmdline = options.cmdline ?? cfg.guest?.cmdline ?? ""
        do {
            devices = try m.addDevices(of: cfg, onNode: id, loader: loader, metrics: metrics, logger: logger) { d in
                FirmwareDeviceSettings.fill(model: d.model, settings: d.settings, vcpus: cfg.totalVCPUs,
                                            memoryBytes: cfg.memoryBytes, cmdline: kernelCmdline)
            }
        } catch {
            throw AssemblyError("\(cfg.sourcePath) (node \(id)): \(error)")
        }

        // 4. The distributed components, each registering its own message types.
        if distributed, let pc = cfg.placement, let mig = migrator {
            guard let memory = coherence?.memory else {
                throw AssemblyError("\(cfg.sourcePath): placement: needs coherent guest memory (node \(id))")
            }
            placement = try PlacementService(node: n, config: cfg, placement: pc, memory: memory, migrator: mig, loader: loader,
                                             metrics: metrics, logger: logger) { why in
                if let vm = target.vm { vm.stop(.pluginFatal(plugin: pc.plugin.plugin, why)) } else {
                    n.stop(StopCause.pluginFatal(plugin: pc.plugin.plugin, why).stopReason(origin: id))
                }
            }
        } else {
            placement = nil
            if cfg.placement != nil && !distributed {
                logger.notice("placement: a one-node VM has nowhere to move a vCPU; the policy is not loaded")
            }
        }
        if distributed {
            let forwarder = IOForwarder(node: n, metrics: metrics, timeout: max(5, cfg.timeouts.failure * 2), logger: logger)
            forwarder.serve(bus: m.bus)
            io = forwarder
            if options.dmaForwarding {
                let d = DMAForwarder(node: n, ram: ram, io: forwarder, metrics: metrics, timeout: max(5, cfg.timeouts.failure * 2),
                                     logger: logger)
                m.dmaRouter = d
                dma = d
            } else {
                dma = nil
            }
            clock = ClockAligner(node: n, machine: m, skew: options.tscSkew, logger: logger)
            barrier = StartupBarrier(node: n, logger: logger)
            mover = DeviceMover(node: n, bus: m.bus, forwarder: forwarder, logger: logger,
                                takeIn: VMNode.takeIn(config: cfg, machine: m, homes: homes, loader: loader, metrics: metrics,
                                                      logger: logger, cmdline: kernelCmdline))
        } else {
            io = nil; clock = nil; barrier = nil; dma = nil; mover = nil
        }
        target.vm = self
        n.onStop { [weak m, io, dma, migrator] r in
            io?.failAll("node \(id) is stopping: \(r.message)")
            dma?.failAll("node \(id) is stopping: \(r.message)")
            migrator?.failAll("node \(id) is stopping: \(r.message)")
            m?.requestStop(.requested("cluster stopping: \(r.message)"))
        }
    }

    /// The plugin's hint hook as devices (the guest) may use it: GVM_HINT_REPLICATED is the
    /// host's own, at start-up only, so a device passing it gets GVM_ERR_INVALID.
    static func guestHints(_ hook: ((UInt32, UInt64, UInt64) -> Int32)?) -> ((UInt32, UInt64, UInt64) -> Int32)? {
        guard let hook else { return nil }
        return { kind, gpa, length in kind == GVM_HINT_REPLICATED ? GVM_ERR_INVALID.rawValue : hook(kind, gpa, length) }
    }

    /// Stops this node's VM for `cause` (any thread). The first cause wins; the cluster hears it.
    public func stop(_ cause: StopCause) {
        let first = localCause.withLock { c -> Bool in
            guard c == nil else { return false }
            c = cause
            return true
        }
        guard first else { return }
        switch cause {
        case .vcpuFailure, .pluginFatal: machine.requestStop(.failure(cause.description))
        default: machine.requestStop(.requested(cause.description))
        }
        node.stop(cause.stopReason(origin: id))
    }

    /// Starts the pieces in order and meets every peer; the BSP's node loads the image.
    public func startUp() throws {
        if let mc = config.metrics { try startMetrics(mc) }
        try coherence?.start()
        io?.startServer()
        dma?.startServer()
        if let clock {
            if id == 0 { try clock.measureLeader() } else if options.tscSkew != 0 { try clock.injectSkew() }
        }
        try node.start()
        if let barrier, let io, let clock {
            say("node \(id): met \(node.peers.map { "node \($0)" }.joined(separator: ", ")) over \(node.transportName); "
                + "vCPUs \(machine.config.localVCPUs.lowerBound)-\(machine.config.localVCPUs.upperBound - 1) here"
                + (machine.ioapic != nil ? ", IOAPIC here" : ""))
            let (merged, peers) = try barrier.exchangeCPUFeatures(machine.hostFeatures, timeout: config.timeouts.connect)
            let changes = try machine.applyClusterFeatures(merged)
            if !changes.isEmpty {
                let why = peers.sorted { $0.key < $1.key }.map { "node \($0.key) hides [\($0.value.hidden.map(\.name).joined(separator: ", "))]"
                    + ($0.value.kvmFeatures == 0 ? " without kvmclock" : "") }.joined(separator: "; ")
                logger.info("CPUID merged across nodes: \(changes.joined(separator: "; ")) (\(why))")
            }
            let counts = try barrier.exchangeDeviceMaps(bus: machine.bus, forwarder: io, timeout: config.timeouts.connect) {
                [weak self] why in self?.stop(.vcpuFailure(node: self?.id ?? 0, "I/O forwarding: \(why)"))
            }
            logger.info("device map: \(counts.local) local range(s), \(counts.remote) forwarded to other nodes")
            if id != 0 && options.timeSync && !machine.localClocks.isEmpty {   // a device-only node has no TSC to set
                say(timeLine(try clock.sync(leader: 0, timeout: max(5, config.timeouts.failure * 2))))
            }
            modulesReplicated = try replicateModules()
            try barrier.arriveAndWait(timeout: config.timeouts.connect)
            placement?.start()
        } else {
            modulesReplicated = try replicateModules()
        }
        if machine.config.localVCPUs.contains(0) {
            let summary = try image.load(into: machine, modulesReplicated: modulesReplicated)
            logger.info("loaded \(image.path): \(summary)")
        }
        if options.consoleInput { startConsoleInput() }
    }

    /// Every node, before the start-up barrier: the modules as read copies in this node's own RAM
    /// when the coherence plugin takes GVM_HINT_REPLICATED (GuestImage.replicateModules), their
    /// 2 MiB-aligned middle in huge pages (CoherenceStack.replicate). A one-node VM takes the same
    /// path: huge read-only pages cost the guest one KVM fault per 2 MiB, where the 4 KiB pages
    /// the boot node's loader writes cost one per few pages (docs/performance.md).
    /// `GIANTVM_HUGE_REPLICAS=0` keeps every copy in 4 KiB pages (and a one-node VM's modules
    /// with the loader), for comparison.
    private func replicateModules() throws -> Bool {
        guard let coherence, !image.modules.isEmpty else { return false }
        switch getenv("GIANTVM_HUGE_REPLICAS").map({ String(cString: $0) }) {
        case nil, "1": coherence.hugeReplicas = true
        case "0": coherence.hugeReplicas = false
        case let other?:
            throw AssemblyError("environment GIANTVM_HUGE_REPLICAS=\(other): expected 0 (read copies in 4 KiB pages) or 1 (the 2 MiB-aligned middle in huge pages, the default)")
        }
        // One node has nobody to replicate to: only the huge-page layout makes it worth it.
        guard config.nodes.count > 1 || coherence.hugeReplicas else { return false }
        let t0 = monotonicNanoseconds()
        let done = try image.replicateModules(coherence, ramSize: machine.ram.size)
        if done {
            let bytes = image.modules.reduce(UInt64(0)) { $0 + $1.size }
            logger.info("guest.modules: \(image.modules.count) module(s), \(bytes) bytes, loaded on this node as read copies replicated on every node (\(String(format: "%.1f", Double(monotonicNanoseconds() - t0) / 1e6)) ms; \(coherence.hugeReplicaBytes) bytes of them in 2 MiB pages)")
        }
        return done
    }

    private func timeLine(_ r: ClockAligner.Result) -> String {
        let us = { (t: Int64) -> String in r.tscKHz > 0 ? String(format: "%.1f µs", Double(t) * 1000 / Double(r.tscKHz)) : "?" }
        return "node \(id): time: host clock of node 0 minus this node's: \(r.estimate.offset) ticks over \(r.estimate.samples) samples "
            + "(best round trip \(r.estimate.roundTrip) ticks, ± \(us(r.estimate.uncertainty))); injected skew \(options.tscSkew) ticks; "
            + "TSC offset \(r.programmed) \(r.applied ? "applied" : "ignored by this KVM (guest TSC = host TSC)"); "
            + "guest TSC minus node 0's: before \(r.beforeTicks) ticks (\(us(r.beforeTicks))), after \(r.afterTicks) ticks (\(us(r.afterTicks)))"
            + (r.kvmclock.map { k in String(format: "; kvmclock minus node 0's: before %.1f µs, after %.1f µs (± %.1f µs)",
                                            Double(k.beforeNs) / 1000, Double(k.afterNs) / 1000, Double(k.uncertaintyNs) / 1000) } ?? "")
    }

    /// Host console input to every device that takes it (the UART's receive FIFO).
    private func startConsoleInput() {
        let inputDevices = devices.filter { $0.takesConsoleInput }
        guard !inputDevices.isEmpty else { return }
        let reader = Thread {
            var buf = [UInt8](repeating: 0, count: 256)
            while true {
                let n = buf.withUnsafeMutableBytes { Glibc.read(0, $0.baseAddress, $0.count) }
                if n <= 0 { break }
                for d in inputDevices { d.consoleInput(Array(buf[0..<n])) }
            }
        }
        reader.name = "console-input"
        reader.start()
    }

    /// Runs this node's part of the VM until the cluster stops.
    public func run() -> NodeOutcome {
        do {
            try startUp()
        } catch {
            stop(.setupFailed(node: id, "\(error)"))
            let r = node.waitUntilStopped()
            shutdown()
            return NodeOutcome(cause: localCause.withLock { $0 }, status: r.status == 0 ? 1 : r.status, message: r.message, elapsed: 0)
        }
        if let timeout = options.timeout {
            let t = Thread { [weak self] in
                let deadline = Date(timeIntervalSinceNow: timeout)
                while Date() < deadline {
                    guard let self, !self.machine.isStopping else { return }
                    usleep(10_000)
                }
                self?.stop(.timeout(seconds: timeout))
            }
            t.name = "vm-timeout"
            t.start()
        }
        let started = monotonicNanoseconds()
        let stopped = machine.run()
        machine.console.finishLine()   // the closing line must not run on from the guest's last line
        let elapsed = Double(monotonicNanoseconds() - started) / 1e9
        let recorded = localCause.withLock { $0 }
        let cause: StopCause
        switch stopped {
        case let .guestExit(status, why): cause = .guestExit(status: status, detail: why)
        case let .failure(text): cause = recorded ?? .vcpuFailure(node: id, text)
        case let .requested(why): cause = recorded ?? .finished(why)
        }
        stop(cause)   // the first cause wins: a peer's STOP may have come first
        let final = node.waitUntilStopped()
        io?.failAll("node \(id) stopped")
        shutdown()
        let mine: StopCause? = final.origin == id ? localCause.withLock { $0 } : nil
        return NodeOutcome(cause: mine, status: final.status, message: final.message, elapsed: elapsed)
    }

    /// Stops the devices, then guest memory and the plugin (no vCPU runs any more).
    public func shutdown() {
        placement?.stop()
        machine.shutdownDevices()
        homes.destroyMovedIn()
        coherence?.stop()
        metricsServer?.stop()
    }

    /// Serves this node's metrics as Prometheus text on `address:(port + id)` (docs/metrics.md).
    private func startMetrics(_ mc: MetricsConfig) throws {
        let memory = coherence?.memory
        let exporter = NodeExporter(
            nodeID: id, metrics: metrics, hotPages: mc.hotPages,
            memoryCounters: memory.map { m in { @Sendable in
                let s = m.stats
                return ["memory.uffd_missing": s.missingEvents, "memory.uffd_wp": s.writeProtectEvents, "memory.stale": s.staleEvents,
                        "memory.plugin_faults": s.pluginFaults, "memory.pin_faults": s.pinFaults]
            } },
            hottest: memory.map { m in { @Sendable n in m.hottestPages(n) } })
        let port = mc.port(of: id)
        let migrator = self.migrator, timeout = max(5, config.timeouts.failure * 2)
        let auth: ControlAuth
        do { auth = try ControlAuth(config: config) } catch { throw AssemblyError("node \(id): \(config.sourcePath): \(error)") }
        let selfID = id
        let leave: (UInt32) -> Result<String, AssemblyError> = { [weak self] to in
            self?.leave(to: to, timeout: 60) ?? .failure(AssemblyError("node \(selfID) is stopping"))
        }
        let control: MetricsServer.Control = { path in
            ControlEndpoint.handle(path: path, migrator: migrator, auth: auth, timeout: timeout, leave: leave, selfID: selfID)
        }
        do { metricsServer = try MetricsServer(address: mc.address, port: port, control: control) { exporter.render() } } catch {
            throw AssemblyError("node \(id): \(config.sourcePath): \(error)")
        }
        say("node \(id): metrics at http://\(mc.address):\(port)/metrics")
    }
}

extension VMNode {
    /// DSM and forwarding statistics of this node, as printed when a distributed VM stops.
    public func statsReport(elapsed: Double) -> String {
        let snap = metrics.snapshot()
        var lines: [String] = []
        let c = snap.counters
        func v(_ k: String) -> UInt64 { c[k] ?? 0 }
        if let coherence {
            // The standard statistics every coherence plugin reports (giantvm_plugin.h), then
            // guest memory's own view of the faults.
            let s = coherence.memory.stats
            lines.append("node \(id): DSM stats: \(snap.dsm.summaryLine) uffd_missing=\(s.missingEvents) "
                         + "uffd_wp=\(s.writeProtectEvents) pin_faults=\(s.pinFaults)")
        }
        lines.append("node \(id): forwarding: ipi_out=\(v("cpu.ipi_forwarded")) ipi_in=\(v("cpu.ipi_received")) "
                     + "apic_updates_in=\(v("cpu.apic_address_updates")) io_forwarded=\(v("io.forwarded")) "
                     + "io_served=\(v("io.served_for_peers")) irq_lines_out=\(v("cpu.irq_lines_forwarded")) "
                     + "eoi_out=\(v("cpu.eoi_forwarded")); ran \(String(format: "%.3f", elapsed)) s")
        if v("migrate.departed") + v("migrate.arrived") > 0 {
            var l = "node \(id): migration: departed=\(v("migrate.departed")) arrived=\(v("migrate.arrived")) "
                + "state_bytes=\(v("migrate.state_bytes"))"
            if let h = snap.histograms["migrate.pause"], h.count > 0 {
                l += String(format: " pause_us: count=%llu p50=%.1f p99=%.1f max=%.1f", h.count, Double(h.p50) / 1000,
                            Double(h.p99) / 1000, Double(h.max) / 1000)
            }
            lines.append(l + "; resident now: \(machine.residentVCPUs.map(String.init).joined(separator: ","))")
        }
        if let h = snap.histograms["io.forward_round_trip"], h.count > 0 {
            func us(_ ns: UInt64) -> String { String(format: "%.1f", Double(ns) / 1000) }
            lines.append("node \(id): forwarded I/O round trip (µs): count=\(h.count) p50=\(us(h.p50)) p90=\(us(h.p90)) "
                         + "p99=\(us(h.p99)) max=\(us(h.max))")
        }
        return lines.joined(separator: "\n")
    }
}
