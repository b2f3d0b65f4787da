// SMP description for the guest: the Intel MultiProcessor Specification 1.4 tables (floating
// pointer + configuration table) and ACPI (RSDP 2.0, RSDT, XSDT, MADT; optionally FADT, DSDT), with every
// checksum filled in. APIC id of vCPU i is i; the IOAPIC sits at 0xFEC00000 with GSI base 0 and
// 24 pins; ISA IRQ 0 (the PIT) is wired to GSI 2 (the PC convention QEMU also follows).

public struct SMPTables {
    public var vcpus: Int
    public var ioapicID: UInt8
    public var ioapicPins = 24
    public static let ioapicVersion: UInt8 = 0x20
    public static let lapicVersion: UInt8 = 0x14
    public static let oemID = "GVMSWF"          // 6 bytes
    public static let oemTableID = "GIANTVM "   // 8 bytes
    public static let creatorID: UInt32 = 0x534D_5647 // "GVMS"

    /// Also write a hardware-reduced FADT 6.0 and an empty DSDT (listed before the MADT). Off by
    /// default: Linux on a hardware-reduced ACPI platform drops the legacy PIC and the PIT timer
    /// (x86's reduced-hardware init), and with no TSC-deadline or kvmclock here it would then have
    /// no timer at all. Without a FADT Linux takes the MADT for SMP and keeps the PC timer.
    public var hardwareReducedFADT = false

    /// Platform devices of the config the ACPI tables describe (HPET, ACPI PM: PlatformTables.swift).
    /// With an ACPI PM device the full FADT replaces the hardware-reduced one.
    public var platform = PlatformDevices()

    public init(vcpus: Int) {
        self.vcpus = vcpus
        ioapicID = UInt8(min(vcpus, 254))
    }

    /// ISA IRQ -> IOAPIC pin: 0 -> 2, 2 (the cascade) unused, others identity.
    public static func isaPin(_ irq: Int) -> Int { irq == 0 ? 2 : irq }

    // ---- MP specification ------------------------------------------------------------------

    /// The MP configuration table ("PCMP") for placement at `FirmwareLayout.mpConfig`.
    public func mpConfigTable() -> [UInt8] {
        var entries: [UInt8] = []
        var count: UInt16 = 0
        for i in 0..<vcpus {
            var e = Bytes(count: 20)
            e.put8(0, 0)                       // processor entry
            e.put8(1, UInt8(i))                // local APIC id
            e.put8(2, SMPTables.lapicVersion)
            e.put8(3, i == 0 ? 0x03 : 0x01)    // EN, BP on the boot processor
            e.put32(4, 0x0006_0FB1)            // CPU signature: family 6
            e.put32(8, 0x0000_0201)            // feature flags: FPU, APIC
            entries += e.b; count += 1
        }
        var bus = Bytes(count: 8)
        bus.put8(0, 1); bus.put8(1, 0); bus.putASCII(2, "ISA", width: 6)
        entries += bus.b; count += 1
        var io = Bytes(count: 8)
        io.put8(0, 2); io.put8(1, ioapicID); io.put8(2, SMPTables.ioapicVersion); io.put8(3, 1)
        io.put32(4, FirmwareLayout.ioAPIC)
        entries += io.b; count += 1
        for irq in 0..<16 where irq != 2 {
            var e = Bytes(count: 8)
            e.put8(0, 3); e.put8(1, 0)         // I/O interrupt, INT
            e.put16(2, 0)                      // polarity/trigger conform to the ISA bus
            e.put8(4, 0); e.put8(5, UInt8(irq)); e.put8(6, ioapicID); e.put8(7, UInt8(SMPTables.isaPin(irq)))
            entries += e.b; count += 1
        }
        for (type, lint) in [(UInt8(3), UInt8(0)), (UInt8(1), UInt8(1))] { // ExtINT -> LINT0, NMI -> LINT1
            var e = Bytes(count: 8)
            e.put8(0, 4); e.put8(1, type); e.put16(2, 0); e.put8(4, 0); e.put8(5, 0); e.put8(6, 0xFF); e.put8(7, lint)
            entries += e.b; count += 1
        }
        var h = Bytes(count: 44)
        h.putASCII(0, "PCMP", width: 4)
        h.put16(4, UInt16(44 + entries.count))
        h.put8(6, 4)                                // spec revision 1.4
        h.putASCII(8, "GIANTVM", width: 8)
        h.putASCII(16, "SWIFT", width: 12)
        h.put16(34, count)
        h.put32(36, FirmwareLayout.localAPIC)
        var t = Bytes(h.b + entries)
        t.fixChecksum(0..<t.b.count, at: 7)
        return t.b
    }

    /// The 16-byte MP floating pointer ("_MP_") pointing at `configAddress`.
    public static func mpFloatingPointer(configAddress: UInt64) -> [UInt8] {
        var f = Bytes(count: 16)
        f.putASCII(0, "_MP_", width: 4)
        f.put32(4, UInt32(configAddress))
        f.put8(8, 1)     // length in 16-byte units
        f.put8(9, 4)     // spec revision 1.4
        f.put8(11, 0)    // feature 1: a configuration table is present
        f.put8(12, 0)    // feature 2: IMCR absent (virtual wire mode)
        f.fixChecksum(0..<16, at: 10)
        return f.b
    }

    // ---- ACPI --------------------------------------------------------------------------------

    static func sdtHeader(_ sig: String, length: Int, revision: UInt8) -> Bytes {
        var h = Bytes(count: 36)
        h.putASCII(0, sig, width: 4)
        h.put32(4, UInt32(length))
        h.put8(8, revision)
        h.putASCII(10, oemID, width: 6)
        h.putASCII(16, oemTableID, width: 8)
        h.put32(24, 1)
        h.put32(28, creatorID)
        h.put32(32, 1)
        return h
    }

    static func finish(_ t: inout Bytes) { t.fixChecksum(0..<t.b.count, at: 9) }

    /// MADT ("APIC" revision 3): local APIC address, PCAT_COMPAT (an 8259 pair exists), one
    /// processor local APIC entry per vCPU, the IOAPIC, the IRQ0 -> GSI2 override, and LINT1 as NMI.
    public func madt() -> [UInt8] {
        var body: [UInt8] = le32(FirmwareLayout.localAPIC) + le32(1)
        for i in 0..<vcpus {
            body += [0, 8, UInt8(i), UInt8(i)] + le32(1) // enabled
        }
        body += [1, 12, ioapicID, 0] + le32(FirmwareLayout.ioAPIC) + le32(0)
        body += [2, 10, 0, 0] + le32(2) + le16(0)        // ISA IRQ 0 -> GSI 2, conforming
        if platform.pmBase != nil {                       // the SCI: ISA IRQ 9, level, active high
            body += [2, 10, 0, UInt8(PlatformDevices.sciIRQ)] + le32(UInt32(PlatformDevices.sciIRQ)) + le16(0x000D)
        }
        body += [4, 6, 0xFF] + le16(0) + [1]             // every processor: LINT1 is NMI
        var t = SMPTables.sdtHeader("APIC", length: 36 + body.count, revision: 3)
        t.b += body
        SMPTables.finish(&t)
        return t.b
    }

    /// An empty DSDT (header only, no AML): the namespace has no devices.
    public static func dsdt() -> [UInt8] {
        var t = sdtHeader("DSDT", length: 36, revision: 2)
        finish(&t)
        return t.b
    }

    public static let fadtLength = 276
    /// FADT revision 6.0 for a hardware-reduced ACPI platform (no SCI, PM timer or GPE blocks)
    /// with IA-PC boot flags "legacy devices" and "8042 present" (so Linux probes the i8042).
    public static func fadt(dsdt: UInt64) -> [UInt8] {
        var t = sdtHeader("FACP", length: fadtLength, revision: 6)
        t.b += [UInt8](repeating: 0, count: fadtLength - 36)
        t.put32(40, UInt32(dsdt))           // DSDT
        t.put16(109, 0x0003)                // IAPC_BOOT_ARCH: LEGACY_DEVICES | 8042
        t.put32(112, 1 << 20)               // Flags: HW_REDUCED_ACPI
        t.put8(131, 0)                      // FADT minor version
        t.put64(140, dsdt)                  // X_DSDT
        t.putASCII(268, "GIANTVM", width: 8, pad: 0) // hypervisor vendor identity
        finish(&t)
        return t.b
    }

    public static func rsdt(_ tables: [UInt64]) -> [UInt8] {
        var t = sdtHeader("RSDT", length: 36 + 4 * tables.count, revision: 1)
        for a in tables { t.b += le32(UInt32(a)) }
        finish(&t)
        return t.b
    }

    public static func xsdt(_ tables: [UInt64]) -> [UInt8] {
        var t = sdtHeader("XSDT", length: 36 + 8 * tables.count, revision: 1)
        for a in tables { t.b += le64(a) }
        finish(&t)
        return t.b
    }

    /// RSDP revision 2 (36 bytes): checksum over the first 20 bytes, extended over all 36.
    public static func rsdp(rsdt: UInt64, xsdt: UInt64) -> [UInt8] {
        var r = Bytes(count: 36)
        r.putASCII(0, "RSD PTR ", width: 8)
        r.putASCII(9, oemID, width: 6)
        r.put8(15, 2)
        r.put32(16, UInt32(rsdt))
        r.put32(20, 36)
        r.put64(24, xsdt)
        r.fixChecksum(0..<20, at: 8)
        r.fixChecksum(0..<36, at: 32)
        return r.b
    }

    /// Where each table went.
    public struct Placement: Equatable, Sendable {
        /// `fadt` and `dsdt` are 0 unless `hardwareReducedFADT` is set or an ACPI PM device is.
        public var rsdp: UInt64, rsdt: UInt64, xsdt: UInt64, madt: UInt64, fadt: UInt64, dsdt: UInt64
        public var mpFloating: UInt64, mpConfig: UInt64
        /// The FACS (ACPI PM device only) and the HPET table (HPET device only), or 0.
        public var facs: UInt64 = 0, hpet: UInt64 = 0
    }

    /// Writes every table (and the BIOS data area words that point at the EBDA) into guest RAM.
    @discardableResult
    public func install(into mem: FirmwareMemory) throws -> Placement {
        guard mem.memoryBytes >= FirmwareLayout.biosEnd else {
            throw FirmwareError(file: "firmware tables", message: "guest RAM (\(mem.memoryBytes) bytes) must cover the BIOS area below 1 MiB")
        }
        func align16(_ v: UInt64) -> UInt64 { (v + 15) & ~15 }
        var at = FirmwareLayout.acpiTables
        var written: [(UInt64, [UInt8])] = []
        var dsdtAddr: UInt64 = 0, fadtAddr: UInt64 = 0
        var listed: [UInt64] = []
        var facsAddr: UInt64 = 0, hpetAddr: UInt64 = 0
        if let pm = platform.pmBase {
            facsAddr = (at + 63) & ~63; let fc = PlatformTables.facs(); written.append((facsAddr, fc)); at = align16(facsAddr + UInt64(fc.count))
            dsdtAddr = at; let d = PlatformTables.sleepDSDT(); written.append((at, d)); at = align16(at + UInt64(d.count))
            fadtAddr = at; let f = PlatformTables.fadt(pmBase: pm, facs: facsAddr, dsdt: dsdtAddr); written.append((at, f))
            at = align16(at + UInt64(f.count))
            listed.append(fadtAddr)
        } else if hardwareReducedFADT {
            dsdtAddr = at; let d = SMPTables.dsdt(); written.append((at, d)); at = align16(at + UInt64(d.count))
            fadtAddr = at; let f = SMPTables.fadt(dsdt: dsdtAddr); written.append((at, f)); at = align16(at + UInt64(f.count))
            listed.append(fadtAddr)
        }
        let madtAddr = at; let m = madt(); written.append((at, m)); at = align16(at + UInt64(m.count))
        listed.append(madtAddr)
        if let base = platform.hpetBase {
            hpetAddr = at; let h = PlatformTables.hpet(base: base, timers: platform.hpetTimers); written.append((at, h))
            at = align16(at + UInt64(h.count))
            listed.append(hpetAddr)
        }
        let rsdtAddr = at; let r = SMPTables.rsdt(listed); written.append((at, r)); at = align16(at + UInt64(r.count))
        let xsdtAddr = at; let x = SMPTables.xsdt(listed); written.append((at, x)); at = align16(at + UInt64(x.count))
        guard at <= FirmwareLayout.rsdp else {
            throw FirmwareError(file: "ACPI tables", message: "\(vcpus) vCPUs need more than 64 KiB of ACPI tables")
        }
        let mp = mpConfigTable()
        guard FirmwareLayout.mpConfig + UInt64(mp.count) <= FirmwareLayout.biosEnd else {
            throw FirmwareError(file: "MP table", message: "\(vcpus) vCPUs do not fit in the MP configuration table area")
        }
        for (a, b) in written + [
                       (FirmwareLayout.rsdp, SMPTables.rsdp(rsdt: rsdtAddr, xsdt: xsdtAddr)),
                       (FirmwareLayout.mpFloating, SMPTables.mpFloatingPointer(configAddress: FirmwareLayout.mpConfig)),
                       (FirmwareLayout.mpConfig, mp)] {
            try mem.write(gpa: a, bytes: b)
        }
        try mem.write(gpa: FirmwareLayout.bdaEBDASegment, bytes: le16(UInt16(FirmwareLayout.ebda >> 4)))
        try mem.write(gpa: FirmwareLayout.bdaBaseMemoryKiB, bytes: le16(UInt16(FirmwareLayout.ebda >> 10)))
        return Placement(rsdp: FirmwareLayout.rsdp, rsdt: rsdtAddr, xsdt: xsdtAddr, madt: madtAddr, fadt: fadtAddr,
                         dsdt: dsdtAddr, mpFloating: FirmwareLayout.mpFloating, mpConfig: FirmwareLayout.mpConfig,
                         facs: facsAddr, hpet: hpetAddr)
    }
}
