// CPU and interrupt forwarding on the `cpu` channel.
//
// Every node holds the APIC addressing state (ID, LDR, DFR) of every vCPU of the VM; a local
// APIC's change is broadcast, so the sender of an IPI resolves its destination (physical,
// logical, shorthand) against the same table on every node and sends one IPI message per remote
// target vCPU to that vCPU's node, which injects it there — exactly once: each message is sent
// once over an ordered, reliable transport and never retried. Device interrupt lines of a node
// without the IOAPIC go to `ioapic_node`; the IOAPIC's messages reach remote vCPUs as IPIs above;
// level-triggered EOIs go back to `ioapic_node`.
//
// Threading: the RemoteInterrupts methods run on vCPU threads, the APIC timer thread or the
// IOAPIC caller; `handle` on transport receive threads. Nothing here blocks (sends never wait).

import Cluster
import Foundation
import Interrupts
import Logging
import Machine
import Metrics

public final class CPUForwarder: RemoteInterrupts, @unchecked Sendable {
    let node: Node
    /// The machine this forwarder was given to at its init (`attach`, before the cpu channel is
    /// registered).
    private(set) weak var machine: Machine?
    /// Node of each global vCPU index: cluster state, moved by live migration (VCPUMigrator).
    public let placement: VCPUPlacement
    let ioapicNode: UInt32
    let logger: Logger
    let metrics: MetricsRegistry
    let cIPIOut: UInt32, cIPIIn: UInt32, cAddr: UInt32, cLinesOut: UInt32, cLinesIn: UInt32, cEOIOut: UInt32, cEOIIn: UInt32

    /// Registers IPI, APIC_ADDR, IRQ_LINE and EOI on the cpu channel: before `node.start()`.
    public init(node: Node, vcpuNode: [UInt32], ioapicNode: UInt32, metrics: MetricsRegistry, logger: Logger) {
        self.node = node
        self.placement = VCPUPlacement(vcpuNode)
        self.ioapicNode = ioapicNode
        self.metrics = metrics
        self.logger = logger
        cIPIOut = metrics.counter("cpu.ipi_forwarded")
        cIPIIn = metrics.counter("cpu.ipi_received")
        cAddr = metrics.counter("cpu.apic_address_updates")
        cLinesOut = metrics.counter("cpu.irq_lines_forwarded")
        cLinesIn = metrics.counter("cpu.irq_lines_received")
        cEOIOut = metrics.counter("cpu.eoi_forwarded")
        cEOIIn = metrics.counter("cpu.eoi_received")
        node.register(channel: .cpu, types: [CPUMessageType.ipi, .apicAddress, .irqLine, .eoi].map(\.rawValue)) {
            [weak self] from, p in self?.handle(from: from, p)
        }
    }

    /// The machine whose router and IOAPIC receive the peers' messages (after its init).
    public func attach(_ machine: Machine) { self.machine = machine }

    // ---- RemoteInterrupts (this node's traffic out) --------------------------------------------

    public func deliver(toRemoteVCPU index: Int, _ m: InterruptMessage) {
        let target = placement.node(of: index)
        guard target != node.id else {
            logger.error("interrupt for vCPU \(index): placed on this node but not resident here: dropped")
            return
        }
        metrics.add(cIPIOut, 1)
        node.send(channel: .cpu, to: target,
                  CPUMessage.ipi(target: UInt32(index), source: -1, mode: m.mode.rawValue, vector: m.vector,
                                 level: m.levelTriggered).encode())
    }

    public func addressingChanged(vcpu index: Int, _ a: APICAddress) {
        let bytes = CPUMessage.apicAddress(vcpu: UInt32(index), id: a.id, ldr: a.ldr, dfr: a.dfr, mode: a.mode.rawValue).encode()
        for p in node.peers { node.send(channel: .cpu, to: p, bytes) }
    }

    public func forwardIRQLine(_ line: UInt32, level: Bool, device: String) {
        metrics.add(cLinesOut, 1)
        node.send(channel: .cpu, to: ioapicNode, CPUMessage.irqLine(line: line, level: level, device: device).encode())
    }

    public func forwardEOI(vector: UInt8) {
        metrics.add(cEOIOut, 1)
        node.send(channel: .cpu, to: ioapicNode, CPUMessage.eoi(vector: vector).encode())
    }

    /// A cpu-channel message from a peer (transport receive thread).
    func handle(from: UInt32, _ payload: UnsafeRawBufferPointer) {
        let m: CPUMessage
        do { m = try CPUMessage.decode(payload) } catch {
            logger.error("dropped a cpu message from node \(from): \(error)")
            return
        }
        guard let machine else {
            logger.error("cpu message from node \(from) before the machine exists: dropped")
            return
        }
        switch m {
        case let .ipi(target, _, mode, vector, level):
            // Delivered where the vCPU is resident; forwarded on when it has moved (migration).
            guard Int(target) < placement.count, let dm = DeliveryMode(rawValue: mode) else {
                logger.error("IPI from node \(from) for vCPU \(target), which the VM does not have: dropped")
                return
            }
            metrics.add(cIPIIn, 1)
            machine.router.deliver(to: Int(target), InterruptMessage(mode: dm, vector: vector, levelTriggered: level))
        case let .apicAddress(vcpu, id, ldr, dfr, mode):
            guard Int(vcpu) < placement.count else {
                logger.error("APIC address of vCPU \(vcpu) from node \(from), which the VM does not have: dropped")
                return
            }
            metrics.add(cAddr, 1)
            machine.router.updateAddress(of: Int(vcpu), APICAddress(id: id, ldr: ldr, dfr: dfr, mode: APICMode(rawValue: mode) ?? .xAPIC))
        case let .irqLine(line, level, device):
            guard let io = machine.ioapic else {
                logger.error("interrupt line \(line) of device '\(device)' from node \(from), but the IOAPIC is not here: dropped")
                return
            }
            metrics.add(cLinesIn, 1)
            guard line < UInt32(IOAPIC.pinCount) else {
                logger.error("interrupt line \(line) of device '\(device)' from node \(from): the IOAPIC has pins 0-\(IOAPIC.pinCount - 1): dropped")
                return
            }
            _ = io
            machine.forwardedLine(line, level: level)
        case let .eoi(vector):
            metrics.add(cEOIIn, 1)
            machine.ioapic?.eoi(vector: vector)
        case .timeRequest, .timeReply:
            logger.error("time message from node \(from) reached the interrupt forwarder: dropped")
        }
    }
}
