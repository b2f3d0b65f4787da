// A vCPU's time-stamp counter offset (guest TSC = host TSC + offset), as clock alignment across
// nodes reads and programs it: the KVM_VCPU_TSC_OFFSET vCPU attribute, or, on kernels without it,
// IA32_TSC through KVM_GET_MSRS / KVM_SET_MSRS against the host TSC.
import CSystem

/// The host's time-stamp counter (RDTSC), the clock KVM derives every guest TSC from.
public func hostTSC() -> UInt64 { gvm_host_rdtsc() }

extension VCPU {
    /// The vCPU's TSC offset: KVM_GET_DEVICE_ATTR (KVM_VCPU_TSC_CTRL / KVM_VCPU_TSC_OFFSET), or,
    /// where the kernel lacks the attribute, IA32_TSC read between two host TSC readings (taken
    /// as read half-way). Call on the vCPU's thread, or before it runs.
    public func tscOffset() throws -> Int64 {
        var off: Int64 = 0
        // Sound: fd is this open vCPU fd; the attribute's addr points at `off`, an Int64 that
        // lives across the call (the C shim builds the kvm_device_attr on its stack).
        if gvm_vcpu_get_tsc_offset(fd, &off) == 0 { return off }
        let t0 = gvm_host_rdtsc()
        let guest = try msrs([MSR.tsc])[0]
        let t1 = gvm_host_rdtsc()
        return Int64(bitPattern: guest) &- Int64(bitPattern: t0 / 2 + t1 / 2)
    }

    /// Sets the vCPU's TSC offset: KVM_SET_DEVICE_ATTR (KVM_VCPU_TSC_OFFSET), or, where the kernel
    /// lacks it, a host write of IA32_TSC. KVM treats a host TSC write within one second of the
    /// expected value as "synchronising vCPUs" and keeps the old offset, so the fallback first
    /// writes a value far away (2^40 ticks), then the target. Before the vCPU runs.
    public func setTSCOffset(_ offset: Int64) throws {
        // Sound: fd is this open vCPU fd; the kernel copies the Int64 the attribute points at.
        if gvm_vcpu_set_tsc_offset(fd, offset) == 0 { return }
        let far = Int64(bitPattern: gvm_host_rdtsc()) &+ offset &+ (Int64(1) << 40)
        try setMSRs([(MSR.tsc, UInt64(bitPattern: far))])
        try setMSRs([(MSR.tsc, UInt64(bitPattern: Int64(bitPattern: gvm_host_rdtsc()) &+ offset))])
    }
}
