// Device plugins in Swift: one class per device model conforming to `DeviceModel`, exported
// together by `DevicePluginEntry([UART.self, ExitDevice.self], ...)` (kept in a `let`).
// Threading rules are those of gvm_device_model in giantvm_plugin.h.

public enum IOSpace: UInt32, Sendable {
    case pio = 1, mmio = 2
}

/// Services the host gives a device instance (`gvm_device_host`).
public struct DeviceHost: @unchecked Sendable {
    public let raw: UnsafePointer<gvm_device_host>
    public init(_ raw: UnsafePointer<gvm_device_host>) { self.raw = raw }
    var host: OpaquePointer? { raw.pointee.host }

    /// Claims an I/O range. Only during init.
    public func map(_ space: IOSpace, base: UInt64, length: UInt64) throws {
        let rc = raw.pointee.map_io(host, space.rawValue, base, length)
        if rc != GVM_OK.rawValue {
            throw PluginError("cannot map \(space) range 0x\(String(base, radix: 16))+\(length): \(PageStatus(raw: rc))")
        }
    }

    public func setIRQ(_ line: UInt32, level: Bool) { raw.pointee.set_irq(host, line, level ? 1 : 0) }

    public func console(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { raw.pointee.console_write(host, $0.baseAddress, $0.count) }
    }

    public func requestStop(status: Int32, reason: String) { raw.pointee.request_stop(host, status, reason) }

    @discardableResult
    public func dmaRead(gpa: UInt64, into out: UnsafeMutableRawBufferPointer) -> PageStatus {
        PageStatus(raw: raw.pointee.dma_read(host, gpa, out.baseAddress, out.count))
    }

    @discardableResult
    public func dmaWrite(gpa: UInt64, _ bytes: UnsafeRawBufferPointer) -> PageStatus {
        PageStatus(raw: raw.pointee.dma_write(host, gpa, bytes.baseAddress, bytes.count))
    }

    /// Passes a coherence hint (GVM_HINT_*) to the node's coherence protocol; may block until
    /// applied on every node. UNSUPPORTED from a protocol that takes none, or a host table from
    /// before ABI 3.
    @discardableResult
    public func coherenceHint(kind: UInt32, gpa: UInt64, length: UInt64) -> PageStatus {
        let end = MemoryLayout<gvm_device_host>.offset(of: \.coherence_hint)! + MemoryLayout<UnsafeRawPointer>.size
        guard Int(raw.pointee.size) >= end, let fn = raw.pointee.coherence_hint else {
            return PageStatus(raw: GVM_ERR_UNSUPPORTED.rawValue)
        }
        return PageStatus(raw: fn(host, kind, gpa, length))
    }
}

/// Placement of one device instance from the YAML.
public struct DeviceConfig: Sendable {
    public var name: String
    public var base: UInt64?
    public var irq: UInt32?
    public init(_ c: UnsafePointer<gvm_device_config>) {
        name = String(cString: c.pointee.instance_name)
        base = c.pointee.has_base != 0 ? c.pointee.base : nil
        irq = c.pointee.irq == GVM_NO_IRQ ? nil : c.pointee.irq
    }
}

public protocol DeviceModel: AnyObject {
    static var modelName: String { get }
    static var summary: String { get }
    /// Create on the home node and map I/O ranges. Thread: main.
    init(services: HostServices, host: DeviceHost, config: DeviceConfig, settings: Settings) throws
    /// A guest access at `offset` from the mapped base; `data.count` is 1, 2, 4 or 8.
    /// Calls never overlap for one instance; timers may run concurrently.
    func io(space: IOSpace, offset: UInt64, data: UnsafeMutableBufferPointer<UInt8>, isWrite: Bool)
    func consoleInput(_ bytes: UnsafeRawBufferPointer)
    func reset()
    /// Cancel timers; called before the instance is released.
    func shutdown()
    /// The settings this model accepts, with defaults and meanings (ABI 3 descriptor).
    static var settingInfo: [SettingInfo] { get }
    /// ABI 4 (gvm_device_ops.save_state / load_state): an upper bound of `saveState()`'s blob
    /// (at most GVM_DEVICE_STATE_MAX), or nil when the model's state cannot move to another
    /// node (the default: host resources, or not written).
    static var stateCapacity: Int? { get }
    /// The instance's state as a versioned blob (first byte: the model's own version).
    /// Thread: the host's I/O forwarding thread; no io() overlaps.
    func saveState() throws -> [UInt8]
    /// Loads a blob from `saveState()` on another node (untrusted: range-check every field;
    /// throw naming it, leaving the instance unchanged). Do not drive the interrupt line here.
    func loadState(_ blob: UnsafeRawBufferPointer) throws
}

public extension DeviceModel {
    static var settingInfo: [SettingInfo] { [] }
    static var stateCapacity: Int? { nil }
    func saveState() throws -> [UInt8] { throw PluginError("\(Self.modelName) has no state transfer") }
    func loadState(_ blob: UnsafeRawBufferPointer) throws { throw PluginError("\(Self.modelName) has no state transfer") }
    func consoleInput(_ bytes: UnsafeRawBufferPointer) {}
    func reset() {}
    func shutdown() {}
}

final class DeviceBox {
    let device: any DeviceModel
    init(_ d: any DeviceModel) { device = d }
}

@inline(__always)
private func deviceInstance(_ p: UnsafeMutableRawPointer?) -> any DeviceModel {
    Unmanaged<DeviceBox>.fromOpaque(p!).takeUnretainedValue().device
}

typealias DeviceFactory = (HostServices, DeviceHost, DeviceConfig, Settings) throws -> any DeviceModel

/// One slot per device model type in the image (several device plugins may share an image).
private let deviceSlots = FactorySlots<DeviceFactory>(kind: "device model", capacity: 32)

private func createDevice(_ slot: Int, _ svc: UnsafePointer<gvm_host_services>?, _ dh: UnsafePointer<gvm_device_host>?,
                          _ cfg: UnsafePointer<gvm_device_config>?, _ settings: UnsafePointer<gvm_setting>?,
                          _ n: UInt32, _ err: UnsafeMutablePointer<gvm_error>?) -> UnsafeMutableRawPointer? {
    guard let svc, let dh, let cfg else {
        fill(err, "create called without its host tables")
        return nil
    }
    guard hostTableFits(svc.pointee.size, gvm_host_services.self, needed: MemoryLayout<gvm_host_services>.size, err),
          hostTableFits(dh.pointee.size, gvm_device_host.self, needed: MemoryLayout<gvm_device_host>.size, err)
    else { return nil }
    do {
        let d = try deviceSlots.factory(slot)(HostServices(svc), DeviceHost(dh), DeviceConfig(cfg), Settings(settings, count: n))
        return Unmanaged.passRetained(DeviceBox(d)).toOpaque()
    } catch {
        fill(err, "\(error)")
        return nil
    }
}

typealias DeviceCreateFn = @convention(c) (UnsafePointer<gvm_host_services>?, UnsafePointer<gvm_device_host>?,
                                           UnsafePointer<gvm_device_config>?, UnsafePointer<gvm_setting>?,
                                           UInt32, UnsafeMutablePointer<gvm_error>?) -> UnsafeMutableRawPointer?

// One C entry point per model slot: a C function pointer cannot carry the slot number.
private let createThunks: [DeviceCreateFn] = [
    { createDevice(0, $0, $1, $2, $3, $4, $5) }, { createDevice(1, $0, $1, $2, $3, $4, $5) },
    { createDevice(2, $0, $1, $2, $3, $4, $5) }, { createDevice(3, $0, $1, $2, $3, $4, $5) },
    { createDevice(4, $0, $1, $2, $3, $4, $5) }, { createDevice(5, $0, $1, $2, $3, $4, $5) },
    { createDevice(6, $0, $1, $2, $3, $4, $5) }, { createDevice(7, $0, $1, $2, $3, $4, $5) },
    { createDevice(8, $0, $1, $2, $3, $4, $5) }, { createDevice(9, $0, $1, $2, $3, $4, $5) },
    { createDevice(10, $0, $1, $2, $3, $4, $5) }, { createDevice(11, $0, $1, $2, $3, $4, $5) },
    { createDevice(12, $0, $1, $2, $3, $4, $5) }, { createDevice(13, $0, $1, $2, $3, $4, $5) },
    { createDevice(14, $0, $1, $2, $3, $4, $5) }, { createDevice(15, $0, $1, $2, $3, $4, $5) },
    { createDevice(16, $0, $1, $2, $3, $4, $5) }, { createDevice(17, $0, $1, $2, $3, $4, $5) },
    { createDevice(18, $0, $1, $2, $3, $4, $5) }, { createDevice(19, $0, $1, $2, $3, $4, $5) },
    { createDevice(20, $0, $1, $2, $3, $4, $5) }, { createDevice(21, $0, $1, $2, $3, $4, $5) },
    { createDevice(22, $0, $1, $2, $3, $4, $5) }, { createDevice(23, $0, $1, $2, $3, $4, $5) },
    { createDevice(24, $0, $1, $2, $3, $4, $5) }, { createDevice(25, $0, $1, $2, $3, $4, $5) },
    { createDevice(26, $0, $1, $2, $3, $4, $5) }, { createDevice(27, $0, $1, $2, $3, $4, $5) },
    { createDevice(28, $0, $1, $2, $3, $4, $5) }, { createDevice(29, $0, $1, $2, $3, $4, $5) },
    { createDevice(30, $0, $1, $2, $3, $4, $5) }, { createDevice(31, $0, $1, $2, $3, $4, $5) },
]

/// The descriptor of one device plugin offering `models`: a complete `gvm_device_ops` with one
/// `gvm_device_model` per type. A value, like `CoherencePluginEntry`; build it once.
public struct DevicePluginEntry: @unchecked Sendable {
    public let descriptor: UnsafePointer<gvm_plugin_descriptor>
    public let ops: UnsafePointer<gvm_device_ops>
    public var pointer: UnsafeRawPointer { UnsafeRawPointer(descriptor) }

    public init(_ models: [any DeviceModel.Type], name: String, version: String, summary: String) {
        let table = UnsafeMutablePointer<gvm_device_model>.allocate(capacity: max(models.count, 1))
        for (i, m) in models.enumerated() {
            var model = gvm_device_model()
            model.name = permanentCString(m.modelName)
            model.summary = permanentCString(m.summary)
            model.create = createThunks[Self.claim(m)]
            model.io = { inst, space, offset, data, len, isWrite in
                deviceInstance(inst).io(space: IOSpace(rawValue: space) ?? .pio, offset: offset,
                                        data: UnsafeMutableBufferPointer(start: data, count: Int(len)), isWrite: isWrite != 0)
            }
            model.console_input = { inst, bytes, len in
                deviceInstance(inst).consoleInput(UnsafeRawBufferPointer(start: bytes, count: len))
            }
            model.reset = { inst in deviceInstance(inst).reset() }
            model.destroy = { inst in
                guard let inst else { return }
                deviceInstance(inst).shutdown()
                Unmanaged<DeviceBox>.fromOpaque(inst).release()
            }
            (table + i).initialize(to: model)
        }
        let o = UnsafeMutablePointer<gvm_device_ops>.allocate(capacity: 1)
        var dops = gvm_device_ops()
        dops.size = UInt32(MemoryLayout<gvm_device_ops>.size)
        dops.model_count = UInt32(models.count)
        dops.models = UnsafePointer(table)
        dops.save_state = { inst, buf, capacity, len, err in
            guard let inst, let len else { return GVM_ERR_INVALID.rawValue }
            let d = deviceInstance(inst)
            guard let bound = type(of: d).stateCapacity, bound > 0, bound <= Int(GVM_DEVICE_STATE_MAX) else {
                fill(err, "\(type(of: d).modelName) has no state transfer")
                return GVM_ERR_UNSUPPORTED.rawValue
            }
            guard let buf else {   // the probe
                len.pointee = bound
                return GVM_OK.rawValue
            }
            do {
                let blob = try d.saveState()
                guard blob.count <= capacity else {
                    fill(err, "\(type(of: d).modelName): state of \(blob.count) bytes exceeds the buffer (\(capacity))")
                    return GVM_ERR_INVALID.rawValue
                }
                blob.withUnsafeBytes { UnsafeMutableRawPointer(buf).copyMemory(from: $0.baseAddress!, byteCount: blob.count) }
                len.pointee = blob.count
                return GVM_OK.rawValue
            } catch {
                fill(err, "\(error)")
                return GVM_ERR_INVALID.rawValue
            }
        }
        dops.load_state = { inst, buf, len, err in
            guard let inst, buf != nil || len == 0 else { return GVM_ERR_INVALID.rawValue }
            let d = deviceInstance(inst)
            guard type(of: d).stateCapacity != nil else {
                fill(err, "\(type(of: d).modelName) has no state transfer")
                return GVM_ERR_UNSUPPORTED.rawValue
            }
            guard len <= Int(GVM_DEVICE_STATE_MAX) else {
                fill(err, "\(type(of: d).modelName): a state blob of \(len) bytes exceeds GVM_DEVICE_STATE_MAX")
                return GVM_ERR_INVALID.rawValue
            }
            do {
                try d.loadState(UnsafeRawBufferPointer(start: len == 0 ? nil : buf, count: len))
                return GVM_OK.rawValue
            } catch {
                fill(err, "\(error)")
                return GVM_ERR_INVALID.rawValue
            }
        }
        o.initialize(to: dops)
        ops = UnsafePointer(o)
        descriptor = PluginEntry.makeDescriptor(kind: GVM_PLUGIN_DEVICE, name: name, version: version,
                                                summary: summary, ops: UnsafeRawPointer(o),
                                                settings: models.flatMap { m in m.settingInfo.map { ($0, m.modelName) } })
    }

    /// The create slot of one model type (opened here so the generic init is spelled once).
    private static func claim<M: DeviceModel>(_ type: M.Type) -> Int {
        deviceSlots.claim(type) { svc, host, config, settings in
            try M(services: svc, host: host, config: config, settings: settings)
        }
    }
}

