import Firmware
import XCTest

final class VirtioMMIOArgsTests: XCTestCase {
    func testKernelParametersForEachWindowNotAlreadyNamed() {
        let w = [VirtioMMIOWindow(base: 0xD000_0000, size: 0x200, irq: 5), VirtioMMIOWindow(base: 0xD000_1000, size: 0x200, irq: 6)]
        XCTAssertEqual(w[0].kernelParameter, "virtio_mmio.device=0x200@0xd0000000:5")
        XCTAssertEqual(VirtioMMIOWindow.appending(w, to: "console=ttyS0"),
                       "console=ttyS0 virtio_mmio.device=0x200@0xd0000000:5 virtio_mmio.device=0x200@0xd0001000:6")
        XCTAssertEqual(VirtioMMIOWindow.appending(w, to: ""), "virtio_mmio.device=0x200@0xd0000000:5 virtio_mmio.device=0x200@0xd0001000:6")
        // a window the user already passed is left as the user wrote it
        XCTAssertEqual(VirtioMMIOWindow.appending(w, to: "virtio_mmio.device=4K@0xd0000000:9"),
                       "virtio_mmio.device=4K@0xd0000000:9 virtio_mmio.device=0x200@0xd0001000:6")
    }
}
