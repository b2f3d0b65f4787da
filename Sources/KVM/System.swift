import CSystem
import Glibc

/// A KVM capability (the C constants KVM_CAP_*).
public enum Capability: Sendable {
    case immediateExit, userMemory, extCPUID, nrVCPUs, maxVCPUs, userNMI, getTSCkHz, setTSSAddr, msrFilter

    var raw: Int32 {
        switch self {
        case .immediateExit: return gvm_KVM_CAP_IMMEDIATE_EXIT()
        case .userMemory: return gvm_KVM_CAP_USER_MEMORY()
        case .extCPUID: return gvm_KVM_CAP_EXT_CPUID()
        case .nrVCPUs: return gvm_KVM_CAP_NR_VCPUS()
        case .maxVCPUs: return gvm_KVM_CAP_MAX_VCPUS()
        case .userNMI: return gvm_KVM_CAP_USER_NMI()
        case .getTSCkHz: return gvm_KVM_CAP_GET_TSC_KHZ()
        case .setTSSAddr: return gvm_KVM_CAP_SET_TSS_ADDR()
        case .msrFilter: return gvm_KVM_CAP_X86_MSR_FILTER()
        }
    }
}

/// The KVM system handle (an open /dev/kvm). Thread-safe: its ioctls do not change state.
public final class KVMSystem: @unchecked Sendable {
    public let fd: Int32
    /// Size of each vCPU's shared `struct kvm_run` mapping (KVM_GET_VCPU_MMAP_SIZE).
    public let vcpuMmapSize: Int

    /// Opens `path` and checks the API version is 12 (KVM_GET_API_VERSION) and that
    /// KVM_CAP_IMMEDIATE_EXIT is there (needed for race-free kicks).
    public init(path: String = "/dev/kvm") throws {
        let fd = open(path, O_RDWR | O_CLOEXEC)
        if fd < 0 { throw KVMError(call: "open", errno: errno, context: "cannot open \(path)") }
        self.fd = fd
        // Sound: KVM_GET_API_VERSION takes no argument.
        let version = try kvmIoctlInt(fd, gvm_KVM_GET_API_VERSION(), "KVM_GET_API_VERSION", 0)
        if version != 12 {
            close(fd)
            throw KVMError(call: "KVM_GET_API_VERSION", errno: EINVAL, context: "API version \(version), expected 12")
        }
        // Sound: KVM_GET_VCPU_MMAP_SIZE takes no argument.
        vcpuMmapSize = Int(try kvmIoctlInt(fd, gvm_KVM_GET_VCPU_MMAP_SIZE(), "KVM_GET_VCPU_MMAP_SIZE", 0))
        if try check(.immediateExit) == 0 {
            close(fd)
            throw KVMError(call: "KVM_CHECK_EXTENSION", errno: ENOTSUP,
                           context: "KVM_CAP_IMMEDIATE_EXIT is missing: vCPU kicks could be lost")
        }
    }

    deinit { close(fd) }

    /// KVM_CHECK_EXTENSION: 0 when absent, otherwise a capability-specific value.
    public func check(_ cap: Capability) throws -> Int32 {
        // Sound: the argument is an integer capability number.
        try kvmIoctlInt(fd, gvm_KVM_CHECK_EXTENSION(), "KVM_CHECK_EXTENSION", UInt(cap.raw))
    }

    /// KVM_GET_SUPPORTED_CPUID: what this host's KVM can offer a guest.
    public func supportedCPUID() throws -> [CPUIDEntry] {
        var n: UInt32 = 128
        while true {
            guard let c = gvm_cpuid2_alloc(n) else { throw KVMError(call: "KVM_GET_SUPPORTED_CPUID", errno: ENOMEM) }
            defer { free(c) }
            // Sound: c points to a kvm_cpuid2 with room for c.nent entries, as the ioctl requires.
            let rc = gvm_ioctl_ptr(fd, gvm_KVM_GET_SUPPORTED_CPUID(), c)
            if rc < 0 {
                let e = gvm_errno()
                if e == E2BIG && n < 4096 { n *= 2; continue }
                throw KVMError(call: "KVM_GET_SUPPORTED_CPUID", errno: e)
            }
            let entries = gvm_cpuid2_entries(c)!
            return (0..<Int(c.pointee.nent)).map { CPUIDEntry(entries[$0]) }
        }
    }

    /// KVM_CREATE_VM (default machine type).
    public func createVM() throws -> VirtualMachine {
        // Sound: the argument is the machine type (0 = default).
        let vmfd = try kvmIoctlInt(fd, gvm_KVM_CREATE_VM(), "KVM_CREATE_VM", 0)
        return VirtualMachine(system: self, fd: vmfd)
    }
}
