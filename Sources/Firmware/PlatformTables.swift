// ACPI tables for the PC platform devices a config places (the firmware sees the device list,
// the device models do not see the firmware):
//   HPET  the "HPET" table (IA-PC HPET spec 1.0a, table 3) for an `hpet` device: its event timer
//         block id (= the low half of its GCAP_ID), its MMIO base, HPET number 0, minimum tick.
//   ACPI PM  for an `acpi-pm` device (a guest that asks for sleep states): a full (not
//         hardware-reduced) FADT 6.0 with PM1a event/control and PM timer blocks at the device's
//         ports, SCI on IRQ 9 (level, active high, with its MADT override), SMI_CMD 0 (ACPI mode
//         is always on), a FACS, and a DSDT whose AML defines \_S1 (standby: SLP_TYP 1) and \_S5
//         (soft off: SLP_TYP 5) — the values the acpi-pm model acts on.

/// Which platform devices the firmware describes (from the config's `devices:`).
public struct PlatformDevices: Equatable, Sendable {
    /// MMIO base of the HPET, when an `hpet` device is configured.
    public var hpetBase: UInt64?
    /// Number of HPET comparators (for the event timer block id).
    public var hpetTimers: Int = 3
    /// First port of the ACPI PM registers (PM1a_EVT +0, PM1a_CNT +4, PM_TMR +8), when an
    /// `acpi-pm` device is configured.
    public var pmBase: UInt64?
    public init(hpetBase: UInt64? = nil, hpetTimers: Int = 3, pmBase: UInt64? = nil) {
        self.hpetBase = hpetBase; self.hpetTimers = hpetTimers; self.pmBase = pmBase
    }

    public static let sciIRQ: UInt16 = 9
    public static let pm1EventLength: UInt8 = 4, pm1ControlLength: UInt8 = 2, pmTimerLength: UInt8 = 4
    /// SLP_TYP values of the DSDT's sleep packages.
    public static let slpTypS1: UInt8 = 1, slpTypS5: UInt8 = 5
}

public enum PlatformTables {
    /// The HPET description table (56 bytes).
    public static func hpet(base: UInt64, timers: Int) -> [UInt8] {
        var t = SMPTables.sdtHeader("HPET", length: 56, revision: 1)
        let blockID: UInt32 = 0x01 | UInt32(max(timers, 1) - 1) << 8 | 1 << 13 | 1 << 15 | 0x8086 << 16
        t.b += le32(blockID)
        t.b += gas(space: 0, bits: 64, address: base)     // system memory
        t.b += [0]                                          // HPET number
        t.b += le16(0x80)                                   // minimum clock tick in periodic mode
        t.b += [0]                                          // no page protection
        SMPTables.finish(&t)
        return t.b
    }

    /// A Generic Address Structure (12 bytes): space 0 memory, 1 I/O.
    static func gas(space: UInt8, bits: UInt8, address: UInt64, accessSize: UInt8 = 0) -> [UInt8] {
        [space, bits, 0, accessSize] + le64(address)
    }

    /// The FACS (64 bytes, 64-byte aligned; no checksum): no waking vector, no global lock owner.
    public static func facs() -> [UInt8] {
        var f = Bytes(count: 64)
        f.putASCII(0, "FACS", width: 4)
        f.put32(4, 64)
        f.put8(32, 2)                                       // version
        return f.b
    }

    /// A DSDT whose AML defines the sleep packages \_S1 and \_S5 (Name(_Sx_, Package(4){typ, typ, 0, 0})).
    public static func sleepDSDT() -> [UInt8] {
        func sleepPackage(_ name: String, _ typ: UInt8) -> [UInt8] {
            // NameOp NameSeg PackageOp PkgLength(8) NumElements(4) BytePrefix typ BytePrefix typ Zero Zero
            [0x08] + Array(name.utf8) + [0x12, 0x08, 0x04, 0x0A, typ, 0x0A, typ, 0x00, 0x00]
        }
        let aml = sleepPackage("_S1_", PlatformDevices.slpTypS1) + sleepPackage("_S5_", PlatformDevices.slpTypS5)
        var t = SMPTables.sdtHeader("DSDT", length: 36 + aml.count, revision: 2)
        t.b += aml
        SMPTables.finish(&t)
        return t.b
    }

    /// A full FADT 6.0 (276 bytes) for the PM registers at `pmBase`.
    public static func fadt(pmBase: UInt64, facs: UInt64, dsdt: UInt64) -> [UInt8] {
        let length = SMPTables.fadtLength
        var t = SMPTables.sdtHeader("FACP", length: length, revision: 6)
        t.b += [UInt8](repeating: 0, count: length - 36)
        let evt = UInt32(pmBase), cnt = UInt32(pmBase + 4), tmr = UInt32(pmBase + 8)
        t.put32(36, UInt32(facs))               // FIRMWARE_CTRL (X_FIRMWARE_CTRL stays 0)
        t.put32(40, UInt32(dsdt))
        t.put16(46, PlatformDevices.sciIRQ)     // SCI_INT
        t.put32(48, 0)                          // SMI_CMD 0: ACPI mode is always enabled
        t.put32(56, evt)                        // PM1a_EVT_BLK
        t.put32(64, cnt)                        // PM1a_CNT_BLK
        t.put32(76, tmr)                        // PM_TMR_BLK
        t.put8(88, PlatformDevices.pm1EventLength)
        t.put8(89, PlatformDevices.pm1ControlLength)
        t.put8(91, PlatformDevices.pmTimerLength)
        t.put16(96, 0x65)                       // P_LVL2_LAT > 100: no C2
        t.put16(98, 0x3E9)                      // P_LVL3_LAT > 1000: no C3
        t.put8(108, 0x32)                       // CENTURY: the CMOS century register
        t.put16(109, 0x0003)                    // IAPC_BOOT_ARCH: LEGACY_DEVICES | 8042
        // Flags: WBINVD, PROC_C1, PWR_BUTTON and SLP_BUTTON (no fixed buttons); 24-bit PM timer
        t.put32(112, 1 << 0 | 1 << 2 | 1 << 4 | 1 << 5)
        t.put8(131, 0)                          // FADT minor version
        t.put64(140, dsdt)                      // X_DSDT
        t.b.replaceSubrange(148..<160, with: gas(space: 1, bits: 32, address: UInt64(evt), accessSize: 2))
        t.b.replaceSubrange(172..<184, with: gas(space: 1, bits: 16, address: UInt64(cnt), accessSize: 2))
        t.b.replaceSubrange(208..<220, with: gas(space: 1, bits: 32, address: UInt64(tmr), accessSize: 3))
        t.putASCII(268, "GIANTVM", width: 8, pad: 0)
        SMPTables.finish(&t)
        return t.b
    }
}
