// Boots tiny guests on the real /dev/kvm (skipped where it is missing).
import XCTest
import Foundation
import KVM
@testable import Machine

final class KVMBootTests: XCTestCase {
    func requireKVM() throws {
        guard FileManager.default.isWritableFile(atPath: "/dev/kvm") else {
            throw XCTSkip("/dev/kvm is missing or not writable: KVM boot tests need it")
        }
    }

    func makeMachine(vcpus: Int, memory: UInt64 = 16 << 20,
                     fence: ((Int, UInt32) -> Void)? = nil) throws -> (Machine, RecordingDevice) {
        let cfg = MachineConfiguration(memoryBytes: memory, vcpus: vcpus, cmdline: "test")
        let m = try Machine(config: cfg, ram: try AnonymousGuestRAM(size: memory), fence: fence)
        let dev = RecordingDevice()
        dev.machine = m
        try m.addDevice(dev, ranges: [(.pio, 0, 0x400)]) // offsets are port numbers
        return (m, dev)
    }

    func testOneVCPUPrintsAndExitsThroughExitDevice() throws {
        try requireKVM()
        let (m, dev) = try makeMachine(vcpus: 1)
        let elf = try ELFImage(bytes: ELFImage.build(code: TinyGuests.hello(exitValue: 0x21), loadAddress: 0x100000),
                               name: "hello.elf")
        try m.load(image: elf)
        let stop = m.run(timeout: 20)
        guard case let .guestExit(status, _) = stop else { return XCTFail("unexpected stop: \(stop)") }
        XCTAssertEqual(status, (0x21 << 1) | 1)
        XCTAssertEqual(dev.uartText, "Hi\n")
        XCTAssertEqual(dev.resultText, "{\"t\":1}\n")
    }

    func testBootInfoAndPageTablesAreInPlace() throws {
        try requireKVM()
        let (m, _) = try makeMachine(vcpus: 2)
        try m.load(image: ELFImage(bytes: ELFImage.build(code: TinyGuests.hello(exitValue: 0), loadAddress: 0x100000), name: "x"))
        let info = try m.ram.read(0x2000, count: 48)
        XCTAssertEqual(Array(info[0..<4]), [0x42, 0x4D, 0x56, 0x47]) // 'GVMB' little endian
        XCTAssertEqual(info[8], 2)            // total vCPUs
        XCTAssertEqual(info[12], 1)           // node count
        XCTAssertEqual(Array(info[16..<24]), [0, 0, 0, 1, 0, 0, 0, 0]) // 16 MiB
        XCTAssertEqual(info[24], 0x00); XCTAssertEqual(info[25], 0x30) // cmdline at 0x3000
        XCTAssertEqual(info[32], 4)           // "test"
        XCTAssertEqual(try m.ram.read(0x3000, count: 5), Array("test\0".utf8))
        let pml4 = try m.ram.read(0x9000, count: 8)
        XCTAssertEqual(pml4[0], 0x23); XCTAssertEqual(pml4[1], 0xA0)
    }

    func testTripleFaultStopsWithVCPUAndRegisters() throws {
        try requireKVM()
        let (m, dev) = try makeMachine(vcpus: 1)
        try m.load(image: ELFImage(bytes: ELFImage.build(code: TinyGuests.tripleFault, loadAddress: 0x100000), name: "tf"))
        let stop = m.run(timeout: 20)
        guard case let .failure(text) = stop else { return XCTFail("unexpected stop: \(stop)") }
        XCTAssertTrue(text.hasPrefix("vCPU 0: triple fault"), text)
        XCTAssertTrue(text.contains("RAX=0000000000001234"), text)
        XCTAssertTrue(text.contains("RIP="), text)
        XCTAssertTrue(text.contains("CR3=0000000000009000"), text)
        XCTAssertEqual(dev.uartText, "T")
    }

    /// The BSP starts the AP with INIT/SIPI; the AP goes from real mode to long mode, enables
    /// its APIC and sends a fixed IPI (vector 0x41) to the BSP, whose handler ends the test.
    func testINITSIPIStartsAPAndIPIReachesBSP() throws {
        try requireKVM()
        let fences = FenceLog()
        let (m, dev) = try makeMachine(vcpus: 2, fence: { fences.add($0, $1) })
        try m.load(image: ELFImage(bytes: ELFImage.build(code: TinyGuests.smpBSP, loadAddress: 0x100000), name: "bsp"))
        try m.loadRaw(TinyGuests.smpAP, at: 0x10000)
        var idt = [UInt8](repeating: 0, count: 0x1000)
        idt.replaceSubrange((0x41 * 16)..<(0x42 * 16), with: TinyGuests.idtGate(0x100100))
        try m.loadRaw(idt, at: 0x20000)
        try m.loadRaw([0xFF, 0x0F, 0x00, 0x00, 0x02, 0, 0, 0, 0, 0], at: 0x21000) // IDTR: limit 0xfff, base 0x20000
        let stop = m.run(timeout: 30)
        guard case let .guestExit(status, _) = stop else { return XCTFail("unexpected stop: \(stop)") }
        XCTAssertEqual(status, 1)
        XCTAssertEqual(dev.uartText, "I\n")
        XCTAssertEqual(try m.ram.read(0x500, count: 1), [1]) // the AP ran
        let bsp = m.interruptState(of: 0)!.apicSnapshot
        XCTAssertTrue(bsp.isr.isEmpty, "EOI cleared the in-service vector")
        XCTAssertFalse(bsp.irr[0x41])
        XCTAssertTrue(m.interruptState(of: 1)!.apicSnapshot.softwareEnabled)
        // Synchronisation points: the AP released before its ICR write, the BSP acquired when
        // the IPI was injected.
        XCTAssertTrue(fences.contains(vcpu: 1, kind: 1), "\(fences.all)")
        XCTAssertTrue(fences.contains(vcpu: 0, kind: 2), "\(fences.all)")
    }

    /// 1000 IPIs from the AP to a BSP that halts between them: none may be lost (each is
    /// counted before the next is sent), and the halted BSP must wake for every one.
    func testThousandIPIsToAHaltingVCPUAreAllDelivered() throws {
        try requireKVM()
        let (m, _) = try makeMachine(vcpus: 2)
        try m.load(image: ELFImage(bytes: ELFImage.build(code: TinyGuests.ipiStressBSP, loadAddress: 0x100000), name: "bsp"))
        try m.loadRaw(TinyGuests.ipiStressAP, at: 0x10000)
        var idt = [UInt8](repeating: 0, count: 0x1000)
        idt.replaceSubrange((0x41 * 16)..<(0x42 * 16), with: TinyGuests.idtGate(0x100100))
        try m.loadRaw(idt, at: 0x20000)
        try m.loadRaw([0xFF, 0x0F, 0x00, 0x00, 0x02, 0, 0, 0, 0, 0], at: 0x21000)
        let stop = m.run(timeout: 40)
        guard case let .guestExit(status, _) = stop else { return XCTFail("unexpected stop: \(stop)") }
        XCTAssertEqual(status, 1)
        XCTAssertEqual(try m.ram.read(0x504, count: 4), [0xE8, 0x03, 0, 0], "exactly 1000 counted")
        XCTAssertGreaterThan(m.exitCounts[0]?["hlt"] ?? 0, 0)
    }

    /// Periodic APIC timer ticks wake a halted vCPU: five 1 ms ticks, then exit with the count.
    func testAPICTimerTicksWakeHaltedVCPU() throws {
        try requireKVM()
        let (m, _) = try makeMachine(vcpus: 1)
        try m.load(image: ELFImage(bytes: ELFImage.build(code: TinyGuests.apicTimer, loadAddress: 0x100000), name: "timer"))
        var idt = [UInt8](repeating: 0, count: 0x1000)
        idt.replaceSubrange((0x40 * 16)..<(0x41 * 16), with: TinyGuests.idtGate(0x100100))
        try m.loadRaw(idt, at: 0x20000)
        try m.loadRaw([0xFF, 0x0F, 0x00, 0x00, 0x02, 0, 0, 0, 0, 0], at: 0x21000)
        let start = Date()
        let stop = m.run(timeout: 20)
        let elapsed = Date().timeIntervalSince(start)
        guard case let .guestExit(status, _) = stop else { return XCTFail("unexpected stop: \(stop)") }
        XCTAssertEqual(status, (5 << 1) | 1)
        XCTAssertGreaterThanOrEqual(elapsed, 0.0045, "five 1 ms periods cannot end sooner")
        XCTAssertGreaterThanOrEqual(m.exitCounts[0]?["hlt"] ?? 0, 5)
    }

    func testKVMErrorsNameTheIoctl() throws {
        try requireKVM()
        let sys = try KVMSystem()
        let vm = try sys.createVM()
        _ = try vm.createVCPU(id: 0)
        XCTAssertThrowsError(try vm.createVCPU(id: 0)) { e in
            let k = e as! KVMError
            XCTAssertEqual(k.call, "KVM_CREATE_VCPU")
            XCTAssertEqual(k.errno, EEXIST)
            XCTAssertTrue("\(k)".hasPrefix("KVM_CREATE_VCPU failed: EEXIST"), "\(k)")
        }
    }
}

final class FenceLog: @unchecked Sendable {
    let lock = NSLock()
    var all: [(Int, UInt32)] = []
    func add(_ v: Int, _ k: UInt32) { lock.lock(); all.append((v, k)); lock.unlock() }
    func contains(vcpu: Int, kind: UInt32) -> Bool { lock.lock(); defer { lock.unlock() }; return all.contains { $0 == (vcpu, kind) } }
}
