// The typed KVM layer on the real /dev/kvm: register round trips, MSRs, CPUID, exits, kicks.
import XCTest
import Foundation
import Glibc
import KVM
@testable import Machine

final class KVMLayerTests: XCTestCase {
    override func setUpWithError() throws {
        guard FileManager.default.isWritableFile(atPath: "/dev/kvm") else {
            throw XCTSkip("/dev/kvm is missing or not writable: KVM layer tests need it")
        }
    }

    func testSystemCapabilitiesAndSupportedCPUID() throws {
        let sys = try KVMSystem()
        XCTAssertGreaterThan(try sys.check(.immediateExit), 0)
        XCTAssertGreaterThan(sys.vcpuMmapSize, 4096 - 1)
        let cpuid = try sys.supportedCPUID()
        XCTAssertTrue(cpuid.contains { $0.function == 0 })
        XCTAssertTrue(cpuid.contains { $0.function == 1 })
    }

    func testRegisterAndMSRRoundTrips() throws {
        let sys = try KVMSystem()
        let vm = try sys.createVM()
        let v = try vm.createVCPU(id: 0)
        var r = Registers()
        r.rax = 0x1111; r.r15 = 0xFFFF_0000_1234_5678; r.rip = 0x100000; r.rflags = 0x202
        try v.setRegisters(r)
        XCTAssertEqual(try v.registers(), r)
        var s = try v.specialRegisters()
        XCTAssertEqual(s.cs.selector, 0xF000, "KVM's reset state")
        s.cr3 = 0x9000
        try v.setSpecialRegisters(s)
        XCTAssertEqual(try v.specialRegisters().cr3, 0x9000)
        try v.setMSRs([(MSR.sysenterESP, 0xABCD_0000), (MSR.sysenterEIP, 0x1234)])
        XCTAssertEqual(try v.msrs([MSR.sysenterESP, MSR.sysenterEIP]), [0xABCD_0000, 0x1234])
        XCTAssertThrowsError(try v.msrs([0xDEAD_BEEF])) { e in
            XCTAssertEqual((e as? KVMError)?.call, "KVM_GET_MSRS")
            XCTAssertTrue("\(e)".contains("MSR 0xdeadbeef refused"), "\(e)")
        }
    }

    /// A vCPU spinning in `jmp .` leaves KVM_RUN on a kick (signal + immediate_exit), and a
    /// kick sent before entry makes the next KVM_RUN return at once.
    func testKickInterruptsRunAndIsNotLostBeforeEntry() throws {
        try VCPU.installKickHandler()
        let sys = try KVMSystem()
        let vm = try sys.createVM()
        let ram = try AnonymousGuestRAM(size: 2 << 20)
        try vm.setMemory(MemorySlot(slot: 0, guestPhysicalAddress: 0, size: ram.size, hostAddress: ram.hostBase))
        try ram.write([0xEB, 0xFE], at: 0x1000) // jmp .
        let v = try vm.createVCPU(id: 0)
        var s = try v.specialRegisters()
        s.cs.base = 0; s.cs.selector = 0
        try v.setSpecialRegisters(s)
        var r = Registers()
        r.rip = 0x1000
        try v.setRegisters(r)

        // Kick before entry: the next run returns immediately.
        v.kick()
        let t0 = Date()
        guard case .interrupted = try v.runOnce() else { return XCTFail("expected .interrupted") }
        XCTAssertLessThan(Date().timeIntervalSince(t0), 1)
        v.clearImmediateExit()

        // Kick while running, from another thread.
        let done = DispatchSemaphore(value: 0)
        final class Outcome: @unchecked Sendable { var exit: VCPUExit?; var error: Error? }
        let out = Outcome()
        let started = DispatchSemaphore(value: 0)
        let th = Thread {
            v.bindToCurrentThread()
            started.signal()
            do { out.exit = try v.runOnce() } catch { out.error = error }
            v.clearImmediateExit()
            v.unbindThread()
            done.signal()
        }
        th.start()
        started.wait()
        usleep(50_000)
        v.kick()
        XCTAssertEqual(done.wait(timeout: .now() + 5), .success, "kick did not bring the vCPU out of KVM_RUN")
        XCTAssertNil(out.error)
        guard case .interrupted = out.exit else { return XCTFail("expected .interrupted, got \(String(describing: out.exit))") }
    }

    func testMemorySlotErrorNamesIoctl() throws {
        let sys = try KVMSystem()
        let vm = try sys.createVM()
        let ram = try AnonymousGuestRAM(size: 2 << 20)
        // Unaligned guest-physical address: KVM refuses it.
        XCTAssertThrowsError(try vm.setMemory(MemorySlot(slot: 0, guestPhysicalAddress: 0x123, size: ram.size,
                                                         hostAddress: ram.hostBase))) { e in
            XCTAssertTrue("\(e)".hasPrefix("KVM_SET_USER_MEMORY_REGION failed: EINVAL"), "\(e)")
        }
    }
}
