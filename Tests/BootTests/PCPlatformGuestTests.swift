// The PC platform devices end to end with the SMP test guest (multiboot entry): HPET, port 0x92,
// the RTC's IRQ 8, QEMU's pc-testdev and pci-testdev (workload `pc`), port 0x92's reset
// (`pcreset`) and ACPI soft off (`pcoff`), on 1 node and across 2 nodes with every one of these
// devices homed on node 1 (accesses and interrupt lines forwarded); multiboot images below 1 MiB.
import XCTest
import Foundation
import TestSupport

final class PCPlatformGuestTests: XCTestCase {
    var elf: String { Built.packageRoot + "/Guests/build/testguest.elf" }

    override func setUpWithError() throws {
        try Requirement.kvm()
        try Requirement.userfaultfd()
        try Requirement.builtGiantVM()
        if !FileManager.default.fileExists(atPath: elf) {
            _ = try? TestSupport.run("/usr/bin/make", ["-C", Built.packageRoot + "/Guests"], timeout: 120)
        }
        guard FileManager.default.fileExists(atPath: elf) else { throw XCTSkip("Guests/build/testguest.elf not built (make -C Guests)") }
    }

    /// The platform devices on `home`; the console, exit, results and fw-cfg on node 0.
    static func devices(home: Int, testdevBase: String = "0x1e0") -> [String] {
        ["{name: com1, model: uart16550, node: 0, base: 0x3f8, irq: 4}",
         "{name: exit, model: isa-debug-exit, node: 0, base: 0xf4}",
         "{name: results, model: results, node: 0, base: 0xe0}",
         "{name: fwcfg, model: fw-cfg, node: 0}",
         "{name: rtc, model: cmos-rtc, node: \(home), irq: 8}",
         "{name: hpet, model: hpet, node: \(home)}",
         "{name: p92, model: port92, node: \(home)}",
         "{name: testdev, model: pc-testdev, node: \(home), base: \(testdevBase)}",
         "{name: pci, model: pci-testdev, node: \(home)}",
         "{name: pm, model: acpi-pm, node: \(home)}"]
    }

    func config(nodes: Int, port: Int, cmdline: String, devices: [String], image: String? = nil) -> String {
        temporaryFile("""
            cluster: pcplat\(nodes)
            nodes:
            \((0..<nodes).map { "  - {id: \($0), address: 127.0.0.1, port: \(port + $0), vcpus: 1}" }.joined(separator: "\n"))
            memory: 32MiB
            transport: {plugin: transport-tcp}
            coherence: {plugin: \(nodes == 1 ? "dsm-local" : "dsm-ivy")}
            devices:
            \(devices.map { "  - " + $0 }.joined(separator: "\n"))
            ioapic_node: 0
            guest:
              image: \(image ?? elf)
              protocol: multiboot
              cmdline: "\(cmdline)"
            """)
    }

    func start(nodes: Int, port: Int, cmdline: String, devices: [String], image: String? = nil) throws -> ProcessResult {
        let cfg = config(nodes: nodes, port: port, cmdline: cmdline, devices: devices, image: image)
        return nodes == 1 ? try giantvm(["run", "--config", cfg, "--timeout", "60"], timeout: 90)
                          : try giantvm(["up", cfg, "--timeout", "90"], timeout: 120)
    }

    func testPlatformDevicesOnOneNodeAndOnNode1OfTwo() throws {
        for (nodes, port) in [(1, 19580), (2, 19582)] {
            let r = try start(nodes: nodes, port: port, cmdline: "pc", devices: Self.devices(home: nodes - 1))
            XCTAssertEqual(r.status, 0, "\(nodes) node(s):\n" + r.output.suffix(3000))
            XCTAssertTrue(r.stdout.contains("\"workload\":\"pc\"") && r.stdout.contains("\"ok\":true"), r.stdout.suffix(3000).description)
            XCTAssertTrue(r.stdout.contains("\"hpet_period_fs\":10000000"), r.stdout.suffix(2000).description)
        }
    }

    func testWithoutTheDevicesThePCWorkloadFails() throws {
        let r = try start(nodes: 1, port: 19584, cmdline: "pc timeout=2", devices: Array(Self.devices(home: 0).prefix(4)))
        XCTAssertNotEqual(r.status, 0, r.output.suffix(2000).description)
        XCTAssertTrue(r.stdout.contains("\"ok\":false,\"error\":\"port 0x92: "), r.stdout.suffix(2000).description)
    }

    func testPort92ResetAndACPISoftOff() throws {
        for (nodes, port) in [(1, 19585), (2, 19586)] {
            let reset = try start(nodes: nodes, port: port, cmdline: "pcreset", devices: Self.devices(home: nodes - 1))
            // `run` exits 3 for a reset; `up` reports a failed node (its status mapping is not this test's)
            if nodes == 1 { XCTAssertEqual(reset.status, 3, reset.output.suffix(2000).description) } else { XCTAssertNotEqual(reset.status, 0) }
            XCTAssertTrue(reset.output.contains("p92: guest requested a reset (port 0x92 fast reset)"), reset.output.suffix(2000).description)
            let off = try start(nodes: nodes, port: port, cmdline: "pcoff", devices: Self.devices(home: nodes - 1))
            XCTAssertEqual(off.status, 0, off.output.suffix(2000).description)
            XCTAssertTrue(off.output.contains("pm: guest powered off (ACPI S5 soft off)"), off.output.suffix(2000).description)
        }
    }

    func testPCTestDevAtQEMUsPortOverlapsTheResultsPort() throws {
        let r = try start(nodes: 1, port: 19588, cmdline: "pc", devices: Self.devices(home: 0, testdevBase: "0xe0"))
        XCTAssertEqual(r.status, 1, r.output)
        XCTAssertTrue(r.stderr.contains("port I/O range 0xe0+0xc of device 'testdev' overlaps 0xe0+0x1 of device 'results'"), r.stderr)
    }

    /// A tiny multiboot kernel loaded at 0x8000 (over the firmware's usual stack page) checks the
    /// boot magic and that EBX's information block has a command line, then exits with value 2.
    func testMultibootImageBelowOneMiB() throws {
        let magic: UInt32 = 0x1BAD_B002, flags: UInt32 = 0x0001_0000, load: UInt32 = 0x8000
        var img = le32(magic) + le32(flags) + le32(0 &- magic &- flags)
        img += le32(load) + le32(load) + le32(0) + le32(load + 0x2000) + le32(load + 0x20)
        while img.count < 0x20 { img.append(0) }
        var code: [UInt8] = [0x3D] + le32(0x2BAD_B002) + [0x75, 0x10]     // cmp eax, magic; jne fail
        code += [0xF6, 0x03, 0x04, 0x74, 0x0B]                               // test byte [ebx], 4; jz fail
        code += [0xB8] + le32(2) + [0x66, 0xBA, 0xF4, 0x00, 0xEF, 0xF4]      // mov eax, 2; out 0xf4; hlt
        code += [0xB8] + le32(7) + [0x66, 0xBA, 0xF4, 0x00, 0xEF, 0xF4]      // fail: value 7
        img += code
        let image = temporaryFile("", name: "low.bin")
        FileManager.default.createFile(atPath: image, contents: Data(img))
        let devs = Array(Self.devices(home: 0).prefix(2))
        for (nodes, port) in [(1, 19590), (2, 19592)] {
            let r = try start(nodes: nodes, port: port, cmdline: "x", devices: devs, image: image)
            XCTAssertTrue(r.output.contains("isa-debug-exit value 2 (status 5)"), "value 2: magic and command line seen\n" + r.output.suffix(2000))
            if nodes == 1 { XCTAssertEqual(r.status, 34, r.output.suffix(2000).description) }
        }
    }
}
