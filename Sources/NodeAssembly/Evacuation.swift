// Node evacuation, the leaving node's side (docs/migration.md, "Evacuating a node"): once every
// vCPU moved off it (`giantvm evacuate` moves them first), `POST /leave?to=M` on its control
// endpoint runs `VMNode.leave`:
//
//   1. checks that it may leave: not node 0 (it aligns the clocks and runs the placement policy),
//      no resident vCPU, no IOAPIC and no device homed here (their state lives in the device
//      model, which has no state transfer: each is named in the refusal);
//   2. the coherence plugin's drain hook (ABI 4) hands every page this node owns or holds, and
//      the manager role of the pages it manages, to other nodes (a plugin without the hook: a
//      refusal naming it; the node keeps serving its pages);
//   3. the node runtime's LEAVE: every peer records the node as departed (its disconnect is no
//      lost node; nothing is sent to it any more);
//   4. the node stops with status 0 (no peer is told to stop); the others run on.
//
// A failure in step 2 or 3 leaves the cluster in an unknown state: the node stops it with the
// reason (status 1), so nothing hangs.
//
// Threading: `leave` on the metrics server's thread (blocks it for at most the timeout).

import Cluster
import Foundation
import PluginAPI

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
        if machine.ioapic != nil { return "the IOAPIC is homed on node \(id) (ioapic_node) and cannot move" }
        if !devices.isEmpty {
            let names = devices.map { "'\($0.name)' (\($0.modelName))" }.joined(separator: ", ")
            return "device(s) \(names) homed on node \(id) cannot move: their state lives in the device model, which offers no state transfer"
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
            + "device_homes_moved=0 bytes_sent=\(d.bytesSent) guest_memory=\(config.memoryBytes) drain_ns=\(d.durationNanoseconds)"
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
