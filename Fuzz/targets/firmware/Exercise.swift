// Fuzz target "firmware": arbitrary bytes as a guest image through every Firmware loader
// (detection, multiboot a.out kludge and ELF32, bzImage, vmlinux, the whole Bootloader.load with
// every guest.protocol). Any outcome but a trap is fine: errors are the expected answer.
// Shared by the libFuzzer entry (Fuzz/run.sh compiles it into the Firmware module with -DFUZZING)
// and by FirmwareTests (a symlink), which replays Fuzz/corpus/firmware and Fuzz/crashes/firmware.
#if !FUZZING
@testable import Firmware
#endif

enum FirmwareFuzz {
    static func exercise(_ bytes: [UInt8]) {
        let file = "fuzz.img"
        _ = VmlinuxImage.looksLikeLinux(bytes)
        _ = try? MultibootHeader.find(in: bytes, file: file)
        _ = try? MultibootImage(bytes: bytes, file: file)
        _ = try? BzImage(bytes: bytes, file: file)
        _ = try? VmlinuxImage(bytes: bytes, file: file)
        let initrd = BootModule(name: "initrd", bytes: [1, 2, 3, 4], cmdline: "initrd")
        let mem = ByteArrayMemory(size: 2 << 20)   // the smallest RAM the loader accepts; reused
        for p in BootProtocol.allCases {
            _ = try? Bootloader.detect(bytes, file: file, bootProtocol: p)
            _ = try? Bootloader.load(BootRequest(file: file, image: bytes, cmdline: "console=ttyS0", initrd: initrd,
                                                 vcpus: 2, bootProtocol: p), into: mem)
        }
    }
}
