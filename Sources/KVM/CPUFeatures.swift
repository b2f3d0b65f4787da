// CPUID feature bits the instruction probe (InstructionProbe.swift) can test, and how a set of
// features found not to work is hidden from a CPUID table. A feature names its leaf, subleaf,
// register and bit (Intel SDM vol. 2A, CPUID; AMD APM vol. 3 for the 0x8000_00xx leaves), and
// the features that depend on it (hidden with it: AVX needs XSAVE, ...).

public struct CPUFeature: Sendable, Equatable, Hashable, CustomStringConvertible {
    public enum Register: Sendable, Hashable { case eax, ebx, ecx, edx }
    public var name: String
    public var leaf: UInt32
    public var subleaf: UInt32
    public var register: Register
    public var bit: UInt32

    public init(_ name: String, leaf: UInt32, subleaf: UInt32 = 0, _ register: Register, bit: UInt32) {
        self.name = name; self.leaf = leaf; self.subleaf = subleaf; self.register = register; self.bit = bit
    }

    public var description: String {
        "\(name) (CPUID 0x\(String(leaf, radix: 16))\(subleaf != 0 || leaf == 7 ? ".\(subleaf)" : "") \(register) bit \(bit))"
    }

    /// Whether `entry` is this feature's leaf (the subleaf counts only for indexed leaves).
    func matches(_ e: CPUIDEntry) -> Bool {
        e.function == leaf && (e.flags & CPUIDEntry.significantIndex == 0 || e.index == subleaf)
    }

    /// Whether the feature is set in `entries`.
    public func isSet(in entries: [CPUIDEntry]) -> Bool {
        entries.contains { matches($0) && value($0) & (1 << bit) != 0 }
    }

    func value(_ e: CPUIDEntry) -> UInt32 {
        switch register { case .eax: return e.eax; case .ebx: return e.ebx; case .ecx: return e.ecx; case .edx: return e.edx }
    }

    func clear(_ e: inout CPUIDEntry) {
        let m = ~(UInt32(1) << bit)
        switch register { case .eax: e.eax &= m; case .ebx: e.ebx &= m; case .ecx: e.ecx &= m; case .edx: e.edx &= m }
    }

    // The features probed, and their dependents.
    public static let smap = CPUFeature("smap", leaf: 7, .ebx, bit: 20)
    public static let clwb = CPUFeature("clwb", leaf: 7, .ebx, bit: 24)
    public static let clflushopt = CPUFeature("clflushopt", leaf: 7, .ebx, bit: 23)
    public static let xsave = CPUFeature("xsave", leaf: 1, .ecx, bit: 26)
    public static let invpcid = CPUFeature("invpcid", leaf: 7, .ebx, bit: 10)
    public static let rdpru = CPUFeature("rdpru", leaf: 0x8000_0008, .ebx, bit: 4)
    public static let cx16 = CPUFeature("cx16", leaf: 1, .ecx, bit: 13)
    public static let rdrand = CPUFeature("rdrand", leaf: 1, .ecx, bit: 30)
    public static let rdseed = CPUFeature("rdseed", leaf: 7, .ebx, bit: 18)
    public static let movbe = CPUFeature("movbe", leaf: 1, .ecx, bit: 22)
    public static let popcnt = CPUFeature("popcnt", leaf: 1, .ecx, bit: 23)
    public static let rdtscp = CPUFeature("rdtscp", leaf: 0x8000_0001, .edx, bit: 27)
    public static let rdpid = CPUFeature("rdpid", leaf: 7, .ecx, bit: 22)
    public static let fsgsbase = CPUFeature("fsgsbase", leaf: 7, .ebx, bit: 0)
    public static let lzcnt = CPUFeature("abm/lzcnt", leaf: 0x8000_0001, .ecx, bit: 5)
    public static let bmi1 = CPUFeature("bmi1", leaf: 7, .ebx, bit: 3)
    public static let bmi2 = CPUFeature("bmi2", leaf: 7, .ebx, bit: 8)
    public static let adx = CPUFeature("adx", leaf: 7, .ebx, bit: 19)
    public static let serialize = CPUFeature("serialize", leaf: 7, .edx, bit: 14)
    public static let wbnoinvd = CPUFeature("wbnoinvd", leaf: 0x8000_0008, .ebx, bit: 9)
    public static let tscAdjust = CPUFeature("tsc_adjust", leaf: 7, .ebx, bit: 1)
    public static let x2apic = CPUFeature("x2apic", leaf: 1, .ecx, bit: 21)
    public static let tscDeadline = CPUFeature("tsc_deadline", leaf: 1, .ecx, bit: 24)

    /// Features that cannot work without `f` (hidden with it).
    public static func dependents(of f: CPUFeature) -> [CPUFeature] {
        guard f == .xsave else { return [] }
        // everything that needs XSAVE-managed state: AVX and its successors
        return [CPUFeature("avx", leaf: 1, .ecx, bit: 28), CPUFeature("fma", leaf: 1, .ecx, bit: 12),
                CPUFeature("f16c", leaf: 1, .ecx, bit: 29), CPUFeature("avx2", leaf: 7, .ebx, bit: 5)]
            + [16, 17, 21, 26, 27, 28, 30, 31].map { CPUFeature("avx512 (ebx \($0))", leaf: 7, .ebx, bit: $0) }
            + [1, 6, 11, 12, 14].map { CPUFeature("avx512 (ecx \($0))", leaf: 7, .ecx, bit: $0) }
            + [2, 3, 8, 23].map { CPUFeature("avx512 (edx \($0))", leaf: 7, .edx, bit: $0) }
            + [CPUFeature("avx-vnni", leaf: 7, subleaf: 1, .eax, bit: 4), CPUFeature("avx512-bf16", leaf: 7, subleaf: 1, .eax, bit: 5)]
    }

    /// `entries` with `hidden` (and their dependents) cleared.
    public static func hide(_ hidden: [CPUFeature], in entries: [CPUIDEntry]) -> [CPUIDEntry] {
        let all = hidden + hidden.flatMap(dependents)
        return entries.map { e in
            var e = e
            for f in all where f.matches(e) { f.clear(&e) }
            return e
        }
    }
}
