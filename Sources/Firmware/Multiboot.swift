// Multiboot v1 (the GNU Multiboot Specification 0.6.96): the header in the first 8 KiB of the
// image, loading through the a.out-kludge address fields (flags bit 16) or the ELF32 program
// headers, modules page-aligned after the image, the multiboot information block, and the
// 32-bit protected-mode entry state (EAX = 0x2BADB002, EBX = info block).

public struct MultibootHeader: Equatable, Sendable {
    public static let magic: UInt32 = 0x1BAD_B002
    public static let bootloaderMagic: UInt32 = 0x2BAD_B002
    public static let searchLimit = 8192
    public static let flagPageAlign: UInt32 = 1 << 0
    public static let flagMemoryInfo: UInt32 = 1 << 1
    public static let flagVideoMode: UInt32 = 1 << 2
    public static let flagAddresses: UInt32 = 1 << 16

    /// Byte offset of the header in the file.
    public var offset: Int
    public var flags: UInt32
    public var headerAddr: UInt32 = 0, loadAddr: UInt32 = 0, loadEndAddr: UInt32 = 0, bssEndAddr: UInt32 = 0, entryAddr: UInt32 = 0

    /// Finds the header (4-byte aligned, first 8 KiB, magic + flags + checksum == 0). nil when
    /// there is no magic; throws when a magic is found but the header is corrupt or unsupported.
    public static func find(in bytes: [UInt8], file: String) throws -> MultibootHeader? {
        let r = ImageReader(bytes: bytes, file: file)
        var o = 0
        while o + 12 <= min(bytes.count, searchLimit) {
            if try r.u32(o, "multiboot magic") == magic {
                let flags = try r.u32(o + 4, "multiboot flags")
                let sum = try r.u32(o + 8, "multiboot checksum")
                guard magic &+ flags &+ sum == 0 else {
                    throw r.fail("multiboot header at offset 0x\(hex(o)): bad checksum 0x\(hex(sum)) (magic + flags + checksum must be 0 mod 2^32; expected 0x\(hex(0 &- magic &- flags)))")
                }
                let unknown = flags & 0xFFF8
                guard unknown == 0 else {
                    throw r.fail("multiboot header at offset 0x\(hex(o)): unsupported required feature flags 0x\(hex(unknown)) (bits 3-15)")
                }
                var h = MultibootHeader(offset: o, flags: flags)
                if flags & flagAddresses != 0 {
                    h.headerAddr = try r.u32(o + 12, "multiboot header_addr")
                    h.loadAddr = try r.u32(o + 16, "multiboot load_addr")
                    h.loadEndAddr = try r.u32(o + 20, "multiboot load_end_addr")
                    h.bssEndAddr = try r.u32(o + 24, "multiboot bss_end_addr")
                    h.entryAddr = try r.u32(o + 28, "multiboot entry_addr")
                }
                return h
            }
            o += 4
        }
        return nil
    }
}

/// A module to load beside the kernel (multiboot `mods`): its bytes and its command line.
public struct BootModule: Sendable {
    public var name: String
    public var bytes: [UInt8]
    public var cmdline: String
    public init(name: String, bytes: [UInt8], cmdline: String) { self.name = name; self.bytes = bytes; self.cmdline = cmdline }
}

/// One piece of an image to copy into RAM: `memorySize - bytes.count` zero bytes follow.
public struct LoadSegment: Equatable, Sendable {
    public var address: UInt64
    public var bytes: [UInt8]
    public var memorySize: UInt64
}

public struct MultibootImage: Sendable {
    public var file: String
    public var header: MultibootHeader
    public var segments: [LoadSegment]
    public var entry: UInt64
    /// First byte after the image (bss included).
    public var end: UInt64

    public init(bytes: [UInt8], file: String) throws {
        guard let h = try MultibootHeader.find(in: bytes, file: file) else {
            throw FirmwareError(file: file, message: "no multiboot header (magic 0x1BADB002) in the first 8 KiB")
        }
        self.file = file
        header = h
        let r = ImageReader(bytes: bytes, file: file)
        if h.flags & MultibootHeader.flagAddresses != 0 {
            // a.out kludge: the file from (offset - (header_addr - load_addr)) goes to load_addr.
            guard h.headerAddr >= h.loadAddr, UInt64(h.headerAddr - h.loadAddr) <= UInt64(h.offset) else {
                throw r.fail("multiboot header: header_addr 0x\(hex(h.headerAddr)) and load_addr 0x\(hex(h.loadAddr)) put the load start before the file's beginning")
            }
            let fileStart = h.offset - Int(h.headerAddr - h.loadAddr)
            let loadEnd: UInt64 = h.loadEndAddr == 0 ? UInt64(h.loadAddr) + UInt64(bytes.count - fileStart) : UInt64(h.loadEndAddr)
            guard loadEnd >= UInt64(h.loadAddr) else {
                throw r.fail("multiboot header: load_end_addr 0x\(hex(h.loadEndAddr)) is below load_addr 0x\(hex(h.loadAddr))")
            }
            let size = Int(loadEnd - UInt64(h.loadAddr))
            try r.need(fileStart, size, "multiboot load range (load_addr..load_end_addr)")
            let bssEnd: UInt64 = h.bssEndAddr == 0 ? loadEnd : UInt64(h.bssEndAddr)
            guard bssEnd >= loadEnd else {
                throw r.fail("multiboot header: bss_end_addr 0x\(hex(h.bssEndAddr)) is below load_end_addr 0x\(hex(loadEnd))")
            }
            segments = [LoadSegment(address: UInt64(h.loadAddr), bytes: Array(bytes[fileStart..<fileStart + size]),
                                    memorySize: bssEnd - UInt64(h.loadAddr))]
            entry = UInt64(h.entryAddr)
            end = bssEnd
        } else {
            // ELF32 executable for i386: PT_LOAD segments at p_paddr.
            guard bytes.count >= 52, bytes[0] == 0x7F, bytes[1] == 0x45, bytes[2] == 0x4C, bytes[3] == 0x46 else {
                throw r.fail("multiboot header without the address fields (flags bit 16) needs an ELF image, and this is not ELF")
            }
            guard bytes[4] == 1 else {
                throw r.fail("multiboot ELF image is ELFCLASS\(bytes[4] == 2 ? "64" : String(bytes[4])): without the address fields (flags bit 16) only ELF32 can be loaded")
            }
            let machine = try r.u16(18, "e_machine")
            guard machine == 3 else { throw r.fail("multiboot ELF32 image: e_machine is \(machine), expected 3 (EM_386)") }
            entry = UInt64(try r.u32(24, "e_entry"))
            let phoff = try r.u32(28, "e_phoff")
            let phentsize = try r.u16(42, "e_phentsize")
            let phnum = try r.u16(44, "e_phnum")
            guard phentsize >= 32 else { throw r.fail("e_phentsize is \(phentsize), expected 32") }
            var segs: [LoadSegment] = []
            var top: UInt64 = 0
            // Every field is 32-bit, so the UInt64 sums below cannot overflow.
            for (i, o) in try r.programHeaders(phoff: UInt64(phoff), entrySize: UInt64(phentsize), count: UInt64(phnum)).enumerated() {
                guard try r.u32(o, "program header \(i)") == 1 else { continue }
                let off = try r.u32(o + 4, "p_offset")
                let paddr = UInt64(try r.u32(o + 12, "p_paddr"))
                let filesz = try r.u32(o + 16, "p_filesz")
                let memsz = UInt64(try r.u32(o + 20, "p_memsz"))
                guard UInt64(filesz) <= memsz else { throw r.fail("program header \(i): p_filesz \(filesz) > p_memsz \(memsz)") }
                let contents = try r.span(UInt64(off), UInt64(filesz), "program header \(i) contents (p_offset, p_filesz)")
                segs.append(LoadSegment(address: paddr, bytes: Array(bytes[contents]), memorySize: memsz))
                top = max(top, paddr + memsz)
            }
            guard !segs.isEmpty else { throw r.fail("ELF32 image has no PT_LOAD program header") }
            segments = segs
            end = top
        }
    }
}

/// Builds the multiboot information block and everything it points at.
public struct MultibootInfo {
    public static let flagMemory: UInt32 = 1 << 0
    public static let flagCmdline: UInt32 = 1 << 2
    public static let flagModules: UInt32 = 1 << 3
    public static let flagMemoryMap: UInt32 = 1 << 6
    public static let flagLoaderName: UInt32 = 1 << 9
    public static let infoSize = 88
    public static let loaderName = "GiantVM"

    /// The block (at `base`) followed by the memory map, the strings and the module list.
    /// `modules` are (start, end, cmdline) of modules already placed in RAM.
    public static func build(base: UInt64, memoryBytes: UInt64, cmdline: String,
                             modules: [(start: UInt64, end: UInt64, cmdline: String)]) -> [UInt8] {
        var out = Bytes(count: infoSize)
        func place(_ bytes: [UInt8]) -> UInt64 {
            while out.b.count % 4 != 0 { out.b.append(0) }
            let at = base + UInt64(out.b.count)
            out.b += bytes
            return at
        }
        let map = MemoryRange.map(memoryBytes: memoryBytes)
        var mmap: [UInt8] = []
        for r in map { mmap += le32(20) + r.e820Bytes }
        let mmapAddr = place(mmap)
        let cmdAddr = place(Array(cmdline.utf8) + [0])
        let nameAddr = place(Array(loaderName.utf8) + [0])
        var list: [UInt8] = []
        var strings: [UInt64] = []
        for m in modules { strings.append(place(Array(m.cmdline.utf8) + [0])) }
        for (i, m) in modules.enumerated() {
            list += le32(UInt32(m.start)) + le32(UInt32(m.end)) + le32(UInt32(strings[i])) + le32(0)
        }
        let modsAddr = modules.isEmpty ? 0 : place(list)
        var flags = flagMemory | flagCmdline | flagMemoryMap | flagLoaderName
        if !modules.isEmpty { flags |= flagModules }
        out.put32(0, flags)
        out.put32(4, UInt32(FirmwareLayout.ebda >> 10))                       // mem_lower (KiB from 0)
        out.put32(8, UInt32((memoryBytes - FirmwareLayout.highMemory) >> 10)) // mem_upper (KiB from 1 MiB)
        out.put32(16, UInt32(cmdAddr))
        out.put32(20, UInt32(modules.count))
        out.put32(24, UInt32(modsAddr))
        out.put32(44, UInt32(mmap.count))
        out.put32(48, UInt32(mmapAddr))
        out.put32(64, UInt32(nameAddr))
        return out.b
    }
}
