// Settings the host fills in for the firmware-facing device models when the YAML leaves them out:
// fw-cfg gets `cpus`, `memory` and `cmdline`; cmos-rtc gets `memory` (device models see no
// cluster info through the device ABI, so the VM's shape reaches them as settings).
public enum FirmwareDeviceSettings {
    public static func fill(model: String, settings: [(key: String, value: String)], vcpus: Int, memoryBytes: UInt64,
                     cmdline: String) -> [(key: String, value: String)] {
        var out = settings
        func add(_ k: String, _ v: String) { if !out.contains(where: { $0.key == k }) { out.append((k, v)) } }
        switch model {
        case "fw-cfg":
            add("cpus", String(vcpus))
            add("memory", String(memoryBytes))
            add("cmdline", cmdline)
        case "cmos-rtc":
            add("memory", String(memoryBytes))
        default: break
        }
        return out
    }
}
