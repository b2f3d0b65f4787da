// The devices a config places on one node, created from their plugins and added to the machine.
// One place for `giantvm run` (one node) and the distributed VM (each node its own devices).
//
// Threading: call on the setup thread, before `run()`.

import Config
import Logging
import Metrics
import PluginHost

/// A device of the config could not be created. `message` says why without repeating the device's
/// name (the caller adds the file and node); overlaps keep their own `DeviceError`.
public struct DeviceSetupError: Error, CustomStringConvertible {
    public var device: String
    public var message: String
    public var description: String { "device '\(device)': \(message)" }
}

extension Machine {
    /// Creates every device of `config` homed on `node` and adds it to the bus. `settings` gives
    /// each device's settings as its plugin receives them (e.g. host-filled firmware values).
    /// Throws `DeviceError` for an I/O range overlap and `DeviceSetupError` otherwise.
    @discardableResult
    public func addDevices(of config: ClusterConfig, onNode node: UInt32, loader: PluginLoader,
                           metrics: MetricsRegistry, logger: Logger,
                           settings: (Config.DeviceConfig) -> [(key: String, value: String)] = { $0.settings }) throws -> [PluginDevice] {
        var created: [PluginDevice] = []
        for d in config.devices where d.node == node {
            let plugin: LoadedPlugin
            do { plugin = try loader.load(d.plugin, kind: .device) } catch {
                throw DeviceSetupError(device: d.name, message: "\(error)")
            }
            guard let model = plugin.deviceModel(named: d.model) else {
                let offered = plugin.deviceModels.map(\.name).joined(separator: ", ")
                throw DeviceSetupError(device: d.name, message: "plugin \(plugin.name) has no model '\(d.model)' (it offers: \(offered))")
            }
            let services = HostServicesTable(pluginName: "\(plugin.name)/\(d.name)", metrics: metrics, logger: logger) {
                [weak self] msg in self?.requestStop(.failure("device '\(d.name)' plugin fatal: \(msg)"))
            }
            let table = SettingsTable(settings(d))
            do {
                let dev = try PluginDevice(name: d.name, model: model, services: services.pointer, base: d.base, irq: d.irq,
                                           settings: table.pointer, settingCount: table.count, delegate: self,
                                           keepAlive: [services, table])
                dev.stateOps = plugin.deviceOps
                addDevice(dev)
                created.append(dev)
            } catch let e as DeviceError {
                throw e
            } catch {
                throw DeviceSetupError(device: d.name, message: "\(error)")
            }
        }
        return created
    }
}
