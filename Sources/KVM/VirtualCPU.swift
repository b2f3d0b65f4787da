// What the VMM's run loop needs from a virtual CPU, as a protocol: `VCPU` (KVM) implements it, and
// a scripted test double implements it in the tests, so the run loop's exit handling and its
// INIT/SIPI/HLT/injection sequencing are tested without /dev/kvm. The runner is generic over it
// (specialised for `VCPU`), so the hot path makes direct calls, never existential ones.

/// A virtual CPU as the run loop drives it.
///
/// Threading: every requirement except `kick` is called on the vCPU's own thread (the one that
/// called `bindToCurrentThread`); `kick` may be called from any thread at any time.
public protocol VirtualCPU: AnyObject, Sendable {
    /// The vCPU's id (its APIC id and global index).
    var id: UInt32 { get }

    /// Records the calling thread as the vCPU's thread, so `kick` can reach it.
    func bindToCurrentThread()
    func unbindThread()
    /// Forces the vCPU out of guest mode, or makes its next `runOnce` return `.interrupted` at once.
    func kick()
    /// Right after `runOnce` returns, before pending work is looked at (so a later kick is not lost).
    func clearImmediateExit()

    /// Enters the guest until the next exit. Buffers in `.io`/`.mmio` stay valid until the next call.
    func runOnce() throws -> VCPUExit

    /// The guest could take an external interrupt after the last exit (with `interruptFlag`).
    var readyForInterruptInjection: Bool { get }
    /// RFLAGS.IF after the last exit.
    var interruptFlag: Bool { get }
    /// CR8 (TPR[7:4]): read after an exit, written before an entry.
    var cr8: UInt64 { get set }
    /// Exit as soon as the guest can take an interrupt (`.interruptWindowOpen`).
    func requestInterruptWindow(_ on: Bool)
    /// Queues external interrupt `vector` for the next entry (only when the guest can take it).
    func interrupt(vector: UInt8) throws
    /// Queues an NMI for the next entry.
    func nmi() throws

    func registers() throws -> Registers
    func setRegisters(_ regs: Registers) throws
    func specialRegisters() throws -> SpecialRegisters
    func setSpecialRegisters(_ sregs: SpecialRegisters) throws
    /// x87/SSE state back to its power-on values.
    func resetFPU() throws
    /// IA32_APIC_BASE after the last exit.
    var apicBase: UInt64 { get }
    /// Answers an `.rdmsr`/`.wrmsr` exit (`failed`: #GP).
    func completeMSR(value: UInt64, failed: Bool)
    /// Completes the instruction the last exit left half done without running the guest further
    /// (`VCPU.finishPendingExit`): `.interrupted` when nothing remains, else the next exit of that
    /// instruction. Called before the vCPU's registers are captured or replaced.
    func finishPendingExit() throws -> VCPUExit
    /// Live migration: everything KVM holds for this vCPU, and loading it back (VCPUState.swift).
    func captureState() throws -> VCPUState
    func restoreState(_ state: VCPUState) throws
}

extension VirtualCPU {
    /// Doubles without an APIC base model: xAPIC enabled at 0xFEE00000, BSP (KVM's power-on value).
    public var apicBase: UInt64 { 0xFEE0_0900 }
    public func completeMSR(value: UInt64, failed: Bool) {}
    /// Doubles finish every exit at once: nothing is ever pending.
    public func finishPendingExit() throws -> VCPUExit { .interrupted }
    /// A vCPU double without KVM state cannot migrate.
    public func captureState() throws -> VCPUState {
        throw KVMError(call: "captureState", errno: 95 /* EOPNOTSUPP */, context: "vCPU \(id) cannot be migrated")
    }
    public func restoreState(_ state: VCPUState) throws {
        throw KVMError(call: "restoreState", errno: 95 /* EOPNOTSUPP */, context: "vCPU \(id) cannot be migrated")
    }
}

extension VCPU: VirtualCPU {}
