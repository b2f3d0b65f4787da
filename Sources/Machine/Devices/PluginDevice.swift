// Device plugin instances on the I/O bus, and the host side of the device ABI
// (`gvm_device_host`: map_io, set_irq, console_write, request_stop, dma_read, dma_write,
// coherence_hint).
import Foundation
import PluginAPI

/// What the device ABI's host table calls into (implemented by `Machine`). Any thread.
public protocol DeviceHostDelegate: AnyObject {
    func mapIO(_ space: IOSpaceKind, base: UInt64, length: UInt64, device: IODevice) throws
    func setIRQ(line: UInt32, level: Bool, from device: String)
    func consoleWrite(_ bytes: UnsafeRawBufferPointer)
    func requestStop(guestStatus: Int32, reason: String)
    func dmaRead(gpa: UInt64, into out: UnsafeMutableRawBufferPointer) throws
    func dmaWrite(gpa: UInt64, _ bytes: UnsafeRawBufferPointer) throws
    /// A coherence hint (GVM_HINT_*) for this node's coherence protocol; returns a gvm_status.
    func coherenceHint(kind: UInt32, gpa: UInt64, length: UInt64) -> Int32
}

public extension DeviceHostDelegate {
    func coherenceHint(kind: UInt32, gpa: UInt64, length: UInt64) -> Int32 { GVM_ERR_UNSUPPORTED.rawValue }
}

/// One device-plugin instance. Calls into it are serialised by `lock` (the ABI promises the
/// plugin that io calls never overlap).
public final class PluginDevice: IODevice, @unchecked Sendable {
    public let name: String
    public let modelName: String
    let model: UnsafePointer<gvm_device_model>
    var instance: UnsafeMutableRawPointer?
    let lock = NSLock()
    let table: UnsafeMutablePointer<gvm_device_host>
    weak var delegate: DeviceHostDelegate?
    /// Errors from map_io during create (reported after create returns).
    var mapErrors: [String] = []
    /// Kept alive as long as the instance (the plugin holds their pointers).
    var keepAlive: [AnyObject] = []
    /// The plugin's ops table, for the ABI 4 state hooks (DeviceState.swift); nil: no transfer.
    public var stateOps: UnsafePointer<gvm_device_ops>?

    /// Creates the instance: calls the model's create() with a device-host table whose `host`
    /// is this object. `services`, `settings` must stay valid until `destroy()`; pass their
    /// owners in `keepAlive`.
    public init(name: String, model: UnsafePointer<gvm_device_model>, services: UnsafePointer<gvm_host_services>,
                base: UInt64?, irq: UInt32?, settings: UnsafePointer<gvm_setting>?, settingCount: UInt32,
                delegate: DeviceHostDelegate, keepAlive: [AnyObject]) throws {
        self.name = name
        self.modelName = String(cString: model.pointee.name)
        self.model = model
        self.delegate = delegate
        self.keepAlive = keepAlive
        table = .allocate(capacity: 1)
        table.initialize(to: gvm_device_host())
        table.pointee.size = UInt32(MemoryLayout<gvm_device_host>.size)
        table.pointee.host = OpaquePointer(Unmanaged.passUnretained(self).toOpaque())
        table.pointee.map_io = { host, space, base, length in
            guard let d = PluginDevice.from(host) else { return GVM_ERR_INVALID.rawValue }
            guard let s = IOSpaceKind(rawValue: space) else {
                d.mapErrors.append("map_io: unknown space \(space)")
                return GVM_ERR_INVALID.rawValue
            }
            do {
                // Each range gets an adapter so offsets reach the plugin from the lowest base
                // the instance mapped in that space (giantvm_plugin.h, io()).
                try d.delegate?.mapIO(s, base: base, length: length, device: RangeOffsetAdapter(device: d, base: base))
                d.lowestBase[s] = min(d.lowestBase[s] ?? base, base)
                return GVM_OK.rawValue
            } catch {
                d.mapErrors.append("\(error)")
                return GVM_ERR_INVALID.rawValue
            }
        }
        table.pointee.set_irq = { host, line, level in
            guard let d = PluginDevice.from(host) else { return }
            d.delegate?.setIRQ(line: line, level: level != 0, from: d.name)
        }
        table.pointee.console_write = { host, bytes, len in
            guard let d = PluginDevice.from(host), let bytes else { return }
            d.delegate?.consoleWrite(UnsafeRawBufferPointer(start: bytes, count: len))
        }
        table.pointee.request_stop = { host, status, reason in
            guard let d = PluginDevice.from(host) else { return }
            d.delegate?.requestStop(guestStatus: status, reason: reason.map { String(cString: $0) } ?? "device '\(d.name)'")
        }
        table.pointee.dma_read = { host, gpa, out, len in
            guard let d = PluginDevice.from(host), let out else { return GVM_ERR_INVALID.rawValue }
            do { try d.delegate?.dmaRead(gpa: gpa, into: UnsafeMutableRawBufferPointer(start: out, count: len)) } catch {
                return GVM_ERR_INVALID.rawValue
            }
            return GVM_OK.rawValue
        }
        table.pointee.dma_write = { host, gpa, bytes, len in
            guard let d = PluginDevice.from(host), let bytes else { return GVM_ERR_INVALID.rawValue }
            do { try d.delegate?.dmaWrite(gpa: gpa, UnsafeRawBufferPointer(start: bytes, count: len)) } catch {
                return GVM_ERR_INVALID.rawValue
            }
            return GVM_OK.rawValue
        }
        table.pointee.coherence_hint = { host, kind, gpa, length in
            guard let d = PluginDevice.from(host), let delegate = d.delegate else { return GVM_ERR_CLOSED.rawValue }
            return delegate.coherenceHint(kind: kind, gpa: gpa, length: length)
        }

        var cfg = gvm_device_config()
        var err = gvm_error()
        let inst: UnsafeMutableRawPointer? = name.withCString { cname in
            cfg.instance_name = cname
            cfg.base = base ?? 0
            cfg.has_base = base == nil ? 0 : 1
            cfg.irq = irq ?? GVM_NO_IRQ
            // Sound: every pointer passed stays valid for the call (cfg, err) or until destroy
            // (services, table, settings, held by this object).
            return model.pointee.create(services, table, &cfg, settings, settingCount, &err)
        }
        guard let inst else {
            let msg = withUnsafeBytes(of: &err.message) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
            // The host's own reason (e.g. an overlap naming both devices) comes first.
            let parts = mapErrors + [msg.isEmpty ? "create() failed" : msg]
            throw DeviceError(device: name, model: modelName, message: parts.joined(separator: "; plugin says: "))
        }
        instance = inst
        if !mapErrors.isEmpty {
            destroy()
            throw DeviceError(device: name, model: modelName, message: mapErrors.joined(separator: "; "))
        }
    }

    static func from(_ host: OpaquePointer?) -> PluginDevice? {
        guard let host else { return nil }
        return Unmanaged<PluginDevice>.fromOpaque(UnsafeRawPointer(host)).takeUnretainedValue()
    }

    public func io(space: IOSpaceKind, offset: UInt64, data: UnsafeMutableRawBufferPointer, isWrite: Bool) {
        lock.lock()
        defer { lock.unlock() }
        guard let instance else { return }
        model.pointee.io(instance, space.rawValue, offset, data.baseAddress!.assumingMemoryBound(to: UInt8.self),
                         UInt32(data.count), isWrite ? 1 : 0)
    }

    /// Lowest base mapped per space (set during create, read-only afterwards).
    var lowestBase: [IOSpaceKind: UInt64] = [:]

    /// A host-side access to the instance at an offset from its lowest base (e.g. a PIC's
    /// acknowledge window); serialised like guest accesses.
    public func hostAccess(space: IOSpaceKind, offset: UInt64, data: UnsafeMutableRawBufferPointer, isWrite: Bool) {
        io(space: space, offset: offset, data: data, isWrite: isWrite)
    }

    /// Whether the model takes host console input (has console_input).
    public var takesConsoleInput: Bool { model.pointee.console_input != nil }

    /// Bytes typed on the host console. Thread: the host's console thread.
    public func consoleInput(_ bytes: [UInt8]) {
        guard let fn = model.pointee.console_input else { return }
        lock.lock()
        defer { lock.unlock() }
        guard let instance else { return }
        bytes.withUnsafeBytes { fn(instance, $0.baseAddress, $0.count) }
    }

    /// Calls the model's destroy() once.
    public func destroy() {
        lock.lock()
        let inst = instance
        instance = nil
        lock.unlock()
        if let inst { model.pointee.destroy(inst) }
    }

    deinit {
        destroy()
        table.deallocate()
    }
}

public struct DeviceError: Error, CustomStringConvertible {
    public var device: String
    public var model: String
    public var message: String
    public var description: String { "device '\(device)' (model \(model)): \(message)" }
}

/// One mapped range of a plugin device on the bus: turns the bus's offset (from this range's
/// base) into the ABI's offset (from the lowest base the instance mapped in that space).
final class RangeOffsetAdapter: IODevice {
    unowned let device: PluginDevice
    let base: UInt64
    init(device: PluginDevice, base: UInt64) { self.device = device; self.base = base }
    var name: String { device.name }
    func io(space: IOSpaceKind, offset: UInt64, data: UnsafeMutableRawBufferPointer, isWrite: Bool) {
        device.io(space: space, offset: offset + base - (device.lowestBase[space] ?? base), data: data, isWrite: isWrite)
    }
}
