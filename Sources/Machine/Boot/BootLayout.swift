// The entry contract's fixed low memory (see docs/vmm.md and /work/wt/ENTRY-CONTRACT.md):
//   0x1000 GDT, 0x2000 boot info, 0x3000 command line, 0x9000 PML4, 0xA000 PDPT, 0xB000.. PDs.
// Pure byte builders here; `Machine` writes them through pin/unpin.

public enum BootLayout {
    public static let gdtAddress: UInt64 = 0x1000
    public static let bootInfoAddress: UInt64 = 0x2000
    public static let cmdlineAddress: UInt64 = 0x3000
    public static let cmdlineMax = 4095
    public static let pml4Address: UInt64 = 0x9000
    public static let pdptAddress: UInt64 = 0xA000
    public static let firstPDAddress: UInt64 = 0xB000
    /// PDs may run up to (not including) this address (the guest owns what lies above).
    public static let pageTablesEnd: UInt64 = 0x10000 - 0x1000
    /// Lowest address a PT_LOAD segment may use.
    public static let imageMinimum: UInt64 = 0x10_0000
    public static let bootInfoMagic: UInt32 = 0x4756_4D42 // 'GVMB'
    public static let bootInfoVersion: UInt32 = 1
    public static let bootInfoSize = 40 + 256
    /// Version 2 (written only when the VM has `guest.modules`) appends the module table at
    /// offset 296: `u32 module_count, u32 reserved, {u64 start, u64 length}[maxModules]`.
    public static let bootInfoModulesVersion: UInt32 = 2
    public static let maxModules = 16
    public static let bootInfoModulesSize = bootInfoSize + 8 + 16 * maxModules

    public static let codeSelector: UInt16 = 0x08
    public static let dataSelector: UInt16 = 0x10

    /// GDT: null, 64-bit code DPL0 (accessed preset), flat data DPL0 (accessed preset).
    public static func gdt() -> [UInt8] {
        let entries: [UInt64] = [0, 0x00AF_9B00_0000_FFFF, 0x00CF_9300_0000_FFFF]
        return entries.flatMap { le64($0) }
    }

    /// The boot info struct (packed, little endian): version 1 without modules, version 2 with
    /// the module table (at most `maxModules`; callers check, extra entries are not written).
    public static func bootInfo(totalVCPUs: UInt32, nodeCount: UInt32, memoryBytes: UInt64, cmdlineLength: UInt32,
                                thisVCPU: UInt32, vcpuNode: [UInt8],
                                modules: [(start: UInt64, length: UInt64)] = []) -> [UInt8] {
        var b: [UInt8] = []
        b += le32(bootInfoMagic)
        b += le32(modules.isEmpty ? bootInfoVersion : bootInfoModulesVersion)
        b += le32(totalVCPUs)
        b += le32(nodeCount)
        b += le64(memoryBytes)
        b += le64(cmdlineAddress)
        b += le32(cmdlineLength)
        b += le32(thisVCPU)
        var nodes = [UInt8](repeating: 0, count: 256)
        for (i, n) in vcpuNode.prefix(256).enumerated() { nodes[i] = n }
        b += nodes
        if !modules.isEmpty {
            let listed = modules.prefix(maxModules)
            b += le32(UInt32(listed.count))
            b += le32(0)
            for m in listed { b += le64(m.start) + le64(m.length) }
            b += [UInt8](repeating: 0, count: 16 * (maxModules - listed.count))
        }
        return b
    }

    /// Bytes identity-mapped by the boot page tables: all RAM and at least the first 4 GiB,
    /// rounded up to 1 GiB (one PD each).
    public static func mappedBytes(memoryBytes: UInt64) -> UInt64 {
        let gib: UInt64 = 1 << 30
        return max(4 * gib, (memoryBytes + gib - 1) / gib * gib)
    }

    public static func pageDirectoryCount(memoryBytes: UInt64) -> Int {
        Int(mappedBytes(memoryBytes: memoryBytes) >> 30)
    }

    /// PML4, PDPT and PDs as one block starting at `pml4Address` (PML4, PDPT, PD0, PD1, ...).
    /// 2 MiB pages, present + writable with accessed/dirty preset; 0xFEC00000-0xFEFFFFFF
    /// uncached (PCD|PWT).
    public static func pageTables(memoryBytes: UInt64) -> [UInt8] {
        let pdCount = pageDirectoryCount(memoryBytes: memoryBytes)
        var t = [UInt8](repeating: 0, count: (2 + pdCount) * 4096)
        func put(_ offset: Int, _ v: UInt64) {
            for i in 0..<8 { t[offset + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) }
        }
        let present: UInt64 = 1, writable: UInt64 = 2, pwt: UInt64 = 8, pcd: UInt64 = 0x10
        let accessed: UInt64 = 0x20, dirty: UInt64 = 0x40, large: UInt64 = 0x80
        put(0, pdptAddress | present | writable | accessed)
        for i in 0..<pdCount {
            put(4096 + i * 8, (firstPDAddress + UInt64(i) * 4096) | present | writable | accessed)
            for j in 0..<512 {
                let addr = (UInt64(i) << 30) | (UInt64(j) << 21)
                var e = addr | present | writable | accessed | dirty | large
                if addr >= 0xFEC0_0000 && addr < 0xFF00_0000 { e |= pcd | pwt }
                put((2 + i) * 4096 + j * 8, e)
            }
        }
        return t
    }

    static func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
    static func le64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64($0))) } }
}
