import XCTest
import TestSupport

/// A stock Debian kernel (its vmlinux, extracted from the installed bzImage) on 2 nodes x 1 vCPU:
/// vCPU 0 and every device on node 0, memory coherent through dsm-ivy over TCP. The kernel's
/// banner and command line must appear on node 0's console within the bound; then the test stops
/// the VM itself (SIGTERM to `up`), whatever the kernel is doing by then: on this machine's KVM
/// (ring 0 emulated) it may already have stopped at an instruction the KVM cannot emulate, on
/// another it is still booting — the test passes on what it checks either way (docs/boot.md).
final class DebianTwoNodeTests: XCTestCase {
    func testDebianVmlinuxOnTwoNodesPrintsBannerAndCommandLine() throws {
        try Requirement.kvm()
        try Requirement.userfaultfd()
        try Requirement.builtGiantVM()
        let (vmlinux, _) = try extractDebianVmlinux()
        let cmdline = "earlyprintk=serial,ttyS0,115200 console=ttyS0"
        let cfg = temporaryFile(debianConfig(cluster: "debian2", vmlinux: vmlinux, cmdline: cmdline,
                                             vcpusPerNode: [1, 1], firstPort: 19540, coherence: "dsm-ivy"))
        let child = try Child(Built.giantvm, ["up", cfg])
        defer { child.signal(SIGTERM); _ = child.wait(timeout: 15) }
        let bound: TimeInterval = 120
        let started = Date()
        XCTAssertTrue(child.waitForOutput(timeout: bound) { $0.contains("[node 0] [    0.000000] Command line: \(cmdline)") },
                      "no command line on node 0 within \(bound) s:\n" + child.stdoutSoFar.suffix(3000))
        print("Debian vmlinux on 2 nodes: command line on node 0's console after \(String(format: "%.1f", Date().timeIntervalSince(started))) s")
        XCTAssertTrue(child.stdoutSoFar.contains("[node 0] [    0.000000] Linux version "), child.stdoutSoFar)
        // The test's own stop: SIGTERM reaches every node through `up`; every node must end, no hang
        // (a kernel that already stopped by itself has ended them before).
        child.signal(SIGTERM)
        let r = child.wait(timeout: 60)
        XCTAssertFalse(r.timedOut, "the cluster must stop on SIGTERM:\n" + r.output.suffix(3000))
        XCTAssertTrue(r.output.contains("[up]"), r.output.suffix(3000).description)
    }
}

/// The SMP test guest through its multiboot entry on 2 nodes x 1 vCPU: the firmware loader runs on
/// the BSP's node, the guest reads its vCPU count (2) from fw-cfg, starts the AP on node 1 by SIPI
/// and IPIs it; the guest powers off through the exit device and every node exits 0.
final class MultibootTwoNodeTests: XCTestCase {
    func testMultibootGuestOnTwoNodesOneVCPUEach() throws {
        try Requirement.kvm()
        try Requirement.userfaultfd()
        try Requirement.builtGiantVM()
        let elf = Built.packageRoot + "/Guests/build/testguest.elf"
        guard FileManager.default.fileExists(atPath: elf) else { throw XCTSkip("Guests/build/testguest.elf not built (make -C Guests)") }
        for (workload, check) in [("hello", "SUMMARY workload=hello vcpus=2 ok=true"), ("ipi ipis=20", "SUMMARY workload=ipi vcpus=2 ok=true")] {
            let cfg = temporaryFile("""
                cluster: mb2
                nodes:
                  - {id: 0, address: 127.0.0.1, port: 19550, vcpus: 1}
                  - {id: 1, address: 127.0.0.1, port: 19551, vcpus: 1}
                memory: 32MiB
                transport: {plugin: transport-tcp}
                coherence: {plugin: dsm-ivy}
                devices:
                  - {name: com1, model: uart16550, node: 0, base: 0x3f8, irq: 4}
                  - {name: exit, model: isa-debug-exit, node: 0, base: 0xf4}
                  - {name: fwcfg, model: fw-cfg, node: 0}
                guest:
                  image: \(elf)
                  protocol: multiboot
                  cmdline: "\(workload)"
                """)
            let r = try giantvm(["up", cfg], timeout: 90)
            XCTAssertEqual(r.status, 0, r.output.suffix(3000).description)
            XCTAssertTrue(r.stdout.contains("[node 0] hello from vCPU 1") || workload != "hello", r.stdout)
            XCTAssertTrue(r.stdout.contains("[node 0] \(check)"), r.stdout.suffix(3000).description)
        }
    }
}
