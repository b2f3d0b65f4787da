// ELF64 guest images: PT_LOAD segments go to p_paddr (>= 1 MiB) through pin/unpin; e_entry is
// the 64-bit entry point.

public struct ELFError: Error, CustomStringConvertible, Equatable {
    public var file: String
    public var message: String
    public var description: String { "\(file): \(message)" }
}

public struct ELFSegment: Equatable, Sendable {
    public var physicalAddress: UInt64
    public var fileOffset: UInt64
    public var fileSize: UInt64
    public var memorySize: UInt64
}

public struct ELFImage: Sendable {
    public var entry: UInt64
    public var segments: [ELFSegment]
    public var bytes: [UInt8]
    public var name: String

    /// Parses and checks an ELF64 x86-64 executable; every failure names the file and field.
    /// Every number read from the file is range-checked before any arithmetic on it (offsets and
    /// sizes up to 2^64 - 1 are refused with a message, never trapped on).
    public init(bytes: [UInt8], name: String) throws {
        self.bytes = bytes
        self.name = name
        func fail(_ m: String) -> ELFError { ELFError(file: name, message: m) }
        let count = UInt64(bytes.count)
        // Readers at offsets already checked to lie inside the file (the header and the program
        // header table are checked as a whole first).
        func u16(_ o: Int) -> UInt16 { UInt16(bytes[o]) | UInt16(bytes[o + 1]) << 8 }
        func u32(_ o: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(bytes[o + $1]) << (8 * UInt32($1)) } }
        func u64(_ o: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(bytes[o + $1]) << (8 * UInt64($1)) } }
        guard bytes.count >= 4, bytes[0] == 0x7F, bytes[1] == 0x45, bytes[2] == 0x4C, bytes[3] == 0x46 else {
            throw fail("not an ELF file (bad magic)")
        }
        guard bytes.count >= 64 else { throw fail("truncated: \(bytes.count) bytes, shorter than the 64-byte ELF64 header") }
        guard bytes[4] == 2 else { throw fail("e_ident[EI_CLASS] is \(bytes[4]), expected 2 (ELFCLASS64)") }
        guard bytes[5] == 1 else { throw fail("e_ident[EI_DATA] is \(bytes[5]), expected 1 (little endian)") }
        let machine = u16(18)
        guard machine == 62 else { throw fail("e_machine is \(machine), expected 62 (EM_X86_64)") }
        let type = u16(16)
        guard type == 2 else { throw fail("e_type is \(type), expected 2 (ET_EXEC)") }
        entry = u64(24)
        let phoff = u64(32)
        let phentsize = UInt64(u16(54))
        let phnum = UInt64(u16(56))
        guard phentsize >= 56 else { throw fail("e_phentsize is \(phentsize), expected 56") }
        // phnum * phentsize <= 65535 * 65535: no overflow; phoff is compared without adding.
        let tableBytes = phnum * phentsize
        guard phoff <= count, tableBytes <= count - phoff else {
            throw fail("e_phoff 0x\(String(phoff, radix: 16)) + e_phnum \(phnum) x e_phentsize \(phentsize): the program header table runs past the end of the file (\(count) bytes)")
        }
        var segs: [ELFSegment] = []
        for i in 0..<Int(phnum) {
            let o = Int(phoff) + i * Int(phentsize) // inside the file (checked above)
            guard u32(o) == 1 else { continue } // PT_LOAD
            let s = ELFSegment(physicalAddress: u64(o + 24), fileOffset: u64(o + 8),
                               fileSize: u64(o + 32), memorySize: u64(o + 40))
            guard s.fileSize <= s.memorySize else {
                throw fail("program header \(i): p_filesz \(s.fileSize) > p_memsz \(s.memorySize)")
            }
            guard s.fileOffset <= count, s.fileSize <= count - s.fileOffset else {
                throw fail("program header \(i): p_offset 0x\(String(s.fileOffset, radix: 16)) + p_filesz \(s.fileSize) runs past the end of the file (\(count) bytes)")
            }
            guard s.memorySize <= UInt64.max - s.physicalAddress else {
                throw fail("program header \(i): p_paddr 0x\(String(s.physicalAddress, radix: 16)) + p_memsz 0x\(String(s.memorySize, radix: 16)) overflows 64 bits")
            }
            segs.append(s)
        }
        guard !segs.isEmpty else { throw fail("no PT_LOAD program header") }
        segments = segs
    }

    /// Checks placement against RAM and loads every segment (zero-filling the bss part).
    public func load(into ram: any GuestRAM) throws {
        for (i, s) in segments.enumerated() {
            guard s.physicalAddress >= BootLayout.imageMinimum else {
                throw ELFError(file: name, message: "PT_LOAD \(i): p_paddr 0x\(String(s.physicalAddress, radix: 16)) is below 1 MiB (the VMM owns low memory)")
            }
            guard s.physicalAddress <= ram.size, s.memorySize <= ram.size - s.physicalAddress else {
                throw ELFError(file: name, message: "PT_LOAD \(i): p_paddr 0x\(String(s.physicalAddress, radix: 16)) + p_memsz \(s.memorySize) does not fit in \(ram.size) bytes of guest RAM")
            }
            // Both checked by init: the file range lies inside `bytes`, filesz <= memsz.
            try bytes.withUnsafeBytes { all in
                let src = UnsafeRawBufferPointer(rebasing: all[Int(s.fileOffset)..<Int(s.fileOffset + s.fileSize)])
                try ram.write(src, at: s.physicalAddress)
            }
            if s.memorySize > s.fileSize {
                _ = try ram.withPinned(gpa: s.physicalAddress + s.fileSize, length: Int(s.memorySize - s.fileSize), write: true) {
                    $0.initializeMemory(as: UInt8.self, repeating: 0)
                }
            }
        }
        // init checked p_paddr + p_memsz for overflow.
        guard segments.contains(where: { entry >= $0.physicalAddress && entry - $0.physicalAddress < $0.memorySize }) else {
            throw ELFError(file: name, message: "e_entry 0x\(String(entry, radix: 16)) is not inside any PT_LOAD segment")
        }
    }

    /// Builds a minimal ELF64 executable with one PT_LOAD segment (for tests and tools).
    public static func build(code: [UInt8], loadAddress: UInt64, entry: UInt64? = nil, bssBytes: UInt64 = 0) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 64 + 56)
        func put(_ o: Int, _ v: UInt64, _ n: Int) { for i in 0..<n { b[o + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) } }
        b[0] = 0x7F; b[1] = 0x45; b[2] = 0x4C; b[3] = 0x46; b[4] = 2; b[5] = 1; b[6] = 1
        put(16, 2, 2); put(18, 62, 2); put(20, 1, 4)
        put(24, entry ?? loadAddress, 8); put(32, 64, 8); put(40, 0, 8)
        put(52, 64, 2); put(54, 56, 2); put(56, 1, 2); put(58, 64, 2)
        let off = 64
        put(off, 1, 4); put(off + 4, 7, 4); put(off + 8, 120, 8); put(off + 16, loadAddress, 8); put(off + 24, loadAddress, 8)
        put(off + 32, UInt64(code.count), 8); put(off + 40, UInt64(code.count) + bssBytes, 8); put(off + 48, 0x1000, 8)
        return b + code
    }
}
