// libdevices.so: the first device models, through the device ABI (PluginKit). The models live in
// the DeviceModels target (Plugins/devices/Models, unit-tested without this entry symbol):
//   uart16550       16550A UART                         (Models/UART16550.swift)
//   isa-debug-exit  QEMU's exit device at port 0xf4     (Models/ExitAndResults.swift)
//   results         the test guest's result port 0xe0  (Models/ExitAndResults.swift)
//   coherence-hint  guest coherence hints at port 0x580 (Models/CoherenceHint.swift)
//   irq-lines       guest-driven interrupt lines (tests)   (Models/IRQLines.swift)
//   virtio-blk, virtio-net  virtio-mmio v2 devices (Models/Virtio/*.swift, virtioDeviceModels)
//   PC devices (fw-cfg, i8254, cmos-rtc, i8042, i8259, post-ports, pci-host, pci-testdev, port92, hpet,
//   pc-testdev, acpi-pm): Models/*.swift, pcDeviceModels
import DeviceModels
import PluginKit

let entry = DevicePluginEntry([UART16550.self, ExitDevice.self, ResultsDevice.self, IRQLines.self] + pcDeviceModels + virtioDeviceModels
                              + [CoherenceHintDevice.self], name: "devices",
                              version: "0.1.0", summary: "device models: UART, exit and results ports, PC chipset, HPET, QEMU test devices, virtio-blk, virtio-net, coherence hints")

@_cdecl("giantvm_plugin_entry")
public func giantvm_plugin_entry() -> UnsafeRawPointer { entry.pointer }
