// Standard guests end to end through `giantvm run`: multiboot kernels (the SMP test guest and a
// tiny one that asks fw_cfg), the i8042 reset, the PIT's interrupt rate with the host's real
// timers, and (when installed) a stock Debian kernel's first console lines.
import XCTest
import Foundation
import Logging
import Metrics
import PluginHost
import PluginKit
import TestSupport
@testable import DeviceModels

func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * UInt32($0))) } }

/// A raw multiboot image (a.out kludge) loaded at 1 MiB: header at offset 0, code at 0x20.
func multibootImage(code: [UInt8]) -> [UInt8] {
    let magic: UInt32 = 0x1BAD_B002, flags: UInt32 = 0x0001_0000
    var b = le32(magic) + le32(flags) + le32(0 &- magic &- flags)
    b += le32(0x100000) + le32(0x100000) + le32(0) + le32(0) + le32(0x100020)
    while b.count < 0x20 { b.append(0) }
    return b + code
}

/// 32-bit code: checks EAX = 0x2BADB002, reads fw_cfg's signature (must be "QEMU") and
/// FW_CFG_NB_CPUS, and writes the CPU count to isa-debug-exit (1 on any mismatch).
func fwcfgProbeCode() -> [UInt8] {
    var c: [UInt8] = []
    var fixups: [Int] = []
    func jneFail() { c += [0x75, 0]; fixups.append(c.count - 1) }
    c += [0x3D] + le32(0x2BAD_B002); jneFail()                   // cmp eax, magic; jne fail
    c += [0x66, 0xBA, 0x10, 0x05, 0x31, 0xC0, 0x66, 0xEF]          // mov dx,0x510; xor eax,eax; out dx,ax
    c += [0x66, 0xBA, 0x11, 0x05]                                  // mov dx,0x511
    for ch in Array("QEMU".utf8) { c += [0xEC, 0x3C, ch]; jneFail() } // in al,dx; cmp al,ch; jne fail
    c += [0x66, 0xBA, 0x10, 0x05, 0x66, 0xB8, 0x05, 0x00, 0x66, 0xEF] // mov dx,0x510; mov ax,5; out dx,ax
    c += [0x66, 0xBA, 0x11, 0x05, 0xEC, 0x0F, 0xB6, 0xC0]          // mov dx,0x511; in al,dx; movzx eax,al
    c += [0x66, 0xBA, 0xF4, 0x00, 0xEF, 0xF4, 0xEB, 0xFD]          // mov dx,0xf4; out dx,eax; hlt; jmp $-1
    let fail = c.count
    c += [0xB8] + le32(1) + [0x66, 0xBA, 0xF4, 0x00, 0xEF, 0xF4, 0xEB, 0xFD]
    for f in fixups { c[f] = UInt8(fail - (f + 1)) }
    return c
}

/// 32-bit code: pulses the CPU reset line through the i8042 (0xFE to port 0x64), then would
/// report failure (value 7) if the VM were still running.
let i8042ResetCode: [UInt8] = [0xB0, 0xFE, 0xE6, 0x64, 0xB8, 0x07, 0, 0, 0, 0x66, 0xBA, 0xF4, 0x00, 0xEF, 0xF4, 0xEB, 0xFD]

final class StandardGuestTests: XCTestCase {
    override func setUpWithError() throws {
        try Requirement.kvm()
        try Requirement.userfaultfd()
        try Requirement.builtGiantVM()
    }

    func config(image: String, vcpus: Int, memory: String = "16MiB", cmdline: String = "", proto: String = "auto",
                devices: [String]) -> String {
        """
        cluster: boottest
        nodes:
          - {id: 0, address: 127.0.0.1, port: 19510, vcpus: \(vcpus)}
        memory: \(memory)
        transport: {plugin: transport-tcp}
        coherence: {plugin: dsm-local}
        devices:
        \(devices.map { "  - " + $0 }.joined(separator: "\n"))
        guest:
          image: \(image)
          protocol: \(proto)
          cmdline: "\(cmdline)"
        """
    }

    static let uart = "{name: com1, model: uart16550, node: 0, base: 0x3f8, irq: 4}"
    static let exit = "{name: exit, model: isa-debug-exit, node: 0, base: 0xf4}"
    static let results = "{name: results, model: results, node: 0, base: 0xe0}"
    static let fwcfg = "{name: fwcfg, model: fw-cfg, node: 0}"
    static let pc = ["{name: pic, model: i8259, node: 0}", "{name: pit, model: i8254, node: 0, irq: 2}",
                     "{name: rtc, model: cmos-rtc, node: 0}", "{name: kbd, model: i8042, node: 0, irq: 1}",
                     "{name: post, model: post-ports, node: 0}", "{name: pci, model: pci-host, node: 0}"]

    func write(_ bytes: [UInt8], next cfg: String, name: String) -> String {
        let path = (cfg as NSString).deletingLastPathComponent + "/" + name
        _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
        return path
    }

    func testTinyMultibootKernelReadsFwCfg() throws {
        let cfg = temporaryFile(config(image: "probe.bin", vcpus: 2, devices: [Self.uart, Self.exit, Self.fwcfg] + Self.pc))
        _ = write(multibootImage(code: fwcfgProbeCode()), next: cfg, name: "probe.bin")
        let r = try giantvm(["run", "--config", cfg, "--timeout", "20"], timeout: 40)
        // value 2 (the vCPU count fw_cfg reported) -> status 5 -> giantvm exits 32 + 2
        XCTAssertEqual(r.status, 34, r.output)
        XCTAssertTrue(r.stderr.contains("isa-debug-exit value 2 (status 5)"), r.stderr)
    }

    func testTinyMultibootKernelWithoutFwCfgFails() throws {
        let cfg = temporaryFile(config(image: "probe.bin", vcpus: 2, devices: [Self.uart, Self.exit]))
        _ = write(multibootImage(code: fwcfgProbeCode()), next: cfg, name: "probe.bin")
        let r = try giantvm(["run", "--config", cfg, "--timeout", "20"], timeout: 40)
        XCTAssertEqual(r.status, 33, "unassigned ports read 0xFF, not \"QEMU\": value 1\n" + r.output)
    }

    func testI8042ResetStopsTheVM() throws {
        let cfg = temporaryFile(config(image: "reset.bin", vcpus: 2, devices: [Self.uart, Self.exit] + Self.pc))
        _ = write(multibootImage(code: i8042ResetCode), next: cfg, name: "reset.bin")
        let r = try giantvm(["run", "--config", cfg, "--timeout", "20"], timeout: 40)
        XCTAssertEqual(r.status, 3, r.output)
        XCTAssertTrue(r.stderr.contains("guest requested a reset"), r.stderr)
        XCTAssertTrue(r.stderr.contains("kbd: guest requested a reset (i8042 CPU reset line)"), r.stderr)
    }

    func testCorruptImageIsNamed() throws {
        let cfg = temporaryFile(config(image: "junk.bin", vcpus: 1, devices: [Self.uart, Self.exit]))
        let path = write([UInt8](repeating: 0x41, count: 4096), next: cfg, name: "junk.bin")
        let r = try giantvm(["run", "--config", cfg, "--timeout", "20"], timeout: 40)
        XCTAssertEqual(r.status, 1, r.output)
        XCTAssertTrue(r.stderr.contains("guest.image: \(path): unrecognised image: not a bzImage"), r.stderr)
        var bad = multibootImage(code: [0xF4])
        bad[8] ^= 1
        _ = write(bad, next: cfg, name: "junk.bin")
        let r2 = try giantvm(["run", "--config", cfg, "--timeout", "20"], timeout: 40)
        XCTAssertEqual(r2.status, 1, r2.output)
        XCTAssertTrue(r2.stderr.contains("\(path): multiboot header at offset 0x0: bad checksum"), r2.stderr)
    }

    /// The SMP test guest through its multiboot entry: fw_cfg gives it the vCPU count.
    func testSMPTestGuestViaMultibootOnTwoVCPUs() throws {
        let elf = Built.packageRoot + "/Guests/build/testguest.elf"
        if !FileManager.default.fileExists(atPath: elf) {
            _ = try? TestSupport.run("/usr/bin/make", ["-C", Built.packageRoot + "/Guests"], timeout: 120)
        }
        guard FileManager.default.fileExists(atPath: elf) else { throw XCTSkip("Guests/build/testguest.elf not built (make -C Guests)") }
        let cfg = temporaryFile(config(image: elf, vcpus: 2, memory: "64MiB", cmdline: "hello", proto: "multiboot",
                                       devices: [Self.uart, Self.exit, Self.results, Self.fwcfg] + Self.pc))
        let r = try giantvm(["run", "--config", cfg, "--timeout", "30"], timeout: 50)
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertTrue(r.stdout.contains("guest: workload=hello vcpus=2 nodes=1 mem_mib=64"), r.stdout)
        XCTAssertTrue(r.stdout.contains("{\"result\":{\"workload\":\"hello\",\"vcpus\":2,\"greeted\":2,"), r.stdout)
    }

    /// A stock Debian kernel (linux-image-cloud-amd64), booted as a bzImage: its banner and
    /// command line reach the UART. Ring 0 is emulated here (~1 µs an instruction), so the
    /// LZ4 decompression alone takes about two minutes (145 s measured under load); see docs/boot.md for how far it gets.
    func testDebianKernelPrintsBannerAndCommandLine() throws {
        guard let name = (try? FileManager.default.contentsOfDirectory(atPath: "/boot"))?.sorted().last(where: { $0.hasPrefix("vmlinuz-") }) else {
            throw XCTSkip("no /boot/vmlinuz-* (apt-get install -y linux-image-cloud-amd64)")
        }
        guard ProcessInfo.processInfo.environment["GIANTVM_SLOW_TESTS"] != nil else {
            throw XCTSkip("takes ~2 minutes under emulated ring 0: set GIANTVM_SLOW_TESTS=1")
        }
        let cmdline = "earlyprintk=serial,ttyS0,115200 console=ttyS0 nokaslr"
        let cfg = temporaryFile(config(image: "/boot/" + name, vcpus: 1, memory: "256MiB", cmdline: cmdline,
                                       devices: [Self.uart, Self.exit] + Self.pc))
        let child = try Child(Built.giantvm, ["run", "--config", cfg, "--timeout", "320"])
        defer { child.signal(SIGKILL); _ = child.wait(timeout: 10) }
        let bound: TimeInterval = 300
        XCTAssertTrue(child.waitForOutput(timeout: bound) { $0.contains("Command line: \(cmdline)") },
                      "no command line within \(bound) s:\n" + child.stdoutSoFar.suffix(2000))
        XCTAssertTrue(child.stdoutSoFar.contains("Linux version "), child.stdoutSoFar)
        XCTAssertTrue(child.waitForOutput(timeout: 60) { $0.contains("ACPI: RSDP 0x00000000000F0000 000024 (v02 GVMSWF)") },
                      child.stdoutSoFar)
        // The test stops the VM itself, however far the kernel got (it may still be booting).
        child.signal(SIGTERM)
        XCTAssertFalse(child.wait(timeout: 30).timedOut, "giantvm run must stop on SIGTERM")
    }
}

/// The Debian kernel's uncompressed vmlinux, extracted from the installed bzImage: the payload
/// (payload_offset/payload_length in the setup header, protocol 2.08+) decompressed with the
/// tool its magic names (lz4, gzip, xz, zstd). Cached under /tmp.
func extractDebianVmlinux() throws -> (vmlinux: String, kernel: String) {
    guard let name = (try? FileManager.default.contentsOfDirectory(atPath: "/boot"))?.sorted().last(where: { $0.hasPrefix("vmlinuz-") }) else {
        throw XCTSkip("no /boot/vmlinuz-* (apt-get install -y linux-image-cloud-amd64)")
    }
    let out = "/tmp/giantvm-boot-vmlinux-" + name.dropFirst("vmlinuz-".count)
    if FileManager.default.fileExists(atPath: out) { return (out, name) }
    let b = Array(try Data(contentsOf: URL(fileURLWithPath: "/boot/" + name)))
    func u32(_ o: Int) -> Int { Int(b[o]) | Int(b[o + 1]) << 8 | Int(b[o + 2]) << 16 | Int(b[o + 3]) << 24 }
    let setup = (b[0x1F1] == 0 ? 4 : Int(b[0x1F1])) + 1
    let start = setup * 512 + u32(0x248), length = u32(0x24C)
    let payload = Array(b[start..<start + length])
    let tool: [String]
    switch (payload[0], payload[1], payload[2], payload[3]) {
    case (0x02, 0x21, 0x4C, 0x18): tool = ["/usr/bin/lz4", "-d", "-f"]
    case (0x1F, 0x8B, _, _): tool = ["/bin/sh", "-c", "gzip -dc \"$0\" > \"$1\""]
    case (0xFD, 0x37, 0x7A, 0x58): tool = ["/bin/sh", "-c", "xz -dc \"$0\" > \"$1\""]
    case (0x28, 0xB5, 0x2F, 0xFD): tool = ["/bin/sh", "-c", "zstd -dc \"$0\" > \"$1\""]
    default: throw XCTSkip("unknown payload compression in /boot/\(name)")
    }
    // Except for gzip, the kernel build appends the decompressed size (4 bytes) to the stream.
    let stream = payload[0] == 0x1F ? payload : Array(payload.dropLast(4))
    let packed = out + ".payload"
    _ = FileManager.default.createFile(atPath: packed, contents: Data(stream))
    defer { try? FileManager.default.removeItem(atPath: packed) }
    let r = try TestSupport.run(tool[0], Array(tool.dropFirst()) + [packed, out], timeout: 60)
    guard r.status == 0, FileManager.default.fileExists(atPath: out) else {
        throw XCTSkip("cannot decompress the payload of /boot/\(name): \(r.output)")
    }
    return (out, name)
}

/// A config booting the Debian vmlinux with a UART, the exit device and the PC devices Linux
/// probes, all on node 0; one node per entry of `vcpusPerNode`.
func debianConfig(cluster: String, vmlinux: String, cmdline: String, vcpusPerNode: [Int], firstPort: Int,
                  coherence: String) -> String {
    let nodes = vcpusPerNode.enumerated().map { i, v in
        "  - {id: \(i), address: 127.0.0.1, port: \(firstPort + i), vcpus: \(v)}"
    }.joined(separator: "\n")
    return """
        cluster: \(cluster)
        nodes:
        \(nodes)
        memory: 256MiB
        transport: {plugin: transport-tcp}
        coherence: {plugin: \(coherence)}
        devices:
          - {name: com1, model: uart16550, node: 0, base: 0x3f8, irq: 4}
          - {name: exit, model: isa-debug-exit, node: 0, base: 0xf4}
          - {name: fwcfg, model: fw-cfg, node: 0}
          - {name: pit, model: i8254, node: 0, irq: 2}
          - {name: rtc, model: cmos-rtc, node: 0}
          - {name: kbd, model: i8042, node: 0, irq: 1}
        guest:
          image: \(vmlinux)
          cmdline: "\(cmdline)"
        """
}

final class DebianVmlinuxTests: XCTestCase {
    /// The uncompressed kernel skips the ring-0 decompressor: banner and command line within 60 s.
    func testDebianVmlinuxPrintsBannerAndCommandLine() throws {
        try Requirement.kvm()
        try Requirement.userfaultfd()
        try Requirement.builtGiantVM()
        let (vmlinux, _) = try extractDebianVmlinux()
        let cmdline = "earlyprintk=serial,ttyS0,115200 console=ttyS0"
        let cfg = temporaryFile(debianConfig(cluster: "debian", vmlinux: vmlinux, cmdline: cmdline,
                                             vcpusPerNode: [1], firstPort: 19530, coherence: "dsm-local"))
        let child = try Child(Built.giantvm, ["run", "--config", cfg, "--timeout", "90"])
        defer { child.signal(SIGKILL); _ = child.wait(timeout: 10) }
        let bound: TimeInterval = 60
        let started = Date()
        XCTAssertTrue(child.waitForOutput(timeout: bound) { $0.contains("Command line: \(cmdline)") },
                      "no command line within \(bound) s:\n" + child.stdoutSoFar.suffix(2000))
        print("Debian vmlinux: command line on the console after \(String(format: "%.1f", Date().timeIntervalSince(started))) s")
        XCTAssertTrue(child.stdoutSoFar.contains("Linux version "), child.stdoutSoFar)
        XCTAssertTrue(child.waitForOutput(timeout: 30) { $0.contains("BIOS-e820: [mem 0x0000000000100000-0x000000000fffffff] usable") },
                      child.stdoutSoFar)
    }
}

// ---- the PIT against the host's real timer thread -----------------------------------------------

nonisolated(unsafe) var pitRises = 0
nonisolated(unsafe) var pitLevel = false
let pitLock = NSLock()

final class PITRateTests: XCTestCase {
    func testChannel0TicksAtTheProgrammedRate() throws {
        let services = HostServicesTable(pluginName: "pit-test", metrics: MetricsRegistry(), logger: Logger(label: "pit")) { _ in }
        let dh = UnsafeMutablePointer<gvm_device_host>.allocate(capacity: 1)
        dh.initialize(to: gvm_device_host())
        dh.pointee.size = UInt32(MemoryLayout<gvm_device_host>.size)
        dh.pointee.map_io = { _, _, _, _ in 0 }
        dh.pointee.set_irq = { _, line, level in
            pitLock.lock(); defer { pitLock.unlock() }
            if line == 2 && level != 0 && !pitLevel { pitRises += 1 }
            pitLevel = level != 0
        }
        dh.pointee.console_write = { _, _, _ in }
        dh.pointee.request_stop = { _, _, _ in }
        dh.pointee.dma_read = { _, _, _, _ in -1 }
        dh.pointee.dma_write = { _, _, _, _ in -1 }
        defer { dh.deallocate() }
        var cfg = gvm_device_config()
        let name = strdup("pit")!
        defer { free(name) }
        cfg.instance_name = UnsafePointer(name)
        cfg.has_base = 0
        cfg.irq = 2
        let pit = try withUnsafePointer(to: &cfg) {
            try PIT8254(services: HostServices(services.pointer), host: DeviceHost(UnsafePointer(dh)),
                        config: DeviceConfig($0), settings: Settings())
        }
        defer { pit.shutdown() }
        func out(_ port: UInt64, _ v: UInt8) {
            var b = [v]
            b.withUnsafeMutableBufferPointer { pit.io(space: .pio, offset: port, data: $0, isWrite: true) }
        }
        // 500 Hz: divisor 2386 = 0x0952, mode 2 (rate generator), as Linux programs HZ ticks.
        pitLock.lock(); pitRises = 0; pitLock.unlock()
        out(3, 0x34); out(0, 0x52); out(0, 0x09)
        let start = DispatchTime.now().uptimeNanoseconds
        Thread.sleep(forTimeInterval: 1.0)
        pitLock.lock(); let n = pitRises; pitLock.unlock()
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        let rate = Double(n) / seconds
        let programmed = 1_193_182.0 / 2386.0
        print("PIT: \(n) IRQs in \(String(format: "%.3f", seconds)) s = \(String(format: "%.1f", rate)) Hz (programmed \(String(format: "%.1f", programmed)) Hz)")
        XCTAssertGreaterThan(rate, programmed * 0.8)
        XCTAssertLessThan(rate, programmed * 1.05)
        // Reprogramming to 100 Hz changes the rate; a one-shot (mode 0) gives exactly one edge.
        out(3, 0x30); out(0, 0x9C); out(0, 0x2E)  // mode 0, 11932 ticks = 10 ms
        pitLock.lock(); pitRises = 0; pitLock.unlock()
        Thread.sleep(forTimeInterval: 0.3)
        pitLock.lock(); let once = pitRises; pitLock.unlock()
        XCTAssertEqual(once, 1, "mode 0 fires once")
    }
}
