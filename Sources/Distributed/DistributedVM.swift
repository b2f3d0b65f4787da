// One VM across nodes: the part of it that runs in one `giantvm node` process.
//
// Start-up, on every node:
//   1. the cluster Node (transport plugin; not started yet);
//   2. guest RAM over userfaultfd with the coherence plugin, whose messages travel on the
//      coherence channel (plugin send -> Node.send; coherence frames -> plugin receive);
//   3. the Machine: this node's vCPUs run (vCPU 0, the BSP, on the node that holds it, every
//      other vCPU waits for its SIPI), every other vCPU exists as APIC state only; the IOAPIC is
//      emulated on `ioapic_node`;
//   4. this node's devices (YAML `node:`), from their plugins;
//   5. Node.start (meets every peer), device maps exchanged (every node maps the other nodes'
//      ranges as forwarding stubs), time aligned (followers take node 0's TSC), READY barrier;
//   6. the BSP's node loads the image (boot structures and ELF through pin/unpin);
//   7. every node runs its vCPUs until the guest exits (exit device), a vCPU fails, or the
//      cluster stops (a peer failed or was lost): the first reason stops every node.
//
// Threading: `init` and `run` on the main thread. Hooks run on vCPU threads and transport receive
// threads as documented in CPUForwarder / IOForwarder / ClockAligner.

import Cluster
import Config
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

public struct DistributedOptions {
    /// Stop the VM after this many seconds (exit status 124).
    public var timeout: Double?
    /// Guest command line instead of the config's.
    public var cmdline: String?
    /// Inject a TSC skew on this node (ticks), to test the time sync.
    public var tscSkew: Int64 = 0
    /// Align TSCs with node 0 (default on).
    public var timeSync = true
    /// Fills in host-provided device settings (fw-cfg's cpus/memory/cmdline, ...) as `giantvm run`
    /// does: (model, YAML settings, vCPUs, memory bytes, kernel command line) -> settings.
    public var deviceSettings: ((String, [(key: String, value: String)], Int, UInt64, String) -> [(key: String, value: String)])?
    public init() {}
}

/// How a node's run ended: its exit status and the line that says why.
public struct DistributedOutcome {
    public var status: Int32
    public var message: String
}

public final class DistributedVM: @unchecked Sendable {
    public let config: ClusterConfig
    public let id: UInt32
    public let node: Node
    public let machine: Machine
    public let metrics: MetricsRegistry
    let memory: GuestMemory
    let coherence: CoherencePluginInstance
    let keep: [AnyObject]
    let image: ELFImage?
    /// A firmware-loaded image (multiboot, Linux) instead of a GiantVM ELF: loaded by machine.boot.
    let firmwareBoot: BootRequest?
    let logger: Logger
    let options: DistributedOptions
    let cpu: CPUForwarder
    let io: IOForwarder
    let clock: ClockAligner
    let vcpuNode: [UInt32]
    /// Maps guest exit statuses to process exit statuses (the `run` command's rules).
    let guestStatus: (Int32) -> (Int32, String)
    /// Say a line on stdout (UART output shares it).
    let say: (String) -> Void
    var devices: [PluginDevice] = []

    // Start-up rendezvous (guarded by `mon`).
    let mon = NSCondition()
    var peerMaps: [UInt32: [DeviceRange]] = [:]
    var readyPeers = Set<UInt32>()

    public init(config cfg: ClusterConfig, id: UInt32, loader: PluginLoader, logger: Logger, options: DistributedOptions,
                guestStatus: @escaping (Int32) -> (Int32, String), say: @escaping (String) -> Void) throws {
        self.config = cfg
        self.id = id
        self.logger = logger
        self.options = options
        self.guestStatus = guestStatus
        self.say = say
        let metrics = MetricsRegistry()
        self.metrics = metrics
        guard let guest = cfg.guest else { throw WireError("\(cfg.sourcePath): guest.image is missing: nothing to boot") }
        guard Int(id) < cfg.nodes.count else {
            throw WireError("\(cfg.sourcePath): there is no node \(id) (nodes: 0-\(cfg.nodes.count - 1))")
        }
        guard Int(cfg.ioapicNode) < cfg.nodes.count else {
            throw WireError("\(cfg.sourcePath): ioapic_node \(cfg.ioapicNode) is not a node (nodes: 0-\(cfg.nodes.count - 1))")
        }
        var owners: [UInt32] = []
        for n in cfg.nodes { owners += Array(repeating: n.id, count: Int(n.vcpus)) }
        vcpuNode = owners
        guard !owners.isEmpty else { throw WireError("\(cfg.sourcePath): no node has a vCPU") }

        // The image: read on every node (so a bad path fails everywhere at once), loaded by the BSP's.
        let fm = FileManager.default
        guard fm.fileExists(atPath: guest.image) else {
            throw WireError("\(cfg.sourcePath): guest.image: \(guest.image): no such file (build the test guest with `make -C Guests`)")
        }
        guard let data = fm.contents(atPath: guest.image) else {
            throw WireError("\(cfg.sourcePath): guest.image: \(guest.image): cannot be read (permissions, or a directory)")
        }
        let bytes = Array(data)
        let proto = BootProtocol(rawValue: guest.bootProtocol) ?? .auto
        let kernelCmdline = options.cmdline ?? guest.cmdline
        do {
            let format = try Bootloader.detect(bytes, file: guest.image, bootProtocol: proto)
            if format == .giantvm {
                image = try ELFImage(bytes: bytes, name: guest.image)
                firmwareBoot = nil
            } else {
                var initrd: BootModule?
                if let path = guest.initrd {
                    guard let d = fm.contents(atPath: path) else {
                        throw WireError("guest.initrd: \(path): cannot be read")
                    }
                    initrd = BootModule(name: path, bytes: Array(d), cmdline: path)
                }
                image = nil
                firmwareBoot = BootRequest(file: guest.image, image: bytes, cmdline: kernelCmdline, initrd: initrd,
                                           vcpus: cfg.totalVCPUs, bootProtocol: proto)
            }
        } catch {
            throw WireError("\(cfg.sourcePath): guest.image: \(error)")
        }

        // 1. The node.
        let n: Node
        do { n = try Node(config: cfg, id: id, loader: loader, logger: logger, metrics: metrics) } catch {
            throw WireError("node \(id): \(error)")
        }
        node = n

        // 2. Guest memory + coherence plugin over the coherence channel.
        final class FatalBox: @unchecked Sendable { weak var vm: DistributedVM? }
        let fatal = FatalBox()
        let plugin: LoadedPlugin
        do { plugin = try loader.load(cfg.coherence.plugin, kind: .coherence) } catch {
            throw WireError("\(cfg.sourcePath): coherence.plugin: \(error)")
        }
        guard let ops = plugin.coherenceOps else { throw WireError("\(cfg.sourcePath): coherence.plugin: \(plugin.name) has no coherence ops") }
        let mem: GuestMemory
        do {
            mem = try GuestMemory(bytes: cfg.memoryBytes, logger: logger,
                                  onFatal: { why in fatal.vm?.fail("guest memory: \(why)") },
                                  send: { dst, iov in DistributedVM.coherenceSend(n, dst, iov, lane: nil) },
                                  sendUrgent: { dst, iov in DistributedVM.coherenceSend(n, dst, iov, lane: GVM_LANE_URGENT) })
        } catch {
            throw WireError("node \(id): guest memory (userfaultfd): \(error)")
        }
        memory = mem
        let services = HostServicesTable(pluginName: plugin.name, metrics: metrics, logger: logger) { msg in
            if let vm = fatal.vm { vm.fail("coherence plugin \(plugin.name) fatal: \(msg)") } else {
                n.stop(StopReason(status: 2, message: "coherence plugin \(plugin.name) fatal: \(msg)", origin: id))
            }
        }
        let clusterInfo = ClusterInfoTable(config: cfg, selfID: id)
        let settings = SettingsTable(cfg.coherence.settings)
        do {
            coherence = try CoherencePluginInstance(name: plugin.name, ops: ops, services: services.pointer, memory: mem,
                                                    cluster: clusterInfo.pointer, settings: settings.pointer,
                                                    settingCount: settings.count)
        } catch {
            throw WireError("\(cfg.sourcePath): coherence.plugin: \(error)")
        }
        let inst = coherence
        n.register(channel: .coherence) { from, payload in inst.receive(from: from, payload) }

        // 3. The machine.
        var mc = MachineConfiguration(memoryBytes: cfg.memoryBytes, vcpus: cfg.totalVCPUs, cmdline: options.cmdline ?? guest.cmdline)
        mc.nodes = cfg.nodes.map { (cfg.firstVCPU(of: $0.id), $0.vcpus) }
        mc.nodeID = id
        mc.ioapic = id == cfg.ioapicNode
        // IPIs, APIC addresses, IRQ lines and EOIs to other nodes go through the CPU forwarder;
        // multiple-writer protocols flush at the VMM's synchronisation points (as `giantvm run`).
        cpu = CPUForwarder(node: n, vcpuNode: owners, ioapicNode: cfg.ioapicNode, metrics: metrics, logger: logger)
        let m: Machine
        do { m = try Machine(config: mc, ram: mem, remote: cpu, fence: coherence.fenceHook, logger: logger) } catch {
            throw WireError("node \(id): cannot create the VM: \(error)")
        }
        machine = m
        cpu.attach(m)

        // 4. Local devices.
        var kept: [AnyObject] = [services, clusterInfo, settings]
        let devs: [PluginDevice]
        do {
            devs = try m.addDevices(of: cfg, onNode: id, loader: loader, metrics: metrics, logger: logger) { [options] d in
                options.deviceSettings?(d.model, d.settings, cfg.totalVCPUs, cfg.memoryBytes, kernelCmdline) ?? d.settings
            }
        } catch {
            throw WireError("\(cfg.sourcePath) (node \(id)): \(error)")
        }
        devices = devs
        kept.append(contentsOf: devs)
        keep = kept

        // Forwarding.
        let failureWait = max(5, cfg.timeouts.failure * 2)
        io = IOForwarder(node: n, metrics: metrics, timeout: failureWait, logger: logger)
        clock = ClockAligner(node: n, machine: m, skew: options.tscSkew, logger: logger)
        fatal.vm = self

        let clock = self.clock
        cpu.onTimeRequest = { from, seq in clock.answer(from: from, seq: seq) }
        cpu.onTimeReply = { from, msg in clock.reply(from: from, msg) }
        let cpuF = cpu, ioF = io
        n.register(channel: .cpu) { from, p in cpuF.handle(from: from, p) }
        n.register(channel: .io) { from, p in ioF.handle(from: from, p) }
        io.onDeviceMap = { [unowned self] from, ranges in
            mon.lock(); peerMaps[from] = ranges; mon.broadcast(); mon.unlock()
        }
        io.onReady = { [unowned self] from in
            mon.lock(); readyPeers.insert(from); mon.broadcast(); mon.unlock()
        }
        let bus = m.bus
        let warned = Mutex<Set<UInt64>>([])
        io.serve = { [logger] space, address, size, data, isWrite in
            guard let r = bus.lookup(space, address), !(r.device is RemoteDevice) else {
                if !isWrite { data.initializeMemory(as: UInt8.self, repeating: 0xFF) }
                if warned.withLock({ $0.insert(UInt64(space.rawValue) << 60 | address).inserted }) {
                    logger.warning("forwarded \(space) access 0x\(String(address, radix: 16)) matches no device here (the device maps disagree): \(isWrite ? "ignored" : "reads all-ones")")
                }
                return .noDevice
            }
            r.device.io(space: space, offset: address - r.base, data: data, isWrite: isWrite)
            return .ok
        }
        n.onStop { [weak m, ioF] r in
            ioF.failAll("node \(id) is stopping: \(r.message)")
            m?.requestStop(.requested("cluster stopping: \(r.message)"))
        }
    }

    /// The coherence plugin's sends. Once the cluster stops, a peer that already closed its
    /// connections refuses them: that is the stop, not a protocol fault, so the message is
    /// dropped quietly instead of making the plugin call `fatal`.
    static func coherenceSend(_ n: Node, _ dst: UInt32, _ iov: UnsafeBufferPointer<gvm_iovec>, lane: UInt32?) -> Int32 {
        let rc = n.send(channel: .coherence, to: dst, iov: iov, lane: lane)
        if rc == GVM_ERR_CLOSED.rawValue && n.isStopping(peer: dst) { return GVM_OK.rawValue }
        return rc
    }

    /// Stops the VM with a failure (any thread).
    func fail(_ why: String) {
        machine.requestStop(.failure(why))
    }

    /// Ranges of the devices that live here (plugin devices and the IOAPIC).
    func localRanges() -> [DeviceRange] {
        var out: [DeviceRange] = []
        for s in [IOSpaceKind.pio, .mmio] {
            for r in machine.bus.allRanges(s) where !(r.device is RemoteDevice) {
                out.append(DeviceRange(space: UInt8(s.rawValue), base: r.base, length: r.length, name: r.device.name))
            }
        }
        return out
    }

    /// Waits (bounded) until `done` holds under `mon`, or the node stops. Returns false on timeout.
    func waitFor(_ what: String, timeout: Double, _ done: () -> Bool) throws {
        let deadline = Date(timeIntervalSinceNow: timeout)
        mon.lock()
        defer { mon.unlock() }
        while !done() {
            if let r = node.stopReason { throw WireError("stopped while waiting for \(what): \(r.message)") }
            if !mon.wait(until: min(deadline, Date(timeIntervalSinceNow: 0.1))) && Date() >= deadline {
                throw WireError("timed out after \(timeout) s waiting for \(what)")
            }
        }
    }

    /// Runs this node's part of the VM until the cluster stops; returns the exit status.
    public func run() -> DistributedOutcome {
        do {
            try startUp()
        } catch {
            let why = "node \(id): start-up failed: \(error)"
            node.stop(StopReason(status: 1, message: why, origin: id))
            let r = node.waitUntilStopped()
            shutdown()
            return DistributedOutcome(status: r.status == 0 ? 1 : r.status, message: r.message)
        }
        let started = monotonicNanoseconds()
        let stop = machine.run(timeout: options.timeout)
        let elapsed = Double(monotonicNanoseconds() - started) / 1e9
        let reason: StopReason
        switch stop {
        case let .guestExit(status, why):
            let (code, message) = guestStatus(status)
            reason = StopReason(status: code, message: "\(message) [\(why)]", origin: id)
        case let .failure(text):
            reason = StopReason(status: 2, message: "VM failed on node \(id): \(text)", origin: id)
        case let .requested(why):
            let code: Int32 = why.hasPrefix("timed out") ? 124 : 130
            reason = StopReason(status: code, message: "VM stopped on node \(id): \(why)", origin: id)
        }
        node.stop(reason)  // the first reason wins: a peer's STOP may have come first
        let final = node.waitUntilStopped()
        io.failAll("node \(id) stopped")
        shutdown()
        say(statsReport(elapsed: elapsed))
        return DistributedOutcome(status: final.status, message: final.message)
    }

    func startUp() throws {
        try coherence.start()
        try memory.start()
        io.startServer()
        if id == 0 { try clock.measureLeader() } else if options.tscSkew != 0 { try clock.injectSkew() }
        try node.start()
        say("node \(id): met \(node.peers.map { "node \($0)" }.joined(separator: ", ")) over \(node.transportName); "
            + "vCPUs \(machine.config.localVCPUs.lowerBound)-\(machine.config.localVCPUs.upperBound - 1) here"
            + (machine.ioapic != nil ? ", IOAPIC here" : ""))

        // Device maps.
        let mine = localRanges()
        let bytes = IOMessage.deviceMap(mine).encode()
        for p in node.peers { node.send(channel: .io, to: p, bytes) }
        try waitFor("the device maps of every node", timeout: config.timeouts.connect) { self.peerMaps.count == self.node.peers.count }
        let maps = mon.withLock { peerMaps }
        for (home, ranges) in maps.sorted(by: { $0.key < $1.key }) {
            for r in ranges {
                guard let space = IOSpaceKind(rawValue: UInt32(r.space)) else { continue }
                let dev = RemoteDevice(name: r.name, home: home, base: r.base, forwarder: io) { [weak self] why in
                    self?.fail("I/O forwarding: \(why)")
                }
                do { try machine.bus.map(space, base: r.base, length: r.length, device: dev) } catch {
                    throw WireError("device '\(r.name)' of node \(home): \(error)")
                }
            }
        }
        let remote = maps.values.reduce(0) { $0 + $1.count }
        logger.info("device map: \(mine.count) local range(s), \(remote) forwarded to other nodes")

        // Time.
        if id != 0 && options.timeSync && !machine.localClocks.isEmpty {   // a device-only node has no TSC to set
            let r = try clock.sync(leader: 0, timeout: max(5, config.timeouts.failure * 2))
            let us = { (t: Int64) -> String in r.tscKHz > 0 ? String(format: "%.1f µs", Double(t) * 1000 / Double(r.tscKHz)) : "?" }
            say("node \(id): time: host clock of node 0 minus this node's: \(r.estimate.offset) ticks over \(r.estimate.samples) samples "
                + "(best round trip \(r.estimate.roundTrip) ticks, ± \(us(r.estimate.uncertainty))); injected skew \(options.tscSkew) ticks; "
                + "TSC offset \(r.programmed) \(r.applied ? "applied" : "ignored by this KVM (guest TSC = host TSC)"); "
                + "guest TSC minus node 0's: before \(r.beforeTicks) ticks (\(us(r.beforeTicks))), after \(r.afterTicks) ticks (\(us(r.afterTicks)))")
        }

        // READY barrier: node 0 boots the guest once every node is ready.
        for p in node.peers { node.send(channel: .io, to: p, IOMessage.ready.encode()) }
        try waitFor("every node to be ready", timeout: config.timeouts.connect) { self.readyPeers.count == self.node.peers.count }

        if machine.config.localVCPUs.contains(0) {
            if let image {
                try machine.load(image: image)
                logger.info("loaded \(image.name) (entry 0x\(String(image.entry, radix: 16)))")
            } else if let firmwareBoot {
                let plan = try machine.boot(firmwareBoot)
                logger.info("loaded \(firmwareBoot.file): \(plan.summary)")
            }
        }
    }

    func shutdown() {
        machine.shutdownDevices()
        memory.stop()
        coherence.stop()
        withExtendedLifetime(keep) {}
    }

    /// DSM and forwarding statistics of this node.
    func statsReport(elapsed: Double) -> String {
        let snap = metrics.snapshot()
        let s = memory.stats
        var lines: [String] = []
        let c = snap.counters
        func v(_ k: String) -> UInt64 { c[k] ?? 0 }
        lines.append("node \(id): DSM stats: read_miss=\(v("ivy.fault.read_miss")) write_miss=\(v("ivy.fault.write_miss")) "
                     + "upgrade=\(v("ivy.fault.upgrade")) pages_sent=\(v("ivy.pages_sent")) zero_pages_sent=\(v("ivy.zero_pages_sent")) "
                     + "invalidations_sent=\(v("ivy.invalidations_sent")) uffd_missing=\(s.missingEvents) uffd_wp=\(s.writeProtectEvents) "
                     + "pin_faults=\(s.pinFaults)")
        lines.append("node \(id): forwarding: ipi_out=\(v("cpu.ipi_forwarded")) ipi_in=\(v("cpu.ipi_received")) "
                     + "apic_updates_in=\(v("cpu.apic_address_updates")) io_forwarded=\(v("io.forwarded")) "
                     + "io_served=\(v("io.served_for_peers")) irq_lines_out=\(v("cpu.irq_lines_forwarded")) "
                     + "eoi_out=\(v("cpu.eoi_forwarded")); ran \(String(format: "%.3f", elapsed)) s")
        if let h = snap.histograms["io.forward_round_trip"], h.count > 0 {
            func us(_ ns: UInt64) -> String { String(format: "%.1f", Double(ns) / 1000) }
            lines.append("node \(id): forwarded I/O round trip (µs): count=\(h.count) p50=\(us(h.p50)) p90=\(us(h.p90)) "
                         + "p99=\(us(h.p99)) max=\(us(h.max))")
        }
        return lines.joined(separator: "\n")
    }
}

