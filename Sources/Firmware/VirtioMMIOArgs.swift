// How a Linux guest finds virtio-mmio devices without a device tree or ACPI entries: one kernel
// parameter per device, `virtio_mmio.device=<size>@<base>:<irq>` (drivers/virtio/virtio_mmio.c,
// CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES), as Firecracker passes them.

/// One virtio-mmio register window to advertise.
public struct VirtioMMIOWindow: Equatable, Sendable {
    public var base: UInt64
    public var size: UInt64
    public var irq: UInt32
    public init(base: UInt64, size: UInt64, irq: UInt32) { self.base = base; self.size = size; self.irq = irq }

    /// `virtio_mmio.device=0x200@0xd0000000:5`
    public var kernelParameter: String {
        "virtio_mmio.device=0x\(String(size, radix: 16))@0x\(String(base, radix: 16)):\(irq)"
    }

    /// `cmdline` with a parameter for each window it does not already name (by base address).
    public static func appending(_ windows: [VirtioMMIOWindow], to cmdline: String) -> String {
        var out = cmdline
        for w in windows where !cmdline.contains("@0x\(String(w.base, radix: 16)):") {
            out += (out.isEmpty ? "" : " ") + w.kernelParameter
        }
        return out
    }
}
