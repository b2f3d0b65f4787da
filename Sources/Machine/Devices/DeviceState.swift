// Moving a device's home to another node (node evacuation, docs/migration.md): the host side of
// the ABI 4 state hooks (gvm_device_ops.save_state / load_state), and the creation of a fresh
// instance of a config's device on its new home node once the bus is sealed (its ranges are
// collected instead of mapped: the caller points the existing forwarding stubs at them).
//
// Threading: `saveState` on the I/O forwarding thread (under the device's lock, so no access
// overlaps it); `createMoved` and `loadState` on the thread that takes the device in, before the
// new instance is reachable.

import Config
import Logging
import Metrics
import PluginAPI
import PluginHost

extension PluginDevice {
    /// An upper bound of the instance's state blob when its model can move it (the probe), nil
    /// when it cannot (no hooks, a plugin table from before ABI 4, or the model says so).
    public var movableStateBound: Int? {
        guard let ops = stateOps else { return nil }
        let end = MemoryLayout<gvm_device_ops>.offset(of: \.load_state)! + MemoryLayout<UnsafeRawPointer>.size
        guard Int(ops.pointee.size) >= end, let save = ops.pointee.save_state, ops.pointee.load_state != nil else { return nil }
        lock.lock()
        defer { lock.unlock() }
        guard let instance else { return nil }
        var len = 0
        var err = gvm_error()
        guard save(instance, nil, 0, &len, &err) == GVM_OK.rawValue, len > 0, len <= Int(GVM_DEVICE_STATE_MAX) else { return nil }
        return len
    }

    /// The instance's state blob (at most GVM_DEVICE_STATE_MAX bytes). Errors name the device.
    public func saveState() throws -> [UInt8] {
        guard movableStateBound != nil, let save = stateOps?.pointee.save_state else {
            throw DeviceError(device: name, model: modelName, message: "its model has no state transfer (save_state)")
        }
        lock.lock()
        defer { lock.unlock() }
        guard let instance else { throw DeviceError(device: name, model: modelName, message: "destroyed") }
        var buf = [UInt8](repeating: 0, count: Int(GVM_DEVICE_STATE_MAX))
        var len = 0
        var err = gvm_error()
        let rc = buf.withUnsafeMutableBufferPointer { save(instance, $0.baseAddress, $0.count, &len, &err) }
        guard rc == GVM_OK.rawValue else { throw stateError("save_state", rc, &err) }
        guard len <= buf.count else {
            throw DeviceError(device: name, model: modelName, message: "save_state reported \(len) bytes, past its \(buf.count)-byte buffer")
        }
        return Array(buf[0..<len])
    }

    /// Loads a blob saved on another node (the model range-checks it). Errors name the device.
    public func loadState(_ blob: [UInt8]) throws {
        guard blob.count <= Int(GVM_DEVICE_STATE_MAX) else {
            throw DeviceError(device: name, model: modelName, message: "a state blob of \(blob.count) bytes exceeds \(GVM_DEVICE_STATE_MAX)")
        }
        guard let ops = stateOps, movableStateBound != nil, let load = ops.pointee.load_state else {
            throw DeviceError(device: name, model: modelName, message: "its model has no state transfer (load_state)")
        }
        lock.lock()
        defer { lock.unlock() }
        guard let instance else { throw DeviceError(device: name, model: modelName, message: "destroyed") }
        var err = gvm_error()
        let rc = blob.withUnsafeBufferPointer { load(instance, $0.baseAddress, $0.count, &err) }
        guard rc == GVM_OK.rawValue else { throw stateError("load_state", rc, &err) }
    }

    private func stateError(_ hook: String, _ rc: Int32, _ err: inout gvm_error) -> DeviceError {
        let msg = withUnsafeBytes(of: &err.message) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        return DeviceError(device: name, model: modelName, message: "\(hook): \(msg.isEmpty ? String(cString: gvm_status_name(rc)) : msg)")
    }
}

/// One range a moved-in device claimed during create (not mapped: the bus is sealed).
public struct ClaimedRange {
    public var space: IOSpaceKind
    public var base: UInt64
    public var length: UInt64
    /// What answers accesses to the range (offsets from `base`).
    public var device: IODevice
}

/// The machine's device host, except that map_io collects the ranges.
final class CollectingDeviceHost: DeviceHostDelegate {
    let machine: Machine
    var ranges: [ClaimedRange] = []
    init(_ machine: Machine) { self.machine = machine }
    func mapIO(_ space: IOSpaceKind, base: UInt64, length: UInt64, device: IODevice) throws {
        for r in ranges where r.space == space && base < r.base + r.length && r.base < base + length {
            throw IOBusError.overlap(space: space, base: base, length: length, device: device.name, existingBase: r.base,
                                     existingLength: r.length, existingDevice: r.device.name)
        }
        ranges.append(ClaimedRange(space: space, base: base, length: length, device: device))
    }
    func setIRQ(line: UInt32, level: Bool, from device: String) { machine.setIRQ(line: line, level: level, from: device) }
    func consoleWrite(_ bytes: UnsafeRawBufferPointer) { machine.consoleWrite(bytes) }
    func requestStop(guestStatus: Int32, reason: String) { machine.requestStop(guestStatus: guestStatus, reason: reason) }
    func dmaRead(gpa: UInt64, into out: UnsafeMutableRawBufferPointer) throws { try machine.dmaRead(gpa: gpa, into: out) }
    func dmaWrite(gpa: UInt64, _ bytes: UnsafeRawBufferPointer) throws { try machine.dmaWrite(gpa: gpa, bytes) }
    func coherenceHint(kind: UInt32, gpa: UInt64, length: UInt64) -> Int32 { machine.coherenceHint(kind: kind, gpa: gpa, length: length) }
}

extension Machine {
    /// Creates a fresh instance of config device `d` on this node after start-up (its home moves
    /// here), loads `state` into it and returns it with the ranges it claimed, which the caller
    /// points the bus's forwarding stubs at. Nothing is mapped on the bus.
    public func createMovedDevice(_ d: Config.DeviceConfig, state: [UInt8], loader: PluginLoader, metrics: MetricsRegistry,
                                  logger: Logger, settings: [(key: String, value: String)]) throws -> (PluginDevice, [ClaimedRange]) {
        let plugin: LoadedPlugin
        do { plugin = try loader.load(d.plugin, kind: .device) } catch {
            throw DeviceSetupError(device: d.name, message: "\(error)")
        }
        guard let model = plugin.deviceModel(named: d.model) else {
            throw DeviceSetupError(device: d.name, message: "plugin \(plugin.name) has no model '\(d.model)'")
        }
        let services = HostServicesTable(pluginName: "\(plugin.name)/\(d.name)", metrics: metrics, logger: logger) {
            [weak self] msg in self?.requestStop(.failure("device '\(d.name)' plugin fatal: \(msg)"))
        }
        let table = SettingsTable(settings)
        let collector = CollectingDeviceHost(self)
        let dev = try PluginDevice(name: d.name, model: model, services: services.pointer, base: d.base, irq: d.irq,
                                   settings: table.pointer, settingCount: table.count, delegate: collector,
                                   keepAlive: [services, table, collector])
        dev.stateOps = plugin.deviceOps
        do { try dev.loadState(state) } catch {
            dev.destroy()
            throw error
        }
        return (dev, collector.ranges)
    }
}
