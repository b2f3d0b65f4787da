// The virtio-mmio transport, version 2 (virtio 1.x, section 4.2.2): the register block every
// virtio device model here sits behind, one 0x200-byte MMIO window (0x100 registers, then the
// device's configuration space). The device type plugs in as a `VirtioBackend`.
//
// Registers (offset: name, access): 0x000 MagicValue "virt" R, 0x004 Version (2) R, 0x008
// DeviceID R, 0x00c VendorID R, 0x010 DeviceFeatures R (the 32-bit word DeviceFeaturesSel
// 0x014 W picks), 0x020 DriverFeatures W (word DriverFeaturesSel 0x024 W), 0x030 QueueSel W,
// 0x034 QueueNumMax R, 0x038 QueueNum W, 0x044 QueueReady RW, 0x050 QueueNotify W, 0x060
// InterruptStatus R, 0x064 InterruptACK W, 0x070 Status RW (0 resets), 0x080/0x084 QueueDesc,
// 0x090/0x094 QueueDriver (available ring), 0x0a0/0x0a4 QueueDevice (used ring), 0x0fc
// ConfigGeneration R, 0x100+ config space.
//
// Guest errors: a malformed ring or chain (`ChainError`), or DMA outside guest RAM, sets
// DEVICE_NEEDS_RESET (status bit 0x40) and the configuration-change interrupt bit, logs one line
// naming the device and the cause, and stops processing until the driver resets the device
// (writes 0 to Status). The VMM keeps running.
//
// Threading: `lock` guards all state; io() (vCPU or forwarding thread) and a backend's own
// receive thread (virtio-net) both take it. set_irq is called with it held (the host's set_irq
// only queues/forwards the line change).
import PluginKit
import Synchronization

/// Status bits (virtio 1.x 2.1).
public enum VirtioStatus {
    public static let acknowledge: UInt32 = 1, driver: UInt32 = 2, driverOK: UInt32 = 4, featuresOK: UInt32 = 8
    public static let needsReset: UInt32 = 0x40, failed: UInt32 = 0x80
}

/// Feature bits common to every device type.
public enum VirtioFeature {
    public static let version1: UInt64 = 1 << 32
    public static let indirectDesc: UInt64 = 1 << 28
}

/// What a device type gives the transport. Calls come with the transport's lock held.
public protocol VirtioBackend: AnyObject {
    var deviceID: UInt32 { get }
    /// Features offered (VERSION_1 is added by the transport).
    var features: UInt64 { get }
    /// Maximum size of each queue (index = queue number).
    var queueMaxSizes: [UInt16] { get }
    /// The configuration space (read by byte offset; writes are ignored unless overridden).
    func configBytes() -> [UInt8]
    /// The driver notified queue `q`: consume what is available. Throw a guest error to have
    /// the device set NEEDS_RESET.
    func notify(queue q: Int, _ t: VirtioTransport) throws
    /// Back to power-on state (queues are reset by the transport).
    func reset()
}

/// The transport state and register logic; owns the queues. Free of the plugin ABI except
/// through `GuestDMA` and the interrupt callback, so it is unit-tested directly.
public final class VirtioTransport: @unchecked Sendable {
    public static let windowSize: UInt64 = 0x200
    public static let magic: UInt32 = 0x7472_6976     // "virt"
    public static let vendor: UInt32 = 0x4D56_4947    // "GIVM"

    public let name: String
    public let mem: GuestDMA
    let backend: VirtioBackend
    let log: (String) -> Void
    let raiseIRQ: (Bool) -> Void
    let lock = Mutex<Void>(())

    public private(set) var status: UInt32 = 0
    public private(set) var queues: [Virtqueue]
    var deviceFeatureSel: UInt32 = 0
    var driverFeatureSel: UInt32 = 0
    public private(set) var driverFeatures: UInt64 = 0
    var queueSel: UInt32 = 0
    public private(set) var interruptStatus: UInt32 = 0
    var configGeneration: UInt32 = 0
    /// Guest errors seen (each set NEEDS_RESET).
    public private(set) var guestErrors = 0

    public init(name: String, backend: VirtioBackend, mem: GuestDMA, log: @escaping (String) -> Void,
                irq: @escaping (Bool) -> Void) {
        self.name = name
        self.backend = backend
        self.mem = mem
        self.log = log
        raiseIRQ = irq
        queues = backend.queueMaxSizes.map { _ in Virtqueue() }
    }

    var offeredFeatures: UInt64 { backend.features | VirtioFeature.version1 }
    public var isLive: Bool { status & VirtioStatus.driverOK != 0 && status & VirtioStatus.needsReset == 0 }

    /// Runs `body` under the lock (the backends' receive threads use this).
    public func locked<R>(_ body: () throws -> R) rethrows -> R {
        try lock.withLock { _ in try body() }
    }

    /// A guest access to the register window (called by the device model's io()).
    public func access(offset: UInt64, data: UnsafeMutableBufferPointer<UInt8>, isWrite: Bool) {
        lock.withLock { _ in
            if isWrite {
                var v: UInt32 = 0
                for (i, b) in data.prefix(4).enumerated() { v |= UInt32(b) << (8 * UInt32(i)) }
                write(offset: offset, value: v, width: data.count)
            } else {
                let v = read(offset: offset, width: data.count)
                for i in 0..<data.count { data[i] = i < 8 ? UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) : 0 }
            }
        }
    }

    func read(offset: UInt64, width: Int) -> UInt64 {
        if offset >= 0x100 {
            let cfg = backend.configBytes()
            var v: UInt64 = 0
            for i in 0..<width where Int(offset - 0x100) + i < cfg.count {
                v |= UInt64(cfg[Int(offset - 0x100) + i]) << (8 * UInt64(i))
            }
            return v
        }
        guard width == 4, offset & 3 == 0 else { return 0 }
        let q = Int(queueSel) < queues.count ? Int(queueSel) : nil
        switch offset {
        case 0x000: return UInt64(VirtioTransport.magic)
        case 0x004: return 2
        case 0x008: return UInt64(backend.deviceID)
        case 0x00C: return UInt64(VirtioTransport.vendor)
        case 0x010: return deviceFeatureSel < 2 ? (offeredFeatures >> (32 * UInt64(deviceFeatureSel))) & 0xFFFF_FFFF : 0
        case 0x034: return q.map { UInt64(backend.queueMaxSizes[$0]) } ?? 0
        case 0x044: return q.map { queues[$0].ready ? 1 : 0 } ?? 0
        case 0x060: return UInt64(interruptStatus)
        case 0x070: return UInt64(status)
        case 0x0FC: return UInt64(configGeneration)
        default: return 0
        }
    }

    func write(offset: UInt64, value v: UInt32, width: Int) {
        guard offset < 0x100, width == 4, offset & 3 == 0 else { return }   // config space is read-only here
        let q = Int(queueSel) < queues.count ? Int(queueSel) : nil
        // Queue registers may change only while the queue is not ready (4.2.2.3).
        func setQueue(_ body: (inout Virtqueue) -> Void) {
            guard let q, !queues[q].ready else { return }
            body(&queues[q])
        }
        switch offset {
        case 0x014: deviceFeatureSel = v
        case 0x020:
            if driverFeatureSel < 2, status & VirtioStatus.featuresOK == 0 {
                let shift = 32 * UInt64(driverFeatureSel)
                driverFeatures = (driverFeatures & ~(0xFFFF_FFFF << shift)) | (UInt64(v) << shift)
            }
        case 0x024: driverFeatureSel = v
        case 0x030: queueSel = v
        case 0x038:
            setQueue { qu in
                let max = backend.queueMaxSizes[q!]
                // Sizes must be powers of two up to the maximum; anything else leaves the queue unusable.
                qu.size = (v > 0 && v <= UInt32(max) && v & (v - 1) == 0) ? UInt16(v) : 0
            }
        case 0x044:
            guard let q else { return }
            if v == 1 {
                if queues[q].size == 0 { queues[q].size = backend.queueMaxSizes[q] }
                queues[q].ready = true
            } else {
                queues[q].ready = false
            }
        case 0x050:
            guard Int(v) < queues.count else { return guestError("notify of queue \(v), which does not exist") }
            process(queue: Int(v))
        case 0x064:
            interruptStatus &= ~v
            if interruptStatus == 0 { raiseIRQ(false) }
        case 0x070: writeStatus(v)
        case 0x080: setQueue { $0.descTable = ($0.descTable & ~0xFFFF_FFFF) | UInt64(v) }
        case 0x084: setQueue { $0.descTable = ($0.descTable & 0xFFFF_FFFF) | UInt64(v) << 32 }
        case 0x090: setQueue { $0.availRing = ($0.availRing & ~0xFFFF_FFFF) | UInt64(v) }
        case 0x094: setQueue { $0.availRing = ($0.availRing & 0xFFFF_FFFF) | UInt64(v) << 32 }
        case 0x0A0: setQueue { $0.usedRing = ($0.usedRing & ~0xFFFF_FFFF) | UInt64(v) }
        case 0x0A4: setQueue { $0.usedRing = ($0.usedRing & 0xFFFF_FFFF) | UInt64(v) << 32 }
        default: break
        }
    }

    func writeStatus(_ v: UInt32) {
        if v == 0 {
            reset()
            return
        }
        var s = v & ~VirtioStatus.needsReset | (status & VirtioStatus.needsReset)
        // FEATURES_OK holds only for a subset of what was offered that includes VERSION_1.
        if s & VirtioStatus.featuresOK != 0 && status & VirtioStatus.featuresOK == 0 {
            if driverFeatures & ~offeredFeatures != 0 || driverFeatures & VirtioFeature.version1 == 0 {
                s &= ~VirtioStatus.featuresOK
            }
        }
        status = s
    }

    /// Back to power-on state (Status written 0, or the host's reset).
    public func reset() {
        status = 0
        driverFeatures = 0
        deviceFeatureSel = 0
        driverFeatureSel = 0
        queueSel = 0
        if interruptStatus != 0 { raiseIRQ(false) }
        interruptStatus = 0
        queues = backend.queueMaxSizes.map { _ in Virtqueue() }
        backend.reset()
    }

    /// Consumes queue `q` if the device is live and the queue ready (lock held).
    public func process(queue q: Int) {
        guard isLive, q < queues.count, queues[q].ready, queues[q].size > 0 else { return }
        do { try backend.notify(queue: q, self) } catch { guestError("\(error)") }
    }

    /// Sets NEEDS_RESET, raises the configuration-change interrupt and logs the cause.
    public func guestError(_ why: String) {
        guestErrors += 1
        // One line per error, until a guest that keeps resetting and breaking its rings has
        // logged 20: then one line per 1000 (the count says how many).
        if status & VirtioStatus.needsReset == 0 && (guestErrors <= 20 || guestErrors % 1000 == 0) {
            log("\(name): guest error: \(why); device needs reset" + (guestErrors == 20 ? " (further guest errors: one line per 1000)" : "")
                + (guestErrors > 20 ? " (guest error \(guestErrors))" : ""))
        }
        status |= VirtioStatus.needsReset
        configGeneration &+= 1
        signal(bits: 2)
    }

    /// Raises interrupt status bits (1 = used buffer, 2 = configuration change).
    func signal(bits: UInt32) {
        let was = interruptStatus
        interruptStatus |= bits
        if was == 0 { raiseIRQ(true) }
    }

    // ---- queue helpers for the backends (lock held) ----

    /// The next available chain of queue `q`, walked, or nil when none is pending.
    public func nextChain(_ q: Int, limits: Virtqueue.Limits) throws -> DescriptorChain? {
        guard let head = try queues[q].nextHead(mem) else { return nil }
        return try queues[q].walk(head: head, mem, limits: limits)
    }

    /// Whether queue `q` has a chain pending, without consuming it.
    public func hasAvailable(_ q: Int) -> Bool {
        guard isLive, queues[q].ready, let idx = mem.readU16(queues[q].availRing &+ 2) else { return false }
        return idx != queues[q].lastAvail
    }

    /// Returns a chain to the driver with `written` bytes in its writable buffers.
    public func complete(_ q: Int, head: UInt16, written: UInt32) throws {
        let usedAddr = queues[q].usedRing
        guard queues[q].pushUsed(mem, head: head, written: written) else {
            throw ChainError.unreadable(what: "used ring", gpa: usedAddr)
        }
    }

    /// After a batch of completions: interrupt unless the driver suppressed it.
    public func notifyDriver(_ q: Int) {
        if !queues[q].interruptSuppressed(mem) { signal(bits: 1) }
    }
}
