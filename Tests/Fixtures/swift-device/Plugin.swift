// Test fixture: a Swift device plugin through PluginKit — one type plus one @_cdecl entry.
// Model "echo": a 1-byte register at the YAML base that reads back the last byte written plus
// the setting `add` (default 1).
import PluginKit

final class Echo: DeviceModel {
    static let modelName = "echo"
    static let summary = "reads back the last byte written plus `add`"
    let add: UInt8
    var last: UInt8 = 0
    let services: HostServices

    init(services: HostServices, host: DeviceHost, config: DeviceConfig, settings: Settings) throws {
        try settings.allowOnly(["add"])
        add = UInt8(try settings.int("add", default: 1, range: 0...255))
        self.services = services
        try host.map(.pio, base: config.base ?? 0x700, length: 1)
    }

    func io(space: IOSpace, offset: UInt64, data: UnsafeMutableBufferPointer<UInt8>, isWrite: Bool) {
        if isWrite { last = data[0] } else { data[0] = last &+ add }
        services.counter("echo.io").add()
    }
}

let entry = DevicePluginEntry([Echo.self], name: "test-swift-device", version: "0.1.0", summary: "fixture: Swift device plugin")

@_cdecl("giantvm_plugin_entry")
public func giantvm_plugin_entry() -> UnsafeRawPointer { entry.pointer }
