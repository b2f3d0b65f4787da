// Which instructions this host's KVM can really execute for a guest in ring 0. KVM's supported
// CPUID says what the hardware has; a KVM that emulates guest ring 0 (PVM) may still fail to
// emulate some of them (seen: clac, clwb, xgetbv, invpcid, rdpru, cmpxchg16b), which kills the
// vCPU of a guest that trusts CPUID. So, once per process, a tiny probe VM (2 MiB, one vCPU,
// 64-bit mode on its own page tables and IDT) runs each offered instruction in ring 0, followed
// by `hlt`: reaching the hlt is success; an exception (each IDT handler reports its vector on
// port 0x80), an emulation failure (KVM_EXIT_INTERNAL_ERROR), a shutdown or no answer within
// 2 s is failure, and that feature is hidden from the guest's CPUID (with its dependents).
// Either outcome is fine for every probe: the VMM only ever hides what does not work here.
//
// TSC_ADJUST is probed by behaviour: after a guest WRMSR to IA32_TSC (writing 0), IA32_TSC_ADJUST
// must have moved by the same amount (SDM vol. 3 17.17.3: it becomes negative); otherwise it is
// hidden (and the MSR filter makes its accesses #GP).
//
// Threading: `report(kvm:supported:)` runs the probe on the calling thread the first time and
// caches the result; later calls (any thread) return it.
import CSystem
import Glibc
import Synchronization

public struct ProbeReport: Sendable, Equatable {
    /// Features offered by KVM that were tested.
    public var tested: [CPUFeature] = []
    /// Features that failed, with why (e.g. "exception 6 (#UD)", "emulation failure").
    public var failed: [Failure] = []

    public struct Failure: Sendable, Equatable {
        public var feature: CPUFeature
        public var reason: String
    }

    public var hidden: [CPUFeature] { failed.map(\.feature) }

    /// One line for the log: "hidden from CPUID: clac (smap): #UD, ...".
    public var summary: String {
        failed.isEmpty ? "every probed instruction works (\(tested.count) tested)"
            : "hidden from CPUID (\(failed.count) of \(tested.count) probed features fail here): "
              + failed.map { "\($0.feature.name) [\($0.reason)]" }.joined(separator: ", ")
    }
}

public enum InstructionProbe {
    /// One probe: the feature, its code (ends in `hlt` added by the runner), register presets.
    struct Case {
        var feature: CPUFeature
        var code: [UInt8]
        var rax: UInt64 = 0, rcx: UInt64 = 0
        /// For behaviour probes: checks the registers after the hlt; nil = success.
        var check: ((Registers) -> String?)? = nil
    }

    static let data: UInt64 = 0x9000      // 16-byte aligned scratch (cmpxchg16b, invpcid descriptor)
    static let codeAt: UInt64 = 0xA000

    static let cases: [Case] = [
        Case(feature: .smap, code: [0x0F, 0x01, 0xCA]),                           // clac
        Case(feature: .clwb, code: [0x66, 0x0F, 0xAE, 0x33]),                     // clwb [rbx]
        Case(feature: .clflushopt, code: [0x66, 0x0F, 0xAE, 0x3B]),               // clflushopt [rbx]
        Case(feature: .xsave, code: [0x0F, 0x01, 0xD0]),                          // xgetbv (ecx 0)
        Case(feature: .invpcid, code: [0x66, 0x0F, 0x38, 0x82, 0x03], rax: 2),    // invpcid rax, [rbx]
        Case(feature: .rdpru, code: [0x0F, 0x01, 0xFD]),                          // rdpru (ecx 0)
        Case(feature: .cx16, code: [0x48, 0x0F, 0xC7, 0x0E]),                     // cmpxchg16b [rsi]
        Case(feature: .rdrand, code: [0x48, 0x0F, 0xC7, 0xF0]),                   // rdrand rax
        Case(feature: .rdseed, code: [0x48, 0x0F, 0xC7, 0xF8]),                   // rdseed rax
        Case(feature: .movbe, code: [0x48, 0x0F, 0x38, 0xF0, 0x03]),              // movbe rax, [rbx]
        Case(feature: .popcnt, code: [0xF3, 0x48, 0x0F, 0xB8, 0xC0]),             // popcnt rax, rax
        Case(feature: .rdtscp, code: [0x0F, 0x01, 0xF9]),                         // rdtscp
        Case(feature: .rdpid, code: [0xF3, 0x0F, 0xC7, 0xF8]),                    // rdpid rax
        Case(feature: .fsgsbase, code: [0xF3, 0x48, 0x0F, 0xAE, 0xC0]),           // rdfsbase rax
        Case(feature: .lzcnt, code: [0xF3, 0x48, 0x0F, 0xBD, 0xC0]),              // lzcnt rax, rax
        Case(feature: .bmi1, code: [0xC4, 0xE2, 0xF8, 0xF2, 0xC0]),               // andn rax, rax, rax
        Case(feature: .bmi2, code: [0xC4, 0xE2, 0xFB, 0xF5, 0xC0]),               // pdep rax, rax, rax
        Case(feature: .adx, code: [0x66, 0x48, 0x0F, 0x38, 0xF6, 0xC0]),          // adcx rax, rax
        Case(feature: .serialize, code: [0x0F, 0x01, 0xE8]),                      // serialize
        Case(feature: .wbnoinvd, code: [0xF3, 0x0F, 0x09]),                       // wbnoinvd
        // wrmsr IA32_TSC := 0; rdmsr IA32_TSC_ADJUST: must have gone negative
        Case(feature: .tscAdjust, code: [0xB9, 0x10, 0, 0, 0, 0x31, 0xC0, 0x31, 0xD2, 0x0F, 0x30,
                                         0xB9, 0x3B, 0, 0, 0, 0x0F, 0x32],
             check: { r in r.rdx & 0x8000_0000 != 0 ? nil : "TSC_ADJUST did not follow a TSC write (0x\(String(r.rdx << 32 | r.rax & 0xFFFF_FFFF, radix: 16)))" }),
    ]

    private static let cached = Mutex<ProbeReport?>(nil)

    /// The probe's result for this host (run once per process).
    public static func report(kvm: KVMSystem, supported: [CPUIDEntry]) throws -> ProbeReport {
        if let r = cached.withLock({ $0 }) { return r }
        let r = try run(kvm: kvm, supported: supported)
        cached.withLock { $0 = r }
        return r
    }

    static let exceptionNames = ["#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "?", "#TS", "#NP",
                                 "#SS", "#GP", "#PF", "?", "#MF", "#AC", "#MC", "#XM"]

    static func run(kvm: KVMSystem, supported: [CPUIDEntry]) throws -> ProbeReport {
        try withProbeVM(kvm: kvm) { vm, mem in
            func put(_ at: UInt64, _ bytes: [UInt8]) { for (i, b) in bytes.enumerated() { mem.storeBytes(of: b, toByteOffset: Int(at) + i, as: UInt8.self) } }
            var report = ProbeReport()
            var vcpu: VCPU? = nil
            var nextID: UInt32 = 0
            for c in cases where c.feature.isSet(in: supported) {
                report.tested.append(c.feature)
                if vcpu == nil {
                    vcpu = try vm.createVCPU(id: nextID)
                    nextID += 1
                    try vcpu!.setCPUID(supported)
                }
                let v = vcpu!
                put(codeAt, c.code + [0xF4])
                for i in 0..<16 { put(data + UInt64(i), [0]) }
                var r = try enterProbeCode(v, supported: supported)
                r.rax = c.rax; r.rcx = c.rcx
                try v.setRegisters(r)
                if let why = try runOne(v, check: c.check) {
                    report.failed.append(.init(feature: c.feature, reason: why))
                    vcpu = nil                          // a failed vCPU is not reused
                }
            }
            return report
        }
    }

    /// Runs `body` with a fresh 2 MiB probe VM: its memory (GDT at 0x1000, an IDT at 0x2000 whose
    /// 32 handlers report their vector on port 0x80 and halt, page tables at 0x3000 mapping the
    /// 2 MiB at 0 once) is `mem`; code goes at `codeAt`, the stack below 0x7FF0, 0x9000 and
    /// 0xB000-0xFFFF are free scratch. The memory is unmapped when `body` returns.
    static func withProbeVM<T>(kvm: KVMSystem, _ body: (VirtualMachine, UnsafeMutableRawPointer) throws -> T) throws -> T {
        let size = 2 << 20
        guard let mem = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), mem != MAP_FAILED else {
            throw KVMError(call: "mmap", errno: errno, context: "probe VM memory")
        }
        defer { munmap(mem, size) }
        func put(_ at: UInt64, _ bytes: [UInt8]) { for (i, b) in bytes.enumerated() { mem.storeBytes(of: b, toByteOffset: Int(at) + i, as: UInt8.self) } }
        func put64(_ at: UInt64, _ v: UInt64) { mem.storeBytes(of: v, toByteOffset: Int(at), as: UInt64.self) }
        // GDT: null, 64-bit code (0x08), data (0x10)
        put64(0x1000, 0); put64(0x1008, 0x00AF_9B00_0000_FFFF); put64(0x1010, 0x00CF_9300_0000_FFFF)
        // IDT: 32 gates to handlers at 0x8000 + 16 v: mov al, v; out 0x80, al; hlt
        for v in 0..<32 {
            let h = 0x8000 + UInt64(v) * 16
            put(h, [0xB0, UInt8(v), 0xE6, 0x80, 0xF4])
            put64(0x2000 + UInt64(v) * 16, (h & 0xFFFF) | 0x08 << 16 | 0x8E << 40 | ((h >> 16) & 0xFFFF) << 48)
            put64(0x2008 + UInt64(v) * 16, h >> 32)
        }
        // page tables: PML4 0x3000 -> PDPT 0x4000 -> PD 0x5000: one 2 MiB page at 0
        put64(0x3000, 0x4000 | 3); put64(0x4000, 0x5000 | 3); put64(0x5000, 0x83)

        let vm = try kvm.createVM()
        try vm.setMemory(MemorySlot(slot: 0, guestPhysicalAddress: 0, size: UInt64(size), hostAddress: mem))
        try VCPU.installKickHandler()
        return try body(vm, mem)
    }

    /// Puts probe vCPU `v` in 64-bit ring 0 on the probe VM's tables, at `codeAt`; returns the
    /// general registers to set (rbx, rsi, rdi = the scratch at `data`).
    static func enterProbeCode(_ v: VCPU, supported: [CPUIDEntry]) throws -> Registers {
        var s = try v.specialRegisters()
        let code = Segment(base: 0, limit: 0xFFFF_FFFF, selector: 0x08, type: 0xB, s: true, l: true, g: true)
        let dseg = Segment(base: 0, limit: 0xFFFF_FFFF, selector: 0x10, type: 0x3, db: true, s: true, g: true)
        s.cs = code; s.ds = dseg; s.es = dseg; s.fs = dseg; s.gs = dseg; s.ss = dseg
        s.tr = Segment(base: 0, limit: 0x67, selector: 0, type: 0xB, s: false)
        s.gdt = DescriptorTable(base: 0x1000, limit: 23)
        s.idt = DescriptorTable(base: 0x2000, limit: 32 * 16 - 1)
        s.cr0 = 0x8000_0033                     // PG, NE, ET, MP, PE
        s.cr3 = 0x3000
        s.cr4 = 0x20 | 0x600                    // PAE, OSFXSR, OSXMMEXCPT
            | (CPUFeature.xsave.isSet(in: supported) ? 0x4_0000 : 0)     // OSXSAVE (xgetbv needs it)
            | (CPUFeature.fsgsbase.isSet(in: supported) ? 0x1_0000 : 0)  // FSGSBASE (rdfsbase needs it)
        s.efer = 0x500                          // LME, LMA
        try v.setSpecialRegisters(s)
        var r = Registers()
        r.rip = codeAt; r.rsp = 0x7FF0; r.rflags = 0x2
        r.rbx = data; r.rsi = data; r.rdi = data
        return r
    }

    /// Runs the probe vCPU to its hlt; nil on success, else why it failed.
    static func runOne(_ v: VCPU, check: ((Registers) -> String?)?) throws -> String? {
        v.bindToCurrentThread()
        defer { v.unbindThread() }
        v.clearImmediateExit()
        let done = Mutex(false)
        // a watchdog: an instruction the KVM loops on must not hang the VMM's start
        let watchdog = ProbeWatchdog {
            for _ in 0..<200 { if done.withLock({ $0 }) { return }; usleep(10_000) }
            v.kick()
        }
        defer { done.withLock { $0 = true }; watchdog.join() }
        for _ in 0..<8 {
            let exit: VCPUExit
            do { exit = try v.runOnce() } catch let e as KVMError { return "KVM_RUN failed: \(e)" }
            switch exit {
            case .hlt:
                let r = try v.registers()
                guard r.rip > codeAt && r.rip < codeAt + 64 else { return "stopped at 0x\(String(r.rip, radix: 16))" }
                return check?(r)
            case let .io(port, _, _, isWrite, data) where port == 0x80 && isWrite:
                let vec = Int(data[0])
                return "exception \(vec) (\(vec < exceptionNames.count ? exceptionNames[vec] : "?"))"
            case let .internalError(sub, _):
                return sub == 1 ? "emulation failure" : "KVM internal error \(sub)"
            case .shutdown: return "triple fault"
            case .interrupted: return "no answer within 2 s"
            case let .exception(vec, _): return "exception \(vec)"
            case .failEntry: return "VM entry failed"
            default: continue
            }
        }
        return "did not reach its hlt"
    }
}

/// A plain joinable thread (Foundation-free) running the probe's watchdog.
final class ProbeWatchdog {
    private var tid = pthread_t()
    private var started = false
    private let body: () -> Void
    /// Starts `body` on a new thread (without a thread — pthread_create failed — there is no
    /// watchdog: the probe then relies on KVM answering).
    init(_ body: @escaping () -> Void) {
        self.body = body
        let box = Unmanaged.passRetained(self)
        started = pthread_create(&tid, nil, { ctx in
            let t = Unmanaged<ProbeWatchdog>.fromOpaque(ctx!).takeRetainedValue()
            t.body()
            return nil
        }, box.toOpaque()) == 0
        if !started { box.release() }
    }
    func join() { if started { pthread_join(tid, nil) } }
}
