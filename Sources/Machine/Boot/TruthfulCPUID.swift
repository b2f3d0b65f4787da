// CPUID and MSRs that tell the truth (KVM's InstructionProbe and MSRFilterPolicy): the
// supported CPUID minus what this host's KVM cannot execute for the guest, logged once at info
// level, and the MSR filter that makes the MSRs of hidden features raise #GP.
import KVM
import Logging
import Synchronization
import Glibc

extension Machine {
    private static let probeLogged = Mutex(false)

    /// KVM's supported CPUID with the features the probe found not to work removed. The probe
    /// runs once per process; its result is logged (info) the first time.
    /// GIANTVM_INSTRUCTION_PROBE=0 in the environment turns the probe off (diagnosis: compare a
    /// guest's view with and without it).
    static func probedCPUID(_ kvm: KVMSystem, logger: Logger) throws -> [CPUIDEntry] {
        let supported = try kvm.supportedCPUID()
        if let v = getenv("GIANTVM_INSTRUCTION_PROBE"), String(cString: v) == "0" {
            if probeLogged.withLock({ l -> Bool in defer { l = true }; return !l }) {
                logger.info("instruction probe: off (GIANTVM_INSTRUCTION_PROBE=0): CPUID offers all KVM supports")
            }
            return supported
        }
        let report: ProbeReport
        do {
            report = try InstructionProbe.report(kvm: kvm, supported: supported)
        } catch {
            // the probe needs a second VM; a KVM that refuses one still runs the guest
            logger.warning("instruction probe could not run (\(error)): CPUID offers all KVM supports")
            return supported
        }
        if probeLogged.withLock({ l -> Bool in defer { l = true }; return !l }) {
            logger.info("instruction probe: \(report.summary)")
        }
        return CPUFeature.hide(report.hidden, in: supported)
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
