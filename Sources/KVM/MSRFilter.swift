// MSRs a guest must not reach because the VMM hides the feature they belong to: as on hardware,
// an access raises #GP (KVM_X86_SET_MSR_FILTER, default allow, these ranges denied for reads and
// writes). Only features the VMM itself takes away are listed (what KVM does not support, its own
// MSR handling already refuses): a KVM that computes parts of the guest's CPUID itself (PVM)
// may show the guest bits the VMM's table lacks, and their MSRs must then keep working. Derived
// from the final CPUID table: kvmclock, when offered (KVMClock.swift), drops its two MSRs by itself.
import CSystem
import Glibc

public struct MSRRange: Sendable, Equatable, CustomStringConvertible {
    public var base: UInt32
    public var count: UInt32
    public var why: String
    public init(base: UInt32, count: UInt32 = 1, why: String) { self.base = base; self.count = count; self.why = why }
    public var description: String {
        "0x\(String(base, radix: 16))\(count > 1 ? "-0x\(String(base + count - 1, radix: 16))" : "") (\(why))"
    }
}

public enum MSRFilterPolicy {
    /// The MSR ranges to deny for a guest whose CPUID is `cpuid`.
    public static func denied(cpuid: [CPUIDEntry]) -> [MSRRange] {
        var out: [MSRRange] = []
        if !CPUFeature.tscAdjust.isSet(in: cpuid) { out.append(MSRRange(base: 0x3B, why: "IA32_TSC_ADJUST: tsc_adjust hidden")) }
        if !CPUFeature.tscDeadline.isSet(in: cpuid) { out.append(MSRRange(base: 0x6E0, why: "IA32_TSC_DEADLINE: tsc_deadline hidden")) }
        // KVM's paravirtual MSRs: only those of the KVM features the table offers (kvmclock's
        // MSR_KVM_WALL_CLOCK_NEW and MSR_KVM_SYSTEM_TIME_NEW with KVM_FEATURE_CLOCKSOURCE2); the
        // old kvmclock MSRs (KVM_FEATURE_CLOCKSOURCE) and the rest are never offered
        let kvm = KVMParavirt.base(in: cpuid) == nil ? "KVM PV leaves hidden" : "not offered"
        out.append(MSRRange(base: 0x11, count: 2, why: "kvmclock (old): \(kvm)"))
        if KVMParavirt.features(in: cpuid) & KVMParavirt.featureClocksource2 != 0 {
            out.append(MSRRange(base: 0x4B56_4D02, count: 6, why: "KVM PV MSRs but kvmclock: \(kvm)"))
        } else {
            out.append(MSRRange(base: 0x4B56_4D00, count: 8, why: "KVM PV MSRs: \(kvm)"))
        }
        return out
    }
}

extension VirtualMachine {
    /// Whether this KVM has KVM_X86_SET_MSR_FILTER.
    public var hasMSRFilter: Bool { ((try? system.check(.msrFilter)) ?? 0) != 0 }

    /// KVM_X86_SET_MSR_FILTER: default allow, `ranges` denied (at most 16).
    public func setMSRFilter(deny ranges: [MSRRange]) throws {
        guard ranges.count <= 16 else {
            throw KVMError(call: "KVM_X86_SET_MSR_FILTER", errno: EINVAL, context: "\(ranges.count) ranges; at most 16")
        }
        let bases = ranges.map(\.base), counts = ranges.map(\.count)
        // Sound: both arrays hold ranges.count elements for the call's duration.
        let rc = bases.withUnsafeBufferPointer { b in counts.withUnsafeBufferPointer { c in
            gvm_set_msr_deny_filter(fd, b.baseAddress, c.baseAddress, UInt32(ranges.count))
        } }
        if rc < 0 { throw KVMError(call: "KVM_X86_SET_MSR_FILTER", errno: gvm_errno(), context: ranges.map(\.description).joined(separator: ", ")) }
    }
}
