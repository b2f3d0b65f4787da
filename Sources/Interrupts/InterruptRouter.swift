// Interrupt delivery between vCPUs: the router resolves destinations (physical, logical,
// shorthand, lowest priority) to global vCPU indices over an address table of every vCPU of the
// VM, and delivers to each — to the local VCPUInterrupts, or through `RemoteInterrupts` to a vCPU
// of another node.
//
// Threading: any thread. Callers hold no vCPU lock (lowest-priority resolution takes them).
import Synchronization

/// The interrupt traffic that leaves this node when one VM spans several: implemented by the
/// distributed layer, given to the Machine (and its router) at init, absent on a single node.
/// Threading: called on vCPU threads, the APIC timer thread or an IOAPIC caller, never with a
/// vCPU lock held; implementations must not block (they send and return).
public protocol RemoteInterrupts: AnyObject, Sendable {
    /// An interrupt message for vCPU `index` (global), which runs on another node.
    func deliver(toRemoteVCPU index: Int, _ message: InterruptMessage)
    /// The APIC of local vCPU `index` changed its ID, LDR or DFR: the other nodes must resolve
    /// destinations against the new address.
    func addressingChanged(vcpu index: Int, _ address: APICAddress)
    /// A device on this node drove interrupt `line`, and the IOAPIC lives on another node.
    func forwardIRQLine(_ line: UInt32, level: Bool, device: String)
    /// A local APIC's EOI of a level-triggered vector, and the IOAPIC lives on another node.
    func forwardEOI(vector: UInt8)
}

/// Resolves interrupt destinations to vCPU indices and delivers to each.
public final class InterruptRouter: @unchecked Sendable {
    /// Every vCPU of the VM, by global index (nil = lives on another node).
    let local: [VCPUInterrupts?]
    /// Destination-resolution view of every APIC (kept in step by `updateAddress`).
    let addresses: Mutex<[APICAddress]>
    /// The other nodes, when the VM spans several.
    let remote: (any RemoteInterrupts)?
    /// Counters for the stop summary.
    let delivered = Atomic<UInt64>(0)
    /// Interrupt messages delivered to vCPUs so far (IPIs, timer excluded, IOAPIC included).
    public var deliveredCount: UInt64 { delivered.load(ordering: .relaxed) }

    /// `local`: every vCPU of the VM by global index, nil for one on another node (then `remote`
    /// must be given).
    public init(local: [VCPUInterrupts?], remote: (any RemoteInterrupts)? = nil) {
        self.local = local
        self.remote = remote
        addresses = Mutex(local.indices.map { APICAddress(id: UInt8(truncatingIfNeeded: $0)) })
    }

    /// Sends an IPI from vCPU `source` (an ICR write).
    public func send(_ cmd: InterruptCommand, from source: Int) {
        if cmd.isINITDeassert { return }
        let targets = resolve(cmd, source: source)
        let m = InterruptMessage(mode: cmd.mode, vector: cmd.vector, levelTriggered: cmd.levelTriggered)
        for t in targets { deliver(to: t, m, kick: t != source) }
    }

    /// "Deliver to vCPU i": local, or through `remote` for a vCPU on another node.
    public func deliver(to index: Int, _ m: InterruptMessage, kick: Bool = true) {
        guard index >= 0 && index < local.count else { return }
        delivered.add(1, ordering: .relaxed)
        // Applied where the vCPU is resident (checked under its lock: VCPUMigration.swift),
        // else forwarded once to the node that runs it.
        guard let target = local[index], let wake = target.receiveIfResident(m) else {
            remote?.deliver(toRemoteVCPU: index, m)
            return
        }
        if wake && kick { target.kick() }
    }

    /// Delivers a message addressed the way the IOAPIC (or an MSI) addresses it: physical APIC
    /// id or logical destination, fixed or lowest priority (then one target).
    public func deliver(_ m: InterruptMessage, destination: UInt8, logical: Bool) {
        var low = UInt32(m.mode.rawValue) << 8 | UInt32(m.vector) | (1 << 14)
        if logical { low |= 1 << 11 }
        if m.levelTriggered { low |= 1 << 15 }
        let cmd = InterruptCommand(low: low, high: UInt32(destination) << 24)
        for t in resolve(cmd, source: -1) { deliver(to: t, m) }
    }

    /// An IOAPIC redirection entry fired: resolve its destination and deliver.
    public func deliver(_ a: AddressedInterrupt) {
        deliver(a.message, destination: a.destination, logical: a.logical)
    }

    /// Destination resolution over the address table; for lowest priority, local vCPUs'
    /// current TPRs are read first (no vCPU lock is held by callers of send/deliver).
    func resolve(_ cmd: InterruptCommand, source: Int) -> [Int] {
        var table = addresses.withLock { $0 }
        if cmd.mode == .lowestPriority {
            for case let irq? in local { table[irq.index].tpr = irq.locked { $0.apic.tpr } }
        }
        return DestinationResolver.resolve(cmd, source: source, apics: table)
    }

    /// Refreshes vCPU `index`'s entry in the destination tables (a local APIC write, or a
    /// change broadcast by another node); a local vCPU's change goes to the other nodes.
    public func updateAddress(of index: Int, _ a: APICAddress) {
        guard index >= 0 && index < local.count else { return }
        addresses.withLock { $0[index] = a }
        if local[index]?.isResident == true { remote?.addressingChanged(vcpu: index, a) }
    }
}
