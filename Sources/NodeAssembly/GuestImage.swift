// The guest image of a config, read and recognised once: a GiantVM ELF64 (loaded by the VMM's
// own 64-bit entry contract) or a firmware-booted image (multiboot, Linux) with its initrd.
// Every node reads it (so a bad path fails everywhere at once); the BSP's node loads it.

import Config
import Firmware
import Foundation
import Glibc
import Machine

public struct GuestImage {
    public let path: String
    public let format: ImageFormat
    /// Set for `format == .giantvm`.
    public let elf: ELFImage?
    /// Set for firmware-booted formats.
    public let firmwareBoot: BootRequest?

    /// Reads and recognises `guest.image` (and `guest.initrd`). `cmdline` overrides the config's.
    /// Errors name the config file, the field and the cause.
    public init(config cfg: ClusterConfig, cmdline: String? = nil) throws {
        guard let guest = cfg.guest else { throw AssemblyError("\(cfg.sourcePath): guest.image is missing: nothing to boot") }
        path = guest.image
        let bytes = try Self.read(guest.image, field: "guest.image", config: cfg,
                                  hint: " (build the test guest with `make -C Guests`)", limit: cfg.memoryBytes)
        let proto = BootProtocol(rawValue: guest.bootProtocol) ?? .auto
        do {
            format = try Bootloader.detect(bytes, file: guest.image, bootProtocol: proto)
            if format == .giantvm {
                elf = try ELFImage(bytes: bytes, name: guest.image)
                firmwareBoot = nil
            } else {
                var initrd: BootModule?
                if let p = guest.initrd {
                    let d = try Self.read(p, field: "guest.initrd", config: cfg, hint: "", limit: cfg.memoryBytes)
                    initrd = BootModule(name: p, bytes: d, cmdline: p)
                }
                elf = nil
                firmwareBoot = BootRequest(file: guest.image, image: bytes, cmdline: cmdline ?? guest.cmdline, initrd: initrd,
                                           vcpus: cfg.totalVCPUs, bootProtocol: proto, platform: try Self.platform(cfg))
            }
        } catch let e as AssemblyError {
            throw e
        } catch {
            throw AssemblyError("\(cfg.sourcePath): guest.image: \(error)")
        }
    }

    /// The platform devices the firmware's ACPI tables describe: an `hpet` (its base, default
    /// 0xFED00000, and `timers`) and an `acpi-pm` (its base port, default 0x600) of the
    /// `devices` plugin, wherever they are placed.
    static func platform(_ cfg: ClusterConfig) throws -> PlatformDevices {
        var p = PlatformDevices()
        for d in cfg.devices where d.plugin == "devices" {
            switch d.model {
            case "hpet":
                p.hpetBase = d.base ?? 0xFED0_0000
                if let t = d.settings.first(where: { $0.key == "timers" })?.value {
                    guard let n = Int(t), (3...32).contains(n) else {
                        throw AssemblyError("\(cfg.sourcePath): devices '\(d.name)': setting 'timers': '\(t)' is not an integer in 3...32")
                    }
                    p.hpetTimers = n
                }
            case "acpi-pm":
                p.pmBase = d.base ?? 0x600
            default: break
            }
        }
        return p
    }

    /// Loads the image into the machine's RAM and sets the boot vCPU's entry; returns a summary.
    public func load(into machine: Machine) throws -> String {
        if let elf {
            try machine.load(image: elf)
            return "GiantVM 64-bit entry 0x\(String(elf.entry, radix: 16))"
        }
        guard let firmwareBoot else { return "nothing to load" }
        return try machine.boot(firmwareBoot).summary
    }

    /// Reads a regular file no larger than `limit` (it must fit in guest RAM), with messages that
    /// say what is wrong with the path rather than a Foundation error code.
    static func read(_ path: String, field: String, config cfg: ClusterConfig, hint: String, limit: UInt64) throws -> [UInt8] {
        func fail(_ why: String) -> AssemblyError { AssemblyError("\(cfg.sourcePath): \(field): \(path): \(why)") }
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw fail(errno == ENOENT ? "no such file\(hint)" : String(cString: strerror(errno)))
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw fail((st.st_mode & S_IFMT) == S_IFDIR ? "is a directory, not an image file" : "is not a regular file (a device or pipe)")
        }
        guard st.st_size >= 0, UInt64(st.st_size) <= limit else {
            throw fail("is \(st.st_size) bytes, larger than guest memory (\(limit) bytes)")
        }
        guard access(path, R_OK) == 0 else { throw fail("cannot be read: \(String(cString: strerror(errno)))") }
        guard let data = FileManager.default.contents(atPath: path) else { throw fail("cannot be read") }
        return Array(data)
    }
}

/// A node could not be assembled: the message names the file, field, node and cause.
public struct AssemblyError: Error, CustomStringConvertible {
    public var message: String
    public init(_ m: String) { message = m }
    public var description: String { message }
}
