// The vCPU run loop as an explicit state machine. Before each entry the vCPU's interrupt state
// decides what to do (`VCPUInterrupts.nextEntry`, a pure `VCPUEntry.decide` applied under its
// lock): stop, reset (INIT), start at a SIPI vector, park, or enter with an injection. Each exit
// then becomes `.handled`, `.interrupted`, `.halted` or `.stopped`; anything the VMM cannot
// continue from is a `VCPUFailure` naming the vCPU and dumping its registers.
//
// Generic over the vCPU (`VirtualCPU`): the Machine runs `VCPURunner<VCPU>` (KVM), the tests a
// scripted double. The seam adds no allocation and no existential call per exit: the vCPU is a
// generic parameter (specialised for `VCPU` in optimised builds).
//
// Threading: one runner per local vCPU, on its own dedicated thread (never a Swift task). It is
// the only thread that calls its vCPU; other threads reach it through its VCPUInterrupts (under
// that lock) and `kick()`.
import GuestMemory
import Foundation
import Interrupts
import KVM
import Logging
import PluginAPI

/// The outcome of handling one exit.
public enum ExitOutcome: Equatable {
    case handled
    case interrupted
    case halted
    case stopped
}

/// A vCPU the VMM cannot continue: which one, why, and its registers at that moment.
public struct VCPUFailure: Error, CustomStringConvertible {
    public var vcpu: Int
    public var reason: String
    public var registers: String
    public var description: String { "vCPU \(vcpu): \(reason)\n\(registers)" }
}

final class VCPURunner<CPU: VirtualCPU>: @unchecked Sendable {
    let index: Int
    let vcpu: CPU
    let irq: VCPUInterrupts
    let env: VCPUEnvironment
    let resetRegisters: Registers
    let resetSpecialRegisters: SpecialRegisters
    var logger: Logger
    var warnedPorts = Set<UInt16>()
    var warnedMMIO = Set<UInt64>()
    /// Exit counts for the stop summary (indexed by ExitKind; only this vCPU's thread writes).
    var exitCounts = [UInt64](repeating: 0, count: ExitKind.allCases.count)
    /// The TPR class last written to kvm_run.cr8 / read back (avoids a lock when unchanged).
    var lastCR8: UInt64 = 0
    /// IA32_APIC_BASE as last seen in kvm_run (KVM takes the WRMSR; a change is noticed at the
    /// next exit, before the VMM acts on it), and the xAPIC page it selects (nil: the APIC is
    /// disabled or in x2APIC mode, the page is not decoded).
    var lastAPICBase: UInt64 = 0
    var xapicPage: UInt64? = localAPICBase
    var warnedMSRs = Set<UInt32>()
    /// The vCPU's state was just loaded (live migration): kvm_run's injection fields are stale
    /// until the next exit, so nothing is injected on the first entry.
    var arrived = false

    enum ExitKind: Int, CaseIterable {
        case io, mmio, hlt, irqWindow = 3, interrupted, msr
        var name: String {
            switch self {
            case .io: return "io"
            case .mmio: return "mmio"
            case .hlt: return "hlt"
            case .irqWindow: return "irq_window"
            case .interrupted: return "interrupted"
            case .msr: return "msr"
            }
        }
    }

    var exits: [String: UInt64] {
        var d: [String: UInt64] = [:]
        for k in ExitKind.allCases where exitCounts[k.rawValue] > 0 { d[k.name] = exitCounts[k.rawValue] }
        return d
    }

    init(index: Int, vcpu: CPU, irq: VCPUInterrupts, environment: VCPUEnvironment, logger: Logger) throws {
        self.index = index
        self.vcpu = vcpu
        self.irq = irq
        self.env = environment
        self.logger = logger
        self.logger[metadataKey: "vcpu"] = "\(index)"
        // KVM's power-on state, used for INIT (a CPU reset done by hand).
        resetRegisters = try vcpu.registers()
        resetSpecialRegisters = try vcpu.specialRegisters()
        lastAPICBase = apicBaseMSR
    }

    var apicBaseMSR: UInt64 { localAPICBase | 0x800 | (index == 0 ? 0x100 : 0) }

    // ---- entry states --------------------------------------------------------------------------

    /// The entry contract's 64-bit state for the BSP.
    func enterLongMode(entry: UInt64) throws {
        var s = resetSpecialRegisters
        let code = Segment(base: 0, limit: 0xFFFF_FFFF, selector: BootLayout.codeSelector, type: 0xB,
                           db: false, s: true, l: true, g: true)
        let data = Segment(base: 0, limit: 0xFFFF_FFFF, selector: BootLayout.dataSelector, type: 0x3,
                           db: true, s: true, l: false, g: true)
        s.cs = code
        s.ds = data; s.es = data; s.fs = data; s.gs = data; s.ss = data
        s.tr = Segment(base: 0, limit: 0x67, selector: 0, type: 0xB, s: false)
        s.ldt = Segment(base: 0, limit: 0, selector: 0, type: 0x2, s: false)
        s.gdt = DescriptorTable(base: BootLayout.gdtAddress, limit: 23)
        s.idt = DescriptorTable(base: 0, limit: 0)
        s.cr0 = 0x8001_0033 // PG | WP | NE | ET | MP | PE
        s.cr3 = BootLayout.pml4Address
        s.cr4 = 0x20        // PAE
        s.efer = 0xD00      // NXE | LMA | LME
        s.apicBase = apicBaseMSR
        try vcpu.setSpecialRegisters(s)
        var r = Registers()
        r.rip = entry
        r.rdi = BootLayout.bootInfoAddress
        r.rsp = 0
        r.rflags = 0x2
        try vcpu.setRegisters(r)
    }

    /// INIT: back to KVM's power-on state (the registers captured at creation).
    func resetCPU() throws {
        var s = resetSpecialRegisters
        s.apicBase = apicBaseMSR
        try vcpu.setSpecialRegisters(s)
        try vcpu.setRegisters(resetRegisters)
        try vcpu.resetFPU()
    }

    /// SIPI: real mode at vector << 12 (CS = vector << 8, IP = 0).
    func startAt(sipiVector v: UInt8) throws {
        var s = resetSpecialRegisters
        s.cs.selector = UInt16(v) << 8
        s.cs.base = UInt64(v) << 12
        s.cs.limit = 0xFFFF
        s.apicBase = apicBaseMSR
        try vcpu.setSpecialRegisters(s)
        var r = resetRegisters
        r.rip = 0
        try vcpu.setRegisters(r)
    }

    // ---- the loop ------------------------------------------------------------------------------

    /// Runs until the machine stops. Throws a VCPUFailure when this vCPU cannot go on.
    func run() throws {
        vcpu.bindToCurrentThread()
        FaultAttribution.registerCurrentThread(vcpu: Int(vcpu.id))   // its DSM faults count for it
        defer {
            FaultAttribution.unregisterCurrentThread()
            vcpu.unbindThread()
        }
        let env = self.env
        while true {
            // 1. What to do before this entry (parks inside while there is nothing to do).
            let canInject = !arrived && vcpu.readyForInterruptInjection && vcpu.interruptFlag
            switch irq.nextEntry(canInject: canInject, stopping: { env.isStopping }) {
            case .stop:
                return
            case .park:
                continue   // never returned: nextEntry parks until something changes
            case .reset:
                // Finished first: the completion would otherwise land on the reset state.
                if try finishPendingExits() == .unfinished {
                    logger.warning("INIT: the instruction at the last exit was still doing I/O after \(Self.maxFinishingExits) exits; reset anyway")
                }
                try resetCPU()
                lastAPICBase = apicBaseMSR
                xapicPage = localAPICBase
                apicChanged(addressing: true, timer: true)
            case let .start(v):
                logger.debug("SIPI vector 0x\(String(v, radix: 16)): starting in real mode at 0x\(String(UInt64(v) << 12, radix: 16))")
                try startAt(sipiVector: v)
            case let .depart(node):
                try depart(to: node)   // VCPUMigrationRunner.swift
            case .arrive:
                try arrive()
            case let .enter(e):
                // 2. Injection (one vector per entry) and entry.
                lastCR8 = e.cr8
                vcpu.cr8 = e.cr8
                if e.nmi { try vcpu.nmi() }
                if let v = e.inject {
                    try vcpu.interrupt(vector: v)
                    env.fence?(index, GVM_FENCE_ACQUIRE)
                } else if e.injectExtINT, let v = env.acknowledgeExtINT() {
                    try vcpu.interrupt(vector: v)   // INTA done: the 8259's vector, no APIC state
                    env.fence?(index, GVM_FENCE_ACQUIRE)
                }
                vcpu.requestInterruptWindow(e.requestWindow)
                let exit = try vcpu.runOnce()
                vcpu.clearImmediateExit()
                let apicBase = vcpu.apicBase
                if apicBase != lastAPICBase { apicBaseChanged(apicBase) }
                arrived = false
                let cr8 = vcpu.cr8
                if cr8 != lastCR8 {
                    lastCR8 = cr8
                    irq.guestSetCR8(cr8)
                }

                // 3. The exit.
                switch try handle(exit) {
                case .handled, .interrupted:
                    break
                case .halted:
                    irq.halt(interruptsEnabled: vcpu.interruptFlag)
                case .stopped:
                    return
                }
            }
        }
    }

    /// Called on this vCPU's thread after its APIC changed in a way others must see.
    func apicChanged(addressing: Bool, timer rearm: Bool) {
        if addressing { env.router.updateAddress(of: index, irq.apicSnapshot.address) }
        if rearm { env.rearmTimer() }
    }

    @inline(__always) func count(_ k: ExitKind) { exitCounts[k.rawValue] &+= 1 }

    /// The guest wrote IA32_APIC_BASE (KVM accepted it): mode and page follow (X2APIC.swift).
    func apicBaseChanged(_ value: UInt64) {
        let (effects, address) = irq.setAPICBase(value)
        lastAPICBase = value
        let mode = LocalAPIC.mode(ofBase: value)
        let page = value & LocalAPIC.baseAddressMask
        xapicPage = mode == .xAPIC ? page : nil
        logger.debug("IA32_APIC_BASE = 0x\(String(value, radix: 16)): \(mode.map { "\($0)" } ?? "invalid")")
        if mode == .xAPIC, page < env.ramBytes {
            logger.warning("the local APIC page moved to 0x\(String(page, radix: 16)), inside guest RAM: RAM answers there, the APIC is unreachable until it moves out")
        } else if mode == .xAPIC, page != localAPICBase, let r = env.bus.lookup(.mmio, page) {
            logger.warning("the local APIC page moved to 0x\(String(page, radix: 16)), over device MMIO at 0x\(String(r.base, radix: 16)): the APIC answers there")
        }
        carryOut(effects, address: address)
    }

    /// Carries out what an APIC register write asks for.
    func carryOut(_ effects: [APICEffect], address: APICAddress) {
        for e in effects {
            switch e {
            case let .sendIPI(cmd):
                env.router.send(cmd, from: index)
            case let .levelEOI(vector):
                env.levelEOI(vector)   // the IOAPIC here, or forwarded to its node
            case .timerChanged:
                env.rearmTimer()
            case .addressingChanged:
                env.router.updateAddress(of: index, address)
            }
        }
    }

    /// An RDMSR/WRMSR KVM sent to user space: the x2APIC MSRs go to the local APIC; anything
    /// else (an MSR KVM does not know, or a value it refused) raises #GP, as KVM would have.
    func msrAccess(index msr: UInt32, value: UInt64?, reason: UInt32) {
        let now = env.clock()
        if LocalAPIC.x2apicMSRs.contains(msr) {
            env.fence?(self.index, GVM_FENCE_RELEASE)
            if let value {
                let (effects, address) = irq.writeX2APIC(msr, value, now: now)
                vcpu.completeMSR(value: 0, failed: effects == nil)
                if let effects { carryOut(effects, address: address) }
            } else {
                let v = irq.readX2APIC(msr, now: now)
                vcpu.completeMSR(value: v ?? 0, failed: v == nil)
            }
            return
        }
        vcpu.completeMSR(value: 0, failed: true)
        if warnedMSRs.insert(msr).inserted {
            logger.debug("\(value == nil ? "RDMSR" : "WRMSR") of MSR 0x\(String(msr, radix: 16)) refused by KVM (reason \(reason)): #GP")
        }
    }

    /// Decides what one exit means.
    func handle(_ exit: VCPUExit) throws -> ExitOutcome {
        switch exit {
        case let .io(port, size, count, isWrite, data):
            self.count(.io)
            env.fence?(index, GVM_FENCE_RELEASE)
            // [dist hook] string/rep I/O to a device that takes it whole (forwarded devices).
            if count > 1, let r = env.bus.lookup(.pio, UInt64(port)), let s = r.device as? IOStringDevice {
                s.ioString(space: .pio, offset: UInt64(port) - r.base, itemSize: size, data: data, isWrite: isWrite)
                return env.isStopping ? .stopped : .handled
            }
            for i in 0..<count {
                let item = UnsafeMutableRawBufferPointer(rebasing: data[(i * size)..<((i + 1) * size)])
                portIO(port: port, data: item, isWrite: isWrite)
            }
            return env.isStopping ? .stopped : .handled
        case let .mmio(address, isWrite, data):
            self.count(.mmio)
            env.fence?(index, GVM_FENCE_RELEASE)
            mmio(address: address, data: data, isWrite: isWrite)
            return env.isStopping ? .stopped : .handled
        case .hlt:
            self.count(.hlt)
            env.fence?(index, GVM_FENCE_RELEASE)
            return .halted
        case .interruptWindowOpen:
            self.count(.irqWindow)
            return .handled
        case .interrupted:
            self.count(.interrupted)
            return .interrupted
        case .shutdown:
            throw failure("triple fault (KVM_EXIT_SHUTDOWN)")
        case let .failEntry(reason):
            throw failure("VM entry failed (KVM_EXIT_FAIL_ENTRY, hardware reason 0x\(String(reason, radix: 16)))")
        case let .internalError(sub, data):
            let what = sub == 1 ? "instruction emulation failed" : "KVM internal error, suberror \(sub)"
            throw failure("\(what) (KVM_EXIT_INTERNAL_ERROR; data \(data.map { "0x" + String($0, radix: 16) }.joined(separator: " ")))")
        case let .systemEvent(type):
            throw failure("system event \(type) (KVM_EXIT_SYSTEM_EVENT)")
        case let .exception(vector, code):
            throw failure("exception \(vector) error code 0x\(String(code, radix: 16)) (KVM_EXIT_EXCEPTION)")
        case .debug:
            throw failure("debug exit (KVM_EXIT_DEBUG) without a debugger")
        case let .hypercall(nr):
            throw failure("hypercall \(nr) (KVM_EXIT_HYPERCALL) is not supported")
        case let .rdmsr(msr, reason):
            self.count(.msr)
            msrAccess(index: msr, value: nil, reason: reason)
            return env.isStopping ? .stopped : .handled
        case let .wrmsr(msr, value, reason):
            self.count(.msr)
            msrAccess(index: msr, value: value, reason: reason)
            return env.isStopping ? .stopped : .handled
        case let .unknown(reason):
            throw failure("unexpected exit reason \(reason)")
        }
    }

    func portIO(port: UInt16, data: UnsafeMutableRawBufferPointer, isWrite: Bool) {
        if let r = env.bus.lookup(.pio, UInt64(port)) {
            r.device.io(space: .pio, offset: UInt64(port) - r.base, data: data, isWrite: isWrite)
            return
        }
        if !isWrite { data.initializeMemory(as: UInt8.self, repeating: 0xFF) }
        if warnedPorts.insert(port).inserted {
            logger.debug("\(isWrite ? "write to" : "read from") unassigned port 0x\(String(port, radix: 16)) (ignored\(isWrite ? "" : ", reads 0xff"))")
        }
    }

    func mmio(address: UInt64, data: UnsafeMutableRawBufferPointer, isWrite: Bool) {
        if let page = xapicPage, address >= page && address < page + localAPICSize {
            apicAccess(offset: UInt32(address - page), data: data, isWrite: isWrite)
            return
        }
        if let r = env.bus.lookup(.mmio, address) {
            r.device.io(space: .mmio, offset: address - r.base, data: data, isWrite: isWrite)
            return
        }
        if !isWrite { data.initializeMemory(as: UInt8.self, repeating: 0xFF) }
        let page = address & ~0xFFF
        if warnedMMIO.insert(page).inserted {
            let what = page >= 0xFEC0_0000 && page < 0xFEC0_1000 ? " (IOAPIC not emulated yet)" : ""
            logger.warning("\(isWrite ? "write to" : "read from") unassigned MMIO 0x\(String(address, radix: 16))\(what): ignored")
        }
    }

    /// A guest access to its own local APIC (32-bit registers on 16-byte boundaries).
    func apicAccess(offset: UInt32, data: UnsafeMutableRawBufferPointer, isWrite: Bool) {
        let reg = offset & ~0xF
        let shift = (offset & 0x3) * 8
        if offset & 0xC != 0 {
            // Bytes 4-15 of each 16-byte slot are reserved: reads 0, writes ignored.
            if !isWrite { data.initializeMemory(as: UInt8.self, repeating: 0) }
            return
        }
        let now = env.clock()
        if isWrite {
            var value: UInt32 = 0
            for (i, b) in data.prefix(4).enumerated() { value |= UInt32(b) << (8 * UInt32(i)) }
            value <<= shift
            let (effects, address) = irq.writeAPIC(reg, value, now: now)
            carryOut(effects, address: address)
        } else {
            let v = irq.readAPIC(reg, now: now) >> shift
            for i in 0..<data.count { data[i] = i < 4 ? UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) : 0 }
        }
    }

    // ---- failures ------------------------------------------------------------------------------

    func failure(_ reason: String) -> VCPUFailure {
        VCPUFailure(vcpu: index, reason: reason, registers: registerDump())
    }

    func registerDump() -> String {
        func h(_ v: UInt64) -> String {
            let s = String(v, radix: 16)
            return String(repeating: "0", count: max(0, 16 - s.count)) + s
        }
        var lines: [String] = []
        if let r = try? vcpu.registers() {
            lines.append("  RAX=\(h(r.rax)) RBX=\(h(r.rbx)) RCX=\(h(r.rcx)) RDX=\(h(r.rdx))")
            lines.append("  RSI=\(h(r.rsi)) RDI=\(h(r.rdi)) RBP=\(h(r.rbp)) RSP=\(h(r.rsp))")
            lines.append("  R8 =\(h(r.r8)) R9 =\(h(r.r9)) R10=\(h(r.r10)) R11=\(h(r.r11))")
            lines.append("  R12=\(h(r.r12)) R13=\(h(r.r13)) R14=\(h(r.r14)) R15=\(h(r.r15))")
            lines.append("  RIP=\(h(r.rip)) RFLAGS=\(h(r.rflags))")
        } else {
            lines.append("  (general registers unavailable)")
        }
        if let s = try? vcpu.specialRegisters() {
            func seg(_ n: String, _ g: Segment) -> String {
                "\(n)=\(String(g.selector, radix: 16)) base=\(h(g.base)) limit=\(String(g.limit, radix: 16)) type=\(g.type) l=\(g.l ? 1 : 0) dpl=\(g.dpl)"
            }
            lines.append("  CR0=\(h(s.cr0)) CR2=\(h(s.cr2)) CR3=\(h(s.cr3)) CR4=\(h(s.cr4)) EFER=\(h(s.efer))")
            lines.append("  \(seg("CS", s.cs))  \(seg("SS", s.ss))")
            lines.append("  GDT=\(h(s.gdt.base))/\(String(s.gdt.limit, radix: 16)) IDT=\(h(s.idt.base))/\(String(s.idt.limit, radix: 16))")
        }
        return lines.joined(separator: "\n")
    }
}
