// Live vCPU migration over the cluster (docs/migration.md): moves a running vCPU from the node
// that runs it to another, keeps the vCPU-to-node map (VCPUPlacement) as versioned cluster state,
// and answers whoever asked (the control endpoint of any node, or a placement policy).
//
// The hand-over, for vCPU v from node A to node B, asked on node R:
//   R  MIGRATE_REQ to the node R believes runs v (forwarded on, at most 8 hops, if it moved);
//   A  asks v's thread to depart; at v's next exit the thread captures its KVM state and, under
//      v's interrupt lock, this migrator sends MIGRATE_STATE to B, advances v's placement to B
//      (next version) and sends PLACEMENT to every other node; v is then not resident on A, so an
//      interrupt arriving at A for v is forwarded to B, after the state on the same ordered link;
//   B  loads the interrupt state (v resident on B from then on), takes the placement, and v's
//      thread loads the KVM state and runs; it sends MIGRATE_ARRIVED to A;
//   A  measures the pause (v stopped on A -> A hears v runs on B: an upper bound) and sends
//      MIGRATE_RESULT to R.
// A state that cannot be loaded on B is fatal (the vCPU exists nowhere else): B stops the VM
// with a named error. A node lost mid-way stops the cluster (node runtime); waiters are failed.
//
// cpu channel formats (little-endian, after the type byte):
//   0x20 MIGRATE_REQ      req:u64 requester:u32 vcpu:u32 to:u32 hops:u8
//   0x21 MIGRATE_STATE    vcpu:u32 version:u64 irqLength:u32 irq[irqLength] kvm-state (VCPUState)
//   0x22 PLACEMENT        vcpu:u32 node:u32 version:u64
//   0x23 MIGRATE_ARRIVED  vcpu:u32 version:u64
//   0x24 MIGRATE_RESULT   req:u64 ok:u8 pause_ns:u64 state_bytes:u32 message:text
//
// Threading: `migrate` blocks its caller (never a transport thread); handlers run on transport
// receive threads and never block; `departed` runs on a vCPU thread under its interrupt lock.
import Cluster
import Foundation
import KVM
import Logging
import Machine
import Metrics
import Synchronization

/// The answer to one migration request.
public struct MigrationResult: Sendable, Equatable {
    public var ok: Bool
    public var message: String
    /// Nanoseconds from the vCPU stopping on the source to the source hearing it runs on the
    /// destination (0 when nothing moved).
    public var pauseNanoseconds: UInt64
    /// Bytes of vCPU state sent (KVM state + interrupt state + header).
    public var stateBytes: Int
}

public final class VCPUMigrator: VCPUMigrationSink, @unchecked Sendable {
    let node: Node
    public let placement: VCPUPlacement
    private(set) weak var machine: Machine?
    let logger: Logger
    let metrics: MetricsRegistry
    /// Stops the VM with a named error (a state that cannot be loaded).
    let fatal: @Sendable (String) -> Void
    let cDeparted: UInt32, cArrived: UInt32, cBytes: UInt32, hPause: UInt32

    private struct Waiter {
        let done = DispatchSemaphore(value: 0)
        var result: MigrationResult?
    }
    private struct InFlight {
        var req: UInt64
        var requester: UInt32
        var stoppedAt: UInt64 = 0
        var bytes = 0
    }
    private struct State {
        var nextReq: UInt64 = 1
        var waiters: [UInt64: Waiter] = [:]
        var inFlight: [Int: InFlight] = [:]
        /// Destination side: where each arrived vCPU came from (for MIGRATE_ARRIVED).
        var cameFrom: [Int: (node: UInt32, version: UInt64)] = [:]
        var failedAll: String?
    }
    private let state = Mutex(State())

    /// Registers the migration types on the cpu channel (before `node.start()`).
    public init(node: Node, placement: VCPUPlacement, metrics: MetricsRegistry, logger: Logger,
                fatal: @escaping @Sendable (String) -> Void) {
        self.node = node
        self.placement = placement
        self.metrics = metrics
        self.logger = logger
        self.fatal = fatal
        cDeparted = metrics.counter("migrate.departed")
        cArrived = metrics.counter("migrate.arrived")
        cBytes = metrics.counter("migrate.state_bytes")
        hPause = metrics.histogram("migrate.pause")
        let types: [MessageType.CPU] = [.migrateRequest, .migrateState, .placement, .migrateArrived, .migrateResult]
        node.register(channel: .cpu, types: types.map(\.rawValue)) { [weak self] from, p in self?.handle(from: from, p) }
    }

    /// The machine whose vCPUs move (after its init, before it runs).
    public func attach(_ m: Machine) {
        machine = m
        m.setMigrationSink(self)
    }

    // ---- asking ----------------------------------------------------------------------------

    /// Moves vCPU `vcpu` to node `to` and waits for the answer (at most `timeout` seconds).
    /// Any thread but a transport receive thread.
    public func migrate(vcpu: Int, to: UInt32, timeout: Double) -> MigrationResult {
        func fail(_ m: String) -> MigrationResult { MigrationResult(ok: false, message: m, pauseNanoseconds: 0, stateBytes: 0) }
        guard vcpu >= 0, vcpu < placement.count else { return fail("there is no vCPU \(vcpu) (vCPUs: 0-\(placement.count - 1))") }
        guard Int(to) < node.config.nodes.count else { return fail("there is no node \(to) (nodes: 0-\(node.config.nodes.count - 1))") }
        let req = state.withLock { s -> UInt64? in
            guard s.failedAll == nil else { return nil }
            defer { s.nextReq += 1 }
            s.waiters[s.nextReq] = Waiter()
            return s.nextReq
        }
        guard let req else { return fail(state.withLock { $0.failedAll } ?? "stopping") }
        route(req: req, requester: node.id, vcpu: vcpu, to: to, hops: 0)
        let sem = state.withLock { $0.waiters[req]!.done }
        let timedOut = sem.wait(timeout: .now() + max(0.1, timeout)) == .timedOut
        let w = state.withLock { $0.waiters.removeValue(forKey: req) }
        if timedOut || w?.result == nil {
            return fail("no answer within \(timeout) s (vCPU \(vcpu) to node \(to))")
        }
        return w!.result!
    }

    /// Fails every waiting request (the node is stopping).
    public func failAll(_ why: String) {
        let sems = state.withLock { s -> [DispatchSemaphore] in
            s.failedAll = why
            for k in s.waiters.keys where s.waiters[k]!.result == nil {
                s.waiters[k]!.result = MigrationResult(ok: false, message: why, pauseNanoseconds: 0, stateBytes: 0)
            }
            return s.waiters.values.map(\.done)
        }
        for s in sems { s.signal() }
    }

    /// Sends a request towards the node running `vcpu`, or starts the departure here.
    private func route(req: UInt64, requester: UInt32, vcpu: Int, to: UInt32, hops: UInt8) {
        guard node.config.nodes[Int(to)].vcpus > 0 else {
            return answer(req: req, requester: requester, ok: false,
                          "node \(to) is a device-only node (vcpus: 0 in the config): it runs no vCPU and takes none")
        }
        let owner = placement.node(of: vcpu)
        guard owner == node.id else {
            guard hops < 8 else {
                return answer(req: req, requester: requester, ok: false, "vCPU \(vcpu): the placement did not settle after 8 hops")
            }
            var w = MessageWriter(type: MessageType.CPU.migrateRequest.rawValue)
            w.u64(req); w.u32(requester); w.u32(UInt32(vcpu)); w.u32(to); w.u8(hops + 1)
            if node.send(channel: .cpu, to: owner, w.bytes) != 0 {
                answer(req: req, requester: requester, ok: false, "vCPU \(vcpu): node \(owner), which runs it, is unreachable")
            }
            return
        }
        guard let m = machine, m.interruptState(of: vcpu)?.isResident == true else {
            // It may have left between the two reads: its departure moves the placement under the
            // vCPU's interrupt lock, which `isResident` waits for. Then the request follows it.
            if placement.node(of: vcpu) != node.id { return route(req: req, requester: requester, vcpu: vcpu, to: to, hops: hops) }
            return answer(req: req, requester: requester, ok: false, "vCPU \(vcpu) is placed on node \(node.id) but not resident there")
        }
        if to == node.id {
            return answer(req: req, requester: requester, ok: true, "vCPU \(vcpu) is already on node \(to)")
        }
        let busy = state.withLock { s -> Bool in
            if s.inFlight[vcpu] != nil { return true }
            s.inFlight[vcpu] = InFlight(req: req, requester: requester)
            return false
        }
        if busy || !m.requestDeparture(vcpu: vcpu, to: to) {
            if !busy { _ = state.withLock { $0.inFlight.removeValue(forKey: vcpu) } }
            answer(req: req, requester: requester, ok: false, "vCPU \(vcpu) is already migrating")
        }
    }

    private func answer(req: UInt64, requester: UInt32, ok: Bool, _ message: String, pause: UInt64 = 0, bytes: Int = 0) {
        let r = MigrationResult(ok: ok, message: message, pauseNanoseconds: pause, stateBytes: bytes)
        if requester == node.id {
            let sem = state.withLock { s -> DispatchSemaphore? in
                guard s.waiters[req] != nil else { return nil }
                s.waiters[req]!.result = r
                return s.waiters[req]!.done
            }
            if let sem { sem.signal() } else if !ok { logger.warning("migration: \(message)") }
            return
        }
        var w = MessageWriter(type: MessageType.CPU.migrateResult.rawValue)
        w.u64(req); w.u8(ok ? 1 : 0); w.u64(pause); w.u32(UInt32(clamping: bytes)); w.text(message)
        node.send(channel: .cpu, to: requester, w.bytes)
    }

    // ---- VCPUMigrationSink (the source's vCPU thread) -----------------------------------------

    public func departed(vcpu: Int, to: UInt32, kvm: VCPUState, interrupts: [UInt8], stoppedAt: UInt64) throws {
        let version = placement.entry(of: vcpu).version &+ 1
        var w = MessageWriter(type: MessageType.CPU.migrateState.rawValue)
        w.u32(UInt32(vcpu)); w.u64(version); w.u32(UInt32(interrupts.count))
        var bytes = w.bytes + interrupts
        kvm.encode(into: &bytes)
        // Recorded before the send: the destination's MIGRATE_ARRIVED may come back at once.
        state.withLock { s in
            if s.inFlight[vcpu] == nil { s.inFlight[vcpu] = InFlight(req: 0, requester: node.id) }
            s.inFlight[vcpu]!.stoppedAt = stoppedAt
            s.inFlight[vcpu]!.bytes = bytes.count
        }
        let rc = node.send(channel: .cpu, to: to, bytes)
        guard rc == 0 else { throw ClusterError("cannot send vCPU \(vcpu)'s state to node \(to) (status \(rc))") }
        placement.update(vcpu, node: to, version: version)
        var p = MessageWriter(type: MessageType.CPU.placement.rawValue)
        p.u32(UInt32(vcpu)); p.u32(to); p.u64(version)
        for peer in node.peers where peer != to { node.send(channel: .cpu, to: peer, p.bytes) }
        metrics.add(cDeparted, 1)
        metrics.add(cBytes, UInt64(bytes.count))
    }

    public func departureFailed(vcpu: Int, to: UInt32, _ why: String) {
        logger.error("vCPU \(vcpu) could not leave for node \(to): \(why); it keeps running on node \(node.id)")
        if let f = state.withLock({ $0.inFlight.removeValue(forKey: vcpu) }) {
            answer(req: f.req, requester: f.requester, ok: false, "vCPU \(vcpu) could not leave node \(node.id): \(why)")
        }
    }

    public func arrived(vcpu: Int) {
        metrics.add(cArrived, 1)
        guard let from = state.withLock({ $0.cameFrom.removeValue(forKey: vcpu) }) else { return }
        var w = MessageWriter(type: MessageType.CPU.migrateArrived.rawValue)
        w.u32(UInt32(vcpu)); w.u64(from.version)
        node.send(channel: .cpu, to: from.node, w.bytes)
    }

    // ---- messages ----------------------------------------------------------------------------

    func handle(from: UInt32, _ p: UnsafeRawBufferPointer) {
        var r = MessageReader(p)
        guard let t = r.u8(), let type = MessageType.CPU(rawValue: t) else { return }
        let count = placement.count
        func bad(_ what: String) { logger.error("migration: malformed \(what) from node \(from) (\(p.count) bytes): dropped") }
        switch type {
        case .migrateRequest:
            guard let req = r.u64(), let requester = r.u32(), let v = r.u32(), let to = r.u32(), let hops = r.u8(),
                  Int(v) < count, Int(requester) < node.config.nodes.count, Int(to) < node.config.nodes.count else { return bad("MIGRATE_REQ") }
            route(req: req, requester: requester, vcpu: Int(v), to: to, hops: hops)
        case .migrateState:
            guard let v = r.u32(), Int(v) < count, let version = r.u64(), let n = r.u32(), Int(n) <= r.remaining else {
                return fatal("live migration: a malformed vCPU state from node \(from)")
            }
            let irq = Array(UnsafeRawBufferPointer(rebasing: p[r.offset..<r.offset + Int(n)]))
            let rest = Array(UnsafeRawBufferPointer(rebasing: p[(r.offset + Int(n))...]))
            do {
                var o = 0
                let kvm = try VCPUState.decode(rest, offset: &o)
                guard o == rest.count else { throw ClusterError("\(rest.count - o) trailing bytes") }
                guard let m = machine else { throw ClusterError("no machine on this node") }
                state.withLock { $0.cameFrom[Int(v)] = (from, version) }
                try m.installArrival(vcpu: Int(v), interrupts: irq, kvm: kvm)
                placement.update(Int(v), node: node.id, version: version)
            } catch {
                fatal("live migration of vCPU \(v) from node \(from) to node \(node.id): cannot load its state: \(error)")
            }
        case .placement:
            guard let v = r.u32(), let n = r.u32(), let version = r.u64(), Int(v) < count, Int(n) < node.config.nodes.count else {
                return bad("PLACEMENT")
            }
            placement.update(Int(v), node: n, version: version)
        case .migrateArrived:
            guard let v = r.u32(), Int(v) < count, r.u64() != nil else { return bad("MIGRATE_ARRIVED") }
            let now = monotonicNanoseconds()
            guard let f = state.withLock({ $0.inFlight.removeValue(forKey: Int(v)) }) else { return }
            let pause = now >= f.stoppedAt ? now - f.stoppedAt : 0
            metrics.record(hPause, nanoseconds: pause)
            answer(req: f.req, requester: f.requester, ok: true, "vCPU \(v) moved from node \(node.id) to node \(from)",
                   pause: pause, bytes: f.bytes)
        case .migrateResult:
            guard let req = r.u64(), let ok = r.u8(), ok <= 1, let pause = r.u64(), let bytes = r.u32(), let text = r.text() else {
                return bad("MIGRATE_RESULT")
            }
            answer(req: req, requester: node.id, ok: ok == 1, text, pause: pause, bytes: Int(bytes))
        default:
            return
        }
    }
}
