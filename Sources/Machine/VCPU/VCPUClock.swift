// A local vCPU's time-stamp counter as clock alignment across nodes sees it: its offset from the
// host TSC (read and programmed through the KVM layer, with its MSR fallback), its frequency,
// and the host TSC itself. Callers above Machine never hold the KVM vCPU.
//
// Threading: before the VM runs (KVM calls on a vCPU must not race with KVM_RUN), on the setup thread.
import KVM

public struct VCPUClock: @unchecked Sendable {
    /// The vCPU's global index.
    public let index: Int
    let vcpu: VCPU

    /// guest TSC = host TSC + offset (`VCPU.tscOffset`).
    public func offset() throws -> Int64 { try vcpu.tscOffset() }

    /// Programs the offset (`VCPU.setTSCOffset`; a KVM that ignores TSC offset changes, such as
    /// PVM's, leaves it where it was: read it back to know).
    public func setOffset(_ offset: Int64) throws { try vcpu.setTSCOffset(offset) }

    /// The guest TSC frequency in kHz (KVM_GET_TSC_KHZ).
    public func frequencyKHz() throws -> UInt32 { try vcpu.tscKHz() }

    /// The host's time-stamp counter now (RDTSC).
    public static func hostTSC() -> UInt64 { KVM.hostTSC() }
}
