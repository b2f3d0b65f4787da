// A vCPU leaves its node (live migration) or is reset (INIT) right after an exit whose instruction
// KVM finishes only at the next KVM_RUN — an MMIO read: the value lands in its register and RIP
// moves past it on re-entry. The run loop must let KVM finish it first. Otherwise the state that
// leaves is the unfinished instruction's, and the KVM vCPU left behind still owes the completion:
// when the vCPU comes back (or restarts after SIPI), the first KVM_RUN writes the old
// instruction's RIP and register over the state just loaded (the `ipi` workload's lost IPIs and
// its "#PF at rip=0x10073d cs=0x2b": a kernel RIP after the APIC read, under a user CS).
//
// The double below models that part of KVM: an MMIO read exit leaves a completion pending, applied
// by the next `runOnce` or by `finishPendingExit`, never visible through the register accessors.
import Foundation
@testable import Interrupts
@testable import KVM
import Logging
import Metrics
import XCTest
@testable import Machine

final class VCPUUnfinishedExitTests: XCTestCase {
    /// An MMIO read at `rip` (its instruction ends at `next`) into RCX.
    struct Read { var address: UInt64; var rip: UInt64; var next: UInt64; var then: () -> Void = {} }

    final class UnfinishedExitVCPU: VirtualCPU, @unchecked Sendable {
        let id: UInt32 = 0
        let lock = NSLock()
        var script: [Read]
        var regs = Registers()
        /// The completion KVM keeps to itself: RIP after the instruction; RCX takes the data read.
        var pending: UInt64?
        /// Registers as the guest resumed at each entry (after any completion).
        var entries: [Registers] = []
        var whenDone: () -> Void = {}
        let area = UnsafeMutableRawBufferPointer.allocate(byteCount: 8, alignment: 8)

        init(_ script: [Read]) { self.script = script }
        deinit { area.deallocate() }

        private func completeLocked() {
            guard let next = pending else { return }
            regs.rcx = UInt64(area.load(as: UInt32.self))
            regs.rip = next
            pending = nil
        }

        func bindToCurrentThread() {}
        func unbindThread() {}
        func kick() {}
        func clearImmediateExit() {}
        func runOnce() throws -> VCPUExit {
            lock.lock()
            completeLocked()
            entries.append(regs)
            guard !script.isEmpty else {
                lock.unlock()
                whenDone()
                return .interrupted
            }
            let r = script.removeFirst()
            regs.rip = r.rip
            pending = r.next
            area.initializeMemory(as: UInt8.self, repeating: 0xAA)
            lock.unlock()
            r.then()
            return .mmio(address: r.address, isWrite: false, data: UnsafeMutableRawBufferPointer(rebasing: area[0..<4]))
        }
        func finishPendingExit() throws -> VCPUExit {
            lock.lock(); completeLocked(); lock.unlock()
            return .interrupted
        }
        var readyForInterruptInjection: Bool { false }
        var interruptFlag: Bool { true }
        var cr8: UInt64 { get { 0 } set {} }
        func requestInterruptWindow(_ on: Bool) {}
        func interrupt(vector: UInt8) throws {}
        func nmi() throws {}
        func registers() throws -> Registers { lock.lock(); defer { lock.unlock() }; return regs }
        func setRegisters(_ r: Registers) throws { lock.lock(); regs = r; lock.unlock() }
        func specialRegisters() throws -> SpecialRegisters { SpecialRegisters() }
        func setSpecialRegisters(_ s: SpecialRegisters) throws {}
        func resetFPU() throws {}
        /// Only the general registers travel.
        func captureState() throws -> VCPUState { state(of: try registers()) }
        func restoreState(_ st: VCPUState) throws { try setRegisters(generalRegisters(in: st)) }
    }

    final class Sink: VCPUMigrationSink, @unchecked Sendable {
        let lock = NSLock()
        var departures: [(kvm: VCPUState, interrupts: [UInt8])] = []
        var failures: [String] = []
        func departed(vcpu: Int, to node: UInt32, kvm: VCPUState, interrupts: [UInt8], stoppedAt: UInt64) throws {
            lock.lock(); departures.append((kvm, interrupts)); lock.unlock()
        }
        func departureFailed(vcpu: Int, to node: UInt32, _ why: String) { lock.lock(); failures.append(why); lock.unlock() }
        func arrived(vcpu: Int) {}
        var count: Int { lock.lock(); defer { lock.unlock() }; return departures.count + failures.count }
    }

    func makeRunner(_ cpu: UnfinishedExitVCPU, sink: Sink?) throws -> (VCPURunner<UnfinishedExitVCPU>, VCPUInterrupts, VCPUEnvironment) {
        let irq = VCPUInterrupts(index: 0, busHz: 100_000_000, state: .running)
        irq.locked { _ = $0.apic.write(APICRegister.svr, 0x1FF, now: 0) }
        let env = VCPUEnvironment(bus: IOBus(), router: InterruptRouter(local: [irq]), clock: { monotonicNanoseconds() },
                                  fence: nil, levelEOI: { _ in }, rearmTimer: {})
        env.migration = sink
        cpu.whenDone = { env.markStopping(); irq.wake() }
        return (try VCPURunner(index: 0, vcpu: cpu, irq: irq, environment: env, logger: Logger(label: "test")), irq, env)
    }

    func runInBackground(_ r: VCPURunner<UnfinishedExitVCPU>) -> DispatchSemaphore {
        let done = DispatchSemaphore(value: 0)
        Thread { _ = try? r.run(); done.signal() }.start()
        return done
    }

    func waitUntil(_ what: String, _ cond: () -> Bool) {
        let deadline = Date(timeIntervalSinceNow: 5)
        while !cond() {
            if Date() > deadline { return XCTFail("timed out waiting for \(what)") }
            usleep(1000)
        }
    }

    /// The departure captures the finished instruction, and the vCPU that comes back later runs
    /// exactly the state that arrived: nothing of the old exit is left to land on it.
    func testDepartureAfterAnMMIOReadFinishesItFirstAndLeavesNothingPending() throws {
        let sink = Sink()
        var irqRef: VCPUInterrupts?
        // The APIC version register read at 0x10073b (`mov (%rdx),%ecx`, 2 bytes) in ring 0; the
        // departure is asked while the vCPU is out at that exit.
        let cpu = UnfinishedExitVCPU([Read(address: localAPICBase + 0x30, rip: 0x10_073B, next: 0x10_073D,
                                           then: { _ = irqRef?.requestDeparture(to: 1) })])
        let (runner, irq, _) = try makeRunner(cpu, sink: sink)
        irqRef = irq
        let done = runInBackground(runner)
        waitUntil("the departure") { sink.count == 1 }
        XCTAssertEqual(sink.failures, [])
        guard let left = sink.departures.first else { return }
        let captured = generalRegisters(in: left.kvm)
        XCTAssertEqual(captured.rip, 0x10_073D, "captured after the read completed, not at the read")
        XCTAssertEqual(captured.rcx, 0x0006_0014, "the APIC version the read returned is in RCX")
        XCTAssertNil(cpu.pending, "the KVM vCPU left behind owes nothing")

        // Later the vCPU comes back, stopped elsewhere in ring 3: it must resume exactly there.
        var back = Registers()
        back.rip = 0x20_177F; back.rsp = 0x21_6D00; back.rflags = 0x202
        let backState = state(of: back)
        try irq.installArrival(left.interrupts, kvmState: backState, now: monotonicNanoseconds())
        XCTAssertEqual(done.wait(timeout: .now() + 5), .success, "the run loop did not end")
        let resumed = cpu.entries.last
        XCTAssertEqual(resumed?.rip, 0x20_177F, "resumed where it arrived, not after the old MMIO read")
        XCTAssertEqual(resumed?.rflags, 0x202)
    }

    /// INIT while an MMIO read is unfinished: the read completes before the reset, so the SIPI
    /// start is not overwritten by it at the next entry.
    func testINITAfterAnMMIOReadFinishesItBeforeTheReset() throws {
        var irqRef: VCPUInterrupts?
        let cpu = UnfinishedExitVCPU([Read(address: localAPICBase + 0x30, rip: 0x10_073B, next: 0x10_073D, then: {
            _ = irqRef?.receive(InterruptMessage(mode: .initialize, vector: 0))
            _ = irqRef?.receive(InterruptMessage(mode: .startup, vector: 0x08))
        })])
        let (runner, irq, _) = try makeRunner(cpu, sink: nil)
        irqRef = irq
        let done = runInBackground(runner)
        XCTAssertEqual(done.wait(timeout: .now() + 5), .success, "the run loop did not end")
        XCTAssertEqual(cpu.entries.count, 2)
        XCTAssertEqual(cpu.entries.last?.rip, 0, "started at the SIPI vector (CS 0x800, IP 0), not after the old read")
    }
}

/// A state carrying general registers only (kvm_regs order: 16 GPRs, RIP, RFLAGS).
private func state(of r: Registers) -> VCPUState {
    var bytes: [UInt8] = []
    for v in [r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rsp, r.rbp, r.r8, r.r9, r.r10, r.r11,
              r.r12, r.r13, r.r14, r.r15, r.rip, r.rflags] {
        withUnsafeBytes(of: v.littleEndian) { bytes += $0 }
    }
    return VCPUState(registers: bytes, specialRegisters: [], fpu: [], xsave: false, xcrs: [], events: [],
                     debugRegisters: [], msrs: [])
}

private func generalRegisters(in st: VCPUState) -> Registers {
    func u64(_ i: Int) -> UInt64 { st.registers[(i * 8)..<(i * 8 + 8)].reversed().reduce(0) { $0 << 8 | UInt64($1) } }
    var r = Registers()
    r.rax = u64(0); r.rcx = u64(2); r.rsp = u64(6); r.rip = u64(16); r.rflags = u64(17)
    return r
}

/// The same on the real /dev/kvm: after an MMIO read exit the state cannot be captured or loaded
/// until `finishPendingExit` lets KVM complete the read, which it does without running further.
final class KVMUnfinishedExitTests: XCTestCase {
    func testMMIOReadIsFinishedByAnImmediateExitRunAndOnlyThenCaptured() throws {
        guard FileManager.default.isWritableFile(atPath: "/dev/kvm") else {
            throw XCTSkip("/dev/kvm is missing or not writable: KVM layer tests need it")
        }
        let sys = try KVMSystem()
        let vm = try sys.createVM()
        let ram = try AnonymousGuestRAM(size: 64 << 10)   // RAM 0-64 KiB; 0x20000 is MMIO
        try vm.setMemory(MemorySlot(slot: 0, guestPhysicalAddress: 0, size: ram.size, hostAddress: ram.hostBase))
        try ram.write([0xA1, 0x00, 0x00, 0xF4], at: 0x1000)   // real mode: mov ax, [ds:0]; hlt
        let v = try vm.createVCPU(id: 0)
        var s = try v.specialRegisters()
        s.cs.base = 0; s.cs.selector = 0
        s.ds.base = 0x20000; s.ds.selector = 0x2000
        try v.setSpecialRegisters(s)
        var r = Registers()
        r.rip = 0x1000; r.rflags = 0x2
        try v.setRegisters(r)

        guard case let .mmio(address, isWrite, data) = try v.runOnce() else { return XCTFail("expected the MMIO read") }
        XCTAssertEqual(address, 0x20000)
        XCTAssertFalse(isWrite)
        data.copyBytes(from: [0x34, 0x12].prefix(data.count))
        XCTAssertNotNil(v.pendingExit)
        XCTAssertThrowsError(try v.captureState(), "an unfinished instruction's state is refused") { e in
            XCTAssertTrue("\(e)".contains("the last exit (MMIO (KVM_EXIT_MMIO)) is not complete"), "\(e)")
        }
        guard case .interrupted = try v.finishPendingExit() else { return XCTFail("nothing else was left to do") }
        XCTAssertNil(v.pendingExit)
        let after = try v.registers()
        XCTAssertEqual(after.rip, 0x1003, "past the read, not at the HLT's end: the guest did not run further")
        XCTAssertEqual(after.rax & 0xFFFF, 0x1234, "the value read is in AX")
        XCTAssertEqual(try generalRegisters(in: v.captureState()).rip, 0x1003)
        guard case .interrupted = try v.finishPendingExit() else { return XCTFail("a second finish is a no-op") }
    }
}
