// The instruction probe on this host's KVM: it must finish, test what KVM offers, and hide
// exactly what failed — whatever this KVM can or cannot emulate (either outcome passes).
import XCTest
import KVM
import TestSupport

final class InstructionProbeTests: XCTestCase {
    func testProbeFinishesAndHidesOnlyWhatFailed() throws {
        try Requirement.kvm()
        let kvm = try KVMSystem()
        let supported = try kvm.supportedCPUID()
        let started = Date()
        let report = try InstructionProbe.report(kvm: kvm, supported: supported)
        print("instruction probe (\(String(format: "%.0f", Date().timeIntervalSince(started) * 1000)) ms): \(report.summary)")
        XCTAssertFalse(report.tested.isEmpty, "KVM offers at least popcnt/cx16 on any x86-64 host")
        for f in report.failed { XCTAssertTrue(report.tested.contains(f.feature), "\(f.feature) failed but was not tested") }
        let hidden = CPUFeature.hide(report.hidden, in: supported)
        for f in report.tested {
            XCTAssertEqual(f.isSet(in: hidden), !report.hidden.contains(f), "\(f)")
        }
        XCTAssertEqual(try InstructionProbe.report(kvm: kvm, supported: supported), report, "run once, cached")
    }

    func testHidingXSAVEHidesAVX() {
        let e = [CPUIDEntry(function: 1, eax: 0, ebx: 0, ecx: 1 << 26 | 1 << 28 | 1 << 13, edx: 0),
                 CPUIDEntry(function: 7, index: 0, flags: CPUIDEntry.significantIndex, eax: 0, ebx: 1 << 5 | 1 << 20, ecx: 0, edx: 0),
                 CPUIDEntry(function: 7, index: 1, flags: CPUIDEntry.significantIndex, eax: 1 << 4, ebx: 1 << 5, ecx: 0, edx: 0)]
        let h = CPUFeature.hide([.xsave, .smap], in: e)
        XCTAssertEqual(h[0].ecx, 1 << 13, "XSAVE and AVX cleared, CX16 kept")
        XCTAssertEqual(h[1].ebx, 0, "AVX2 (dependent) and SMAP cleared")
        XCTAssertEqual(h[2].eax, 0, "AVX-VNNI in leaf 7.1")
        XCTAssertEqual(h[2].ebx, 1 << 5, "leaf 7.1 EBX is not leaf 7.0's")
    }
}
