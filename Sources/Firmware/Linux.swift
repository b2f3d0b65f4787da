// The Linux/x86 boot protocol (Documentation/arch/x86/boot.rst): a bzImage (protocol 2.06 or
// later) or an uncompressed vmlinux (ELF64), the zero page (struct boot_params) with the setup
// header, command line, initrd and e820 map, and the 64-bit (or 32-bit) entry state.

public enum LinuxBoot {
    // Offsets in the setup header / boot_params.
    public static let setupSectsOffset = 0x1F1
    public static let bootFlagOffset = 0x1FE
    public static let jumpOffset = 0x200
    public static let headerMagicOffset = 0x202
    public static let versionOffset = 0x206
    public static let typeOfLoaderOffset = 0x210
    public static let loadflagsOffset = 0x211
    public static let code32StartOffset = 0x214
    public static let ramdiskImageOffset = 0x218
    public static let ramdiskSizeOffset = 0x21C
    public static let heapEndPtrOffset = 0x224
    public static let cmdLinePtrOffset = 0x228
    public static let initrdAddrMaxOffset = 0x22C
    public static let kernelAlignmentOffset = 0x230
    public static let relocatableOffset = 0x234
    public static let xloadflagsOffset = 0x236
    public static let cmdlineSizeOffset = 0x238
    public static let prefAddressOffset = 0x258
    public static let initSizeOffset = 0x260
    public static let acpiRSDPOffset = 0x070
    public static let e820EntriesOffset = 0x1E8
    public static let e820TableOffset = 0x2D0
    public static let e820Max = 128
    public static let headerMagic: UInt32 = 0x5372_6448 // "HdrS"
    public static let bootFlag: UInt16 = 0xAA55
    public static let minimumVersion: UInt16 = 0x0206
    public static let loaderType: UInt8 = 0xFF
    public static let loadedHigh: UInt8 = 0x01, canUseHeap: UInt8 = 0x80
    public static let xlfKernel64: UInt16 = 0x01
    /// startup_64 is 0x200 bytes into the protected-mode kernel.
    public static let startup64Offset: UInt64 = 0x200
    /// The version written into a zero page built for a vmlinux (no header of its own).
    public static let vmlinuxHeaderVersion: UInt16 = 0x020F

    /// Does this look like a bzImage (boot flag and "HdrS")?
    public static func isBzImage(_ b: [UInt8]) -> Bool {
        guard b.count >= 0x210 else { return false }
        return b[0x1FE] == 0x55 && b[0x1FF] == 0xAA && b[0x202] == 0x48 && b[0x203] == 0x64 && b[0x204] == 0x72 && b[0x205] == 0x53
    }
}

/// A bzImage's setup header and protected-mode kernel.
public struct BzImage: Sendable {
    public var file: String
    public var version: UInt16
    public var setupSects: Int
    /// The setup header bytes [0x1F1, end) to copy into the zero page.
    public var header: [UInt8]
    public var kernel: [UInt8]
    public var loadflags: UInt8
    public var xloadflags: UInt16
    public var cmdlineSize: UInt32
    public var initrdAddrMax: UInt32
    public var prefAddress: UInt64
    public var initSize: UInt32
    public var relocatable: Bool
    public var kernelAlignment: UInt32

    public var supports64BitEntry: Bool { version >= 0x020C && xloadflags & LinuxBoot.xlfKernel64 != 0 }

    public init(bytes: [UInt8], file: String) throws {
        self.file = file
        let r = ImageReader(bytes: bytes, file: file)
        try r.need(0, 0x264, "bzImage setup header")
        guard try r.u16(LinuxBoot.bootFlagOffset, "boot_flag") == LinuxBoot.bootFlag else {
            throw r.fail("not a bzImage: boot_flag at 0x1FE is not 0xAA55")
        }
        guard try r.u32(LinuxBoot.headerMagicOffset, "header") == LinuxBoot.headerMagic else {
            throw r.fail("not a bzImage: no \"HdrS\" signature at 0x202")
        }
        version = try r.u16(LinuxBoot.versionOffset, "version")
        guard version >= LinuxBoot.minimumVersion else {
            throw r.fail("unsupported Linux boot protocol version \(version >> 8).\(String(format2(version & 0xFF))) (2.06 or later is required)")
        }
        loadflags = try r.u8(LinuxBoot.loadflagsOffset, "loadflags")
        guard loadflags & LinuxBoot.loadedHigh != 0 else {
            throw r.fail("zImage (loadflags LOADED_HIGH clear): only bzImage kernels loaded at 1 MiB are supported")
        }
        var sects = Int(try r.u8(LinuxBoot.setupSectsOffset, "setup_sects"))
        if sects == 0 { sects = 4 }
        setupSects = sects
        let kernelStart = (sects + 1) * 512
        guard kernelStart < bytes.count else {
            throw r.fail("truncated: setup_sects \(sects) puts the protected-mode kernel at 0x\(hex(kernelStart)), past the end of the file (\(bytes.count) bytes)")
        }
        let headerEnd = min(0x202 + Int(bytes[0x201]), 0x280)
        header = Array(bytes[LinuxBoot.setupSectsOffset..<headerEnd])
        kernel = Array(bytes[kernelStart...])
        xloadflags = version >= 0x020C ? try r.u16(LinuxBoot.xloadflagsOffset, "xloadflags") : 0
        cmdlineSize = try r.u32(LinuxBoot.cmdlineSizeOffset, "cmdline_size")
        initrdAddrMax = try r.u32(LinuxBoot.initrdAddrMaxOffset, "initrd_addr_max")
        relocatable = try r.u8(LinuxBoot.relocatableOffset, "relocatable_kernel") != 0
        kernelAlignment = try r.u32(LinuxBoot.kernelAlignmentOffset, "kernel_alignment")
        prefAddress = version >= 0x020A ? try r.u64(LinuxBoot.prefAddressOffset, "pref_address") : FirmwareLayout.highMemory
        initSize = version >= 0x020A ? try r.u32(LinuxBoot.initSizeOffset, "init_size") : 0
    }
}

func format2(_ v: UInt16) -> String { v < 10 ? "0\(v)" : "\(v)" }

/// An uncompressed Linux kernel (vmlinux): ELF64 x86-64, PT_LOAD segments at p_paddr, entered
/// at e_entry (phys_startup_64) in 64-bit mode.
public struct VmlinuxImage: Sendable {
    public var file: String
    public var entry: UInt64
    public var segments: [LoadSegment]

    /// True for an ELF64 that is a Linux kernel: a PT_NOTE owned by "Linux" or "Xen", or segments
    /// linked in the kernel's high half (p_vaddr >= 0xffffffff80000000) with low p_paddr.
    public static func looksLikeLinux(_ b: [UInt8]) -> Bool {
        let r = ImageReader(bytes: b, file: "")
        guard b.count >= 64, b[4] == 2, let phoff = try? r.u64(32, ""), let n = try? r.u16(56, ""),
              let es = try? r.u16(54, ""), es >= 56,
              let headers = try? r.programHeaders(phoff: phoff, entrySize: UInt64(es), count: UInt64(n)) else { return false }
        for o in headers {
            guard let type = try? r.u32(o, "") else { return false }
            if type == 1, let v = try? r.u64(o + 16, ""), let p = try? r.u64(o + 24, ""), v >= 0xFFFF_FFFF_8000_0000, p < 1 << 32 {
                return true
            }
            // PT_NOTE: walk the notes (namesz u32, descsz u32, type u32, name, desc; 4-byte aligned)
            // inside the part of the segment that lies in the file.
            if type == 4, let off = try? r.u64(o + 8, ""), let size = try? r.u64(o + 32, ""), off < UInt64(b.count) {
                let notes = try! r.span(off, min(size, UInt64(b.count) - off), "PT_NOTE")
                var p = notes.lowerBound
                while notes.upperBound - p >= 12 {
                    guard let namesz = try? r.u32(p, ""), let descsz = try? r.u32(p + 4, "") else { break }
                    let nameStart = p + 12
                    if UInt64(namesz) <= UInt64(notes.upperBound - nameStart) {
                        let name = String(decoding: b[nameStart..<nameStart + Int(namesz)].prefix { $0 != 0 }, as: UTF8.self)
                        if name == "Linux" || name == "Xen" { return true }
                    }
                    let step = 12 + (UInt64(namesz) + 3) / 4 * 4 + (UInt64(descsz) + 3) / 4 * 4
                    guard step <= UInt64(notes.upperBound - p) else { break }
                    p += Int(step)
                }
            }
        }
        return false
    }

    public init(bytes: [UInt8], file: String) throws {
        self.file = file
        let r = ImageReader(bytes: bytes, file: file)
        guard bytes.count >= 4, bytes[0] == 0x7F, bytes[1] == 0x45, bytes[2] == 0x4C, bytes[3] == 0x46 else {
            throw r.fail("not an ELF file (bad magic)")
        }
        try r.need(0, 64, "vmlinux ELF64 header")
        guard bytes[4] == 2 else { throw r.fail("vmlinux: e_ident[EI_CLASS] is \(bytes[4]), expected 2 (ELFCLASS64)") }
        guard bytes[5] == 1 else { throw r.fail("vmlinux: e_ident[EI_DATA] is \(bytes[5]), expected 1 (little endian)") }
        let machine = try r.u16(18, "e_machine")
        guard machine == 62 else { throw r.fail("vmlinux: e_machine is \(machine), expected 62 (EM_X86_64)") }
        entry = try r.u64(24, "e_entry")
        let phoff = try r.u64(32, "e_phoff")
        let es = try r.u16(54, "e_phentsize")
        let n = try r.u16(56, "e_phnum")
        guard es >= 56 else { throw r.fail("e_phentsize is \(es), expected 56") }
        var segs: [LoadSegment] = []
        for (i, o) in try r.programHeaders(phoff: phoff, entrySize: UInt64(es), count: UInt64(n)).enumerated() {
            guard try r.u32(o, "program header \(i)") == 1 else { continue }
            let off = try r.u64(o + 8, "p_offset"), paddr = try r.u64(o + 24, "p_paddr")
            let filesz = try r.u64(o + 32, "p_filesz"), memsz = try r.u64(o + 40, "p_memsz")
            guard filesz <= memsz else { throw r.fail("program header \(i): p_filesz \(filesz) > p_memsz \(memsz)") }
            guard memsz <= UInt64.max - paddr else {
                throw r.fail("program header \(i): p_paddr 0x\(hex(paddr)) + p_memsz 0x\(hex(memsz)) overflows 64 bits")
            }
            let contents = try r.span(off, filesz, "program header \(i) contents (p_offset, p_filesz)")
            segs.append(LoadSegment(address: paddr, bytes: Array(bytes[contents]), memorySize: memsz))
        }
        guard !segs.isEmpty else { throw r.fail("vmlinux has no PT_LOAD program header") }
        segments = segs
    }
}

/// Builds a zero page (4096 bytes).
public struct ZeroPage {
    var b = Bytes(count: 4096)
    public init() {}
    public var bytes: [UInt8] { b.b }

    /// The setup header copied from the bzImage (at 0x1F1).
    public mutating func setHeader(_ header: [UInt8]) {
        b.b.replaceSubrange(LinuxBoot.setupSectsOffset..<LinuxBoot.setupSectsOffset + header.count, with: header)
    }

    /// A minimal header for a vmlinux: boot flag, "HdrS", version, kernel alignment.
    public mutating func setSyntheticHeader(cmdlineSize: UInt32) {
        b.put16(LinuxBoot.bootFlagOffset, LinuxBoot.bootFlag)
        b.put32(LinuxBoot.headerMagicOffset, LinuxBoot.headerMagic)
        b.put16(LinuxBoot.versionOffset, LinuxBoot.vmlinuxHeaderVersion)
        b.put8(LinuxBoot.loadflagsOffset, LinuxBoot.loadedHigh)
        b.put32(LinuxBoot.kernelAlignmentOffset, 0x0100_0000)
        b.put32(LinuxBoot.cmdlineSizeOffset, cmdlineSize)
    }

    public mutating func setLoader(cmdline: UInt64, ramdisk: (UInt64, UInt64)?, rsdp: UInt64, e820: [MemoryRange]) {
        b.put8(LinuxBoot.typeOfLoaderOffset, LinuxBoot.loaderType)
        b.put8(LinuxBoot.loadflagsOffset, b.b[LinuxBoot.loadflagsOffset] | LinuxBoot.canUseHeap)
        b.put16(LinuxBoot.heapEndPtrOffset, 0xFE00 - 0x200)
        b.put32(LinuxBoot.cmdLinePtrOffset, UInt32(cmdline))
        if let (addr, size) = ramdisk {
            b.put32(LinuxBoot.ramdiskImageOffset, UInt32(addr))
            b.put32(LinuxBoot.ramdiskSizeOffset, UInt32(size))
        }
        b.put64(LinuxBoot.acpiRSDPOffset, rsdp)
        b.put8(LinuxBoot.e820EntriesOffset, UInt8(e820.count))
        for (i, r) in e820.prefix(LinuxBoot.e820Max).enumerated() {
            b.b.replaceSubrange(LinuxBoot.e820TableOffset + 20 * i..<LinuxBoot.e820TableOffset + 20 * (i + 1), with: r.e820Bytes)
        }
    }
}
