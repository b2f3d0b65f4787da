// kvmclock: KVM's paravirtual clock (Documentation/virt/kvm/x86/msr.rst, cpuid.rst). A guest that
// finds the KVM signature leaf with KVM_FEATURE_CLOCKSOURCE2 writes MSR_KVM_SYSTEM_TIME_NEW with
// the guest-physical address of a per-vCPU `pvclock_vcpu_time_info` (bit 0 = enable); KVM then
// keeps that structure up to date in guest memory (version, tsc_timestamp, system_time,
// tsc_to_system_mul, tsc_shift, flags), and the guest reads
//     time = system_time + scale(tsc - tsc_timestamp)
// under the version protocol (odd: being written, retry). MSR_KVM_WALL_CLOCK_NEW makes KVM write
// the wall-clock time at kvmclock 0 (`pvclock_wall_clock`). Both MSRs are handled in the kernel.
//
// The VM-wide clock behind system_time is KVM_GET_CLOCK / KVM_SET_CLOCK: clock alignment sets it
// on every node so kvmclock agrees across nodes (Distributed/ClockAlignment.swift).
//
// Whether this host's KVM really runs kvmclock is probed once per process (`KVMClockProbe`): a
// probe VM enables it from ring 0, and the pvclock structure KVM wrote, read at the guest's own
// TSC, must give a time between two KVM_GET_CLOCK readings taken around the run.
//
// Threading: the VM ioctls any thread; the probe on the calling thread (cached afterwards).
import CSystem
import Glibc
import Synchronization

/// KVM's paravirtual CPUID leaves and MSRs that kvmclock needs.
public enum KVMParavirt {
    /// "KVMKVMKVM\0\0\0" as EBX, ECX, EDX of the signature leaf.
    public static let signature: (ebx: UInt32, ecx: UInt32, edx: UInt32) = (0x4B4D_564B, 0x564B_4D56, 0x0000_004D)
    /// KVM_FEATURE_CLOCKSOURCE2 (EAX of base + 1): the MSRs at 0x4b564d00/01.
    public static let featureClocksource2: UInt32 = 1 << 3
    /// KVM_FEATURE_CLOCKSOURCE_STABLE_BIT: the guest may trust PVCLOCK_TSC_STABLE_BIT in the
    /// pvclock flags (every vCPU's clock is one clock: no cross-vCPU monotonicity guard needed).
    public static let featureClocksourceStable: UInt32 = 1 << 24
    public static let msrWallClockNew: UInt32 = 0x4B56_4D00
    public static let msrSystemTimeNew: UInt32 = 0x4B56_4D01

    /// The hypervisor base (0x40000000 + 0x100 n, as guests search) whose leaf carries KVM's
    /// signature in `cpuid`, if any.
    public static func base(in cpuid: [CPUIDEntry]) -> UInt32? {
        cpuid.first {
            $0.function >= 0x4000_0000 && $0.function < 0x4001_0000 && $0.function & 0xFF == 0
                && $0.ebx == signature.ebx && $0.ecx == signature.ecx && $0.edx == signature.edx
        }?.function
    }

    /// KVM's feature bits (EAX of base + 1) in `cpuid`: 0 without a KVM signature leaf.
    public static func features(in cpuid: [CPUIDEntry]) -> UInt32 {
        guard let b = base(in: cpuid) else { return 0 }
        return cpuid.first { $0.function == b + 1 }?.eax ?? 0
    }
}

/// A `pvclock_vcpu_time_info` as KVM writes it (32 bytes), and the guest's reading of it.
public struct PVClockTimeInfo: Sendable, Equatable {
    public var version: UInt32
    public var tscTimestamp: UInt64
    public var systemTime: UInt64
    public var tscToSystemMul: UInt32
    public var tscShift: Int8
    public var flags: UInt8
    /// PVCLOCK_TSC_STABLE_BIT in `flags`.
    public static let tscStableFlag: UInt8 = 1

    /// Parses the 32 bytes at `p`.
    public init(_ p: UnsafeRawPointer) {
        version = p.loadUnaligned(fromByteOffset: 0, as: UInt32.self)
        tscTimestamp = p.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
        systemTime = p.loadUnaligned(fromByteOffset: 16, as: UInt64.self)
        tscToSystemMul = p.loadUnaligned(fromByteOffset: 24, as: UInt32.self)
        tscShift = p.loadUnaligned(fromByteOffset: 28, as: Int8.self)
        flags = p.loadUnaligned(fromByteOffset: 29, as: UInt8.self)
    }

    public init(version: UInt32, tscTimestamp: UInt64, systemTime: UInt64, tscToSystemMul: UInt32, tscShift: Int8, flags: UInt8) {
        self.version = version; self.tscTimestamp = tscTimestamp; self.systemTime = systemTime
        self.tscToSystemMul = tscToSystemMul; self.tscShift = tscShift; self.flags = flags
    }

    /// The clock (ns) at guest TSC `tsc`: system_time + ((tsc - tsc_timestamp) << shift) * mul / 2^32
    /// (a right shift for a negative tsc_shift), as the guest computes it. A TSC before the
    /// timestamp gives system_time (the delta is unsigned in the protocol; a negative one is a
    /// guest reading an older TSC, clamped here). A shift outside -32...31 is not KVM's: nil.
    public func nanoseconds(atTSC tsc: UInt64) -> UInt64? {
        guard tscShift >= -32 && tscShift <= 31 else { return nil }
        var delta = tsc >= tscTimestamp ? tsc - tscTimestamp : 0
        if tscShift < 0 { delta >>= UInt64(-Int(tscShift)) } else { delta = delta << UInt64(tscShift) }
        let product = delta.multipliedFullWidth(by: UInt64(tscToSystemMul))
        return systemTime &+ (product.high << 32 | product.low >> 32)
    }
}

/// One reading of a VM's kvmclock with the host TSC it belongs to.
public struct KVMClockReading: Sendable, Equatable {
    /// The VM's kvmclock (ns).
    public var nanoseconds: UInt64
    /// The host TSC at that moment: KVM's own (exact) when the kernel returns it
    /// (KVM_CLOCK_HOST_TSC, a TSC-clocksource host with KVM's master clock), else half-way
    /// between two RDTSCs taken around the ioctl.
    public var hostTSC: UInt64
    /// How far `hostTSC` may be off (ticks): 0 when exact, else half the bracket.
    public var uncertaintyTicks: UInt64
}

extension VirtualMachine {
    /// Whether this KVM has KVM_GET_CLOCK / KVM_SET_CLOCK (KVM_CAP_ADJUST_CLOCK).
    public var hasAdjustableClock: Bool {
        // Sound: an integer capability number.
        ((try? kvmIoctlInt(system.fd, gvm_KVM_CHECK_EXTENSION(), "KVM_CHECK_EXTENSION", UInt(gvm_KVM_CAP_ADJUST_CLOCK()))) ?? 0) != 0
    }

    /// KVM_GET_CLOCK with the host TSC it was read at.
    public func kvmclock() throws -> KVMClockReading {
        var ns: UInt64 = 0, flags: UInt32 = 0, exact: UInt64 = 0
        let t0 = hostTSC()
        // Sound: the shim fills the three integers it is given pointers to.
        let rc = gvm_kvm_get_clock(fd, &ns, &flags, &exact)
        let t1 = hostTSC()
        if rc != 0 { throw KVMError(call: "KVM_GET_CLOCK", errno: -rc) }
        if exact != 0 { return KVMClockReading(nanoseconds: ns, hostTSC: exact, uncertaintyTicks: 0) }
        let spread = t1 >= t0 ? t1 - t0 : 0
        return KVMClockReading(nanoseconds: ns, hostTSC: t0 &+ spread / 2, uncertaintyTicks: spread / 2)
    }

    /// KVM_SET_CLOCK: the VM's kvmclock reads `nanoseconds` now; every vCPU rewrites its pvclock
    /// structure at its next entry.
    public func setKVMClock(_ nanoseconds: UInt64) throws {
        let rc = gvm_kvm_set_clock(fd, nanoseconds)
        if rc != 0 { throw KVMError(call: "KVM_SET_CLOCK", errno: -rc, context: "clock \(nanoseconds) ns") }
    }
}

/// Whether kvmclock works on this host's KVM, and why not.
public struct KVMClockSupport: Sendable, Equatable {
    public var works: Bool
    /// What the probe saw (one line for the log).
    public var detail: String
    /// The KVM feature bits KVM supports (EAX of its base + 1).
    public var kvmFeatures: UInt32
}

public enum KVMClockProbe {
    private static let cached = Mutex<KVMClockSupport?>(nil)

    /// The probe's result for this host (run once per process).
    public static func support(kvm: KVMSystem, supported: [CPUIDEntry]) -> KVMClockSupport {
        if let r = cached.withLock({ $0 }) { return r }
        let r = run(kvm: kvm, supported: supported)
        cached.withLock { $0 = r }
        return r
    }

    static let pvclockAt: UInt64 = 0xB000
    static let wallAt: UInt64 = 0xB100
    static let tscAt: UInt64 = 0xB200

    /// Ring-0 code: wrmsr SYSTEM_TIME_NEW := pvclockAt | 1, wrmsr WALL_CLOCK_NEW := wallAt,
    /// rdtsc into [tscAt], hlt.
    static var code: [UInt8] {
        func imm32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * UInt32($0))) } }
        return [0xB9] + imm32(KVMParavirt.msrSystemTimeNew) + [0xB8] + imm32(UInt32(pvclockAt | 1)) + [0x31, 0xD2, 0x0F, 0x30]
            + [0xB9] + imm32(KVMParavirt.msrWallClockNew) + [0xB8] + imm32(UInt32(wallAt)) + [0x31, 0xD2, 0x0F, 0x30]
            + [0x0F, 0x31]                                                     // rdtsc
            + [0x89, 0x04, 0x25] + imm32(UInt32(tscAt))                        // mov [tscAt], eax
            + [0x89, 0x14, 0x25] + imm32(UInt32(tscAt + 4))                    // mov [tscAt+4], edx
    }

    static func run(kvm: KVMSystem, supported: [CPUIDEntry]) -> KVMClockSupport {
        let features = KVMParavirt.features(in: supported)
        guard features & KVMParavirt.featureClocksource2 != 0 else {
            return KVMClockSupport(works: false, detail: "KVM's supported CPUID has no KVM_FEATURE_CLOCKSOURCE2", kvmFeatures: features)
        }
        do {
            return try InstructionProbe.withProbeVM(kvm: kvm) { vm, mem in
                guard vm.hasAdjustableClock else {
                    return KVMClockSupport(works: false, detail: "no KVM_CAP_ADJUST_CLOCK (KVM_GET_CLOCK/KVM_SET_CLOCK)", kvmFeatures: features)
                }
                for (i, b) in code.enumerated() { mem.storeBytes(of: b, toByteOffset: Int(InstructionProbe.codeAt) + i, as: UInt8.self) }
                mem.storeBytes(of: UInt8(0xF4), toByteOffset: Int(InstructionProbe.codeAt) + code.count, as: UInt8.self)
                let v = try vm.createVCPU(id: 0)
                try v.setCPUID(supported)
                try v.setRegisters(try InstructionProbe.enterProbeCode(v, supported: supported))
                let before = try vm.kvmclock()
                if let why = try InstructionProbe.runOne(v, check: nil) {
                    return KVMClockSupport(works: false, detail: "the probe vCPU did not enable kvmclock: \(why)", kvmFeatures: features)
                }
                let after = try vm.kvmclock()
                let info = PVClockTimeInfo(mem + Int(pvclockAt))
                let guestTSC = mem.loadUnaligned(fromByteOffset: Int(tscAt), as: UInt64.self)
                let wallSec = mem.loadUnaligned(fromByteOffset: Int(wallAt) + 4, as: UInt32.self)
                guard info.version != 0 && info.version & 1 == 0 && info.tscToSystemMul != 0 else {
                    return KVMClockSupport(works: false, detail: "KVM did not write the pvclock structure (version \(info.version), mul \(info.tscToSystemMul))", kvmFeatures: features)
                }
                guard let ns = info.nanoseconds(atTSC: guestTSC) else {
                    return KVMClockSupport(works: false, detail: "pvclock tsc_shift \(info.tscShift) out of range", kvmFeatures: features)
                }
                // the guest's reading must fall between the two host readings (1 ms of slack for
                // the scale's rounding and the brackets)
                let slack: UInt64 = 1_000_000
                let low = before.nanoseconds > slack ? before.nanoseconds - slack : 0
                guard ns >= low && ns <= after.nanoseconds &+ slack else {
                    return KVMClockSupport(works: false, detail: "the guest's kvmclock reading \(ns) ns is outside KVM_GET_CLOCK's \(before.nanoseconds)...\(after.nanoseconds) ns", kvmFeatures: features)
                }
                guard wallSec >= 1_500_000_000 else {
                    return KVMClockSupport(works: false, detail: "the wall clock KVM wrote is implausible (\(wallSec) s since 1970)", kvmFeatures: features)
                }
                return KVMClockSupport(works: true, detail: "kvmclock works (guest read \(ns) ns within KVM_GET_CLOCK \(before.nanoseconds)...\(after.nanoseconds); mul \(info.tscToSystemMul) shift \(info.tscShift); flags \(info.flags)\(info.flags & PVClockTimeInfo.tscStableFlag != 0 ? " TSC-stable" : ""))",
                                       kvmFeatures: features)
            }
        } catch {
            return KVMClockSupport(works: false, detail: "the kvmclock probe could not run: \(error)", kvmFeatures: features)
        }
    }
}
