// kvmclock: the pvclock arithmetic, the CPUID leaves and MSR filter that offer it, the start-up
// probe and KVM_GET_CLOCK/KVM_SET_CLOCK on this host's KVM, MSR_KVM_SYSTEM_TIME_NEW carried by a
// migrated vCPU into another VM, and the test guest's `kvmclock` workload on 1 node and across
// 2 (a vCPU on node 1): offered, monotonic, one clock across nodes — and not without the feature.
import XCTest
import Foundation
import Glibc
@testable import KVM
@testable import Machine
import TestSupport

final class KVMClockUnitTests: XCTestCase {
    func testPVClockScaling() {
        // 2.5 GHz: ns = (ticks >> 1) * 0.8, mul = 0.8 * 2^32 rounded up (KVM picks a shift that keeps mul in 32 bits)
        let info = PVClockTimeInfo(version: 2, tscTimestamp: 1_000, systemTime: 5_000_000, tscToSystemMul: 3_435_973_837,
                                   tscShift: -1, flags: 1)
        XCTAssertEqual(info.nanoseconds(atTSC: 1_000), 5_000_000)
        XCTAssertEqual(info.nanoseconds(atTSC: 1_000 + 2_500_000_000), 5_000_000 + 1_000_000_000, "one second of ticks")
        XCTAssertEqual(info.nanoseconds(atTSC: 10), 5_000_000, "a TSC before the timestamp reads system_time")
        var up = info
        up.tscShift = 2; up.tscToSystemMul = 1 << 30   // (delta << 2) / 4 = delta
        XCTAssertEqual(up.nanoseconds(atTSC: 1_777), 5_000_777)
        up.tscShift = 40
        XCTAssertNil(up.nanoseconds(atTSC: 2_000), "a shift KVM never writes")
        var raw = [UInt8](repeating: 0, count: 32)
        raw[0] = 4; raw[8] = 0x10; raw[16] = 0x20; raw[24] = 0x30; raw[28] = 0xFF; raw[29] = 1
        let parsed = raw.withUnsafeBytes { PVClockTimeInfo($0.baseAddress!) }
        XCTAssertEqual(parsed, PVClockTimeInfo(version: 4, tscTimestamp: 0x10, systemTime: 0x20, tscToSystemMul: 0x30, tscShift: -1, flags: 1))
    }

    func testCPUIDOffersKVMsLeafBesideOursOnlyWhenAsked() {
        var p = CPUIDPolicy(totalVCPUs: 2, nodes: [(0, 1), (1, 1)], tscKHz: 2_000_000, apicBusKHz: 100_000)
        let supported = [CPUIDEntry(function: 0x4000_0000, eax: 0x4000_0001, ebx: 0x4B4D_564B, ecx: 0x564B_4D56, edx: 0x4D),
                         CPUIDEntry(function: 0x4000_0001, eax: 0x0100_7EFB, ebx: 0, ecx: 0, edx: 0)]
        XCTAssertNil(KVMParavirt.base(in: p.entries(supported: supported, vcpu: 1)), "not offered by default")
        p.offerKVMClock = true
        let e = p.entries(supported: supported, vcpu: 1)
        XCTAssertEqual(KVMParavirt.base(in: e), 0x4000_0100, "KVM's signature at the base after GiantVM's")
        XCTAssertEqual(e.first { $0.function == 0x4000_0100 }?.eax, 0x4000_0101, "max leaf")
        XCTAssertEqual(KVMParavirt.features(in: e), KVMParavirt.featureClocksource2, "CLOCKSOURCE2 only: no other PV feature")
        XCTAssertEqual(e.first { $0.function == 0x4000_0000 }?.ebx, 0x6E61_6947, "GiantVM's leaf stays at 0x40000000 (\"Gian\")")
        p.kvmclockStable = true
        XCTAssertEqual(KVMParavirt.features(in: p.entries(supported: supported, vcpu: 0)),
                       KVMParavirt.featureClocksource2 | KVMParavirt.featureClocksourceStable)
    }

    func testMSRFilterLetsOnlyKVMClocksMSRsThrough() {
        let ranges = { (t: [CPUIDEntry]) in MSRFilterPolicy.denied(cpuid: t).map { [$0.base, $0.count] } }
        var p = CPUIDPolicy(totalVCPUs: 1, nodes: [(0, 1)], tscKHz: 0, apicBusKHz: 0)
        XCTAssertEqual(ranges(p.entries(supported: [], vcpu: 0)), [[0x3B, 1], [0x6E0, 1], [0x11, 2], [0x4B56_4D00, 8]])
        p.offerKVMClock = true
        let denied = ranges(p.entries(supported: [], vcpu: 0))
        XCTAssertEqual(denied, [[0x3B, 1], [0x6E0, 1], [0x11, 2], [0x4B56_4D02, 6]],
                       "WALL_CLOCK_NEW and SYSTEM_TIME_NEW through; the old kvmclock MSRs and async PF.. still #GP")
    }

    func testAMigratedVCPUCarriesItsKVMClockMSR() {
        XCTAssertTrue(VCPUState.migratedMSRs.contains(KVMParavirt.msrSystemTimeNew))
    }
}

/// On this host's KVM (skipped without /dev/kvm).
final class KVMClockHostTests: XCTestCase {
    override func setUpWithError() throws { try Requirement.kvm() }

    func testProbeAndClockControl() throws {
        let kvm = try KVMSystem()
        let support = KVMClockProbe.support(kvm: kvm, supported: try kvm.supportedCPUID())
        print("kvmclock probe: works=\(support.works): \(support.detail)")
        let vm = try kvm.createVM()
        guard vm.hasAdjustableClock else {
            XCTAssertFalse(support.works, "the probe must not claim kvmclock without KVM_SET_CLOCK")
            throw XCTSkip("this KVM has no KVM_CAP_ADJUST_CLOCK")
        }
        let a = try vm.kvmclock()
        try vm.setKVMClock(a.nanoseconds + 3_000_000_000)
        let b = try vm.kvmclock()
        let moved = Int64(b.nanoseconds) - Int64(a.nanoseconds)
        XCTAssertGreaterThanOrEqual(moved, 3_000_000_000, "KVM_SET_CLOCK moved the clock forward")
        XCTAssertLessThan(moved, 3_100_000_000, "by the amount asked (plus the time between the calls)")
        XCTAssertGreaterThan(b.hostTSC, a.hostTSC)
    }

    /// A vCPU whose guest enabled kvmclock, captured and restored into a vCPU of another VM (as
    /// live migration does): the new VM's KVM writes the pvclock structure at the same address.
    func testTheRestoredMSRMakesTheNewKVMWriteThePVClock() throws {
        let kvm = try KVMSystem()
        let supported = try kvm.supportedCPUID()
        guard KVMClockProbe.support(kvm: kvm, supported: supported).works else { throw XCTSkip("kvmclock does not work on this KVM") }
        let at: UInt64 = 0xC000
        let state: VCPUState = try InstructionProbe.withProbeVM(kvm: kvm) { vm, _ in
            let v = try vm.createVCPU(id: 0)
            try v.setCPUID(supported)
            try v.setMSRs([(KVMParavirt.msrSystemTimeNew, at | 1)])
            return try v.captureState()
        }
        XCTAssertEqual(state.msrs.first { $0.index == KVMParavirt.msrSystemTimeNew }?.value, at | 1)
        try InstructionProbe.withProbeVM(kvm: kvm) { vm, mem in
            mem.storeBytes(of: UInt8(0xF4), toByteOffset: Int(InstructionProbe.codeAt), as: UInt8.self)   // hlt
            let v = try vm.createVCPU(id: 0)
            try v.setCPUID(supported)
            try v.restoreState(state)
            try v.setRegisters(try InstructionProbe.enterProbeCode(v, supported: supported))
            XCTAssertEqual(PVClockTimeInfo(mem + Int(at)).version, 0, "nothing written before the vCPU runs")
            XCTAssertNil(try InstructionProbe.runOne(v, check: nil))
            let info = PVClockTimeInfo(mem + Int(at))
            XCTAssertTrue(info.version != 0 && info.version & 1 == 0 && info.tscToSystemMul != 0, "\(info)")
            XCTAssertEqual(try v.msrs([KVMParavirt.msrSystemTimeNew]), [at | 1])
        }
    }
}

/// The test guest's `kvmclock` workload through `giantvm run` / `up` / `node`.
final class KVMClockGuestTests: XCTestCase {
    let elf = Built.packageRoot + "/Guests/build/testguest.elf"

    override func setUpWithError() throws {
        try Requirement.testGuestVM()
        let kvm = try KVMSystem()
        guard KVMClockProbe.support(kvm: kvm, supported: try kvm.supportedCPUID()).works else {
            throw XCTSkip("kvmclock does not work on this KVM: it is not offered (the VMM logs why at info)")
        }
    }

    func config(nodes: Int, port: Int, cmdline: String) -> String {
        multibootTestConfig(cluster: "kvmclock\(nodes)", port: port, vcpus: nodes == 1 ? [2] : Array(repeating: 1, count: nodes), cmdline: cmdline)
    }

    /// The signed value of `"key":<n>` in `text`.
    func field(_ text: String, _ key: String) -> Int64? {
        guard let r = text.range(of: "\"\(key)\":") else { return nil }
        return Int64(text[r.upperBound...].prefix { $0.isNumber || $0 == "-" })
    }

    func testOneNodeOffersAStableMonotonicClock() throws {
        let r = try giantvm(["run", "--config", config(nodes: 1, port: 19880, cmdline: "kvmclock ops=1000"),
                             "--timeout", "60", "--log-level", "info"], timeout: 90)
        XCTAssertEqual(r.status, 0, r.output.suffix(3000).description)
        XCTAssertTrue(r.output.contains("kvmclock: offered: kvmclock works"), "the probe's result is logged at info")
        XCTAssertTrue(r.stdout.contains("\"stable_bit\":true"), "one node: CLOCKSOURCE_STABLE_BIT offered")
        XCTAssertEqual(field(r.stdout, "handoffs"), 1999, r.stdout)
        XCTAssertEqual(field(r.stdout, "max_back_same_node_ns"), 0, "one KVM: its vCPUs' clocks never disagree")
    }

    func testWithoutTheFeatureTheGuestFindsNoKVMClock() throws {
        let cfg = config(nodes: 1, port: 19882, cmdline: "kvmclock ops=10")
        let r = try TestSupport.run(Built.giantvm, ["run", "--config", cfg, "--timeout", "60", "--log-level", "info"], timeout: 90,
                                    environment: ["GIANTVM_KVMCLOCK": "0"])
        XCTAssertEqual(r.status, 33, "the guest fails (isa-debug-exit 1): " + r.output.suffix(2000))
        XCTAssertTrue(r.output.contains("kvmclock: not offered (GIANTVM_KVMCLOCK=0)"), r.output.suffix(2000).description)
        XCTAssertTrue(r.stdout.contains("kvmclock not offered: no KVM signature leaf"), r.stdout.suffix(2000).description)
        let bad = try TestSupport.run(Built.giantvm, ["run", "--config", cfg, "--timeout", "60"], timeout: 90,
                                      environment: ["GIANTVM_KVMCLOCK": "yes"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.output.contains("GIANTVM_KVMCLOCK=yes: expected 0"), bad.output.suffix(2000).description)
    }

    /// Two nodes (vCPU 1 on node 1), started 300 ms apart so their VMs' clocks start that far
    /// apart: aligned, the guest sees one clock (and the host's figures say within µs);
    /// with `--no-time-sync` on node 1 the guest sees the two clocks disagree and fails.
    func staggered(port: Int, align: Bool) throws -> (node0: ProcessResult, node1: ProcessResult) {
        let cfg = config(nodes: 2, port: port, cmdline: "kvmclock ops=300")
        let n0 = try Child(Built.giantvm, ["node", "--config", cfg, "--id", "0", "--timeout", "60", "--log-level", "info"])
        usleep(300_000)
        let n1 = try Child(Built.giantvm, ["node", "--config", cfg, "--id", "1", "--timeout", "60", "--log-level", "info"]
                           + (align ? [] : ["--no-time-sync"]))
        defer { n0.signal(SIGKILL); n1.signal(SIGKILL) }
        let r0 = n0.wait(timeout: 90), r1 = n1.wait(timeout: 20)
        return (r0, r1)
    }

    func testTwoNodesReadOneClock() throws {
        let (r0, r1) = try staggered(port: 19884, align: true)
        XCTAssertEqual(r0.status, 0, r0.output.suffix(3000).description + r1.output.suffix(2000))
        XCTAssertTrue(r0.stdout.contains("\"stable_bit\":false"), "across nodes the stable bit is not offered")
        XCTAssertEqual(field(r0.stdout, "cross_node_handoffs"), 599, r0.stdout)
        guard let line = r1.stdout.split(separator: "\n").first(where: { $0.contains("kvmclock minus node 0's") }) else {
            return XCTFail("no kvmclock alignment in node 1's time line:\n" + r1.output.suffix(3000))
        }
        print(line)
        print(r0.stdout.split(separator: "\n").first { $0.hasPrefix("{\"result\"") } ?? "")
        // "... kvmclock minus node 0's: before -646.8 µs, after 0.9 µs (± 13.7 µs)"
        let parts = line.components(separatedBy: "kvmclock minus node 0's: before ")[1].components(separatedBy: " µs, after ")
        guard parts.count == 2, let before = Double(parts[0]), let after = Double(parts[1].split(separator: " ")[0]) else {
            return XCTFail(String(line))
        }
        XCTAssertGreaterThan(abs(before), 200, "the VMs were made 300 ms apart: their clocks were that far apart")
        XCTAssertLessThan(abs(after), 50, "aligned to within microseconds (host figure)")
        // the wall clock each node's KVM wrote (host realtime minus its kvmclock): one host, so
        // the difference is the difference between the two VMs' kvmclocks
        XCTAssertLessThan(field(r0.stdout, "wall_diff_ns") ?? .max, 100_000, r0.stdout)
        XCTAssertLessThan(abs(field(r0.stdout, "skew_ns") ?? .max), 1_000_000, r0.stdout)
    }

    func testTwoNodesWithoutAlignmentDisagree() throws {
        let (r0, r1) = try staggered(port: 19888, align: false)
        XCTAssertEqual(r0.status, 33, "the guest fails: " + r0.output.suffix(3000) + r1.output.suffix(1000))
        XCTAssertTrue(r0.stdout.contains("disagree by more than the bound") || r0.stdout.contains("skewed by more than the bound"),
                      r0.stdout.suffix(2000).description)
        XCTAssertFalse(r1.stdout.contains("kvmclock minus node 0's"))
    }
}
