// KVM: a typed layer over the /dev/kvm ioctls. Every ioctl is wrapped exactly once, in this
// target; nothing above it touches a request number or a raw kvm_* struct.
import CSystem
import Glibc

/// A failed KVM call: names the ioctl (the C constant, e.g. "KVM_RUN"), the errno and what was
/// being done.
public struct KVMError: Error, CustomStringConvertible, Equatable {
    public var call: String
    public var errno: Int32
    public var context: String

    public init(call: String, errno: Int32, context: String = "") {
        self.call = call
        self.errno = errno
        self.context = context
    }

    public var errnoName: String {
        switch errno {
        case EINTR: return "EINTR"
        case EINVAL: return "EINVAL"
        case ENOENT: return "ENOENT"
        case EFAULT: return "EFAULT"
        case E2BIG: return "E2BIG"
        case ENOMEM: return "ENOMEM"
        case EEXIST: return "EEXIST"
        case EBUSY: return "EBUSY"
        case EAGAIN: return "EAGAIN"
        case EPERM: return "EPERM"
        case EACCES: return "EACCES"
        case ENXIO: return "ENXIO"
        case ENOTTY: return "ENOTTY"
        case EBADF: return "EBADF"
        case ENODEV: return "ENODEV"
        case EOPNOTSUPP: return "EOPNOTSUPP"
        default: return "errno \(errno)"
        }
    }

    public var description: String {
        let msg = String(cString: strerror(errno))
        return "\(call) failed: \(errnoName) (\(msg))" + (context.isEmpty ? "" : " — \(context)")
    }
}

/// Issues ioctl(fd, request, arg) and turns -1 into a KVMError naming `name`.
@inline(__always)
func kvmIoctl(_ fd: Int32, _ request: UInt, _ name: String, _ arg: UnsafeMutableRawPointer?,
              context: @autoclosure () -> String = "") throws -> Int32 {
    let rc = gvm_ioctl_ptr(fd, request, arg)
    if rc < 0 { throw KVMError(call: name, errno: gvm_errno(), context: context()) }
    return rc
}

@inline(__always)
func kvmIoctlInt(_ fd: Int32, _ request: UInt, _ name: String, _ arg: UInt,
                 context: @autoclosure () -> String = "") throws -> Int32 {
    let rc = gvm_ioctl_int(fd, request, arg)
    if rc < 0 { throw KVMError(call: name, errno: gvm_errno(), context: context()) }
    return rc
}
