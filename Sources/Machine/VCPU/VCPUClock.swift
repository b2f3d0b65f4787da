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

/// The VM's kvmclock (KVM_GET_CLOCK / KVM_SET_CLOCK) as clock alignment sees it: node 0's is the
/// reference, every other node sets its own to it before its vCPUs run. `Machine.kvmClock` is nil
/// when the guest is not offered kvmclock.
public struct VMClock: @unchecked Sendable {
    let vm: VirtualMachine

    /// The clock (ns) and the host TSC it was read at, with how far that TSC may be off (ticks:
    /// 0 when KVM returned its own, else half the RDTSC bracket around the ioctl). Any thread.
    public func read() throws -> (nanoseconds: UInt64, hostTSC: UInt64, uncertaintyTicks: UInt64) {
        let r = try vm.kvmclock()
        return (r.nanoseconds, r.hostTSC, r.uncertaintyTicks)
    }

    /// Sets the clock to `nanoseconds` now (every vCPU rewrites its pvclock at its next entry).
    /// On the setup thread, before the VM runs.
    public func set(_ nanoseconds: UInt64) throws { try vm.setKVMClock(nanoseconds) }
}
