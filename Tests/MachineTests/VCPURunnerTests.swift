// The vCPU run loop driven by a scripted vCPU (no /dev/kvm): I/O and MMIO exits reach devices
// and the local APIC, HLT parks until an interrupt the guest can take, an interrupt the guest
// cannot take yet opens a window, INIT/SIPI reset and restart the CPU, a triple fault fails
// with a register dump, a stop ends the loop wherever it waits.
import Foundation
@testable import Interrupts
import KVM
import Logging
import Metrics
import XCTest
@testable import Machine

final class VCPURunnerTests: XCTestCase {
    static let release: UInt32 = 1, acquire: UInt32 = 2   // GVM_FENCE_RELEASE / GVM_FENCE_ACQUIRE

    /// One machine's worth of runner surroundings around a bare bus and router.
    final class Harness: @unchecked Sendable {
        let bus = IOBus()
        let irqs: [VCPUInterrupts]
        let router: InterruptRouter
        let fences = FenceLog()
        let lock = NSLock()
        var eois: [UInt8] = []
        var rearms = 0
        var env: VCPUEnvironment!

        init(states: [VCPURunState], kicks: KickCounter? = nil) {
            irqs = states.enumerated().map { i, s in
                VCPUInterrupts(index: i, busHz: 100_000_000, state: s, kick: { kicks?.add(i) })
            }
            router = InterruptRouter(local: irqs)
            let fences = self.fences
            env = VCPUEnvironment(bus: bus, router: router, clock: { monotonicNanoseconds() },
                                  fence: { fences.add($0, $1) },
                                  levelEOI: { [unowned self] v in lock.lock(); eois.append(v); lock.unlock() },
                                  rearmTimer: { [unowned self] in lock.lock(); rearms += 1; lock.unlock() })
        }

        func enableAPIC(_ i: Int) { irqs[i].locked { _ = $0.apic.write(APICRegister.svr, 0x1FF, now: 0) } }

        func runner(_ cpu: ScriptedVCPU, index: Int = 0) throws -> VCPURunner<ScriptedVCPU> {
            cpu.whenDone = { [unowned self] in stop() }
            return try VCPURunner(index: index, vcpu: cpu, irq: irqs[index], environment: env, logger: .init(label: "test"))
        }

        func stop() {
            env.markStopping()
            for i in irqs { i.wake() }
        }
    }

    final class KickCounter: @unchecked Sendable {
        let lock = NSLock()
        var kicked: [Int] = []
        func add(_ i: Int) { lock.lock(); kicked.append(i); lock.unlock() }
        var all: [Int] { lock.lock(); defer { lock.unlock() }; return kicked }
    }

    /// Runs the loop on its own thread (it blocks while parked); `finish` waits for it.
    final class Running: @unchecked Sendable {
        let done = DispatchSemaphore(value: 0)
        var error: Error?
        init(_ r: VCPURunner<ScriptedVCPU>) {
            let t = Thread { [self] in
                do { try r.run() } catch { self.error = error }
                done.signal()
            }
            t.start()
        }
        func finish(file: StaticString = #filePath, line: UInt = #line) -> Error? {
            if done.wait(timeout: .now() + 5) == .timedOut { XCTFail("the run loop did not return", file: file, line: line) }
            return error
        }
    }

    /// Port 0x80-0x8f: records writes (port offset, byte), reads 0x5A.
    final class PortLog: IODevice, @unchecked Sendable {
        let name = "ports"
        let lock = NSLock()
        var writes: [(UInt64, UInt8)] = []
        var reads: [UInt64] = []
        func io(space: IOSpaceKind, offset: UInt64, data: UnsafeMutableRawBufferPointer, isWrite: Bool) {
            lock.lock(); defer { lock.unlock() }
            if isWrite { writes.append((offset, data[0])) } else {
                reads.append(offset)
                data.initializeMemory(as: UInt8.self, repeating: 0x5A)
            }
        }
    }

    func waitUntil(_ what: String, _ cond: () -> Bool) {
        let deadline = Date(timeIntervalSinceNow: 5)
        while !cond() {
            if Date() > deadline { return XCTFail("timed out waiting for \(what)") }
            usleep(1000)
        }
    }

    // ---- exits ---------------------------------------------------------------------------------

    func testIOExitsReachDevicesAndUnassignedReadsAllOnes() throws {
        let h = Harness(states: [.running])
        let ports = PortLog()
        try h.bus.map(.pio, base: 0x80, length: 0x10, device: ports)
        let cpu = ScriptedVCPU(script: [
            .init(exit: .io(port: 0x80, size: 1, count: 1, isWrite: true, bytes: [0x42])),
            .init(exit: .io(port: 0x81, size: 1, count: 1, isWrite: false, bytes: [])),
            .init(exit: .io(port: 0x299, size: 2, count: 1, isWrite: false, bytes: [])),
            .init(exit: .io(port: 0x82, size: 1, count: 3, isWrite: true, bytes: [1, 2, 3])),   // rep outsb
        ])
        let r = try h.runner(cpu)
        XCTAssertNil(Running(r).finish())
        XCTAssertEqual(ports.writes.map(\.0), [0, 2, 2, 2])
        XCTAssertEqual(ports.writes.map(\.1), [0x42, 1, 2, 3])
        XCTAssertEqual(ports.reads, [1])
        XCTAssertEqual(cpu.dataAfterExits[1], [0x5A], "IN from a device")
        XCTAssertEqual(cpu.dataAfterExits[2], [0xFF, 0xFF], "IN from an unassigned port")
        XCTAssertEqual(r.exits, ["io": 4, "interrupted": 1])
        XCTAssertEqual(h.fences.all.filter { $0 == (0, Self.release) }.count, 4, "a release before acting on each I/O exit")
        XCTAssertEqual(cpu.calls, Array(repeating: [.window(false), .run], count: 5).flatMap { $0 })
    }

    func testAPICAccessesSendIPIsReadRegistersAndReportLevelEOI() throws {
        let kicks = KickCounter()
        let h = Harness(states: [.running, .running], kicks: kicks)
        h.enableAPIC(0); h.enableAPIC(1)
        h.irqs[0].locked { $0.apic.accept(vector: 0x55, levelTriggered: true); $0.apic.acknowledge(0x55) }
        let cpu = ScriptedVCPU(script: [
            .init(exit: .mmio(address: localAPICBase + 0x310, isWrite: true, bytes: [0, 0, 0, 1])),   // ICR high: APIC 1
            .init(exit: .mmio(address: localAPICBase + 0x300, isWrite: true, bytes: [0x45, 0x40, 0, 0])),   // fixed 0x45
            .init(exit: .mmio(address: localAPICBase + 0x30, isWrite: false, bytes: [0, 0, 0, 0])),   // version
            .init(exit: .mmio(address: localAPICBase + 0xB0, isWrite: true, bytes: [0, 0, 0, 0])),   // EOI
        ])
        let r = try h.runner(cpu)
        XCTAssertNil(Running(r).finish())
        XCTAssertTrue(h.irqs[1].apicSnapshot.irr[0x45], "IPI delivered to vCPU 1")
        XCTAssertEqual(kicks.all, [1, 0, 1], "the running IPI target was kicked, then both by the stop")
        XCTAssertEqual(cpu.dataAfterExits[2], [0x14, 0, 6, 0], "APIC version register")
        XCTAssertEqual(h.eois, [0x55], "level-triggered EOI goes to the IOAPIC route")
        XCTAssertTrue(h.irqs[0].apicSnapshot.isr.isEmpty)
        XCTAssertEqual(r.exits["mmio"], 4)
    }

    func testShutdownFailsNamingTheVCPUWithItsRegisters() throws {
        let h = Harness(states: [.running])
        let cpu = ScriptedVCPU(script: [.init(exit: .shutdown)])
        cpu.regs.rip = 0xDEAD_BEEF
        let r = try h.runner(cpu)
        let error = Running(r).finish()
        guard let f = error as? VCPUFailure else { return XCTFail("expected a VCPUFailure, got \(String(describing: error))") }
        XCTAssertEqual(f.vcpu, 0)
        XCTAssertTrue(f.reason.contains("triple fault"), f.reason)
        XCTAssertTrue(f.registers.contains("RIP=00000000deadbeef"), f.registers)
    }

    // ---- interrupts ----------------------------------------------------------------------------

    func testHaltParksUntilAnInterruptArrivesThenInjectsIt() throws {
        let h = Harness(states: [.running])
        h.enableAPIC(0)
        let cpu = ScriptedVCPU(script: [.init(exit: .hlt, interruptFlag: true)])
        let r = try h.runner(cpu)
        let running = Running(r)
        waitUntil("the vCPU to halt") { h.irqs[0].runState == .halted(interruptsEnabled: true) }
        usleep(20_000)
        XCTAssertEqual(cpu.calls, [.window(false), .run], "parked: no entry while halted")
        h.router.deliver(to: 0, InterruptMessage(mode: .fixed, vector: 0x40))
        XCTAssertNil(running.finish())
        XCTAssertEqual(cpu.calls, [.window(false), .run, .inject(0x40), .window(false), .run])
        XCTAssertTrue(h.irqs[0].apicSnapshot.isr[0x40], "acknowledged on injection")
        XCTAssertEqual(h.fences.all.map { $0.1 }, [Self.release, Self.acquire], "release on HLT, acquire on injection")
        XCTAssertEqual(r.exits["hlt"], 1)
    }

    func testHaltWithInterruptsOffSleepsThroughInterruptsAndWakesForNMI() throws {
        let h = Harness(states: [.running])
        h.enableAPIC(0)
        let cpu = ScriptedVCPU(script: [.init(exit: .hlt, interruptFlag: false)])
        let r = try h.runner(cpu)
        let running = Running(r)
        waitUntil("the vCPU to halt") { h.irqs[0].runState == .halted(interruptsEnabled: false) }
        h.router.deliver(to: 0, InterruptMessage(mode: .fixed, vector: 0x40))
        usleep(50_000)
        XCTAssertEqual(cpu.calls, [.window(false), .run], "IF=0: a fixed interrupt does not wake HLT")
        h.router.deliver(to: 0, InterruptMessage(mode: .nmi, vector: 0))
        XCTAssertNil(running.finish())
        // Woken by the NMI; IF is still 0, so 0x40 waits for a window.
        XCTAssertEqual(cpu.calls, [.window(false), .run, .nmi, .window(true), .run])
        XCTAssertTrue(h.irqs[0].apicSnapshot.irr[0x40])
    }

    func testInterruptTheGuestCannotTakeYetOpensAWindowFirst() throws {
        let h = Harness(states: [.running])
        h.enableAPIC(0)
        h.router.deliver(to: 0, InterruptMessage(mode: .fixed, vector: 0x40))
        let cpu = ScriptedVCPU(script: [.init(exit: .windowOpen, ready: true, interruptFlag: true)])
        cpu.ready = false   // as after an exit with interrupts blocked
        let r = try h.runner(cpu)
        XCTAssertNil(Running(r).finish())
        XCTAssertEqual(cpu.calls, [.window(true), .run, .inject(0x40), .window(false), .run])
        XCTAssertEqual(r.exits["irq_window"], 1)
    }

    func testGuestCR8ChangeReachesTheAPICAndBlocksLowerClasses() throws {
        let h = Harness(states: [.running])
        h.enableAPIC(0)
        // Port 0x70: a device that raises vector 0x45 (class 4) on vCPU 0 when written.
        try h.bus.map(.pio, base: 0x70, length: 1, device: ActionDevice { [router = h.router] in
            router.deliver(to: 0, InterruptMessage(mode: .fixed, vector: 0x45))
        })
        let cpu = ScriptedVCPU(script: [
            .init(exit: .interrupted, cr8: 5),                                             // guest: mov $5, %cr8
            .init(exit: .io(port: 0x70, size: 1, count: 1, isWrite: true, bytes: [0])),
            .init(exit: .interrupted, cr8: 3),                                             // guest: mov $3, %cr8
        ])
        let r = try h.runner(cpu)
        XCTAssertNil(Running(r).finish())
        XCTAssertEqual(cpu.calls, [.window(false), .run,   // CR8 5 read back: TPR 0x50
                                   .window(false), .run,   // 0x45 raised: class 4 is not above 5
                                   .window(false), .run,   // held back: no injection, no window
                                   .inject(0x45), .window(false), .run])   // CR8 3: delivered
        XCTAssertEqual(h.irqs[0].apicSnapshot.tpr, 0x30)
        XCTAssertEqual(cpu.cr8, 3, "entered with the APIC's TPR class")
    }

    /// Runs an action on every write.
    final class ActionDevice: IODevice, @unchecked Sendable {
        let name = "action"
        let action: () -> Void
        init(_ action: @escaping () -> Void) { self.action = action }
        func io(space: IOSpaceKind, offset: UInt64, data: UnsafeMutableRawBufferPointer, isWrite: Bool) {
            if isWrite { action() } else { data.initializeMemory(as: UInt8.self, repeating: 0) }
        }
    }

    func testINITThenSIPIResetsAndStartsInRealModeAtTheVector() throws {
        let h = Harness(states: [.running, .waitingForSIPI])
        let cpu = ScriptedVCPU(id: 1, script: [.init(exit: .io(port: 0x80, size: 1, count: 1, isWrite: true, bytes: [7]))])
        cpu.regs.rip = 0xFFF0   // the power-on state the runner keeps for INIT
        cpu.sregs.cs = Segment(base: 0xFFFF_0000, limit: 0xFFFF, selector: 0xF000, type: 0xB)
        let r = try h.runner(cpu, index: 1)
        let running = Running(r)
        usleep(20_000)
        XCTAssertEqual(cpu.calls, [], "an AP waits for SIPI outside the guest")
        h.router.send(InterruptCommand(low: 0x4500, high: 0x0100_0000), from: 0)   // INIT to APIC 1
        waitUntil("the reset") { cpu.calls.count >= 3 }
        XCTAssertEqual(cpu.calls, [.setSpecialRegisters(csSelector: 0xF000, csBase: 0xFFFF_0000), .setRegisters(rip: 0xFFF0), .resetFPU])
        XCTAssertEqual(h.irqs[1].runState, .waitingForSIPI)
        h.router.send(InterruptCommand(low: 0x4612, high: 0x0100_0000), from: 0)   // SIPI, vector 0x12
        XCTAssertNil(running.finish())
        XCTAssertEqual(Array(cpu.calls.dropFirst(3)), [.setSpecialRegisters(csSelector: 0x1200, csBase: 0x12000), .setRegisters(rip: 0),
                                                       .window(false), .run, .window(false), .run])
        XCTAssertEqual(cpu.sregs.apicBase & ~0xFFF, localAPICBase, "APIC base MSR kept")
        XCTAssertEqual(cpu.sregs.apicBase & 0x100, 0, "an AP is not the BSP")
        XCTAssertEqual(h.rearms, 1, "INIT re-arms the timers")
    }

    func testStopEndsTheLoopWhileWaitingForSIPI() throws {
        let h = Harness(states: [.waitingForSIPI])
        let cpu = ScriptedVCPU(script: [])
        let r = try h.runner(cpu)
        let running = Running(r)
        usleep(20_000)
        h.stop()
        XCTAssertNil(running.finish())
        XCTAssertEqual(cpu.calls, [])
    }
}
