// A deterministic stand-in for a KVM vCPU: `runOnce` plays a script of exits, and every call the
// runner makes (registers, NMI, injection, interrupt window, entries) is recorded in order, so
// the run loop's handling is tested without /dev/kvm.
import Foundation
import KVM

final class ScriptedVCPU: VirtualCPU, @unchecked Sendable {
    /// One scripted exit, with the guest-visible flags KVM would report after it.
    struct Step {
        var exit: Exit
        /// kvm_run.ready_for_interrupt_injection and RFLAGS.IF after this exit.
        var ready = true
        var interruptFlag = true
        /// CR8 the guest left behind.
        var cr8: UInt64?
    }

    enum Exit {
        case io(port: UInt16, size: Int, count: Int, isWrite: Bool, bytes: [UInt8])
        case mmio(address: UInt64, isWrite: Bool, bytes: [UInt8])
        case hlt, windowOpen, interrupted, shutdown
    }

    /// What the runner did, in order.
    enum Call: Equatable {
        case setRegisters(rip: UInt64), setSpecialRegisters(csSelector: UInt16, csBase: UInt64), resetFPU
        case nmi, inject(UInt8), window(Bool), run
    }

    let id: UInt32
    private let lock = NSLock()
    private var script: [Step]
    private var log: [Call] = []
    /// Bytes of the data area after each exit was handled (what the guest's IN/MMIO read sees).
    private var results: [[UInt8]] = []
    private var pendingResult: Int?
    /// Called (on the vCPU thread) when the script has run out; the vCPU then reports `.interrupted`.
    var whenDone: () -> Void = {}
    var regs = Registers()
    var sregs = SpecialRegisters()
    var ready = true, ifFlag = true
    var cr8Value: UInt64 = 0
    private(set) var kicks = 0
    /// The data area KVM would keep in the kvm_run page.
    let area = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 8)

    init(id: UInt32 = 0, script: [Step]) {
        self.id = id
        self.script = script
    }

    deinit { area.deallocate() }

    var calls: [Call] { lock.lock(); defer { lock.unlock() }; return log }
    var dataAfterExits: [[UInt8]] { lock.lock(); defer { lock.unlock() }; return results }
    private func record(_ c: Call) { lock.lock(); log.append(c); lock.unlock() }

    func bindToCurrentThread() {}
    func unbindThread() {}
    func kick() { lock.lock(); kicks += 1; lock.unlock() }
    func clearImmediateExit() {}

    func runOnce() throws -> VCPUExit {
        record(.run)
        lock.lock()
        if let n = pendingResult { results.append(Array(area[0..<n])); pendingResult = nil }
        guard !script.isEmpty else {
            lock.unlock()
            whenDone()
            return .interrupted
        }
        let step = script.removeFirst()
        ready = step.ready
        ifFlag = step.interruptFlag
        if let c = step.cr8 { cr8Value = c }
        lock.unlock()
        switch step.exit {
        case let .io(port, size, count, isWrite, bytes):
            fill(bytes, size * count)
            return .io(port: port, size: size, count: count, isWrite: isWrite,
                       data: UnsafeMutableRawBufferPointer(rebasing: area[0..<(size * count)]))
        case let .mmio(address, isWrite, bytes):
            fill(bytes, bytes.count)
            return .mmio(address: address, isWrite: isWrite, data: UnsafeMutableRawBufferPointer(rebasing: area[0..<bytes.count]))
        case .hlt: return .hlt
        case .windowOpen: return .interruptWindowOpen
        case .interrupted: return .interrupted
        case .shutdown: return .shutdown
        }
    }

    private func fill(_ bytes: [UInt8], _ n: Int) {
        area.initializeMemory(as: UInt8.self, repeating: 0xAA)
        for (i, b) in bytes.enumerated() where i < n { area[i] = b }
        lock.lock(); pendingResult = n; lock.unlock()
    }

    var readyForInterruptInjection: Bool { lock.lock(); defer { lock.unlock() }; return ready }
    var interruptFlag: Bool { lock.lock(); defer { lock.unlock() }; return ifFlag }
    var cr8: UInt64 {
        get { lock.lock(); defer { lock.unlock() }; return cr8Value }
        set { lock.lock(); cr8Value = newValue; lock.unlock() }
    }
    func requestInterruptWindow(_ on: Bool) { record(.window(on)) }
    func interrupt(vector: UInt8) throws { record(.inject(vector)) }
    func nmi() throws { record(.nmi) }

    func registers() throws -> Registers { lock.lock(); defer { lock.unlock() }; return regs }
    func setRegisters(_ r: Registers) throws {
        lock.lock(); regs = r; lock.unlock()
        record(.setRegisters(rip: r.rip))
    }
    func specialRegisters() throws -> SpecialRegisters { lock.lock(); defer { lock.unlock() }; return sregs }
    func setSpecialRegisters(_ s: SpecialRegisters) throws {
        lock.lock(); sregs = s; lock.unlock()
        record(.setSpecialRegisters(csSelector: s.cs.selector, csBase: s.cs.base))
    }
    func resetFPU() throws { record(.resetFPU) }
}
