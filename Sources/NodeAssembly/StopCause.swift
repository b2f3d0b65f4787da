// Why a node (and with it the VM or the benchmark) stopped, and the process exit status each
// cause maps to: one place for `giantvm run`, `giantvm node`, `giantvm up` and `bench dsm`.
//
// Exit statuses (documented in the README and `giantvm run --help`):
//   0         the guest wrote 0 to isa-debug-exit (status 1), or a clean finish (--duration,
//             a benchmark that finished)
//   1         bad config, image, plugin or device; a lost or failed peer
//   2         a vCPU failed (triple fault, emulation failure, KVM error) or a plugin called fatal
//   3         the guest asked for a reset (i8042 pulse, port 0xCF9)
//   32+v      the guest wrote v != 0 to isa-debug-exit (127 for v >= 95)
//   124       --timeout
//   128+n     stopped by signal n (130 for Ctrl-C)

import Cluster
import Glibc

public enum StopCause: Equatable, Sendable, CustomStringConvertible {
    /// The guest wrote to the exit device: `status` as the device reports it (isa-debug-exit:
    /// value << 1 | 1; 0x100 for a reset request). `detail` names the device.
    case guestExit(status: Int32, detail: String)
    /// --timeout passed.
    case timeout(seconds: Double)
    /// A clean end that is not the guest's: --duration, a finished benchmark.
    case finished(String)
    /// A peer was lost (crashed, hung, unreachable) or stopped with a failure.
    case peerLost(node: UInt32, cause: String)
    /// A vCPU failed on `node`.
    case vcpuFailure(node: UInt32, String)
    /// A plugin (coherence, device, transport) or guest memory called fatal.
    case pluginFatal(plugin: String, String)
    /// SIGINT, SIGTERM.
    case signal(Int32)
    /// Configuration, image, plugin or device set-up failed on `node`.
    case setupFailed(node: UInt32, String)

    public static let guestResetStatus: Int32 = 0x100

    /// The process exit status for this cause.
    public var exitStatus: Int32 {
        switch self {
        case let .guestExit(status, _):
            if status == 1 { return 0 }
            if status == Self.guestResetStatus { return 3 }
            guard status & 1 == 1 else { return 127 }
            return 32 + Int32(min(UInt32(bitPattern: status) >> 1, 95))
        case .timeout: return 124
        case .finished: return 0
        case .peerLost, .setupFailed: return 1
        case .vcpuFailure, .pluginFatal: return 2
        case let .signal(n): return 128 + n
        }
    }

    public var description: String {
        switch self {
        case let .guestExit(status, detail):
            if status == 1 { return "guest passed (isa-debug-exit value 0, status 1) [\(detail)]" }
            if status == Self.guestResetStatus { return "guest requested a reset (i8042 pulse or 0xCF9); the VM stopped [\(detail)]" }
            guard status & 1 == 1 else { return "guest stopped with status \(status) (not an isa-debug-exit status) [\(detail)]" }
            let v = UInt32(bitPattern: status) >> 1
            return "guest failed: isa-debug-exit value \(v) (status \(status)); giantvm exits \(exitStatus) [\(detail)]"
        case let .timeout(s): return "timed out after \(s) s"
        case let .finished(why): return why
        case let .peerLost(node, cause): return "lost node \(node): \(cause)"
        case let .vcpuFailure(node, why): return "VM failed on node \(node): \(why)"
        case let .pluginFatal(plugin, why): return "\(plugin) fatal: \(why)"
        case let .signal(n):
            switch n {
            case SIGINT: return "interrupted (SIGINT)"
            case SIGTERM: return "interrupted (SIGTERM)"
            default: return "interrupted by signal \(n)"
            }
        case let .setupFailed(node, why): return "node \(node): start-up failed: \(why)"
        }
    }

    /// The cluster-wide stop this cause becomes (its status travels to every node).
    public func stopReason(origin: UInt32) -> StopReason {
        var lost: UInt32?
        if case let .peerLost(n, _) = self { lost = n }
        return StopReason(status: exitStatus, message: description, origin: origin, lostNode: lost)
    }

    /// A status for exit(2): 1...255 for failures (0 only for success).
    public static func processStatus(_ status: Int32) -> Int32 {
        status == 0 ? 0 : (status > 0 && status < 256 ? status : 1)
    }
}
