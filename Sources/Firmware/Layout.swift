// Where the firmware puts things in guest-physical memory (all below 1 MiB, like a PC BIOS and
// the loaders of QEMU and Firecracker), the e820 map that describes it, and the CPU entry states.

/// Fixed low-memory layout used by every boot protocol here.
public enum FirmwareLayout {
    /// BIOS data area words Linux reads: EBDA segment (0x40E) and base memory KiB (0x413).
    public static let bdaEBDASegment: UInt64 = 0x40E
    public static let bdaBaseMemoryKiB: UInt64 = 0x413
    /// Boot GDT (4 descriptors).
    public static let gdtAddress: UInt64 = 0x500
    /// Linux zero page (struct boot_params).
    public static let zeroPage: UInt64 = 0x7000
    /// Initial stack top (the 0x8000 page is left free for it).
    public static let stackTop: UInt64 = 0x8FF0
    /// Identity-mapping page tables: PML4, PDPT, four PDs (the first 4 GiB in 2 MiB pages).
    public static let pml4: UInt64 = 0x9000
    public static let pdpt: UInt64 = 0xA000
    public static let firstPD: UInt64 = 0xB000
    public static let mappedBytes: UInt64 = 4 << 30
    /// Linux command line.
    public static let linuxCmdline: UInt64 = 0x20000
    public static let linuxCmdlineMax = 0x10000 - 1
    /// Multiboot information block, memory map, command lines and module list.
    public static let multibootInfo: UInt64 = 0x30000
    public static let multibootInfoEnd: UInt64 = 0x90000
    /// Extended BIOS data area (reserved in the e820 map; the MP floating pointer may live here).
    public static let ebda: UInt64 = 0x9FC00
    public static let lowMemoryEnd: UInt64 = 0xA0000
    /// ACPI tables (RSDT, XSDT, MADT, FADT, DSDT) in the BIOS area, reserved in the map.
    public static let acpiTables: UInt64 = 0xE0000
    /// RSDP (16-byte aligned, inside 0xE0000-0xFFFFF where the OS scans for it).
    public static let rsdp: UInt64 = 0xF0000
    /// MP floating pointer and MP configuration table.
    public static let mpFloating: UInt64 = 0xF0040
    public static let mpConfig: UInt64 = 0xF0100
    public static let biosEnd: UInt64 = 0x100000
    /// Where kernels are loaded (the protected-mode part of a bzImage, multiboot images' usual base).
    public static let highMemory: UInt64 = 0x100000
    /// RAM above this would overlap the 32-bit device window (IOAPIC, local APIC).
    public static let maxRAM: UInt64 = 0xC000_0000
    public static let localAPIC: UInt32 = 0xFEE0_0000
    public static let ioAPIC: UInt32 = 0xFEC0_0000
}

/// One range of the physical memory map (e820 / multiboot mmap types).
public struct MemoryRange: Equatable, Sendable {
    public enum Kind: UInt32, Sendable { case ram = 1, reserved = 2, acpi = 3, nvs = 4 }
    public var base: UInt64
    public var length: UInt64
    public var kind: Kind
    public init(base: UInt64, length: UInt64, kind: Kind) { self.base = base; self.length = length; self.kind = kind }

    /// The e820 map of a VM with `memoryBytes` of RAM at 0: low RAM up to the EBDA, the EBDA,
    /// the BIOS area holding the firmware tables, then RAM from 1 MiB.
    public static func map(memoryBytes: UInt64) -> [MemoryRange] {
        [MemoryRange(base: 0, length: FirmwareLayout.ebda, kind: .ram),
         MemoryRange(base: FirmwareLayout.ebda, length: FirmwareLayout.lowMemoryEnd - FirmwareLayout.ebda, kind: .reserved),
         MemoryRange(base: FirmwareLayout.acpiTables, length: FirmwareLayout.biosEnd - FirmwareLayout.acpiTables, kind: .reserved),
         MemoryRange(base: FirmwareLayout.highMemory, length: memoryBytes - FirmwareLayout.highMemory, kind: .ram)]
    }

    /// The 20-byte e820 entry (base u64, length u64, type u32).
    public var e820Bytes: [UInt8] { le64(base) + le64(length) + le32(kind.rawValue) }
}

/// The CPU state a boot protocol asks for at the kernel's first instruction, as register values
/// the machine applies to the boot vCPU (segments are flat: base 0, limit 4 GiB).
public struct EntryState: Equatable, Sendable {
    public enum Mode: Equatable, Sendable {
        /// 32-bit protected mode, paging off (multiboot, Linux 32-bit protocol).
        case protected32
        /// 64-bit long mode on identity page tables (Linux 64-bit protocol).
        case long64
    }
    public var mode: Mode
    public var rip: UInt64
    public var rax: UInt64 = 0, rbx: UInt64 = 0, rsi: UInt64 = 0, rdi: UInt64 = 0, rsp: UInt64 = 0
    public var rflags: UInt64 = 0x2
    public var codeSelector: UInt16
    public var dataSelector: UInt16
    public var gdtBase: UInt64 = FirmwareLayout.gdtAddress
    public var gdtLimit: UInt16 = 4 * 8 - 1
    public var cr0: UInt64
    public var cr3: UInt64 = 0
    public var cr4: UInt64 = 0
    public var efer: UInt64 = 0

    public static let cr0PE: UInt64 = 0x1, cr0ET: UInt64 = 0x10, cr0PG: UInt64 = 0x8000_0000
    public static let cr4PAE: UInt64 = 0x20
    public static let eferLME: UInt64 = 0x100, eferLMA: UInt64 = 0x400

    /// 32-bit flat protected mode, interrupts off, paging off.
    public static func protected32(entry: UInt64, code: UInt16, data: UInt16) -> EntryState {
        EntryState(mode: .protected32, rip: entry, rsp: FirmwareLayout.stackTop, codeSelector: code, dataSelector: data,
                   cr0: cr0PE | cr0ET)
    }

    /// 64-bit mode on the firmware's identity page tables, interrupts off.
    public static func long64(entry: UInt64, code: UInt16, data: UInt16) -> EntryState {
        EntryState(mode: .long64, rip: entry, rsp: FirmwareLayout.stackTop, codeSelector: code, dataSelector: data,
                   cr0: cr0PE | cr0ET | cr0PG, cr3: FirmwareLayout.pml4, cr4: cr4PAE, efer: eferLME | eferLMA)
    }
}

/// GDTs and page tables for the entry states.
public enum BootTables {
    public static let null: UInt64 = 0
    /// Flat 32-bit code, execute/read, accessed (type 0xB), DPL 0, 4 KiB granularity.
    public static let code32: UInt64 = 0x00CF_9B00_0000_FFFF
    /// 64-bit code (L = 1), execute/read, accessed.
    public static let code64: UInt64 = 0x00AF_9B00_0000_FFFF
    /// Flat data, read/write, accessed.
    public static let data: UInt64 = 0x00CF_9300_0000_FFFF

    /// Multiboot GDT: 0x08 = 32-bit code, 0x10 = data.
    public static let multibootGDT: [UInt64] = [null, code32, data, null]
    public static let multibootCS: UInt16 = 0x08, multibootDS: UInt16 = 0x10
    /// Linux GDT: __BOOT_CS = 0x10, __BOOT_DS = 0x18 (the code segment is 64-bit for the 64-bit
    /// protocol and 32-bit for the 32-bit one).
    public static func linuxGDT(longMode: Bool) -> [UInt64] { [null, null, longMode ? code64 : code32, data] }
    public static let linuxBootCS: UInt16 = 0x10, linuxBootDS: UInt16 = 0x18

    public static func gdtBytes(_ entries: [UInt64]) -> [UInt8] { entries.flatMap { le64($0) } }

    /// PML4 at 0x9000, PDPT at 0xA000, PDs at 0xB000-0xEFFF: identity map of the first 4 GiB with
    /// 2 MiB pages, present + writable, accessed/dirty preset; 0xFEC00000-0xFEFFFFFF uncached.
    public static func identityPageTables() -> [UInt8] {
        var t = Bytes(count: 6 * 4096)
        let p: UInt64 = 1, rw: UInt64 = 2, pwt: UInt64 = 8, pcd: UInt64 = 0x10, a: UInt64 = 0x20, d: UInt64 = 0x40, ps: UInt64 = 0x80
        t.put64(0, FirmwareLayout.pdpt | p | rw | a)
        for i in 0..<4 {
            t.put64(4096 + i * 8, (FirmwareLayout.firstPD + UInt64(i) * 4096) | p | rw | a)
            for j in 0..<512 {
                let addr = UInt64(i) << 30 | UInt64(j) << 21
                var e = addr | p | rw | a | d | ps
                if addr >= 0xFEC0_0000 && addr < 0xFF00_0000 { e |= pcd | pwt }
                t.put64((2 + i) * 4096 + j * 8, e)
            }
        }
        return t.b
    }
}

/// Where the firmware's movable scratch (boot GDT, entry stack, multiboot information) goes when
/// a multiboot image loads below 1 MiB: each piece keeps its usual address unless a kernel
/// segment covers it, and then takes the first free page-aligned gap of low RAM (0x1000 to the
/// EBDA) or, failing that, RAM above everything loaded.
/// Fixed firmware memory (the BIOS data area, the EBDA, the legacy hole and the ACPI/MP tables
/// at 0x9FC00-0x100000) cannot move: a segment there is a real overlap.
public struct LowMemoryPlanner {
    /// Ranges already taken: kernel segments and scratch placed so far (start, end).
    public private(set) var taken: [(what: String, start: UInt64, end: UInt64)]
    let ramBytes: UInt64
    /// First free byte above everything loaded (modules included), for the high fallback.
    var highNext: UInt64

    /// The firmware ranges no segment may overlap.
    public static let fixed: [(what: String, start: UInt64, end: UInt64)] = [
        ("the BIOS data area", 0x400, 0x500),
        ("the EBDA, the legacy video/BIOS hole and the ACPI/MP tables", FirmwareLayout.ebda, FirmwareLayout.biosEnd),
    ]

    public init(ramBytes: UInt64, highNext: UInt64) {
        taken = []
        self.ramBytes = ramBytes
        self.highNext = highNext
    }

    /// Records a kernel segment; throws (naming both ranges) when it overlaps fixed firmware memory.
    public mutating func claimSegment(_ what: String, start: UInt64, length: UInt64) throws {
        let end = start + length
        for f in LowMemoryPlanner.fixed where start < f.end && f.start < end {
            throw FirmwareError(file: "", message: "\(what) at 0x\(hex(start))-0x\(hex(end)) overlaps \(f.what) at 0x\(hex(f.start))-0x\(hex(f.end))")
        }
        taken.append((what, start, end))
    }

    func free(_ start: UInt64, _ length: UInt64) -> Bool {
        let end = start + length
        return !taken.contains { start < $0.end && $0.start < end } && !LowMemoryPlanner.fixed.contains { start < $0.end && $0.start < end }
    }

    /// Places `length` bytes of scratch named `what`, preferring `preferred`.
    public mutating func place(_ what: String, preferred: UInt64, length: UInt64) throws -> UInt64 {
        var at: UInt64? = free(preferred, length) ? preferred : nil
        if at == nil {
            var a: UInt64 = 0x1000
            while a + length <= FirmwareLayout.ebda {
                if free(a, length) { at = a; break }
                a += 0x1000
            }
        }
        if at == nil {
            let a = (highNext + 0xFFF) & ~0xFFF
            guard a + length <= min(ramBytes, 1 << 32) else {
                throw FirmwareError(file: "", message: "no room for the firmware's \(what) (\(length) bytes): the image covers low memory and RAM above it is full")
            }
            at = a
            highNext = a + length
        }
        taken.append((what, at!, at! + length))
        return at!
    }
}
