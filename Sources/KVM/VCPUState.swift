// The complete KVM-side state of one vCPU, as live migration moves it between nodes: general and
// special registers (with the pending-interrupt bitmap), the XSAVE area (x87/SSE/AVX; the legacy
// FPU area where the kernel lacks KVM_GET_XSAVE), XCR0, the vCPU events (pending or injected
// exception/interrupt/NMI, interrupt shadow, NMI mask), the debug registers and the MSRs the VMM
// exposes. The local APIC is not here: it is emulated in user space (Sources/Interrupts) and
// travels beside this.
//
// The kernel structures travel as their raw bytes (both ends run x86-64 Linux KVM); a blob whose
// size differs from this kernel's structure is refused with a named error, never reinterpreted.
// The TSC does not travel: clock alignment gives every vCPU of a node the same offset against
// node 0, so the guest TSC continues on the destination.
//
// Threading: capture and restore on the vCPU's own thread while it is out of KVM_RUN.
import CSystem
import Glibc

public struct VCPUState: Sendable, Equatable {
    /// struct kvm_regs.
    public var registers: [UInt8]
    /// struct kvm_sregs.
    public var specialRegisters: [UInt8]
    /// struct kvm_xsave when `xsave`, else struct kvm_fpu.
    public var fpu: [UInt8]
    public var xsave: Bool
    /// struct kvm_xcrs (empty when the kernel has no KVM_GET_XCRS).
    public var xcrs: [UInt8]
    /// struct kvm_vcpu_events.
    public var events: [UInt8]
    /// struct kvm_debugregs.
    public var debugRegisters: [UInt8]
    /// (index, value) of every MSR in `VCPUState.migratedMSRs` this KVM accepts.
    public var msrs: [MSRValue]

    public struct MSRValue: Sendable, Equatable {
        public var index: UInt32
        public var value: UInt64
        public init(index: UInt32, value: UInt64) { self.index = index; self.value = value }
    }

    /// The MSRs the VMM exposes to the guest and keeps in KVM (EFER, FS/GS base and APIC base
    /// travel in the special registers; the TSC is aligned per node, not copied).
    /// MSR_KVM_SYSTEM_TIME_NEW carries the vCPU's pvclock address and enable bit: written on the
    /// destination, it makes that node's KVM keep the vCPU's pvclock structure (kvmclock) up to
    /// date from its next entry (0, kvmclock off or not offered, restores as off).
    public static let migratedMSRs: [UInt32] = [
        MSR.sysenterCS, MSR.sysenterESP, MSR.sysenterEIP, MSR.star, MSR.lstar, MSR.cstar, MSR.sfmask,
        MSR.kernelGSBase, MSR.pat, MSR.miscEnable, 0xC000_0103 /* TSC_AUX */, KVMParavirt.msrSystemTimeNew,
    ]

    /// Bytes on the wire (the figure `giantvm migrate` reports).
    public var byteCount: Int {
        registers.count + specialRegisters.count + fpu.count + xcrs.count + events.count + debugRegisters.count + msrs.count * 12
    }

    /// Serialises: u8 xsave, then six u32-length-prefixed blobs, then u32 count { u32 index, u64 value }.
    public func encode(into out: inout [UInt8]) {
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        out.append(xsave ? 1 : 0)
        for b in [registers, specialRegisters, fpu, xcrs, events, debugRegisters] {
            u32(UInt32(b.count))
            out += b
        }
        u32(UInt32(msrs.count))
        for m in msrs { u32(m.index); u64(m.value) }
    }

    /// Parses what `encode` wrote, starting at `offset` (advanced past it). Every length is
    /// checked against the bytes present and against this kernel's structure sizes.
    public static func decode(_ b: [UInt8], offset: inout Int) throws -> VCPUState {
        func need(_ n: Int, _ what: String) throws {
            guard n >= 0, offset + n <= b.count else {
                throw KVMError(call: "vCPU state", errno: EINVAL, context: "truncated at \(what) (\(b.count - offset) bytes left, \(n) needed)")
            }
        }
        func u32(_ what: String) throws -> UInt32 {
            try need(4, what)
            var v: UInt32 = 0
            for i in 0..<4 { v |= UInt32(b[offset + i]) << (8 * UInt32(i)) }
            offset += 4
            return v
        }
        func u64(_ what: String) throws -> UInt64 {
            try need(8, what)
            var v: UInt64 = 0
            for i in 0..<8 { v |= UInt64(b[offset + i]) << (8 * UInt64(i)) }
            offset += 8
            return v
        }
        func blob(_ what: String, expected: Int?) throws -> [UInt8] {
            let n = Int(try u32(what))
            try need(n, what)
            if let expected, n != expected, !(n == 0 && what == "xcrs") {
                throw KVMError(call: "vCPU state", errno: EINVAL,
                               context: "\(what) is \(n) bytes; this kernel's structure is \(expected) (different KVM ABI)")
            }
            defer { offset += n }
            return Array(b[offset..<offset + n])
        }
        try need(1, "flags")
        let xsave = b[offset] == 1
        offset += 1
        let regs = try blob("kvm_regs", expected: MemoryLayout<kvm_regs>.size)
        let sregs = try blob("kvm_sregs", expected: MemoryLayout<kvm_sregs>.size)
        let fpu = try blob(xsave ? "kvm_xsave" : "kvm_fpu", expected: xsave ? gvm_sizeof_kvm_xsave() : gvm_sizeof_kvm_fpu())
        let xcrs = try blob("xcrs", expected: gvm_sizeof_kvm_xcrs())
        let events = try blob("kvm_vcpu_events", expected: gvm_sizeof_kvm_vcpu_events())
        let dregs = try blob("kvm_debugregs", expected: gvm_sizeof_kvm_debugregs())
        let count = Int(try u32("MSR count"))
        guard count <= 64 else { throw KVMError(call: "vCPU state", errno: EINVAL, context: "\(count) MSRs (at most 64)") }
        var msrs: [MSRValue] = []
        for _ in 0..<count { msrs.append(MSRValue(index: try u32("MSR index"), value: try u64("MSR value"))) }
        return VCPUState(registers: regs, specialRegisters: sregs, fpu: fpu, xsave: xsave, xcrs: xcrs, events: events,
                         debugRegisters: dregs, msrs: msrs)
    }
}

extension VCPU {
    /// Reads a kernel structure of `size` bytes with `request` into a byte array.
    private func getBlob(_ request: UInt, _ name: String, size: Int) throws -> [UInt8] {
        var b = [UInt8](repeating: 0, count: size)
        // Sound: b holds `size` bytes, the size of the structure this request fills.
        _ = try b.withUnsafeMutableBytes { try kvmIoctl(fd, request, name, $0.baseAddress, context: "vCPU \(id)") }
        return b
    }

    private func setBlob(_ request: UInt, _ name: String, _ bytes: [UInt8]) throws {
        var b = bytes
        // Sound: b is a structure of the size this request reads (checked by VCPUState.decode).
        _ = try b.withUnsafeMutableBytes { try kvmIoctl(fd, request, name, $0.baseAddress, context: "vCPU \(id)") }
    }

    /// The MSRs of `VCPUState.migratedMSRs` this KVM accepts (probed one by one when the batch
    /// read is refused).
    private func readMigratedMSRs() throws -> [VCPUState.MSRValue] {
        let all = VCPUState.migratedMSRs
        if let values = try? msrs(all) { return zip(all, values).map { .init(index: $0, value: $1) } }
        var out: [VCPUState.MSRValue] = []
        for i in all { if let v = try? msrs([i]) { out.append(.init(index: i, value: v[0])) } }
        return out
    }

    /// Refuses to read or replace the state while KVM still owes the last exit's instruction
    /// its completion (`finishPendingExit` first): captured, it would be an unfinished
    /// instruction's; loaded, the completion at the next KVM_RUN would overwrite RIP, RFLAGS and
    /// the register read into with the old instruction's.
    private func requireNoPendingExit(_ what: String) throws {
        if let p = pendingExit {
            throw KVMError(call: what, errno: EBUSY,
                           context: "vCPU \(id): the last exit (\(p)) is not complete; finish it with KVM_RUN and immediate_exit first")
        }
    }

    /// Captures everything KVM holds for this vCPU (see the file comment). Out of KVM_RUN, with
    /// no exit pending completion.
    public func captureState() throws -> VCPUState {
        try requireNoPendingExit("capture vCPU state")
        var r = kvm_regs()
        // Sound: r is a kvm_regs on the stack, filled by the kernel.
        _ = try kvmIoctl(fd, gvm_KVM_GET_REGS(), "KVM_GET_REGS", &r, context: "vCPU \(id)")
        var s = kvm_sregs()
        // Sound: s is a kvm_sregs on the stack, filled by the kernel.
        _ = try kvmIoctl(fd, gvm_KVM_GET_SREGS(), "KVM_GET_SREGS", &s, context: "vCPU \(id)")
        let regs = withUnsafeBytes(of: &r) { Array($0) }
        let sregs = withUnsafeBytes(of: &s) { Array($0) }
        var xsave = true
        let fpu: [UInt8]
        if let x = try? getBlob(gvm_KVM_GET_XSAVE(), "KVM_GET_XSAVE", size: gvm_sizeof_kvm_xsave()) {
            fpu = x
        } else {
            xsave = false
            fpu = try getBlob(gvm_KVM_GET_FPU(), "KVM_GET_FPU", size: gvm_sizeof_kvm_fpu())
        }
        let xcrs = (try? getBlob(gvm_KVM_GET_XCRS(), "KVM_GET_XCRS", size: gvm_sizeof_kvm_xcrs())) ?? []
        let events = try getBlob(gvm_KVM_GET_VCPU_EVENTS(), "KVM_GET_VCPU_EVENTS", size: gvm_sizeof_kvm_vcpu_events())
        let dregs = try getBlob(gvm_KVM_GET_DEBUGREGS(), "KVM_GET_DEBUGREGS", size: gvm_sizeof_kvm_debugregs())
        return VCPUState(registers: regs, specialRegisters: sregs, fpu: fpu, xsave: xsave, xcrs: xcrs, events: events,
                         debugRegisters: dregs, msrs: try readMigratedMSRs())
    }

    /// Loads a captured state into this vCPU (the order QEMU uses: registers, XSAVE, XCRs,
    /// special registers, MSRs, events, debug registers). Out of KVM_RUN, with no exit pending
    /// completion.
    public func restoreState(_ st: VCPUState) throws {
        try requireNoPendingExit("restore vCPU state")
        guard st.registers.count == MemoryLayout<kvm_regs>.size, st.specialRegisters.count == MemoryLayout<kvm_sregs>.size else {
            throw KVMError(call: "vCPU state", errno: EINVAL, context: "vCPU \(id): register blobs of the wrong size")
        }
        var r = kvm_regs()
        withUnsafeMutableBytes(of: &r) { $0.copyBytes(from: st.registers) }
        // Sound: r is a fully initialised kvm_regs on the stack.
        _ = try kvmIoctl(fd, gvm_KVM_SET_REGS(), "KVM_SET_REGS", &r, context: "vCPU \(id)")
        if st.xsave {
            try setBlob(gvm_KVM_SET_XSAVE(), "KVM_SET_XSAVE", st.fpu)
        } else {
            try setBlob(gvm_KVM_SET_FPU(), "KVM_SET_FPU", st.fpu)
        }
        if !st.xcrs.isEmpty { try setBlob(gvm_KVM_SET_XCRS(), "KVM_SET_XCRS", st.xcrs) }
        var s = kvm_sregs()
        withUnsafeMutableBytes(of: &s) { $0.copyBytes(from: st.specialRegisters) }
        // Sound: s is a fully initialised kvm_sregs on the stack.
        _ = try kvmIoctl(fd, gvm_KVM_SET_SREGS(), "KVM_SET_SREGS", &s, context: "vCPU \(id)")
        if !st.msrs.isEmpty { try setMSRs(st.msrs.map { ($0.index, $0.value) }) }
        try setBlob(gvm_KVM_SET_VCPU_EVENTS(), "KVM_SET_VCPU_EVENTS", st.events)
        try setBlob(gvm_KVM_SET_DEBUGREGS(), "KVM_SET_DEBUGREGS", st.debugRegisters)
    }
}
