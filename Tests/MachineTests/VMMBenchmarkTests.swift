// Figures for the report, printed beside floors measured in the same run:
//   swift test --filter VMMBenchmarkTests
import Metrics
import XCTest
import Foundation
import KVM
@testable import Machine

final class VMMBenchmarkTests: XCTestCase {
    /// Timestamps every write to port 0x80 and the one write to 0x81.
    final class StampDevice: IODevice, @unchecked Sendable {
        let name = "stamps"
        var stamps: [UInt64] = []
        var end: UInt64 = 0
        weak var machine: Machine?
        init() { stamps.reserveCapacity(20_001) }
        func io(space: IOSpaceKind, offset: UInt64, data: UnsafeMutableRawBufferPointer, isWrite: Bool) {
            let now = monotonicNanoseconds()
            switch offset {
            case 0: stamps.append(now)
            case 1: end = now
            case 0x74: machine?.requestStop(guestStatus: 1, reason: "bench done")
            default: break
            }
        }
    }

    static func percentiles(_ v: [UInt64]) -> (p50: Double, p90: Double, p99: Double) {
        let s = v.sorted()
        func p(_ q: Double) -> Double { Double(s[min(s.count - 1, Int(Double(s.count) * q))]) / 1000 }
        return (p(0.5), p(0.9), p(0.99))
    }

    /// PIO exit round trip: `1: out %al,$0x80; dec %ecx; jnz 1b` (20000 times), then the same
    /// loop without the `out` (40000 emulated instructions, no exit) as the floor for ring-0
    /// instruction emulation, and a trivial ioctl (KVM_CHECK_EXTENSION) as the syscall floor.
    func testPIOExitRoundTrip() throws {
        guard FileManager.default.isWritableFile(atPath: "/dev/kvm") else { throw XCTSkip("/dev/kvm missing") }
        let code = TinyGuests.bytes("B9 20 4E 00 00 E6 80 FF C9 75 FA B9 20 4E 00 00 FF C9 75 FC E6 81 31 C0 E7 F4 F4")
        let cfg = MachineConfiguration(memoryBytes: 4 << 20, vcpus: 1)
        let m = try Machine(config: cfg, ram: try AnonymousGuestRAM(size: 4 << 20))
        let dev = StampDevice()
        dev.machine = m
        try m.addDevice(dev, ranges: [(.pio, 0x80, 0x78)])
        try m.load(image: ELFImage(bytes: ELFImage.build(code: code, loadAddress: 0x100000), name: "bench"))
        guard case .guestExit = m.run(timeout: 50) else { return XCTFail("benchmark guest did not finish") }
        XCTAssertEqual(dev.stamps.count, 20_000)
        let deltas = zip(dev.stamps.dropFirst(), dev.stamps).map { $0 - $1 }
        let exit = Self.percentiles(deltas)
        let perInstruction = Double(dev.end - dev.stamps.last!) / 40_000 / 1000

        let sys = try KVMSystem()
        var floor: [UInt64] = []
        for _ in 0..<20_000 {
            let t0 = monotonicNanoseconds()
            _ = try sys.check(.immediateExit)
            floor.append(monotonicNanoseconds() - t0)
        }
        let f = Self.percentiles(floor)
        print(String(format: "PIO exit round trip (out + 2 emulated instructions), n=%d: p50 %.2f us, p90 %.2f us, p99 %.2f us",
                     deltas.count, exit.p50, exit.p90, exit.p99))
        print(String(format: "floor, emulated ring-0 instruction (no exit): %.3f us each (mean of 40000)", perInstruction))
        print(String(format: "floor, KVM_CHECK_EXTENSION ioctl round trip, n=20000: p50 %.2f us, p90 %.2f us, p99 %.2f us",
                     f.p50, f.p90, f.p99))
        XCTAssertGreaterThan(exit.p50, f.p50, "an exit costs more than an empty ioctl")
    }

    /// IPI round trip through the user-space APICs: the 1000-IPI stress guest (AP sends, BSP
    /// halts, wakes, counts, EOIs; AP waits for the count) — mean per IPI, beside the PIO exit floor.
    func testIPIRoundTrip() throws {
        guard FileManager.default.isWritableFile(atPath: "/dev/kvm") else { throw XCTSkip("/dev/kvm missing") }
        let cfg = MachineConfiguration(memoryBytes: 16 << 20, vcpus: 2)
        let m = try Machine(config: cfg, ram: try AnonymousGuestRAM(size: 16 << 20))
        let dev = RecordingDevice()
        dev.machine = m
        try m.addDevice(dev, ranges: [(.pio, 0, 0x400)])
        try m.load(image: ELFImage(bytes: ELFImage.build(code: TinyGuests.ipiStressBSP, loadAddress: 0x100000), name: "bsp"))
        try m.loadRaw(TinyGuests.ipiStressAP, at: 0x10000)
        var idt = [UInt8](repeating: 0, count: 0x1000)
        idt.replaceSubrange((0x41 * 16)..<(0x42 * 16), with: TinyGuests.idtGate(0x100100))
        try m.loadRaw(idt, at: 0x20000)
        try m.loadRaw([0xFF, 0x0F, 0x00, 0x00, 0x02, 0, 0, 0, 0, 0], at: 0x21000)
        let t0 = monotonicNanoseconds()
        guard case .guestExit = m.run(timeout: 50) else { return XCTFail("IPI guest did not finish") }
        let total = Double(monotonicNanoseconds() - t0) / 1000
        print(String(format: "IPI round trip (AP ICR write -> BSP wakes from HLT, handler, EOI -> AP sees count), 2 vCPUs: mean %.1f us over 1000 (incl. boot)", total / 1000))
    }
}
