// CPUID and MSRs that tell the truth (KVM's InstructionProbe and MSRFilterPolicy): the
// supported CPUID minus what this host's KVM cannot execute for the guest, logged once at info
// level, and the MSR filter that makes the MSRs of hidden features raise #GP.
import KVM
import Logging
import Synchronization
import Glibc

extension Machine {
    private static let probeLogged = Mutex(false)

    /// KVM's supported CPUID and the features the probe found not to work here (to be removed
    /// with `CPUFeature.hide`). The probe runs once per process; its result is logged (info) the
    /// first time. GIANTVM_INSTRUCTION_PROBE=0 in the environment turns the probe off
    /// (diagnosis: compare a guest's view with and without it).
    static func probedCPUID(_ kvm: KVMSystem, logger: Logger) throws -> (supported: [CPUIDEntry], hidden: [CPUFeature]) {
        let supported = try kvm.supportedCPUID()
        if let v = getenv("GIANTVM_INSTRUCTION_PROBE"), String(cString: v) == "0" {
            if probeLogged.withLock({ l -> Bool in defer { l = true }; return !l }) {
                logger.info("instruction probe: off (GIANTVM_INSTRUCTION_PROBE=0): CPUID offers all KVM supports")
            }
            return (supported, [])
        }
        let report: ProbeReport
        do {
            report = try InstructionProbe.report(kvm: kvm, supported: supported)
        } catch {
            // the probe needs a second VM; a KVM that refuses one still runs the guest
            logger.warning("instruction probe could not run (\(error)): CPUID offers all KVM supports")
            return (supported, [])
        }
        if probeLogged.withLock({ l -> Bool in defer { l = true }; return !l }) {
            logger.info("instruction probe: \(report.summary)")
        }
        return (supported, report.hidden)
    }

    /// The CPUID table of vCPU `index` for a guest offered what `features` allows: KVM's
    /// supported set `base` without `features.hidden`, kvmclock when `features.kvmFeatures` has
    /// CLOCKSOURCE2 (the stable bit too on a one-node VM).
    static func cpuidTable(base: [CPUIDEntry], config: MachineConfiguration, x2apic: Bool, features: HostCPUFeatures,
                           vcpu index: UInt32, tscKHz: UInt32) -> [CPUIDEntry] {
        var p = CPUIDPolicy(totalVCPUs: UInt32(config.totalVCPUs), nodes: config.nodes, tscKHz: tscKHz,
                            apicBusKHz: UInt32(config.apicBusHz / 1000))
        p.offerX2APIC = x2apic
        p.offerKVMClock = features.kvmFeatures & KVMParavirt.featureClocksource2 != 0
        p.kvmclockStable = p.offerKVMClock && config.nodes.count == 1 && features.kvmFeatures & KVMParavirt.featureClocksourceStable != 0
        return p.entries(supported: CPUFeature.hide(features.hidden.map(\.cpuFeature), in: base), vcpu: index)
    }

    /// Re-offers every vCPU of this node what `merged` (HostCPUFeatures.merge of every node's
    /// `hostFeatures`) allows: KVM_SET_CPUID2 on each vCPU and a new MSR filter. On the setup
    /// thread, before any vCPU ran. Returns what changed here (empty: nothing), for the log.
    public func applyClusterFeatures(_ merged: HostCPUFeatures) throws -> [String] {
        let before = appliedFeatures.withLock { $0 }
        var changes: [String] = []
        let newly = merged.hidden.filter { !before.hidden.contains($0) }
        if !newly.isEmpty { changes.append("hidden (another node's host lacks them): " + newly.map(\.name).joined(separator: ", ")) }
        let wasClock = before.kvmFeatures & KVMParavirt.featureClocksource2 != 0
        let isClock = merged.kvmFeatures & KVMParavirt.featureClocksource2 != 0
        if wasClock != isClock { changes.append(isClock ? "kvmclock offered" : "kvmclock not offered (another node cannot offer it)") }
        if merged.kvmFeatures & KVMParavirt.featureClocksourceStable != before.kvmFeatures & KVMParavirt.featureClocksourceStable && isClock {
            changes.append("kvmclock stable bit changed")
        }
        guard !changes.isEmpty else { return [] }
        do {
            for r in runners {
                let tsc = (try? r.vcpu.tscKHz()) ?? 0
                try r.vcpu.setCPUID(Machine.cpuidTable(base: cpuidBase, config: config, x2apic: offersX2APIC, features: merged,
                                                       vcpu: UInt32(r.index), tscKHz: tsc))
            }
            if let first = config.localVCPUs.first {
                try Machine.installMSRFilter(vm, cpuid: Machine.cpuidTable(base: cpuidBase, config: config, x2apic: offersX2APIC,
                                                                           features: merged, vcpu: UInt32(first), tscKHz: 0), logger: logger)
            }
        } catch let e as KVMError {
            throw MachineError.kvm(e)
        }
        appliedFeatures.withLock { $0 = merged }
        return changes
    }

    private static let kvmclockLogged = Mutex(false)

    /// Whether to offer kvmclock: `requested` (MachineConfiguration.kvmclock), unless
    /// GIANTVM_KVMCLOCK=0 in the environment turns it off, and only when the start-up probe
    /// (KVMClockProbe, once per process) shows this KVM runs it. The outcome is logged at info
    /// the first time. Returns the KVM feature bits supported when offered, nil when not.
    static func kvmclockOffer(requested: Bool, kvm: KVMSystem, supported: [CPUIDEntry], logger: Logger) throws -> UInt32? {
        var want = requested
        if let v = getenv("GIANTVM_KVMCLOCK") {
            switch String(cString: v) {
            case "0": want = false
            case "1", "": break
            case let other: throw MachineError.config("environment GIANTVM_KVMCLOCK=\(other): expected 0 (kvmclock not offered) or 1 (offered when this KVM runs it)")
            }
        }
        let first = kvmclockLogged.withLock { l -> Bool in defer { l = true }; return !l }
        guard want else {
            if first { logger.info("kvmclock: not offered (\(requested ? "GIANTVM_KVMCLOCK=0" : "turned off by the machine configuration"))") }
            return nil
        }
        let s = KVMClockProbe.support(kvm: kvm, supported: supported)
        if first { logger.info("kvmclock: \(s.works ? "offered" : "not offered"): \(s.detail)") }
        return s.works ? s.kvmFeatures : nil
    }

    /// Installs the MSR filter for a guest whose CPUID is `cpuid` (KVMs without
    /// KVM_X86_SET_MSR_FILTER keep their own MSR handling; that is logged).
    static func installMSRFilter(_ vm: VirtualMachine, cpuid: [CPUIDEntry], logger: Logger) throws {
        let deny = MSRFilterPolicy.denied(cpuid: cpuid)
        guard vm.hasMSRFilter else {
            logger.info("this KVM has no KVM_X86_SET_MSR_FILTER: MSRs of hidden features are not filtered")
            return
        }
        try vm.setMSRFilter(deny: deny)
        logger.debug("MSR filter: #GP on \(deny.map(\.description).joined(separator: ", "))")
    }
}

/// What this node's host lets the VMM offer a guest beyond KVM's supported CPUID: the features the
/// instruction probe hid here and KVM's feature bits when kvmclock is offered (0: not offered).
/// Nodes exchange theirs at start and every node applies the merge, so a vCPU sees the same CPUID
/// on every node (it keeps it when it moves).
public struct HostCPUFeatures: Sendable, Equatable {
    /// A CPUID feature bit, as it travels between nodes.
    public struct Feature: Sendable, Hashable {
        public var name: String
        public var leaf: UInt32
        public var subleaf: UInt32
        /// 0 EAX, 1 EBX, 2 ECX, 3 EDX.
        public var register: UInt8
        public var bit: UInt8
        public init(name: String, leaf: UInt32, subleaf: UInt32, register: UInt8, bit: UInt8) {
            self.name = name; self.leaf = leaf; self.subleaf = subleaf; self.register = register; self.bit = bit
        }
        init(_ f: CPUFeature) {
            let r: UInt8
            switch f.register { case .eax: r = 0; case .ebx: r = 1; case .ecx: r = 2; case .edx: r = 3 }
            self.init(name: f.name, leaf: f.leaf, subleaf: f.subleaf, register: r, bit: UInt8(f.bit))
        }
        var cpuFeature: CPUFeature {
            let r: CPUFeature.Register = [.eax, .ebx, .ecx, .edx][Int(min(register, 3))]
            return CPUFeature(name, leaf: leaf, subleaf: subleaf, r, bit: UInt32(min(bit, 31)))
        }
        /// Whether the fields are in range (register 0-3, bit 0-31): checked on what a peer sent.
        public var isValid: Bool { register <= 3 && bit <= 31 }
    }

    public var hidden: [Feature]
    /// KVM's feature bits (EAX of its leaf) when kvmclock is offered, else 0.
    public var kvmFeatures: UInt32

    public init(hidden: [Feature], kvmFeatures: UInt32) { self.hidden = hidden; self.kvmFeatures = kvmFeatures }

    /// Every node's `hidden` (the union, in first-seen order) and the KVM feature bits all share
    /// (0 when any node offers no kvmclock).
    public static func merge(_ all: [HostCPUFeatures]) -> HostCPUFeatures {
        var hidden: [Feature] = []
        for f in all.flatMap(\.hidden) where !hidden.contains(f) { hidden.append(f) }
        let kvm = all.isEmpty ? 0 : all.map(\.kvmFeatures).reduce(~UInt32(0), &)
        return HostCPUFeatures(hidden: hidden, kvmFeatures: kvm & KVMParavirt.featureClocksource2 != 0 ? kvm : 0)
    }
}
