import KVM

/// What the guest is told about its CPUs: the host's
/// supported set, with x2APIC (the user-space APIC's MSR interface, `offerX2APIC`), minus
/// TSC-deadline (not emulated by the user-space APIC), minus
/// every KVM paravirtual leaf (PV EOI, PV send-IPI, PV unhalt, async PF, steal time and PV TLB
/// flush need an in-kernel APIC or let KVM write guest pages behind the DSM), plus our own
/// hypervisor leaves:
///
///   0x40000000  EAX = 0x40000010 (max leaf), EBX:ECX:EDX = "GiantVMSwift"
///   0x40000001  EAX = total vCPUs, EBX = node count, ECX = this vCPU's node, EDX = 0
///   0x40000002  subleaf n < node count: EAX = first vCPU of node n, EBX = its vCPU count
///   0x40000010  EAX = TSC frequency (kHz), EBX = APIC bus frequency (kHz) (VMware timing leaf)
///
/// and, when kvmclock is offered (`offerKVMClock`), KVM's own signature leaf at the next
/// hypervisor base, where guests look for it after ours (Linux scans 0x40000000 + 0x100 n; QEMU
/// puts KVM's leaves there too when Hyper-V's take 0x40000000):
///
///   0x40000100  EAX = 0x40000101 (max leaf), EBX:ECX:EDX = "KVMKVMKVM\0\0\0"
///   0x40000101  EAX = KVM_FEATURE_CLOCKSOURCE2 (bit 3), plus KVM_FEATURE_CLOCKSOURCE_STABLE_BIT
///               (bit 24) when `kvmclockStable`; EBX = ECX = EDX = 0 (no other PV feature)
public struct CPUIDPolicy: Sendable {
    public var totalVCPUs: UInt32
    /// (first vCPU, vCPU count) of each node, by node id.
    public var nodes: [(first: UInt32, count: UInt32)]
    public var tscKHz: UInt32
    public var apicBusKHz: UInt32
    /// Offer x2APIC (CPUID.1:ECX[21]): the local APIC's MSR interface reaches the VMM (MSR exits).
    public var offerX2APIC = true
    /// Offer kvmclock (KVM's signature at `kvmBase`, KVM_FEATURE_CLOCKSOURCE2): KVM keeps each
    /// vCPU's pvclock structure itself; clock alignment makes the clock one across nodes.
    public var offerKVMClock = false
    /// Also offer KVM_FEATURE_CLOCKSOURCE_STABLE_BIT: the guest may then trust the pvclock's
    /// TSC-stable flag and skip its cross-vCPU monotonicity guard. True only where KVM's one
    /// clock is every vCPU's clock: a VM on one node (across nodes the clocks agree only within
    /// the alignment's bound).
    public var kvmclockStable = false

    /// Where KVM's leaves go when offered (the hypervisor base after ours).
    public static let kvmBase: UInt32 = 0x4000_0100

    public static let signature = "GiantVMSwift"
    public static let hypervisorBase: UInt32 = 0x4000_0000

    // Feature bits (Intel SDM vol. 2A, CPUID leaf 1).
    static let leaf1ECXx2APIC: UInt32 = 1 << 21
    static let leaf1ECXTSCDeadline: UInt32 = 1 << 24
    static let leaf1ECXOSXSAVE: UInt32 = 1 << 27
    static let leaf1ECXHypervisor: UInt32 = 1 << 31
    static let leaf1EDXAPIC: UInt32 = 1 << 9

    public init(totalVCPUs: UInt32, nodes: [(first: UInt32, count: UInt32)], tscKHz: UInt32, apicBusKHz: UInt32) {
        self.totalVCPUs = totalVCPUs
        self.nodes = nodes
        self.tscKHz = tscKHz
        self.apicBusKHz = apicBusKHz
    }

    public func node(ofVCPU v: UInt32) -> UInt32 {
        for (i, n) in nodes.enumerated() where v >= n.first && v < n.first + n.count { return UInt32(i) }
        return 0
    }

    /// The CPUID table for vCPU `index` (its APIC id is the index).
    public func entries(supported: [CPUIDEntry], vcpu index: UInt32) -> [CPUIDEntry] {
        var out: [CPUIDEntry] = []
        for var e in supported {
            if e.function >= CPUIDPolicy.hypervisorBase && e.function < 0x5000_0000 { continue } // KVM's PV leaves
            switch e.function {
            case 1:
                e.ecx &= ~(CPUIDPolicy.leaf1ECXx2APIC | CPUIDPolicy.leaf1ECXTSCDeadline | CPUIDPolicy.leaf1ECXOSXSAVE)
                if offerX2APIC { e.ecx |= CPUIDPolicy.leaf1ECXx2APIC }
                e.ecx |= CPUIDPolicy.leaf1ECXHypervisor
                e.edx |= CPUIDPolicy.leaf1EDXAPIC
                // EBX[31:24] initial APIC id, [23:16] logical processors per package.
                let count = min(totalVCPUs, 255)
                e.ebx = (e.ebx & 0x0000_FFFF) | (index & 0xFF) << 24 | (count << 16)
                e.edx |= 1 << 28 // HTT: the count field is valid
            case 0xB, 0x1F:
                e.edx = index // x2APIC id (topology leaves still report it)
            default:
                break
            }
            out.append(e)
        }
        let sig = Array(CPUIDPolicy.signature.utf8)
        func word(_ o: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(sig[o + $1]) << (8 * UInt32($1)) } }
        out.append(CPUIDEntry(function: 0x4000_0000, eax: 0x4000_0010, ebx: word(0), ecx: word(4), edx: word(8)))
        out.append(CPUIDEntry(function: 0x4000_0001, eax: totalVCPUs, ebx: UInt32(nodes.count),
                              ecx: node(ofVCPU: index), edx: 0))
        for (i, n) in nodes.enumerated() {
            out.append(CPUIDEntry(function: 0x4000_0002, index: UInt32(i), flags: CPUIDEntry.significantIndex,
                                  eax: n.first, ebx: n.count, ecx: 0, edx: 0))
        }
        out.append(CPUIDEntry(function: 0x4000_0010, eax: tscKHz, ebx: apicBusKHz, ecx: 0, edx: 0))
        if offerKVMClock {
            let b = CPUIDPolicy.kvmBase, sig = KVMParavirt.signature
            out.append(CPUIDEntry(function: b, eax: b + 1, ebx: sig.ebx, ecx: sig.ecx, edx: sig.edx))
            out.append(CPUIDEntry(function: b + 1, eax: KVMParavirt.featureClocksource2 | (kvmclockStable ? KVMParavirt.featureClocksourceStable : 0),
                                  ebx: 0, ecx: 0, edx: 0))
        }
        return out
    }
}
