// Tiny hand-assembled guests for the KVM tests. Each is machine code (bytes) with its source in a
// comment; they were assembled once with GNU as (`as --64`, `.code16` where noted).
import Foundation
@testable import Machine

enum TinyGuests {
    static func bytes(_ hex: String) -> [UInt8] {
        let clean = hex.filter { $0.isHexDigit }
        var out: [UInt8] = []
        var i = clean.startIndex
        while i < clean.endIndex {
            let j = clean.index(i, offsetBy: 2)
            out.append(UInt8(clean[i..<j], radix: 16)!)
            i = j
        }
        return out
    }

    /// Places pieces at offsets in a zero-filled blob.
    static func blob(_ pieces: [(Int, [UInt8])]) -> [UInt8] {
        let size = pieces.map { $0.0 + $0.1.count }.max() ?? 0
        var b = [UInt8](repeating: 0, count: size)
        for (o, p) in pieces { b.replaceSubrange(o..<(o + p.count), with: p) }
        return b
    }

    /// 64-bit, at 0x100000:
    ///   mov $0x3f8,%dx; mov $'H',%al; out %al,%dx; mov $'i',%al; out %al,%dx; mov $10,%al; out %al,%dx
    ///   lea msg(%rip),%rsi; mov $8,%ecx; mov $0xe0,%dx; rep outsb
    ///   mov $EXIT,%eax; out %eax,$0xf4; hlt
    ///   msg: .ascii "{\"t\":1}\n"
    static func hello(exitValue: UInt32) -> [UInt8] {
        var code = bytes("""
            66 BA F8 03 B0 48 EE B0 69 EE B0 0A EE 48 8D 35 13 00 00 00 B9 08 00 00 00 66 BA E0 00
            F3 6E B8 44 33 22 11 E7 F4 F4 7B 22 74 22 3A 31 7D 0A
            """)
        // patch the imm32 of `mov $EXIT, %eax` (bytes 32..35)
        for i in 0..<4 { code[32 + i] = UInt8(truncatingIfNeeded: exitValue >> (8 * UInt32(i))) }
        return code
    }

    /// 64-bit: print 'T' on the UART, mov $0x1234,%eax, then ud2 with an empty IDT: #UD -> #GP
    /// -> double fault -> triple fault.
    static let tripleFault = bytes("66 BA F8 03 B0 54 EE B8 34 12 00 00 0F 0B")

    /// 64-bit BSP at 0x100000 (handler for vector 0x41 at +0x100):
    ///   mov $0x80000,%esp; lidt 0x21000; mov $0xfee00000,%ebx; movl $0x1ff,0xf0(%rbx)      (enable APIC)
    ///   movl $0x01000000,0x310(%rbx); movl $0x4500,0x300(%rbx)                             (INIT -> APIC 1)
    ///   movl $0x4610,0x300(%rbx)                                                          (SIPI 0x10)
    ///   wait: cli; cmpl $1,0x504; je done; sti; hlt; jmp wait
    ///   done: mov $0x3f8,%dx; mov $'I',%al; out %al,%dx; mov $10,%al; out %al,%dx; xor %eax,%eax; out %eax,$0xf4; hlt
    ///   .org 0x100; handler: movl $1,0x504; movl $0,0xb0(%rbx) (EOI); iretq
    static let smpBSP = blob([
        (0, bytes("""
            BC 00 00 08 00 0F 01 1C 25 00 10 02 00 BB 00 00 E0 FE C7 83 F0 00 00 00 FF 01 00 00
            C7 83 10 03 00 00 00 00 00 01 C7 83 00 03 00 00 00 45 00 00 C7 83 00 03 00 00 10 46
            00 00 FA 83 3C 25 04 05 00 00 01 74 04 FB F4 EB F1 66 BA F8 03 B0 49 EE B0 0A EE 31
            C0 E7 F4 F4
            """)),
        (0x100, bytes("C7 04 25 04 05 00 00 01 00 00 00 C7 83 B0 00 00 00 00 00 00 00 48 CF")),
    ])

    /// AP trampoline at 0x10000 (SIPI vector 0x10), real mode -> long mode directly:
    ///   .code16: cli; mov %cs,%ax; mov %ax,%ds; lgdtl 0x80; mov $0x20,%eax; mov %eax,%cr4
    ///            mov $0x9000,%eax; mov %eax,%cr3; mov $0xc0000080,%ecx; rdmsr; or $0x100,%eax; wrmsr
    ///            mov $0x80000011,%eax; mov %eax,%cr0; ljmpl $0x08,$0x10100
    ///   .org 0x80: .word 23; .long 0x1000          (the VMM's GDT)
    ///   .org 0x100, .code64: mov $0xfee00000,%ebx; movl $0x1ff,0xf0(%rbx); movl $1,0x500
    ///            movl $0,0x310(%rbx); movl $0x4041,0x300(%rbx)   (fixed IPI vector 0x41 -> APIC 0)
    ///            1: cli; hlt; jmp 1b
    static let smpAP = blob([
        (0, bytes("""
            FA 8C C8 8E D8 66 0F 01 16 80 00 66 B8 20 00 00 00 0F 22 E0 66 B8 00 90 00 00 0F 22
            D8 66 B9 80 00 00 C0 0F 32 66 0D 00 01 00 00 0F 30 66 B8 11 00 00 80 0F 22 C0 66 EA
            00 01 01 00 08 00
            """)),
        (0x80, bytes("17 00 00 10 00 00")),
        (0x100, bytes("""
            BB 00 00 E0 FE C7 83 F0 00 00 00 FF 01 00 00 C7 04 25 00 05 00 00 01 00 00 00 C7 83
            10 03 00 00 00 00 00 00 C7 83 00 03 00 00 41 40 00 00 FA F4 EB FC
            """)),
    ])

    /// 64-bit BSP at 0x100000: APIC timer, periodic, vector 0x40, divide by 1, initial count
    /// 100000 (1 ms at the 100 MHz bus); counts ticks at 0x504 and exits with the count at 5.
    ///   mov $0x80000,%esp; lidt 0x21000; mov $0xfee00000,%ebx; movl $0x1ff,0xf0(%rbx)
    ///   movl $0xb,0x3e0(%rbx); movl $0x20040,0x320(%rbx); movl $100000,0x380(%rbx)
    ///   wait: cli; cmpl $5,0x504; jae done; sti; hlt; jmp wait
    ///   done: movl $0,0x380(%rbx); mov 0x504,%eax; out %eax,$0xf4; hlt
    ///   .org 0x100; handler: incl 0x504; movl $0,0xb0(%rbx); iretq
    static let apicTimer = blob([
        (0, bytes("""
            BC 00 00 08 00 0F 01 1C 25 00 10 02 00 BB 00 00 E0 FE C7 83 F0 00 00 00 FF 01 00 00 C7
            83 E0 03 00 00 0B 00 00 00 C7 83 20 03 00 00 40 00 02 00 C7 83 80 03 00 00 A0 86 01 00
            FA 83 3C 25 04 05 00 00 05 73 04 FB F4 EB F1 C7 83 80 03 00 00 00 00 00 00 8B 04 25 04
            05 00 00 E7 F4 F4
            """)),
        (0x100, bytes("FF 04 25 04 05 00 00 C7 83 B0 00 00 00 00 00 00 00 48 CF")),
    ])

    /// 64-bit, one ELF segment at 0x100000 carrying its own IDT (+0x1000) and IDTR (+0x2000):
    /// programs IOAPIC pin 4 -> vector 0x44, fixed, edge, physical APIC 0; enables the UART's
    /// THR-empty interrupt (IER = 2); waits with sti/hlt until the handler ran once; prints 'Q';
    /// exits 0.
    ///   mov $0x80000,%esp; lidt 0x102000; mov $0xfee00000,%ebx; movl $0x1ff,0xf0(%rbx)
    ///   mov $0xfec00000,%ecx; movl $0x18,(%rcx); movl $0x44,0x10(%rcx); movl $0x19,(%rcx); movl $0,0x10(%rcx)
    ///   mov $0x3f9,%dx; mov $2,%al; out %al,%dx
    ///   wait: cli; cmpl $1,0x504; jae done; sti; hlt; jmp wait
    ///   done: mov $0x3f8,%dx; mov $'Q',%al; out %al,%dx; xor %eax,%eax; out %eax,$0xf4; hlt
    ///   .org 0x100; handler: mov $0x3fa,%dx; in %dx,%al (IIR); incl 0x504; movl $0,0xb0(%rbx); iretq
    static let uartInterruptViaIOAPIC: [UInt8] = {
        var idt = [UInt8](repeating: 0, count: 0x1000)
        idt.replaceSubrange((0x44 * 16)..<(0x45 * 16), with: idtGate(0x100100))
        return blob([
            (0, bytes("""
                BC 00 00 08 00 0F 01 1C 25 00 20 10 00 BB 00 00 E0 FE C7 83 F0 00 00 00 FF 01 00 00 B9
                00 00 C0 FE C7 01 18 00 00 00 C7 41 10 44 00 00 00 C7 01 19 00 00 00 C7 41 10 00 00 00
                00 66 BA F9 03 B0 02 EE FA 83 3C 25 04 05 00 00 01 73 04 FB F4 EB F1 66 BA F8 03 B0 51
                EE 31 C0 E7 F4 F4
                """)),
            (0x100, bytes("66 BA FA 03 EC FF 04 25 04 05 00 00 C7 83 B0 00 00 00 00 00 00 00 48 CF")),
            (0x1000, idt),
            (0x2000, [0xFF, 0x0F, 0x00, 0x10, 0x10, 0, 0, 0, 0, 0]), // IDTR: limit 0xfff, base 0x101000
        ])
    }()

    /// IPI stress, BSP at 0x100000: starts the AP, then sleeps (sti; hlt) until its handler
    /// (vector 0x41, +0x100: incl 0x504; EOI; iretq) has counted 1000 IPIs; exits 0.
    static let ipiStressBSP = blob([
        (0, bytes("""
            BC 00 00 08 00 0F 01 1C 25 00 10 02 00 BB 00 00 E0 FE C7 83 F0 00 00 00 FF 01 00 00 C7
            83 10 03 00 00 00 00 00 01 C7 83 00 03 00 00 00 45 00 00 C7 83 00 03 00 00 10 46 00 00
            FA 81 3C 25 04 05 00 00 E8 03 00 00 73 04 FB F4 EB EE 31 C0 E7 F4 F4
            """)),
        (0x100, bytes("FF 04 25 04 05 00 00 C7 83 B0 00 00 00 00 00 00 00 48 CF")),
    ])

    /// IPI stress, AP: the smpAP trampoline, then in long mode sends fixed IPI 0x41 to APIC 0
    /// and waits until the BSP counted it, 1000 times:
    ///   mov $1,%esi; loop: movl $0,0x310(%rbx); movl $0x4041,0x300(%rbx)
    ///   wait: cmpl %esi,0x504; jb wait; inc %esi; cmp $1001,%esi; jb loop; 1: cli; hlt; jmp 1b
    /// A lost IPI (or a lost wake-up of the halted BSP) hangs it: the test's timeout catches that.
    static let ipiStressAP = blob([
        (0, Array(smpAP[0..<0x100])),
        (0x100, bytes("""
            BB 00 00 E0 FE C7 83 F0 00 00 00 FF 01 00 00 C7 04 25 00 05 00 00 01 00 00 00 BE 01 00
            00 00 C7 83 10 03 00 00 00 00 00 00 C7 83 00 03 00 00 41 40 00 00 39 34 25 04 05 00 00
            72 F7 FF C6 81 FE E9 03 00 00 72 D9 FA F4 EB FC
            """)),
    ])

    /// A 64-bit interrupt gate (present, DPL0, type 0xE) for `handler` with selector 0x08.
    static func idtGate(_ handler: UInt64) -> [UInt8] {
        var g = [UInt8](repeating: 0, count: 16)
        g[0] = UInt8(handler & 0xFF); g[1] = UInt8((handler >> 8) & 0xFF)
        g[2] = 0x08; g[3] = 0
        g[4] = 0; g[5] = 0x8E
        g[6] = UInt8((handler >> 16) & 0xFF); g[7] = UInt8((handler >> 24) & 0xFF)
        for i in 0..<4 { g[8 + i] = UInt8((handler >> (32 + 8 * UInt64(i))) & 0xFF) }
        return g
    }
}

/// A test device recording what the guest writes to the UART (0x3f8), the results port (0xe0)
/// and the exit port (0xf4, which stops the machine like isa-debug-exit).
final class RecordingDevice: IODevice, @unchecked Sendable {
    let name = "recorder"
    let lock = NSLock()
    var uart: [UInt8] = []
    var results: [UInt8] = []
    weak var machine: Machine?

    func io(space: IOSpaceKind, offset: UInt64, data: UnsafeMutableRawBufferPointer, isWrite: Bool) {
        lock.lock()
        defer { lock.unlock() }
        let port = offset
        if !isWrite {
            // LSR (0x3fd) reports the transmitter empty; everything else reads 0.
            data.initializeMemory(as: UInt8.self, repeating: 0)
            if port == 0x3FD { data[0] = 0x60 }
            return
        }
        switch port {
        case 0x3F8: uart.append(data[0])
        case 0xE0: results.append(contentsOf: data)
        case 0xF4:
            var v: UInt32 = 0
            for (i, b) in data.prefix(4).enumerated() { v |= UInt32(b) << (8 * UInt32(i)) }
            machine?.requestStop(guestStatus: Int32(bitPattern: (v << 1) | 1), reason: "test exit port")
        default: break
        }
    }

    var uartText: String { lock.lock(); defer { lock.unlock() }; return String(decoding: uart, as: UTF8.self) }
    var resultText: String { lock.lock(); defer { lock.unlock() }; return String(decoding: results, as: UTF8.self) }
}
