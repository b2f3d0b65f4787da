// Machine: one VM on one node. Creates the KVM VM without an in-kernel irqchip, gives it guest
// RAM, sets CPUID/MSRs per vCPU, fills the entry contract's low memory, loads the guest image,
// owns the I/O bus and the device-plugin host side, and runs one thread per vCPU plus the APIC
// timer thread until the guest (or an error, or the user) stops it.
//
// Threading: build and configure on one thread (init, addDevice, load*); `run()` blocks that
// thread until the machine stops; `requestStop` and the device-host callbacks are any-thread.
import Metrics
import Foundation
import KVM
import Logging
import PluginAPI
import Synchronization
import Glibc
import Interrupts
import Firmware

/// Machine-level settings (what the config says about this VM, seen from one node).
public struct MachineConfiguration: Sendable {
    public var memoryBytes: UInt64
    /// Global vCPU count of the VM.
    public var totalVCPUs: Int
    /// (first vCPU, vCPU count) per node, by node id.
    public var nodes: [(first: UInt32, count: UInt32)]
    /// This node's id.
    public var nodeID: UInt32 = 0
    public var cmdline: String = ""
    /// APIC bus (timer input) frequency, advertised in CPUID 0x40000010.
    public var apicBusHz: UInt64 = 100_000_000
    /// Emulate the IOAPIC at 0xFEC00000 on this node (device lines go through it). When false,
    /// the legacy route is used: line n -> fixed vector `legacyIRQVectorBase + n` on vCPU 0.
    public var ioapic: Bool = true
    public var legacyIRQVectorBase: UInt8 = 0x20
    /// Live migration: create a KVM vCPU for every vCPU of the VM on this node and run only the
    /// resident ones (at start, `localVCPUs`); the others park until one arrives.
    public var allVCPUs: Bool = false
    /// Offer kvmclock (CPUIDPolicy.offerKVMClock) when this KVM runs it (the start-up probe);
    /// GIANTVM_KVMCLOCK=0 in the environment turns it off as well. Every node of a VM must
    /// decide alike (one host, one environment): a vCPU's CPUID does not change when it moves.
    public var kvmclock: Bool = true

    public init(memoryBytes: UInt64, vcpus: Int, cmdline: String = "") {
        self.memoryBytes = memoryBytes
        self.totalVCPUs = vcpus
        self.nodes = [(0, UInt32(vcpus))]
        self.cmdline = cmdline
    }

    public var localVCPUs: Range<Int> {
        let n = nodes[Int(nodeID)]
        return Int(n.first)..<Int(n.first + n.count)
    }
}

public enum MachineError: Error, CustomStringConvertible {
    case config(String)
    case kvm(KVMError)

    public var description: String {
        switch self {
        case let .config(m): return m
        case let .kvm(e): return "\(e)"
        }
    }
}

/// Why the machine stopped.
public enum MachineStop: CustomStringConvertible, Sendable {
    /// The guest asked (exit device): status is (v << 1) | 1 for isa-debug-exit value v.
    case guestExit(status: Int32, reason: String)
    /// A vCPU could not continue (triple fault, emulation failure, KVM error).
    case failure(String)
    /// The host asked (signal, timeout, test).
    case requested(String)

    public var description: String {
        switch self {
        case let .guestExit(s, r): return "guest exit status \(s) (\(r))"
        case let .failure(m): return m
        case let .requested(r): return "stopped: \(r)"
        }
    }
}

/// Serialises console output (UART bytes and result lines) to one sink, and remembers whether
/// the last byte written ended a line (so the VMM's closing line can start on a line of its own).
/// Any thread.
public final class ConsoleOutput: @unchecked Sendable {
    let lock = NSLock()
    let sink: (UnsafeRawBufferPointer) -> Void
    /// Guarded by `lock`: nothing was written yet, or the last byte was a newline.
    var atLineStart = true
    /// Default: stdout, unbuffered.
    public init(sink: ((UnsafeRawBufferPointer) -> Void)? = nil) {
        self.sink = sink ?? { b in
            var off = 0
            while off < b.count {
                let n = Glibc.write(1, b.baseAddress! + off, b.count - off)
                if n <= 0 { break }
                off += n
            }
        }
    }
    public func write(_ b: UnsafeRawBufferPointer) {
        lock.lock()
        defer { lock.unlock() }
        guard let last = b.last else { return }
        sink(b)
        atLineStart = last == UInt8(ascii: "\n")
    }

    /// Ends the guest's last line when it had no newline, so whatever the VMM prints next (its
    /// closing line, a `[node N]` relay) starts on a line of its own. Call after the machine
    /// stopped; writes nothing when the output is already at the start of a line.
    public func finishLine() {
        lock.lock()
        defer { lock.unlock() }
        guard !atLineStart else { return }
        [UInt8(ascii: "\n")].withUnsafeBytes { sink($0) }
        atLineStart = true
    }
}

public final class Machine: DeviceHostDelegate, @unchecked Sendable {
    public let config: MachineConfiguration
    public let ram: any GuestRAM
    /// [dist hook] Set once during assembly, before any vCPU runs: device DMA may run elsewhere.
    public var dmaRouter: DMARouter?
    public let kvm: KVMSystem
    public let vm: VirtualMachine
    public let bus = IOBus()
    public let router: InterruptRouter
    public let console: ConsoleOutput
    let interrupts: [VCPUInterrupts]
    var runners: [VCPURunner<VCPU>] = []
    /// What the runners share (bus, router, stop flag, fence, EOI and timer routes).
    let environment: VCPUEnvironment
    var devices: [PluginDevice] = []
    var builtinDevices: [IODevice] = []
    let timer: APICTimerThread
    var logger: Logger
    let stopState = Mutex<MachineStop?>(nil)
    let stopCond = NSCondition()
    let irqLevels = Mutex<[UInt32: Bool]>([:])
    public let clock: () -> UInt64
    var entryPoint: UInt64?
    /// The boot vCPU's entry state when a firmware loader (multiboot, Linux) booted the image.
    var firmwareEntry: EntryState?
    /// The coherence plugin's hint hook (see init).
    let coherenceHintHook: ((_ kind: UInt32, _ gpa: UInt64, _ length: UInt64) -> Int32)?
    /// The IOAPIC, when this node emulates it.
    public let ioapic: IOAPIC?
    /// The 8259 pair on this node, if any (its INTR is LINT0 of vCPU 0; ISA lines reach its
    /// inputs as they reach the IOAPIC's pins: `PICLink.isaIRQ(forLine:)`).
    let pic = PICLink()
    /// The other nodes of a VM that spans several (nil on a single node): interrupt messages to
    /// their vCPUs, local APIC address changes, and — when the IOAPIC lives elsewhere — device
    /// lines and level-triggered EOIs.
    let remote: (any RemoteInterrupts)?
    /// Whether the guest is offered kvmclock (CPUID and MSR filter; `MachineConfiguration.kvmclock`,
    /// the start-up probe and, on several nodes, every node's): clock alignment then makes the
    /// VM's kvmclock node 0's. Any thread.
    public var kvmclockOffered: Bool { appliedFeatures.withLock { $0.kvmFeatures } & KVMParavirt.featureClocksource2 != 0 }
    /// What this node's host allows beyond KVM's supported CPUID (exchanged between nodes at start).
    public let hostFeatures: HostCPUFeatures
    /// What the vCPUs' CPUID offers now: `hostFeatures`, or the merge applied by `applyClusterFeatures`.
    let appliedFeatures: Mutex<HostCPUFeatures>
    /// KVM's supported CPUID, and whether x2APIC is offered (to rebuild the tables).
    let cpuidBase: [CPUIDEntry]
    let offersX2APIC: Bool

    /// Creates the VM: RAM slot, vCPUs with CPUID and MSRs; no in-kernel irqchip.
    ///
    /// - `remote`: the interrupt traffic to other nodes, when the VM spans several; nil on one
    ///   node. Every vCPU outside `config.localVCPUs` is reached through it.
    /// - `fence`: the coherence plugin's synchronisation points for multiple-writer protocols
    ///   (its optional `fence` hook): called on the vCPU's thread with its global index and
    ///   GVM_FENCE_RELEASE before the VMM acts on an I/O or MMIO exit (device access, IPI send)
    ///   and on HLT, and with GVM_FENCE_ACQUIRE when an interrupt is injected. nil (the default)
    ///   costs one check per exit.
    /// - `coherenceHint`: the coherence plugin's optional `hint` hook (ABI 3), which device
    ///   plugins reach through gvm_device_host.coherence_hint; nil: hints are UNSUPPORTED.
    public init(config: MachineConfiguration, ram: any GuestRAM, kvm: KVMSystem? = nil,
                console: ConsoleOutput = ConsoleOutput(), remote: (any RemoteInterrupts)? = nil,
                fence: ((_ vcpu: Int, _ kind: UInt32) -> Void)? = nil,
                coherenceHint: ((_ kind: UInt32, _ gpa: UInt64, _ length: UInt64) -> Int32)? = nil,
                logger: Logger = Logger(label: "giantvm.machine")) throws {
        self.coherenceHintHook = coherenceHint
        self.config = config
        self.ram = ram
        self.console = console
        self.logger = logger
        self.remote = remote
        let clock: () -> UInt64 = { monotonicNanoseconds() }
        self.clock = clock
        guard config.totalVCPUs >= 1 && config.totalVCPUs <= 255 else {
            throw MachineError.config("vCPU count \(config.totalVCPUs) is out of range 1...255 (xAPIC ids)")
        }
        guard ram.size == config.memoryBytes else {
            throw MachineError.config("guest RAM is \(ram.size) bytes but the machine was configured for \(config.memoryBytes)")
        }
        guard config.memoryBytes >= 2 << 20 && config.memoryBytes % 4096 == 0 else {
            throw MachineError.config("memory \(config.memoryBytes) must be at least 2 MiB and a multiple of 4096")
        }
        guard config.memoryBytes <= 0xC000_0000 else {
            throw MachineError.config("memory above 3 GiB is not supported yet (RAM would overlap the 0xfec00000 device window)")
        }
        guard BootLayout.firstPDAddress + UInt64(BootLayout.pageDirectoryCount(memoryBytes: config.memoryBytes)) * 4096 <= BootLayout.pageTablesEnd else {
            throw MachineError.config("memory \(config.memoryBytes) needs more boot page directories than fit below 0x10000")
        }
        let local = config.localVCPUs
        guard remote != nil || local.count == config.totalVCPUs else {
            throw MachineError.config("vCPUs \(local.lowerBound)-\(local.upperBound - 1) of \(config.totalVCPUs) run here, but no remote-interrupt route was given for the others")
        }
        // The VM and its local vCPUs (KVM), each with CPUID and MSRs — every vCPU of the VM when
        // vCPUs may migrate here (`allVCPUs`).
        let created = config.allVCPUs ? 0..<config.totalVCPUs : local
        var vcpus: [VCPU] = []
        do {
            self.kvm = try kvm ?? KVMSystem()
            vm = try self.kvm.createVM()
            // Real-mode support pages for VMX, placed just below the device window.
            try vm.setTSSAddress(0xFFFB_D000)
            try vm.setIdentityMapAddress(0xFFFB_C000)
            try vm.setMemory(MemorySlot(slot: 0, guestPhysicalAddress: 0, size: ram.size, hostAddress: ram.hostBase))
            try VCPU.installKickHandler()
            // The x2APIC MSRs reach the user-space APIC only through MSR exits: without them,
            // x2APIC is not offered.
            var x2apic = true
            do { try vm.enableUserSpaceMSRs() } catch {
                x2apic = false
                logger.warning("x2APIC not offered: \(error)")
            }
            let (supported, hidden) = try Machine.probedCPUID(self.kvm, logger: logger)   // TruthfulCPUID.swift
            let probed = CPUFeature.hide(hidden, in: supported)
            let kvmFeatures = try Machine.kvmclockOffer(requested: config.kvmclock, kvm: self.kvm, supported: probed, logger: logger)
            let host = HostCPUFeatures(hidden: hidden.map(HostCPUFeatures.Feature.init), kvmFeatures: kvmFeatures ?? 0)
            hostFeatures = host
            appliedFeatures = Mutex(host)
            cpuidBase = supported
            offersX2APIC = x2apic
            func table(_ i: Int, tscKHz: UInt32) -> [CPUIDEntry] {
                Machine.cpuidTable(base: supported, config: config, x2apic: x2apic, features: host, vcpu: UInt32(i), tscKHz: tscKHz)
            }
            for i in created {
                let v = try vm.createVCPU(id: UInt32(i))
                let tsc = (try? v.tscKHz()) ?? 0
                try v.setCPUID(table(i, tscKHz: tsc))
                try v.setMSRs([(MSR.miscEnable, 1), (MSR.sysenterCS, 0), (MSR.sysenterESP, 0), (MSR.sysenterEIP, 0)])
                vcpus.append(v)
            }
            if let first = local.first {
                try Machine.installMSRFilter(vm, cpuid: table(first, tscKHz: 0), logger: logger)
            }
        } catch let e as KVMError {
            throw MachineError.kvm(e)
        }
        // Their interrupt state; every vCPU of the VM in the router (nil: on another node).
        let localIRQ = zip(created, vcpus).map { i, v in
            let irq = VCPUInterrupts(index: i, busHz: config.apicBusHz, state: i == 0 ? .running : .waitingForSIPI,
                                     kick: { v.kick() })
            irq.setResident(local.contains(i))
            return irq
        }
        interrupts = localIRQ
        router = InterruptRouter(local: (0..<config.totalVCPUs).map { created.contains($0) ? localIRQ[$0 - created.lowerBound] : nil },
                                 remote: remote)
        let timer = APICTimerThread(vcpus: localIRQ, clock: clock)
        self.timer = timer

        if config.ioapic {
            let log = logger
            let router = self.router
            let io = IOAPIC(deliver: { router.deliver($0) }, onBadAccess: { log.warning("IOAPIC: \($0)") })
            ioapic = io
            do {
                try bus.map(.mmio, base: IOAPIC.defaultBase, length: IOAPIC.mmioLength, device: IOAPICDevice(io))
            } catch {
                throw MachineError.config("\(error)")
            }
        } else {
            ioapic = nil
        }
        let ioapic = self.ioapic
        let pic = self.pic
        environment = VCPUEnvironment(
            bus: bus, router: router, clock: clock, fence: fence,
            levelEOI: { v in if let ioapic { ioapic.eoi(vector: v) } else { remote?.forwardEOI(vector: v) } },
            rearmTimer: { timer.rearm() }, acknowledgeExtINT: { pic.acknowledge() }, ramBytes: config.memoryBytes)
        do {
            for (irq, v) in zip(localIRQ, vcpus) {
                runners.append(try VCPURunner(index: irq.index, vcpu: v, irq: irq, environment: environment, logger: logger))
            }
        } catch let e as KVMError {
            throw MachineError.kvm(e)
        }
    }

    // ---- setup ---------------------------------------------------------------------------------

    /// Adds a device-plugin instance (it maps its own ranges through map_io during create). An
    /// 8259 (model `i8259`) becomes the PIC whose INTR drives LINT0 of vCPU 0.
    public func addDevice(_ d: PluginDevice) {
        devices.append(d)
        if d.modelName == PICLink.modelName {
            pic.device.withLock { $0 = d }
            if !config.localVCPUs.contains(0) {
                logger.warning("device '\(d.name)' (i8259) is on node \(config.nodeID) but vCPU 0 is not: its INTR cannot reach LINT0 (place it on vCPU 0's node)")
            }
            if ioapic == nil && config.nodes.count > 1 {
                logger.warning("device '\(d.name)' (i8259) is not on the IOAPIC's node: only lines of devices on node \(config.nodeID) reach its inputs")
            }
        }
    }

    /// Adds a built-in device on fixed ranges.
    public func addDevice(_ d: IODevice, ranges: [(IOSpaceKind, UInt64, UInt64)]) throws {
        for (s, b, l) in ranges { try bus.map(s, base: b, length: l, device: d) }
        builtinDevices.append(d)
    }

    /// Fills the entry contract's low memory: GDT, boot info (with the table of `modules` already
    /// placed in RAM, if any), command line, page tables.
    public func writeBootStructures(modules: [(start: UInt64, length: UInt64)] = []) throws {
        guard modules.count <= BootLayout.maxModules else {
            throw MachineError.config("\(modules.count) guest modules; the boot info lists at most \(BootLayout.maxModules)")
        }
        let cmd = Array(config.cmdline.utf8)
        guard cmd.count <= BootLayout.cmdlineMax else {
            throw MachineError.config("guest command line is \(cmd.count) bytes; at most \(BootLayout.cmdlineMax) fit at 0x3000")
        }
        try ram.write(BootLayout.gdt(), at: BootLayout.gdtAddress)
        var nodeOf: [UInt8] = []
        for v in 0..<config.totalVCPUs {
            let n = config.nodes.firstIndex { UInt32(v) >= $0.first && UInt32(v) < $0.first + $0.count } ?? 0
            nodeOf.append(UInt8(n))
        }
        try ram.write(BootLayout.bootInfo(totalVCPUs: UInt32(config.totalVCPUs), nodeCount: UInt32(config.nodes.count),
                                          memoryBytes: config.memoryBytes, cmdlineLength: UInt32(cmd.count),
                                          thisVCPU: 0, vcpuNode: nodeOf, modules: modules), at: BootLayout.bootInfoAddress)
        try ram.write(cmd + [0], at: BootLayout.cmdlineAddress)
        try ram.write(BootLayout.pageTables(memoryBytes: config.memoryBytes), at: BootLayout.pml4Address)
    }

    /// Loads an ELF64 image and remembers its entry point for the BSP; `modules` (already placed
    /// in RAM by the caller) are listed in the boot info.
    public func load(image: ELFImage, modules: [(start: UInt64, length: UInt64)] = []) throws {
        try writeBootStructures(modules: modules)
        try image.load(into: ram)
        entryPoint = image.entry
    }

    /// Writes raw bytes into guest RAM (tests, tools) and optionally sets the BSP entry point.
    public func loadRaw(_ bytes: [UInt8], at gpa: UInt64, entry: UInt64? = nil) throws {
        try ram.write(bytes, at: gpa)
        if let entry { entryPoint = entry }
    }

    // ---- running -------------------------------------------------------------------------------

    public var isStopping: Bool { environment.isStopping }

    /// Stops the machine (first reason wins). Any thread; returns at once.
    public func requestStop(_ reason: MachineStop) {
        let first = stopState.withLock { s -> Bool in
            if s != nil { return false }
            s = reason
            return true
        }
        guard first else { return }
        environment.markStopping()
        for irq in interrupts { irq.wake() }
        stopCond.lock()
        stopCond.broadcast()
        stopCond.unlock()
    }

    /// Boots the BSP at the entry point and runs every local vCPU on its own thread until the
    /// machine stops; returns why. `timeout` (seconds) stops it with `.requested`.
    public func run(timeout: Double? = nil) -> MachineStop {
        bus.seal()
        if config.localVCPUs.contains(0) {
            if let e = firmwareEntry {
                do { try runners[0].enter(e) } catch { return .failure("vCPU 0: cannot set the firmware entry state: \(error)") }
            } else if let entry = entryPoint {
                do { try runners[0].enterLongMode(entry: entry) } catch {
                    return .failure("vCPU 0: cannot set the 64-bit entry state: \(error)")
                }
            } else { return .failure("no guest image loaded (no entry point)") }
        }
        timer.start()
        let group = DispatchGroup()
        for r in runners {
            group.enter()
            let t = Thread { [self] in
                do {
                    try r.run()
                } catch let f as VCPUFailure {
                    requestStop(.failure("\(f)"))
                } catch {
                    requestStop(.failure("vCPU \(r.index): \(error)\n\(r.registerDump())"))
                }
                group.leave()
            }
            t.name = "vcpu\(r.index)"
            t.stackSize = 1 << 20
            t.start()
        }
        stopCond.lock()
        let deadline = timeout.map { Date(timeIntervalSinceNow: $0) }
        while !isStopping {
            if let deadline {
                if !stopCond.wait(until: deadline) && !isStopping {
                    stopCond.unlock()
                    requestStop(.requested("timed out after \(timeout!) s"))
                    stopCond.lock()
                }
            } else {
                stopCond.wait()
            }
        }
        stopCond.unlock()
        // Every vCPU leaves KVM_RUN on its kick; wait for the threads (bounded).
        if group.wait(timeout: .now() + 10) == .timedOut {
            logger.error("some vCPU threads did not stop within 10 s")
        }
        timer.stop()
        return stopState.withLock { $0! }
    }

    /// Interrupt state of vCPU i (tests, diagnostics).
    public func interruptState(of i: Int) -> VCPUInterrupts? { interrupts.first { $0.index == i } }

    /// A level-triggered EOI from a local APIC: to the IOAPIC here, or forwarded to its node.
    func levelEOI(_ vector: UInt8) { environment.levelEOI(vector) }

    /// The TSC of every local vCPU, with its global index (clock alignment programs them before
    /// the VM runs; never while run() is in progress).
    public var localClocks: [VCPUClock] { runners.map { VCPUClock(index: $0.index, vcpu: $0.vcpu) } }

    /// The VM's kvmclock when the guest is offered kvmclock (clock alignment sets it), else nil.
    public var kvmClock: VMClock? { kvmclockOffered ? VMClock(vm: vm) : nil }

    /// Exit counts of every local vCPU (valid after run()).
    public var exitCounts: [Int: [String: UInt64]] {
        Dictionary(uniqueKeysWithValues: runners.map { ($0.index, $0.exits) })
    }

    /// Destroys device instances (their timers stop first).
    public func shutdownDevices() {
        for d in devices { d.destroy() }
    }

    // ---- DeviceHostDelegate --------------------------------------------------------------------

    public func mapIO(_ space: IOSpaceKind, base: UInt64, length: UInt64, device: IODevice) throws {
        try bus.map(space, base: base, length: length, device: device)
    }

    /// A device line: to the IOAPIC pin `line` when it is emulated; otherwise (legacy route)
    /// straight to vCPU 0's local APIC as fixed, edge-triggered vector
    /// `legacyIRQVectorBase + line`, on the rising edge.
    public func setIRQ(line: UInt32, level: Bool, from device: String) {
        if line == PICLink.intrLine {   // the 8259's INT output: LINT0 of vCPU 0
            interruptState(of: 0)?.setLINT0(level)
            return
        }
        pic.setInput(line: line, level: level)   // ISA lines also reach the 8259 here
        if ioapic == nil, let remote {   // the IOAPIC lives on another node
            remote.forwardIRQLine(line, level: level, device: device)
            return
        }
        if let ioapic {
            guard line < UInt32(IOAPIC.pinCount) else {
                logger.warning("device '\(device)' drives interrupt line \(line): the IOAPIC has pins 0-\(IOAPIC.pinCount - 1)")
                return
            }
            ioapic.setLine(Int(line), asserted: level)
            return
        }
        let rising = irqLevels.withLock { levels -> Bool in
            let was = levels[line] ?? false
            levels[line] = level
            return level && !was
        }
        guard rising, line < 224 else { return }
        router.deliver(to: 0, InterruptMessage(mode: .fixed, vector: config.legacyIRQVectorBase &+ UInt8(line)))
    }

    /// A device line forwarded from another node (this node has the IOAPIC): its pin, and the
    /// 8259's input for ISA lines 0-15 when the 8259 is here.
    public func forwardedLine(_ line: UInt32, level: Bool) {
        pic.setInput(line: line, level: level)
        ioapic?.setLine(Int(line), asserted: level)
    }

    public func consoleWrite(_ bytes: UnsafeRawBufferPointer) { console.write(bytes) }

    public func requestStop(guestStatus: Int32, reason: String) {
        requestStop(.guestExit(status: guestStatus, reason: reason))
    }

    public func dmaRead(gpa: UInt64, into out: UnsafeMutableRawBufferPointer) throws {
        if let r = dmaRouter, let node = r.target(length: out.count) {
            return try r.transfer(on: node, gpa: gpa, read: out, write: nil)
        }
        try ram.withPinned(gpa: gpa, length: out.count, write: false) { out.copyMemory(from: UnsafeRawBufferPointer($0)) }
    }

    public func dmaWrite(gpa: UInt64, _ bytes: UnsafeRawBufferPointer) throws {
        if let r = dmaRouter, let node = r.target(length: bytes.count) {
            return try r.transfer(on: node, gpa: gpa, read: nil, write: bytes)
        }
        try ram.withPinned(gpa: gpa, length: bytes.count, write: true) { $0.copyMemory(from: bytes) }
    }

    /// To this node's coherence protocol. A fence hint needs nothing more from the host: the
    /// vCPU that wrote the device already passed GVM_FENCE_RELEASE on its own node before its
    /// I/O exit (even when the device lives on another node).
    public func coherenceHint(kind: UInt32, gpa: UInt64, length: UInt64) -> Int32 {
        coherenceHintHook?(kind, gpa, length) ?? GVM_ERR_UNSUPPORTED.rawValue
    }
}

/// [dist hook] Where device DMA runs (Sources/Distributed/DMAForwarding.swift): `target` names
/// another node for a DMA the current thread is doing, or nil to pin here. Any thread.
public protocol DMARouter: AnyObject {
    func target(length: Int) -> UInt32?
    func transfer(on node: UInt32, gpa: UInt64, read: UnsafeMutableRawBufferPointer?, write: UnsafeRawBufferPointer?) throws
}
