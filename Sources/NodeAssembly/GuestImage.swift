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
                var text = cmdline ?? guest.cmdline
                if format == .bzImage || format == .vmlinux { text = VirtioMMIOWindow.appending(Self.virtioWindows(cfg), to: text) }
                firmwareBoot = BootRequest(file: guest.image, image: bytes, cmdline: text, initrd: initrd,
                                           vcpus: cfg.totalVCPUs, bootProtocol: proto)
            }
        } catch let e as AssemblyError {
            throw e
        } catch {
            throw AssemblyError("\(cfg.sourcePath): guest.image: \(error)")
        }
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

    /// The virtio-mmio devices of the config that a Linux guest can drive (they need an `irq:`),
    /// at their YAML base or the model's default (Plugins/devices/Models/Virtio).
    static func virtioWindows(_ cfg: ClusterConfig) -> [VirtioMMIOWindow] {
        let defaults: [String: UInt64] = ["virtio-blk": 0xD000_0000, "virtio-net": 0xD000_1000]
        return cfg.devices.compactMap { d in
            guard let def = defaults[d.model], let irq = d.irq else { return nil }
            return VirtioMMIOWindow(base: d.base ?? def, size: 0x200, irq: irq)
        }
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
