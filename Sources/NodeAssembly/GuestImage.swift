// The guest image of a config, read and recognised once: a GiantVM ELF64 (loaded by the VMM's
// own 64-bit entry contract) or a firmware-booted image (multiboot, Linux) with its initrd, and
// its `guest.modules`. Every node reads the image and checks the modules (so a bad path fails
// everywhere at once). Modules of a GiantVM ELF64 image are replicated when the coherence plugin
// takes GVM_HINT_REPLICATED (ABI 4): every node loads them into its own guest RAM before the
// start-up barrier and their pages start as read copies everywhere (`replicateModules`);
// otherwise the BSP's node loads them, and the protocol serves the modules' pages to the other
// nodes like any page the BSP's node wrote.

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
    /// `guest.modules` (paths and sizes checked on every node; read by the loading node only).
    public let modules: [(path: String, size: UInt64)]

    /// Reads and recognises `guest.image` (and `guest.initrd`). `cmdline` overrides the config's.
    /// Errors name the config file, the field and the cause.
    public init(config cfg: ClusterConfig, cmdline: String? = nil) throws {
        guard let guest = cfg.guest else { throw AssemblyError("\(cfg.sourcePath): guest.image is missing: nothing to boot") }
        path = guest.image
        let bytes = try Self.read(guest.image, field: "guest.image", config: cfg,
                                  hint: " (build the test guest with `make -C Guests`)", limit: cfg.memoryBytes)
        let proto = BootProtocol(rawValue: guest.bootProtocol) ?? .auto
        var mods: [(path: String, size: UInt64)] = []
        var total: UInt64 = 0
        guard guest.modules.count <= BootLayout.maxModules else {
            throw AssemblyError("\(cfg.sourcePath): guest.modules: \(guest.modules.count) modules; at most \(BootLayout.maxModules) are supported")
        }
        for (i, p) in guest.modules.enumerated() {
            let size = try Self.check(p, field: "guest.modules[\(i)]", config: cfg, limit: cfg.memoryBytes)
            total += size   // each is at most the RAM size (<= 3 GiB) and there are at most 16: no overflow
            guard total <= cfg.memoryBytes else {
                throw AssemblyError("\(cfg.sourcePath): guest.modules: together \(total) bytes through \(p), more than guest memory (\(cfg.memoryBytes) bytes)")
            }
            mods.append((p, size))
        }
        modules = mods
        do {
            format = try Bootloader.detect(bytes, file: guest.image, bootProtocol: proto)
            if !mods.isEmpty && (format == .bzImage || format == .vmlinux) {
                throw AssemblyError("\(cfg.sourcePath): guest.modules: a Linux kernel takes no modules (use guest.initrd); modules are for multiboot images and GiantVM ELF64 images")
            }
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

    /// Where the modules of a GiantVM ELF64 image go: page-aligned after the image's highest byte
    /// (bss included), one after the other, like a multiboot loader places them (the boot info
    /// lists them). Empty for firmware-booted images (their loader places the modules).
    public func modulePlacement(ramSize ram: UInt64) throws -> [(start: UInt64, length: UInt64)] {
        guard let elf else { return [] }
        var next = Self.pageUp(elf.segments.map { $0.physicalAddress + $0.memorySize }.max() ?? BootLayout.imageMinimum)
        var placed: [(start: UInt64, length: UInt64)] = []
        for m in modules {
            guard next <= ram, m.size <= ram - next else {
                throw AssemblyError("guest.modules: \(m.path) (\(m.size) bytes) does not fit in guest RAM at 0x\(String(next, radix: 16)) (RAM is \(ram) bytes): give the guest more memory")
            }
            placed.append((next, m.size))
            next = Self.pageUp(next + m.size)
        }
        return placed
    }

    /// Every node, before the start-up barrier (no vCPU runs anywhere yet): loads the modules of a
    /// GiantVM ELF64 image into this node's own guest RAM as read copies replicated on every node,
    /// when the coherence plugin takes GVM_HINT_REPLICATED (ABI 4). Returns false (nothing loaded:
    /// `load` then copies them on the BSP's node) for firmware-booted images, no modules, or a
    /// plugin that answers GVM_ERR_UNSUPPORTED. Each node reads the files itself.
    public func replicateModules(_ stack: CoherenceStack, ramSize: UInt64) throws -> Bool {
        let placed = try modulePlacement(ramSize: ramSize)
        guard !placed.isEmpty, placed.count == modules.count else { return false }
        for (i, m) in modules.enumerated() {
            let fd = try Self.openModule(m.path)
            defer { close(fd) }
            let size = m.size
            let ok = try stack.replicate(gpa: placed[i].start, length: Self.pageUp(size)) { buf, offset in
                guard offset < size else { return }
                let n = Int(min(size - offset, UInt64(buf.count)))
                let filled = Self.readFully(fd, buf.baseAddress!, n, at: offset)
                guard filled == n else { throw Self.shortRead(m.path, got: offset + UInt64(filled), size: size) }
            }
            if !ok {
                guard i == 0 else {
                    throw AssemblyError("guest.modules: the coherence plugin took module 0 as a replicated range but not module \(i) (\(m.path))")
                }
                return false
            }
        }
        return true
    }

    /// Loads the image (and the modules, unless `replicateModules` already put them in every
    /// node's RAM) into the machine's RAM and sets the boot vCPU's entry; returns a summary.
    public func load(into machine: Machine, modulesReplicated: Bool = false) throws -> String {
        if let elf {
            let placed = try modulePlacement(ramSize: machine.ram.size)
            if !modulesReplicated {
                for (m, p) in zip(modules, placed) { try Self.copy(m.path, size: m.size, into: machine.ram, at: p.start) }
            }
            try machine.load(image: elf, modules: placed)
            return "GiantVM 64-bit entry 0x\(String(elf.entry, radix: 16))"
                + (modulesReplicated && !placed.isEmpty ? ", modules replicated on every node" : "")
                + placed.enumerated().map { ", module \($0.offset) at 0x\(String($0.element.start, radix: 16))+\($0.element.length)" }.joined()
        }
        guard var firmwareBoot else { return "nothing to load" }
        for m in modules {
            let d = try Self.readAll(m.path, size: m.size)
            firmwareBoot.modules.append(BootModule(name: m.path, bytes: d, cmdline: m.path))
        }
        return try machine.boot(firmwareBoot).summary
    }

    static func pageUp(_ a: UInt64) -> UInt64 { (a + 0xFFF) & ~0xFFF }

    /// Checks that `path` is a readable regular file of at most `limit` bytes; returns its size.
    static func check(_ path: String, field: String, config cfg: ClusterConfig, limit: UInt64) throws -> UInt64 {
        func fail(_ why: String) -> AssemblyError { AssemblyError("\(cfg.sourcePath): \(field): \(path): \(why)") }
        var st = stat()
        guard stat(path, &st) == 0 else { throw fail(errno == ENOENT ? "no such file" : String(cString: strerror(errno))) }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw fail((st.st_mode & S_IFMT) == S_IFDIR ? "is a directory, not a module file" : "is not a regular file (a device or pipe)")
        }
        guard st.st_size >= 0, UInt64(st.st_size) <= limit else {
            throw fail("is \(st.st_size) bytes, larger than guest memory (\(limit) bytes)")
        }
        guard access(path, R_OK) == 0 else { throw fail("cannot be read: \(String(cString: strerror(errno)))") }
        return UInt64(st.st_size)
    }

    /// Streams a module file into guest RAM 1 MiB at a time (never the whole file in host memory);
    /// the file must still be `size` bytes long.
    static func copy(_ path: String, size: UInt64, into ram: any GuestRAM, at gpa: UInt64) throws {
        let fd = try openModule(path)
        defer { close(fd) }
        var done: UInt64 = 0
        while done < size {
            let n = Int(min(size - done, 1 << 20))
            let got = try ram.withPinned(gpa: gpa + done, length: n, write: true) { dst in
                readFully(fd, dst.baseAddress!, n, at: done)
            }
            guard got == n else { throw shortRead(path, got: done + UInt64(got), size: size) }
            done += UInt64(n)
        }
    }

    static func openModule(_ path: String) throws -> Int32 {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw AssemblyError("guest.modules: \(path): cannot open: \(String(cString: strerror(errno)))") }
        return fd
    }

    /// Reads `n` bytes at `offset` of `fd` into `dst` (EINTR retried); returns how many it got
    /// (fewer at the end of the file or on an error).
    static func readFully(_ fd: Int32, _ dst: UnsafeMutableRawPointer, _ n: Int, at offset: UInt64) -> Int {
        var filled = 0
        while filled < n {
            let r = pread(fd, dst + filled, n - filled, off_t(offset) + off_t(filled))
            if r < 0 && errno == EINTR { continue }
            if r <= 0 { break }
            filled += r
        }
        return filled
    }

    static func shortRead(_ path: String, got: UInt64, size: UInt64) -> AssemblyError {
        AssemblyError("guest.modules: \(path): read \(got) of \(size) bytes (the file shrank or could not be read while loading)")
    }

    static func readAll(_ path: String, size: UInt64) throws -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path), UInt64(data.count) == size else {
            throw AssemblyError("guest.modules: \(path): cannot be read, or changed size since it was checked (\(size) bytes)")
        }
        return Array(data)
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
