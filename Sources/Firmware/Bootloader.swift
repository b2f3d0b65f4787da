// Picks the boot protocol from the image and loads it: kernel, modules/initrd, command line,
// firmware tables (e820, MP, ACPI) and the entry state for the boot vCPU.

/// What an image is, as far as booting goes.
public enum ImageFormat: String, Equatable, Sendable {
    /// Multiboot v1 (a.out kludge or ELF32): 32-bit protected-mode entry.
    case multiboot
    /// Linux bzImage (boot protocol 2.06+).
    case bzImage
    /// Uncompressed Linux kernel (ELF64 vmlinux).
    case vmlinux
    /// A plain ELF64 executable for GiantVM's own 64-bit entry contract (see docs/vmm.md).
    case giantvm
}

/// The protocol asked for in the config (`guest.protocol`); `auto` picks it from the image.
public enum BootProtocol: String, CaseIterable, Sendable {
    case auto, multiboot, linux, giantvm
}

public struct BootRequest {
    public var file: String
    public var image: [UInt8]
    public var cmdline: String
    public var initrd: BootModule?
    public var modules: [BootModule]
    public var vcpus: Int
    public var bootProtocol: BootProtocol
    /// Platform devices the ACPI tables describe (HPET, ACPI PM).
    public var platform: PlatformDevices
    public init(file: String, image: [UInt8], cmdline: String = "", initrd: BootModule? = nil, modules: [BootModule] = [],
                vcpus: Int, bootProtocol: BootProtocol = .auto, platform: PlatformDevices = PlatformDevices()) {
        self.file = file; self.image = image; self.cmdline = cmdline; self.initrd = initrd; self.modules = modules
        self.vcpus = vcpus; self.bootProtocol = bootProtocol; self.platform = platform
    }
}

/// The result of loading: the entry state for the boot vCPU and what went where.
public struct BootPlan: Sendable {
    public var format: ImageFormat
    public var entry: EntryState
    public var tables: SMPTables.Placement
    /// (what, address, bytes) of every piece written, for logs and tests.
    public var placed: [(what: String, address: UInt64, length: UInt64)]
    public var summary: String {
        "\(format.rawValue): entry 0x\(hex(entry.rip)) in \(entry.mode == .long64 ? "64-bit" : "32-bit protected") mode; "
            + placed.map { "\($0.what) 0x\(hex($0.address))+0x\(hex($0.length))" }.joined(separator: ", ")
    }
}

public enum Bootloader {
    static func isELF(_ b: [UInt8]) -> Bool { b.count >= 16 && b[0] == 0x7F && b[1] == 0x45 && b[2] == 0x4C && b[3] == 0x46 }

    /// Picks the format; throws a FirmwareError naming the file when nothing fits.
    public static func detect(_ bytes: [UInt8], file: String, bootProtocol: BootProtocol = .auto) throws -> ImageFormat {
        func fail(_ m: String) -> FirmwareError { FirmwareError(file: file, message: m) }
        guard bytes.count >= 16 else { throw fail("truncated: \(bytes.count) bytes is too short to be a kernel image") }
        let bz = LinuxBoot.isBzImage(bytes)
        let elf = isELF(bytes)
        let elf64 = elf && bytes[4] == 2
        switch bootProtocol {
        case .linux:
            if bz { return .bzImage }
            if elf64 { return .vmlinux }
            throw fail("guest.protocol linux needs a bzImage (\"HdrS\" at 0x202) or an ELF64 vmlinux; this is neither")
        case .multiboot:
            guard try MultibootHeader.find(in: bytes, file: file) != nil else {
                throw fail("guest.protocol multiboot: no multiboot header (magic 0x1BADB002) in the first 8 KiB")
            }
            return .multiboot
        case .giantvm:
            guard elf64 else { throw fail("guest.protocol giantvm needs an ELF64 executable") }
            return .giantvm
        case .auto:
            if bz { return .bzImage }
            if elf64 { return VmlinuxImage.looksLikeLinux(bytes) ? .vmlinux : .giantvm }
            if try MultibootHeader.find(in: bytes, file: file) != nil { return .multiboot }
            if elf { throw fail("ELF32 image without a multiboot header: no boot protocol applies") }
            throw fail("unrecognised image: not a bzImage (no \"HdrS\" at 0x202), not ELF, and no multiboot header in the first 8 KiB")
        }
    }

    /// Loads the image for every format but `.giantvm` (the machine's own entry contract).
    public static func load(_ req: BootRequest, into mem: FirmwareMemory) throws -> BootPlan {
        let format = try detect(req.image, file: req.file, bootProtocol: req.bootProtocol)
        let ram = mem.memoryBytes
        func fail(_ m: String) -> FirmwareError { FirmwareError(file: req.file, message: m) }
        guard ram >= 2 << 20 else { throw fail("guest RAM of \(ram) bytes is too small to boot (2 MiB at least)") }
        guard ram <= FirmwareLayout.maxRAM else {
            throw fail("guest RAM of \(ram) bytes would overlap the device window at 0xC0000000 (at most 3 GiB)")
        }
        var placed: [(String, UInt64, UInt64)] = []
        func put(_ what: String, _ at: UInt64, _ bytes: [UInt8], memorySize: UInt64? = nil, lowAllowed: Bool = false) throws {
            let size = memorySize ?? UInt64(bytes.count)
            guard at >= FirmwareLayout.highMemory || lowAllowed else {
                throw fail("\(what) at 0x\(hex(at))+0x\(hex(size)) overlaps the firmware area below 1 MiB")
            }
            guard at <= ram, size <= ram - at else {
                throw fail("\(what) at 0x\(hex(at))+0x\(hex(size)) is outside guest RAM (\(ram) bytes)")
            }
            try mem.write(gpa: at, bytes: bytes)
            if size > UInt64(bytes.count) {
                // bss: zero in 1 MiB pieces
                var z = at + UInt64(bytes.count)
                let end = at + size
                while z < end {
                    let n = min(end - z, 1 << 20)
                    try mem.write(gpa: z, bytes: [UInt8](repeating: 0, count: Int(n)))
                    z += n
                }
            }
            placed.append((what, at, size))
        }
        var smp = SMPTables(vcpus: req.vcpus)
        smp.platform = req.platform
        let tables = try smp.install(into: mem)
        let e820 = MemoryRange.map(memoryBytes: ram)

        switch format {
        case .giantvm:
            throw fail("an ELF64 image for GiantVM's own entry contract is loaded by the machine, not by the firmware loader")

        case .multiboot:
            let img = try MultibootImage(bytes: req.image, file: req.file)
            // Segments may lie below 1 MiB: only fixed firmware memory is off limits there, and
            // the movable scratch (GDT, stack, multiboot information) goes around them.
            var low = LowMemoryPlanner(ramBytes: ram, highNext: 0)
            for (i, s) in img.segments.enumerated() {
                let what = img.segments.count == 1 ? "kernel" : "kernel segment \(i)"
                guard s.address <= ram, s.memorySize <= ram - s.address else {
                    throw fail("\(what) at 0x\(hex(s.address))+0x\(hex(s.memorySize)) is outside guest RAM (\(ram) bytes)")
                }
                do { try low.claimSegment(what, start: s.address, length: s.memorySize) } catch let e as FirmwareError {
                    throw fail(e.message)
                }
                try put(what, s.address, s.bytes, memorySize: s.memorySize, lowAllowed: true)
            }
            // modules follow the image, and never go below 1 MiB
            var next = (max(img.end, FirmwareLayout.highMemory) + 0xFFF) & ~0xFFF
            var mods: [(start: UInt64, end: UInt64, cmdline: String)] = []
            for m in req.modules + (req.initrd.map { [$0] } ?? []) {
                try put("module \(m.name)", next, m.bytes)
                mods.append((next, next + UInt64(m.bytes.count), m.cmdline))
                next = (next + UInt64(m.bytes.count) + 0xFFF) & ~0xFFF
            }
            let cmd = req.cmdline.isEmpty ? req.file : req.file + " " + req.cmdline
            // the information block's size does not depend on where it goes
            let infoSize = MultibootInfo.build(base: 0, memoryBytes: ram, cmdline: cmd, modules: mods).count
            guard UInt64(infoSize) <= FirmwareLayout.multibootInfoEnd - FirmwareLayout.multibootInfo else {
                throw fail("multiboot information (command lines, \(mods.count) modules) needs \(infoSize) bytes; at most \(FirmwareLayout.multibootInfoEnd - FirmwareLayout.multibootInfo) fit")
            }
            low = LowMemoryPlanner(ramBytes: ram, highNext: next)
            for (i, s) in img.segments.enumerated() {
                try low.claimSegment(img.segments.count == 1 ? "kernel" : "kernel segment \(i)", start: s.address, length: s.memorySize)
            }
            let gdt = BootTables.gdtBytes(BootTables.multibootGDT)
            let stackPage = FirmwareLayout.stackTop & ~0xFFF
            let infoAt: UInt64, gdtAt: UInt64, stackAt: UInt64
            do {
                gdtAt = try low.place("boot GDT", preferred: FirmwareLayout.gdtAddress, length: UInt64(gdt.count))
                stackAt = try low.place("entry stack", preferred: stackPage, length: 0x1000)
                infoAt = try low.place("multiboot information", preferred: FirmwareLayout.multibootInfo, length: UInt64(infoSize))
            } catch let e as FirmwareError {
                throw fail(e.message)
            }
            let info = MultibootInfo.build(base: infoAt, memoryBytes: ram, cmdline: cmd, modules: mods)
            try mem.write(gpa: infoAt, bytes: info)
            try mem.write(gpa: gdtAt, bytes: gdt)
            for (what, at, usual, n) in [("multiboot information", infoAt, FirmwareLayout.multibootInfo, UInt64(info.count)),
                                         ("boot GDT", gdtAt, FirmwareLayout.gdtAddress, UInt64(gdt.count)),
                                         ("entry stack", stackAt, stackPage, UInt64(0x1000))] where at != usual {
                placed.append(("\(what) (moved out of the image's way)", at, n))
            }
            var e = EntryState.protected32(entry: img.entry, code: BootTables.multibootCS, data: BootTables.multibootDS)
            e.gdtBase = gdtAt
            e.rsp = stackAt + (FirmwareLayout.stackTop - stackPage)
            e.rax = UInt64(MultibootHeader.bootloaderMagic)
            e.rbx = infoAt
            guard img.segments.contains(where: { img.entry >= $0.address && img.entry < $0.address + $0.memorySize }) else {
                throw fail("multiboot entry address 0x\(hex(img.entry)) is not inside the loaded image")
            }
            return BootPlan(format: .multiboot, entry: e, tables: tables, placed: placed)

        case .bzImage, .vmlinux:
            let cmd = Array(req.cmdline.utf8)
            var zp = ZeroPage()
            var entry: EntryState
            var kernelEnd: UInt64
            var initrdMax: UInt64 = 0x37FF_FFFF
            if format == .bzImage {
                let bz = try BzImage(bytes: req.image, file: req.file)
                guard bz.cmdlineSize == 0 || cmd.count < Int(bz.cmdlineSize) else {
                    throw fail("command line is \(cmd.count) bytes; this kernel accepts at most \(bz.cmdlineSize - 1) (cmdline_size)")
                }
                if bz.version >= 0x020A {
                    let run = bz.relocatable ? max(bz.prefAddress, FirmwareLayout.highMemory) : FirmwareLayout.highMemory
                    // pref_address is any 64-bit value from the image: the sum may overflow.
                    let (top, overflow) = run.addingReportingOverflow(UInt64(bz.initSize))
                    guard !overflow else {
                        throw fail("pref_address 0x\(hex(bz.prefAddress)) + init_size 0x\(hex(bz.initSize)) overflows 64 bits")
                    }
                    guard top <= ram else {
                        throw fail("the kernel needs RAM up to 0x\(hex(top)) (init_size 0x\(hex(bz.initSize)) at 0x\(hex(run))); guest RAM is \(ram) bytes")
                    }
                    kernelEnd = top
                } else {
                    kernelEnd = FirmwareLayout.highMemory + UInt64(bz.kernel.count)
                }
                try put("kernel", FirmwareLayout.highMemory, bz.kernel)
                kernelEnd = max(kernelEnd, FirmwareLayout.highMemory + UInt64(bz.kernel.count))
                if bz.initrdAddrMax != 0 { initrdMax = UInt64(bz.initrdAddrMax) }
                zp.setHeader(bz.header)
                if bz.supports64BitEntry {
                    entry = .long64(entry: FirmwareLayout.highMemory + LinuxBoot.startup64Offset,
                                    code: BootTables.linuxBootCS, data: BootTables.linuxBootDS)
                } else {
                    entry = .protected32(entry: FirmwareLayout.highMemory, code: BootTables.linuxBootCS, data: BootTables.linuxBootDS)
                }
            } else {
                let v = try VmlinuxImage(bytes: req.image, file: req.file)
                guard cmd.count <= FirmwareLayout.linuxCmdlineMax else {
                    throw fail("command line is \(cmd.count) bytes; at most \(FirmwareLayout.linuxCmdlineMax) fit")
                }
                kernelEnd = 0
                for (i, s) in v.segments.enumerated() {
                    try put("kernel segment \(i)", s.address, s.bytes, memorySize: s.memorySize)
                    kernelEnd = max(kernelEnd, s.address + s.memorySize)
                }
                guard v.segments.contains(where: { v.entry >= $0.address && v.entry < $0.address + $0.memorySize }) else {
                    throw fail("e_entry 0x\(hex(v.entry)) is not inside any PT_LOAD segment (a vmlinux is entered at its physical startup_64)")
                }
                zp.setSyntheticHeader(cmdlineSize: UInt32(FirmwareLayout.linuxCmdlineMax + 1))
                entry = .long64(entry: v.entry, code: BootTables.linuxBootCS, data: BootTables.linuxBootDS)
            }
            guard cmd.count <= FirmwareLayout.linuxCmdlineMax else {
                throw fail("command line is \(cmd.count) bytes; at most \(FirmwareLayout.linuxCmdlineMax) fit at 0x\(hex(FirmwareLayout.linuxCmdline))")
            }
            try mem.write(gpa: FirmwareLayout.linuxCmdline, bytes: cmd + [0])
            var ramdisk: (UInt64, UInt64)?
            if let rd = req.initrd {
                let size = UInt64(rd.bytes.count)
                let top = min(initrdMax + 1, ram)
                guard size <= top else { throw fail("initrd \(rd.name) (\(size) bytes) does not fit in guest RAM") }
                let at = (top - size) & ~0xFFF
                guard at >= kernelEnd else {
                    throw fail("initrd \(rd.name) (\(size) bytes) does not fit between the kernel's end 0x\(hex(kernelEnd)) and 0x\(hex(top)); give the guest more memory")
                }
                try put("initrd", at, rd.bytes)
                ramdisk = (at, size)
            }
            zp.setLoader(cmdline: FirmwareLayout.linuxCmdline, ramdisk: ramdisk, rsdp: tables.rsdp, e820: e820)
            try mem.write(gpa: FirmwareLayout.zeroPage, bytes: zp.bytes)
            try mem.write(gpa: FirmwareLayout.gdtAddress, bytes: BootTables.gdtBytes(BootTables.linuxGDT(longMode: entry.mode == .long64)))
            if entry.mode == .long64 {
                try mem.write(gpa: FirmwareLayout.pml4, bytes: BootTables.identityPageTables())
            }
            entry.rsi = FirmwareLayout.zeroPage
            return BootPlan(format: format, entry: entry, tables: tables, placed: placed)
        }
    }
}
