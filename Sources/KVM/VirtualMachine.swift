import CSystem
import Glibc

/// A guest memory slot (KVM_SET_USER_MEMORY_REGION).
public struct MemorySlot: Sendable, Equatable {
    public var slot: UInt32
    public var guestPhysicalAddress: UInt64
    public var size: UInt64
    public var hostAddress: UInt
    public var readOnly: Bool

    public init(slot: UInt32, guestPhysicalAddress: UInt64, size: UInt64, hostAddress: UnsafeMutableRawPointer,
                readOnly: Bool = false) {
        self.slot = slot
        self.guestPhysicalAddress = guestPhysicalAddress
        self.size = size
        self.hostAddress = UInt(bitPattern: hostAddress)
        self.readOnly = readOnly
    }
}

/// One KVM VM (a KVM_CREATE_VM file descriptor). Set up on one thread (memory slots, vCPUs);
/// afterwards only its vCPUs are used, each from its own thread.
public final class VirtualMachine: @unchecked Sendable {
    public let system: KVMSystem
    public let fd: Int32

    init(system: KVMSystem, fd: Int32) {
        self.system = system
        self.fd = fd
    }

    deinit { close(fd) }

    /// KVM_SET_USER_MEMORY_REGION. The host range must stay mapped while the slot exists.
    public func setMemory(_ s: MemorySlot) throws {
        var region = kvm_userspace_memory_region(
            slot: s.slot, flags: s.readOnly ? UInt32(KVM_MEM_READONLY) : 0,
            guest_phys_addr: s.guestPhysicalAddress, memory_size: s.size, userspace_addr: UInt64(s.hostAddress))
        // Sound: region is a fully initialised kvm_userspace_memory_region on the stack.
        _ = try kvmIoctl(fd, gvm_KVM_SET_USER_MEMORY_REGION(), "KVM_SET_USER_MEMORY_REGION", &region,
                         context: "slot \(s.slot) gpa 0x\(String(s.guestPhysicalAddress, radix: 16)) size \(s.size)")
    }

    /// KVM_SET_TSS_ADDR: three pages of guest-physical space KVM (on VMX) uses for real mode.
    /// Must not overlap RAM or MMIO the guest uses.
    public func setTSSAddress(_ gpa: UInt64) throws {
        // Sound: the argument is an integer address.
        _ = try kvmIoctlInt(fd, gvm_KVM_SET_TSS_ADDR(), "KVM_SET_TSS_ADDR", UInt(gpa))
    }

    /// KVM_SET_IDENTITY_MAP_ADDR: one page KVM (on VMX) uses for real-mode paging.
    public func setIdentityMapAddress(_ gpa: UInt64) throws {
        var a = gpa
        // Sound: the argument is a pointer to a u64 on the stack.
        _ = try kvmIoctl(fd, gvm_KVM_SET_IDENTITY_MAP_ADDR(), "KVM_SET_IDENTITY_MAP_ADDR", &a)
    }

    /// KVM_ENABLE_CAP(KVM_CAP_X86_USER_SPACE_MSR): RDMSR/WRMSR that KVM would refuse with #GP
    /// (the x2APIC MSRs, as the local APIC is in user space) or does not know exit to user space
    /// as `.rdmsr`/`.wrmsr`. Before any vCPU runs.
    public func enableUserSpaceMSRs() throws {
        if gvm_enable_user_space_msr(fd, gvm_msr_exit_reasons()) != 0 {
            throw KVMError(call: "KVM_ENABLE_CAP", errno: gvm_errno(), context: "KVM_CAP_X86_USER_SPACE_MSR (x2APIC MSRs in user space)")
        }
    }

    /// KVM_CREATE_VCPU with the given id (the APIC id), and maps its kvm_run page.
    public func createVCPU(id: UInt32) throws -> VCPU {
        // Sound: the argument is the integer vCPU id.
        let vfd = try kvmIoctlInt(fd, gvm_KVM_CREATE_VCPU(), "KVM_CREATE_VCPU", UInt(id), context: "vCPU \(id)")
        let size = system.vcpuMmapSize
        let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, vfd, 0)
        if p == MAP_FAILED || p == nil {
            let e = errno
            close(vfd)
            throw KVMError(call: "mmap(kvm_run)", errno: e, context: "vCPU \(id)")
        }
        return VCPU(vm: self, id: id, fd: vfd, run: p!, runSize: size)
    }
}
