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
