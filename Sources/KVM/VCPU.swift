import CSystem
import Glibc
import Synchronization

/// Why KVM_RUN returned (kvm_run.exit_reason, decoded). Buffers in `.io`/`.mmio` point into the
/// vCPU's kvm_run page and are valid until the next `run()`.
public enum VCPUExit {
    /// KVM_EXIT_IO. `data` holds size*count bytes (rep ins/outs give count > 1); for an IN,
    /// fill it before the next run.
    case io(port: UInt16, size: Int, count: Int, isWrite: Bool, data: UnsafeMutableRawBufferPointer)
    /// KVM_EXIT_MMIO. For a read, fill `data` before the next run.
    case mmio(address: UInt64, isWrite: Bool, data: UnsafeMutableRawBufferPointer)
    /// KVM_EXIT_HLT
    case hlt
    /// KVM_EXIT_IRQ_WINDOW_OPEN: the guest can take an interrupt now.
    case interruptWindowOpen
    /// KVM_RUN returned EINTR (a kick, or immediate_exit was set), or KVM_EXIT_INTR.
    case interrupted
    /// KVM_EXIT_SHUTDOWN: triple fault (or a shutdown the guest asked for).
    case shutdown
    /// KVM_EXIT_FAIL_ENTRY
    case failEntry(hardwareReason: UInt64)
    /// KVM_EXIT_INTERNAL_ERROR (suberror 1 = emulation failure).
    case internalError(suberror: UInt32, data: [UInt64])
    /// KVM_EXIT_SYSTEM_EVENT (shutdown/reset/crash)
    case systemEvent(type: UInt32)
    /// KVM_EXIT_EXCEPTION
    case exception(vector: UInt32, errorCode: UInt32)
    /// KVM_EXIT_DEBUG
    case debug
    /// KVM_EXIT_HYPERCALL
    case hypercall(number: UInt64)
    /// KVM_EXIT_X86_RDMSR / KVM_EXIT_X86_WRMSR (after `VirtualMachine.enableUserSpaceMSRs`): an
    /// RDMSR or WRMSR KVM would refuse (`reason`: KVM_MSR_EXIT_REASON_*). Answer with
    /// `completeMSR` before the next run.
    case rdmsr(index: UInt32, reason: UInt32)
    case wrmsr(index: UInt32, value: UInt64, reason: UInt32)
    /// Any other exit reason.
    case unknown(reason: UInt32)
}

/// One virtual CPU. Threading: every method except `kick` must be called on the thread that
/// runs the vCPU (KVM requires vCPU ioctls from one thread at a time, and the kvm_run fields are
/// not synchronised). `kick` may be called from any thread.
public final class VCPU: @unchecked Sendable {
    public let vm: VirtualMachine
    public let id: UInt32
    let fd: Int32
    let run: UnsafeMutablePointer<kvm_run>
    let runSize: Int
    private let thread = Mutex<pthread_t?>(nil)
    /// The exit `runOnce` last returned is one whose instruction KVM finishes only at the next
    /// KVM_RUN (I/O, MMIO, user-space RDMSR/WRMSR): kvm_run still describes it. Only the vCPU's thread.
    private var exitOwesCompletion = false

    /// The signal that kicks vCPU threads (SIGRTMIN); `installKickHandler()` installs its handler.
    public static var kickSignal: Int32 { gvm_sigrtmin() }

    init(vm: VirtualMachine, id: UInt32, fd: Int32, run: UnsafeMutableRawPointer, runSize: Int) {
        self.vm = vm
        self.id = id
        self.fd = fd
        self.run = run.assumingMemoryBound(to: kvm_run.self)
        self.runSize = runSize
    }

    deinit {
        munmap(UnsafeMutableRawPointer(run), runSize)
        close(fd)
    }

    /// Installs a no-op handler for the kick signal, process-wide, without SA_RESTART.
    public static func installKickHandler() throws {
        if gvm_install_kick_handler(kickSignal) != 0 {
            throw KVMError(call: "sigaction", errno: gvm_errno(), context: "installing the vCPU kick handler")
        }
    }

    /// Records the calling thread as this vCPU's thread (so `kick` can signal it) and unblocks
    /// the kick signal on it.
    public func bindToCurrentThread() {
        _ = gvm_unblock_signal(VCPU.kickSignal)
        thread.withLock { $0 = pthread_self() }
    }

    public func unbindThread() { thread.withLock { $0 = nil } }

    /// Forces the vCPU out of KVM_RUN (or makes its next KVM_RUN return at once): sets
    /// kvm_run.immediate_exit and signals its thread. Any thread.
    public func kick() {
        gvm_run_set_immediate_exit(run, 1)
        thread.withLock { t in
            if let t { _ = pthread_kill(t, VCPU.kickSignal) }
        }
    }

    /// Clears kvm_run.immediate_exit; call on the vCPU thread right after a run returns and
    /// before looking at pending work, so a kick arriving later is not lost.
    public func clearImmediateExit() { gvm_run_set_immediate_exit(run, 0) }

    /// KVM_RUN once, decoding the exit.
    public func runOnce() throws -> VCPUExit {
        // Sound: KVM_RUN takes no argument; results land in the mmapped kvm_run page we own.
        let rc = gvm_ioctl_int(fd, gvm_KVM_RUN(), 0)
        exitOwesCompletion = false
        if rc < 0 {
            let e = gvm_errno()
            if e == EINTR || e == EAGAIN { return .interrupted }
            throw KVMError(call: "KVM_RUN", errno: e, context: "vCPU \(id)")
        }
        let r = run
        switch Int32(gvm_run_exit_reason(r)) {
        case KVM_EXIT_IO:
            exitOwesCompletion = true
            let size = Int(gvm_run_io_size(r)), count = Int(gvm_run_io_count(r))
            let base = UnsafeMutableRawPointer(r) + Int(gvm_run_io_data_offset(r))
            return .io(port: gvm_run_io_port(r), size: size, count: count,
                       isWrite: gvm_run_io_direction(r) == UInt8(KVM_EXIT_IO_OUT),
                       data: UnsafeMutableRawBufferPointer(start: base, count: size * count))
        case KVM_EXIT_MMIO:
            exitOwesCompletion = true
            let len = Int(min(gvm_run_mmio_len(r), 8))
            return .mmio(address: gvm_run_mmio_phys_addr(r), isWrite: gvm_run_mmio_is_write(r) != 0,
                         data: UnsafeMutableRawBufferPointer(start: gvm_run_mmio_data(r), count: len))
        case KVM_EXIT_HLT: return .hlt
        case KVM_EXIT_IRQ_WINDOW_OPEN: return .interruptWindowOpen
        case KVM_EXIT_INTR: return .interrupted
        case KVM_EXIT_SHUTDOWN: return .shutdown
        case KVM_EXIT_FAIL_ENTRY: return .failEntry(hardwareReason: gvm_run_fail_entry_reason(r))
        case KVM_EXIT_INTERNAL_ERROR:
            let n = min(gvm_run_internal_ndata(r), 16)
            return .internalError(suberror: gvm_run_internal_suberror(r),
                                  data: (0..<n).map { gvm_run_internal_data(r, $0) })
        case KVM_EXIT_SYSTEM_EVENT: return .systemEvent(type: gvm_run_system_event_type(r))
        case KVM_EXIT_EXCEPTION: return .exception(vector: gvm_run_ex_exception(r), errorCode: gvm_run_ex_error_code(r))
        case KVM_EXIT_DEBUG: return .debug
        case KVM_EXIT_HYPERCALL: return .hypercall(number: gvm_run_hypercall_nr(r))
        case gvm_KVM_EXIT_X86_RDMSR():
            exitOwesCompletion = true
            return .rdmsr(index: gvm_run_msr_index(r), reason: gvm_run_msr_reason(r))
        case gvm_KVM_EXIT_X86_WRMSR():
            exitOwesCompletion = true
            return .wrmsr(index: gvm_run_msr_index(r), value: gvm_run_msr_data(r), reason: gvm_run_msr_reason(r))
        default: return .unknown(reason: gvm_run_exit_reason(r))
        }
    }

    /// The last exit left its instruction for KVM to finish at the next KVM_RUN (see
    /// `finishPendingExit`): what kind of exit it was, nil when nothing is pending.
    public var pendingExit: String? {
        guard exitOwesCompletion else { return nil }
        switch Int32(gvm_run_exit_reason(run)) {
        case KVM_EXIT_IO: return "I/O (KVM_EXIT_IO)"
        case KVM_EXIT_MMIO: return "MMIO (KVM_EXIT_MMIO)"
        default: return "MSR (KVM_EXIT_X86_RDMSR/WRMSR)"
        }
    }

    /// Lets KVM finish the instruction the last exit left half done, without running the guest
    /// further: KVM_RUN with kvm_run.immediate_exit set. For an I/O, MMIO or user-space MSR exit
    /// KVM completes the instruction only on re-entry (the value read lands in its register, RIP
    /// moves past it) and keeps that pending work where KVM_GET_* cannot see it, so registers read
    /// before are those of an unfinished instruction, and registers loaded before are overwritten
    /// by its completion (KVM API, "KVM_RUN": complete before a migration with immediate_exit).
    /// Returns `.interrupted` when done, or the next exit the same instruction needs (a string
    /// I/O or split MMIO access continuing), which must be handled and finished in turn.
    public func finishPendingExit() throws -> VCPUExit {
        guard exitOwesCompletion else { return .interrupted }
        gvm_run_set_immediate_exit(run, 1)
        defer { gvm_run_set_immediate_exit(run, 0) }
        return try runOnce()
    }

    // ---- kvm_run fields for interrupt injection without an in-kernel APIC --------------------

    /// kvm_run.ready_for_interrupt_injection after the last exit.
    public var readyForInterruptInjection: Bool { gvm_run_ready_for_interrupt_injection(run) != 0 }
    /// kvm_run.if_flag after the last exit (the guest's RFLAGS.IF).
    public var interruptFlag: Bool { gvm_run_if_flag(run) != 0 }
    /// kvm_run.cr8: read after an exit; written before entry (KVM loads it into CR8 on every
    /// KVM_RUN when the local APIC is in user space).
    public var cr8: UInt64 {
        get { gvm_run_cr8(run) }
        set { gvm_run_set_cr8(run, newValue) }
    }
    /// kvm_run.apic_base after the last exit: IA32_APIC_BASE as KVM holds it (KVM handles the
    /// WRMSR itself, checking reserved bits and mode transitions; the VMM sees the result here).
    public var apicBase: UInt64 { gvm_run_apic_base(run) }
    /// Answers the `.rdmsr`/`.wrmsr` exit just returned: `failed` raises #GP in the guest;
    /// `value` is what an RDMSR reads.
    public func completeMSR(value: UInt64, failed: Bool) { gvm_run_msr_complete(run, failed ? 1 : 0, value) }
    /// kvm_run.request_interrupt_window
    public func requestInterruptWindow(_ on: Bool) { gvm_run_set_request_interrupt_window(run, on ? 1 : 0) }

    /// KVM_INTERRUPT: queue external interrupt `vector` for the next entry. One vector at a time:
    /// only call when `readyForInterruptInjection && interruptFlag`.
    public func interrupt(vector: UInt8) throws {
        var irq = kvm_interrupt(irq: UInt32(vector))
        // Sound: irq is a kvm_interrupt on the stack.
        _ = try kvmIoctl(fd, gvm_KVM_INTERRUPT(), "KVM_INTERRUPT", &irq, context: "vCPU \(id) vector \(vector)")
    }

    /// KVM_NMI: queue an NMI.
    public func nmi() throws {
        // Sound: KVM_NMI takes no argument.
        _ = try kvmIoctlInt(fd, gvm_KVM_NMI(), "KVM_NMI", 0, context: "vCPU \(id)")
    }

    // ---- registers -----------------------------------------------------------------------------

    public func registers() throws -> Registers {
        var r = kvm_regs()
        // Sound: r is a kvm_regs on the stack, filled by the kernel.
        _ = try kvmIoctl(fd, gvm_KVM_GET_REGS(), "KVM_GET_REGS", &r, context: "vCPU \(id)")
        return Registers(r)
    }

    public func setRegisters(_ regs: Registers) throws {
        var r = regs.raw
        // Sound: r is a fully initialised kvm_regs on the stack.
        _ = try kvmIoctl(fd, gvm_KVM_SET_REGS(), "KVM_SET_REGS", &r, context: "vCPU \(id)")
    }

    public func specialRegisters() throws -> SpecialRegisters {
        var s = kvm_sregs()
        // Sound: s is a kvm_sregs on the stack, filled by the kernel.
        _ = try kvmIoctl(fd, gvm_KVM_GET_SREGS(), "KVM_GET_SREGS", &s, context: "vCPU \(id)")
        return SpecialRegisters(s)
    }

    public func setSpecialRegisters(_ sregs: SpecialRegisters) throws {
        var s = sregs.raw
        // Sound: s is a fully initialised kvm_sregs on the stack.
        _ = try kvmIoctl(fd, gvm_KVM_SET_SREGS(), "KVM_SET_SREGS", &s, context: "vCPU \(id)")
    }

    /// Resets the x87/SSE state to its power-on values (FCW 0x37F, MXCSR 0x1F80) (KVM_SET_FPU).
    public func resetFPU() throws {
        var f = kvm_fpu()
        f.fcw = 0x37F
        f.mxcsr = 0x1F80
        // Sound: f is a fully initialised kvm_fpu on the stack.
        _ = try kvmIoctl(fd, gvm_KVM_SET_FPU(), "KVM_SET_FPU", &f, context: "vCPU \(id)")
    }

    /// KVM_SET_CPUID2
    public func setCPUID(_ entries: [CPUIDEntry]) throws {
        guard let c = gvm_cpuid2_alloc(UInt32(entries.count)) else { throw KVMError(call: "KVM_SET_CPUID2", errno: ENOMEM) }
        defer { free(c) }
        let p = gvm_cpuid2_entries(c)!
        for (i, e) in entries.enumerated() { p[i] = e.raw }
        // Sound: c is a kvm_cpuid2 holding c.nent initialised entries.
        _ = try kvmIoctl(fd, gvm_KVM_SET_CPUID2(), "KVM_SET_CPUID2", c, context: "vCPU \(id), \(entries.count) leaves")
    }

    /// KVM_SET_MSRS: all or nothing (a partial write is reported naming the first MSR refused).
    public func setMSRs(_ msrs: [(index: UInt32, value: UInt64)]) throws {
        guard let m = gvm_msrs_alloc(UInt32(msrs.count)) else { throw KVMError(call: "KVM_SET_MSRS", errno: ENOMEM) }
        defer { free(m) }
        let p = gvm_msrs_entries(m)!
        for (i, e) in msrs.enumerated() { p[i] = kvm_msr_entry(index: e.index, reserved: 0, data: e.value) }
        // Sound: m is a kvm_msrs holding m.nmsrs initialised entries.
        let n = try kvmIoctl(fd, gvm_KVM_SET_MSRS(), "KVM_SET_MSRS", m, context: "vCPU \(id)")
        if Int(n) < msrs.count {
            throw KVMError(call: "KVM_SET_MSRS", errno: EINVAL,
                           context: "vCPU \(id): MSR 0x\(String(msrs[Int(n)].index, radix: 16)) refused")
        }
    }

    /// KVM_GET_MSRS
    public func msrs(_ indices: [UInt32]) throws -> [UInt64] {
        guard let m = gvm_msrs_alloc(UInt32(indices.count)) else { throw KVMError(call: "KVM_GET_MSRS", errno: ENOMEM) }
        defer { free(m) }
        let p = gvm_msrs_entries(m)!
        for (i, idx) in indices.enumerated() { p[i] = kvm_msr_entry(index: idx, reserved: 0, data: 0) }
        // Sound: m is a kvm_msrs holding m.nmsrs entries with their indices set.
        let n = try kvmIoctl(fd, gvm_KVM_GET_MSRS(), "KVM_GET_MSRS", m, context: "vCPU \(id)")
        if Int(n) < indices.count {
            throw KVMError(call: "KVM_GET_MSRS", errno: EINVAL,
                           context: "vCPU \(id): MSR 0x\(String(indices[Int(n)], radix: 16)) refused")
        }
        return (0..<indices.count).map { p[$0].data }
    }

    /// KVM_GET_TSC_KHZ: the guest TSC frequency in kHz.
    public func tscKHz() throws -> UInt32 {
        // Sound: KVM_GET_TSC_KHZ takes no argument and returns the value.
        UInt32(try kvmIoctlInt(fd, gvm_KVM_GET_TSC_KHZ(), "KVM_GET_TSC_KHZ", 0, context: "vCPU \(id)"))
    }
}
