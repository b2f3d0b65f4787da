// Node evacuation, the leaving node's side (docs/migration.md, "Evacuating a node"): once every
// vCPU moved off it (`giantvm evacuate` moves them first), `POST /leave?to=M` on its control
// endpoint runs `VMNode.leave`:
//
//   1. checks that it may leave: not node 0 (it aligns the clocks and runs the placement policy),
//      no resident vCPU, not the IOAPIC's home (its redirection table and line state have no
//      transfer), and every device homed here movable (its model has the ABI 4 state hooks,
//      gvm_device_ops.save_state/load_state; each that has not is named in the refusal);
//   2. the device homes move to the successor (DeviceMove.swift: state saved between two
//      forwarded accesses, loaded into a fresh instance there, every node's routing switched
//      and acknowledged) — before the drain, so the devices answer from their new home while
//      the pages move, and a device's last DMA is in the pages the drain hands over;
//   3. the coherence plugin's drain hook (ABI 4) hands every page this node owns or holds, and
//      the manager role of the pages it manages, to other nodes (a plugin without the hook: a
//      refusal naming it; the node keeps serving its pages);
//   4. the node runtime's LEAVE: every peer records the node as departed (its disconnect is no
//      lost node; nothing is sent to it any more);
//   5. the node stops with status 0 (no peer is told to stop); the others run on.
//
// A failure in step 2, 3 or 4 leaves the cluster in an unknown state: the node stops it with
// the reason (status 1), so nothing hangs.
//
// Threading: `leave` on the metrics server's thread (blocks it for at most the timeout).

import Cluster
import Config
import Distributed
import Foundation
import Logging
import Machine
import Metrics
import PluginAPI
import PluginHost

/// The devices homed on this node beyond its config's: moved in by an evacuation (with their
/// ranges) and, of either kind, moved out. Any thread.
final class DeviceHomes: @unchecked Sendable {
    private let lock = NSLock()
    private var movedIn: [(device: PluginDevice, ranges: [DeviceRange])] = []
    private var movedOut = Set<String>()

    func addMovedIn(_ d: PluginDevice, ranges: [DeviceRange]) { lock.withLock { movedIn.append((d, ranges)) } }
    func markMovedOut(_ names: [String]) { lock.withLock { movedOut.formUnion(names) } }

    /// The devices homed here now with their ranges: the config's (`own`, ranges from `bus`)
    /// and those moved in, less those moved out.
    func homed(own: [PluginDevice], bus: IOBus) -> [(device: PluginDevice, ranges: [DeviceRange])] {
        let local = StartupBarrier.localRanges(of: bus)
        return lock.withLock {
            (own.map { d in (d, local.filter { $0.name == d.name }) } + movedIn).filter { !movedOut.contains($0.device.name) }
        }
    }

    func destroyMovedIn() {
        for d in lock.withLock({ movedIn }) { d.device.destroy() }
    }
}

/// What a drain moved (gvm_drain_report).
public struct DrainOutcome: Sendable, Equatable {
    public var to: UInt32
    public var pagesMoved: UInt64
    public var managedPagesMoved: UInt64
    public var bytesSent: UInt64
    public var durationNanoseconds: UInt64
}

extension CoherenceStack {
    /// Whether the plugin has the drain hook (ABI 4) within its ops table.
    public var canDrain: Bool {
        let ops = instance.ops
        let end = MemoryLayout<gvm_coherence_ops>.offset(of: \.drain)! + MemoryLayout<UnsafeRawPointer>.size
        return Int(ops.pointee.size) >= end && ops.pointee.drain != nil
    }

    /// Runs the plugin's drain hook toward `to`. Errors name the plugin and its reason.
    public func drain(to: UInt32, timeoutNanoseconds: UInt64) throws -> DrainOutcome {
        guard canDrain, let hook = instance.ops.pointee.drain else {
            throw AssemblyError("coherence plugin '\(pluginName)' has no drain hook: it cannot hand a node's pages over, so the node cannot leave (its vCPUs moved; it keeps serving its pages)")
        }
        var report = gvm_drain_report()
        report.size = UInt32(MemoryLayout<gvm_drain_report>.size)
        var err = gvm_error()
        let rc = hook(instance.instance, to, timeoutNanoseconds, &report, &err)
        guard rc == GVM_OK.rawValue else {
            let msg = withUnsafeBytes(of: &err.message) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            throw AssemblyError("coherence plugin '\(pluginName)': drain: \(msg.isEmpty ? String(cString: gvm_status_name(rc)) : msg)")
        }
        return DrainOutcome(to: report.to, pagesMoved: report.pages_moved, managedPagesMoved: report.managed_pages_moved,
                            bytesSent: report.bytes_sent, durationNanoseconds: report.duration_ns)
    }
}

extension VMNode {
    /// Why this node may not leave now (nil: it may). Checked before anything moves.
    public func leaveRefusal(to: UInt32) -> String? {
        guard migrator != nil else { return "this VM runs on one node" }
        guard Int(to) < config.nodes.count, to != id else {
            return "node \(to) cannot take node \(id)'s pages (nodes 0-\(config.nodes.count - 1), not itself)"
        }
        if node.hasDeparted(to) { return "node \(to) already left the cluster" }
        if id == 0 { return "node 0 cannot leave: it aligns the other nodes' clocks and runs the placement policy" }
        let resident = machine.residentVCPUs
        if !resident.isEmpty {
            return "vCPU(s) \(resident.map(String.init).joined(separator: ",")) still run on node \(id): move them first (giantvm evacuate does)"
        }
        if machine.ioapic != nil {
            return "the IOAPIC is homed on node \(id) (ioapic_node) and cannot move: its redirection table and line state have no transfer"
        }
        let stuck = homes.homed(own: devices, bus: machine.bus).map(\.device).filter { $0.movableStateBound == nil }
        if !stuck.isEmpty {
            let names = stuck.map { "'\($0.name)' (\($0.modelName))" }.joined(separator: ", ")
            return "device(s) \(names) homed on node \(id) cannot move: their model offers no state transfer (gvm_device_ops.save_state, ABI 4)"
        }
        guard let coherence else { return "guest memory is not coherent memory" }
        if !coherence.canDrain {
            return "coherence plugin '\(coherence.pluginName)' has no drain hook (ABI 4): it cannot hand node \(id)'s pages over, so the node cannot leave (it keeps serving them)"
        }
        return nil
    }

    /// Drains this node's pages to `to`, leaves the cluster and stops this node with status 0
    /// shortly after (the answer goes out first). Returns the answer line, or why not.
    public func leave(to: UInt32, timeout: Double) -> Result<String, AssemblyError> {
        if let why = leaveRefusal(to: to) { return .failure(AssemblyError(why)) }
        let ns = UInt64(max(1, min(timeout, 3600)) * 1e9)
        var homesMoved = 0
        let homed = homes.homed(own: devices, bus: machine.bus)
        if !homed.isEmpty, let mover {
            let started = monotonicNanoseconds()
            let stateBytes: Int
            do {
                (homesMoved, stateBytes) = try mover.move(to: to, timeout: max(5, min(timeout, 30))) {
                    try homed.map { MovingDevice(name: $0.device.name, ranges: $0.ranges, state: try $0.device.saveState()) }
                }
            } catch {
                let names = homed.map { "'\($0.device.name)'" }.joined(separator: ", ")
                let why = "node \(id) cannot leave: moving the home of device(s) \(names) to node \(to) failed: \(error)"
                stop(.vcpuFailure(node: id, "evacuation: \(why)"))
                return .failure(AssemblyError(why))
            }
            homes.markMovedOut(homed.map(\.device.name))
            for h in homed { h.device.destroy() }   // every node routes to the new home
            say("node \(id): device home(s) \(homed.map(\.device.name).joined(separator: ", ")) moved to node \(to) "
                + "(\(stateBytes) state bytes, every node rerouted in \(String(format: "%.1f", Double(monotonicNanoseconds() - started) / 1e6)) ms)")
        }
        let d: DrainOutcome
        do {
            d = try coherence!.drain(to: to, timeoutNanoseconds: ns)
        } catch {
            let why = "node \(id) cannot leave: \(error)"
            stop(.vcpuFailure(node: id, "evacuation: \(why)"))
            return .failure(AssemblyError(why))
        }
        do { try node.leave(timeout: min(timeout, 10)) } catch {   // the acks are one round trip
            let why = "node \(id): pages handed to node \(to), but leaving failed: \(error)"
            stop(.vcpuFailure(node: id, "evacuation: \(why)"))
            return .failure(AssemblyError(why))
        }
        let line = "left node=\(id) to=\(to) pages_moved=\(d.pagesMoved) managed_pages_moved=\(d.managedPagesMoved) "
            + "device_homes_moved=\(homesMoved) bytes_sent=\(d.bytesSent) guest_memory=\(config.memoryBytes) drain_ns=\(d.durationNanoseconds)"
        say("node \(id): \(line)")
        let t = Thread { [weak self] in
            usleep(300_000)   // the control answer is written first
            self?.stop(.finished("node \(self?.id ?? 0) left the cluster (evacuated)"))
        }
        t.name = "leave"
        t.start()
        return .success(line)
    }
}

extension VMNode {
    /// On a device's new home: creates the config's device `name` with a peer's state
    /// (DeviceMover.takeIn). Errors name the device and the config.
    static func takeIn(config cfg: ClusterConfig, machine m: Machine, homes: DeviceHomes, loader: PluginLoader,
                       metrics: MetricsRegistry, logger: Logger, cmdline: String) -> (String, [UInt8]) throws -> [ClaimedRange] {
        { [weak m] name, state in
            guard let m else { throw AssemblyError("the machine is gone") }
            guard let d = cfg.devices.first(where: { $0.name == name }) else {
                throw AssemblyError("\(cfg.sourcePath) has no device '\(name)'")
            }
            let settings = FirmwareDeviceSettings.fill(model: d.model, settings: d.settings, vcpus: cfg.totalVCPUs,
                                                       memoryBytes: cfg.memoryBytes, cmdline: cmdline)
            let (dev, claimed) = try m.createMovedDevice(d, state: state, loader: loader, metrics: metrics, logger: logger,
                                                         settings: settings)
            homes.addMovedIn(dev, ranges: claimed.map { DeviceRange(space: UInt8($0.space.rawValue), base: $0.base, length: $0.length, name: name) })
            return claimed
        }
    }
}

/// The summary line of `giantvm evacuate`: what moved and the bytes sent beside the guest's
/// memory size (what a full live migration of the VM would send).
public struct EvacuationSummary: Sendable {
    public var node: UInt32
    public var vcpus: Int
    public var stateBytes: UInt64
    public var pagesMoved: UInt64 = 0
    public var managedPagesMoved: UInt64 = 0
    public var deviceHomesMoved: UInt64 = 0
    public var drainBytes: UInt64 = 0
    public var memoryBytes: UInt64

    /// Reads the counts of a `/leave` answer ("left node=N … pages_moved=P …"); a field missing
    /// or out of range counts 0.
    public init(node: UInt32, vcpus: Int, stateBytes: UInt64, leaveAnswer: String, memoryBytes: UInt64) {
        self.node = node
        self.vcpus = vcpus
        self.stateBytes = stateBytes
        self.memoryBytes = memoryBytes
        var f: [String: UInt64] = [:]
        for w in leaveAnswer.split(separator: " ") {
            let kv = w.split(separator: "=", maxSplits: 1)
            if kv.count == 2, let v = UInt64(kv[1]), v < (1 << 56) { f[String(kv[0])] = v }
        }
        pagesMoved = f["pages_moved"] ?? 0
        managedPagesMoved = f["managed_pages_moved"] ?? 0
        deviceHomesMoved = f["device_homes_moved"] ?? 0
        drainBytes = f["bytes_sent"] ?? 0
    }

    public var bytesSent: UInt64 { stateBytes &+ drainBytes }

    public var line: String {
        let pct = memoryBytes > 0 ? 100 * Double(bytesSent) / Double(memoryBytes) : 0
        return "evacuate: node \(node) left: vcpus_moved=\(vcpus) pages_moved=\(pagesMoved) managed_pages_moved=\(managedPagesMoved) "
            + "device_homes_moved=\(deviceHomesMoved) bytes_sent=\(bytesSent) (vCPU state \(stateBytes), pages and directory "
            + "\(drainBytes)) guest_memory=\(memoryBytes) (\(String(format: "%.2f", pct))% of what a full live migration would send)"
    }
}
