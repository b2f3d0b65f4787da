// Booting standard kernels through the Firmware target: multiboot v1 and the Linux boot
// protocol (bzImage, vmlinux), with e820/MP/ACPI tables. The loader writes guest RAM through
// pin/unpin (`GuestRAMFirmwareMemory`) and hands back the boot vCPU's entry state, which the BSP
// takes in `run()` instead of the GiantVM 64-bit entry contract.
import Firmware
import KVM

/// Guest RAM as the firmware loaders' memory (writes go through pin/unpin).
final class GuestRAMFirmwareMemory: FirmwareMemory {
    let ram: any GuestRAM
    init(_ ram: any GuestRAM) { self.ram = ram }
    var memoryBytes: UInt64 { ram.size }
    func write(gpa: UInt64, bytes: [UInt8]) throws {
        // Large images are written in 1 MiB pieces so a pin never spans more than that.
        var off = 0
        while off < bytes.count {
            let n = min(bytes.count - off, 1 << 20)
            try ram.write(Array(bytes[off..<off + n]), at: gpa + UInt64(off))
            off += n
        }
    }
}

extension Machine {
    /// Loads a multiboot or Linux image (modules, initrd, command line, firmware tables) and
    /// makes the BSP start in the state its protocol asks for. Threading: setup thread.
    @discardableResult
    public func boot(_ request: BootRequest) throws -> BootPlan {
        let plan = try Bootloader.load(request, into: GuestRAMFirmwareMemory(ram))
        firmwareEntry = plan.entry
        return plan
    }
}

extension VCPURunner {
    /// A firmware entry state (flat segments): 32-bit protected mode with paging off, or 64-bit
    /// mode on the firmware's identity page tables.
    func enter(_ e: EntryState) throws {
        var s = resetSpecialRegisters
        let long = e.mode == .long64
        let code = Segment(base: 0, limit: 0xFFFF_FFFF, selector: e.codeSelector, type: 0xB,
                           db: !long, s: true, l: long, g: true)
        let data = Segment(base: 0, limit: 0xFFFF_FFFF, selector: e.dataSelector, type: 0x3,
                           db: true, s: true, l: false, g: true)
        s.cs = code
        s.ds = data; s.es = data; s.fs = data; s.gs = data; s.ss = data
        s.tr = Segment(base: 0, limit: 0x67, selector: 0, type: 0xB, s: false)
        s.ldt = Segment(base: 0, limit: 0, selector: 0, type: 0x2, s: false)
        s.gdt = DescriptorTable(base: e.gdtBase, limit: e.gdtLimit)
        s.idt = DescriptorTable(base: 0, limit: 0)
        s.cr0 = e.cr0
        s.cr3 = e.cr3
        s.cr4 = e.cr4
        s.efer = e.efer
        s.apicBase = apicBaseMSR
        try vcpu.setSpecialRegisters(s)
        var r = Registers()
        r.rip = e.rip
        r.rax = e.rax; r.rbx = e.rbx; r.rsi = e.rsi; r.rdi = e.rdi; r.rsp = e.rsp
        r.rflags = e.rflags
        try vcpu.setRegisters(r)
    }
}

extension Machine {
    /// Registers of every local vCPU (after `run()` returned: the threads no longer run them),
    /// for "how far did the guest get" reports.
    public func registerDumps() -> String {
        runners.map { "vCPU \($0.index):\n\($0.registerDump())" }.joined(separator: "\n")
    }
}
