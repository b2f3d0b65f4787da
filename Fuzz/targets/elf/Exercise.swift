// Fuzz target "elf": arbitrary bytes as a GiantVM ELF64 image (ELFImage, the machine's own
// loader for guest.protocol giantvm): parse, then place and load into 16 MiB of guest RAM.
// Shared by the libFuzzer entry (compiled into the Machine module with -DFUZZING) and by the
// MachineTests replay of Fuzz/corpus/elf and Fuzz/crashes/elf (a symlink there).
#if !FUZZING
@testable import Machine
#endif

enum ELFFuzz {
    /// Reserved, not touched until a segment is written (MAP_NORESERVE).
    nonisolated(unsafe) static let ram = try! AnonymousGuestRAM(size: 16 << 20)

    static func exercise(_ bytes: [UInt8]) {
        guard let image = try? ELFImage(bytes: bytes, name: "fuzz.elf") else { return }
        _ = try? image.load(into: ram)
    }
}
