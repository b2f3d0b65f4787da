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

    func testMSRFilterFollowsTheTable() {
        let withAdjust = [CPUIDEntry(function: 7, index: 0, flags: CPUIDEntry.significantIndex, eax: 0, ebx: 1 << 1, ecx: 0, edx: 0)]
        let bases = { (t: [CPUIDEntry]) in MSRFilterPolicy.denied(cpuid: t).map(\.base) }
        XCTAssertEqual(bases(withAdjust), [0x6E0, 0x11, 0x4B56_4D00], "TSC_ADJUST offered: not filtered")
        XCTAssertEqual(bases(CPUFeature.hide([.tscAdjust], in: withAdjust)), [0x3B, 0x6E0, 0x11, 0x4B56_4D00])
        let kvm = withAdjust + [CPUIDEntry(function: 0x4000_0000, eax: 0x4000_0001, ebx: 0x4B4D_564B, ecx: 0x564B_4D56, edx: 0x4D)]
        XCTAssertEqual(bases(kvm), [0x6E0, 0x11, 0x4B56_4D00], "a KVM signature leaf without CLOCKSOURCE2 offers no PV MSR")
        let clock = kvm + [CPUIDEntry(function: 0x4000_0001, eax: KVMParavirt.featureClocksource2, ebx: 0, ecx: 0, edx: 0)]
        XCTAssertEqual(bases(clock), [0x6E0, 0x11, 0x4B56_4D02], "with CLOCKSOURCE2: kvmclock's two MSRs only (KVMClockTests)")
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

/// The guest's view (test guest, multiboot, ring 0 CPUID through its SYS_IO syscall) on 1 node and
/// on the last node of 2: the features the probe hid are not offered where this KVM applies the
/// VMM's CPUID table, and a hidden feature's MSR raises #GP (the MSR filter).
final class TruthfulCPUIDGuestTests: XCTestCase {
    let elf = Built.packageRoot + "/Guests/build/testguest.elf"

    override func setUpWithError() throws {
        try Requirement.testGuestVM()
    }

    func config(nodes: Int, port: Int, cmdline: String) -> String {
        multibootTestConfig(cluster: "cpuid\(nodes)", port: port, vcpus: Array(repeating: 1, count: nodes), cmdline: cmdline)
    }

    func run(nodes: Int, port: Int, _ cmdline: String, probe: Bool = true) throws -> ProcessResult {
        let cfg = config(nodes: nodes, port: port, cmdline: cmdline)
        let env = probe ? [] : ["env", "GIANTVM_INSTRUCTION_PROBE=0"]
        let args = nodes == 1 ? ["run", "--config", cfg, "--timeout", "30", "--log-level", "info"]
                              : ["up", cfg, "--timeout", "60", "--log-level", "info"]
        return probe ? try giantvm(args, timeout: 90) : try TestSupport.run("/usr/bin/env", Array(env.dropFirst()) + [Built.giantvm] + args, timeout: 90)
    }

    /// The value of `"key":<n>` in `text`.
    func field(_ text: String, _ key: String) -> UInt32? {
        guard let r = text.range(of: "\"\(key)\":") else { return nil }
        return UInt32(text[r.upperBound...].prefix { $0.isNumber })
    }

    func testHiddenFeaturesAreHiddenAndLoggedOnOneAndTwoNodes() throws {
        let kvm = try KVMSystem()
        let supported = try kvm.supportedCPUID()
        let report = try InstructionProbe.report(kvm: kvm, supported: supported)
        // the guest's words without the probe: a bit the VMM's table controls changes between the runs
        let words = ["leaf1_ecx", "leaf7_ebx", "leaf7_ecx", "ext1_edx", "ext8_ebx"]
        let off = try run(nodes: 1, port: 19568, "cpuid", probe: false)
        XCTAssertTrue(off.output.contains("instruction probe: off"), off.output.suffix(2000).description)
        func word(_ f: CPUFeature) -> String? {
            switch (f.leaf, f.register) {
            case (1, .ecx): return "leaf1_ecx"
            case (7, .ebx): return "leaf7_ebx"
            case (7, .ecx): return "leaf7_ecx"
            case (0x8000_0001, .edx): return "ext1_edx"
            case (0x8000_0008, .ebx): return "ext8_ebx"
            default: return nil
            }
        }
        var checked = 0
        for (nodes, port) in [(1, 19560), (2, 19562)] {
            let r = try run(nodes: nodes, port: port, "cpuid")
            XCTAssertEqual(r.status, 0, r.output.suffix(2000).description)
            XCTAssertTrue(r.output.contains("instruction probe: \(report.summary)"), "the probe's result is logged at info:\n" + r.output.suffix(2000))
            for key in words { XCTAssertNotNil(field(r.stdout, key) ?? (key.hasPrefix("ext") ? 0 : nil), key) }
            for f in report.hidden {
                guard let key = word(f), let on = field(r.stdout, key), let without = field(off.stdout, key) else { continue }
                if without & (1 << f.bit) != 0 && on & (1 << f.bit) != 0 {
                    // the bit reaches the guest whatever the table says: this KVM computes it itself
                    print("note: this KVM does not take \(f) from the VMM's CPUID table: the guest sees it either way")
                    continue
                }
                XCTAssertEqual(on & (1 << f.bit), 0, "\(f) hidden by the probe but seen by the guest on \(nodes) node(s)")
                checked += 1
            }
        }
        print("hidden features checked in the guest's CPUID: \(checked)")
    }

    func testMSROfAHiddenFeatureRaisesGPOnOneAndTwoNodes() throws {
        for (nodes, port) in [(1, 19564), (2, 19566)] {
            let r = try run(nodes: nodes, port: port, "msrgp")
            XCTAssertTrue(r.output.contains("exception 13 #GP on vCPU \(nodes - 1)") && r.output.contains("rdi=0xa\""),
                          "rdmsr 0x4b564d02 must #GP (rdi = the SYS_IO rdmsr op):\n" + r.output.suffix(2000))
            XCTAssertFalse(r.output.contains("did not #GP"), r.output.suffix(2000).description)
        }
    }
}
