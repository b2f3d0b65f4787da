// `giantvm run --config F`: the VM of a one-node config, in this process.
import ArgumentParser
import Config
import Foundation
import Glibc
import GuestMemory
import Logging
import Machine
import Firmware
import Metrics
import PluginAPI
import PluginHost

/// How `giantvm run` turns the way the VM ended into its own exit status.
enum RunExitStatus {
    static let guestSuccess: Int32 = 0       // isa-debug-exit value 0 (status 1)
    static let configError: Int32 = 1        // bad config, image, plugin or device
    static let machineFailure: Int32 = 2     // triple fault, emulation failure, KVM error
    static let guestFailureBase: Int32 = 32  // value v != 0: 32 + v (v >= 95 -> 127)
    static let timeout: Int32 = 124
    static let guestReset: Int32 = 3          // i8042 0xFE / 0xCF9 reset: guest status 0x100
    static let guestResetStatus: Int32 = 0x100
    static let interrupted: Int32 = 130

    /// (exit code, message) for a guest exit status from the exit device.
    static func forGuest(status: Int32) -> (Int32, String) {
        if status == 1 { return (guestSuccess, "guest passed (isa-debug-exit value 0, status 1)") }
        if status == guestResetStatus { return (guestReset, "guest requested a reset (i8042 pulse or 0xCF9); the VM stopped") }
        guard status & 1 == 1 else {
            return (guestFailureBase + 95, "guest stopped with status \(status) (not an isa-debug-exit status)")
        }
        let v = UInt32(bitPattern: status) >> 1
        let code = guestFailureBase + Int32(min(v, 95))
        return (code, "guest failed: isa-debug-exit value \(v) (status \(status)); giantvm exits \(code)")
    }
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the VM of a one-node config in this process.",
        discussion: """
            Loads the device plugins the config places on the node, boots the guest image (ELF64, \
            entered in 64-bit mode on vCPU 0 per the entry contract), prints the UART output and \
            each result line (as {"result":...}) on stdout, and exits when the guest does.
            Exit status: 0 when the guest writes 0 to isa-debug-exit (status 1); 32+v when it \
            writes v != 0 (127 for v >= 95); 2 when a vCPU fails (triple fault, emulation \
            failure, KVM error); 124 on --timeout; 130 on Ctrl-C; 1 for config/plugin/image errors.
            """)

    @Option(name: .long, help: "The cluster config (YAML); it must have one node.")
    var config: String

    @Option(name: .long, help: "Stop the VM after this many seconds (exit 124).")
    var timeout: Double?

    @Option(name: .long, help: "Guest command line, instead of the config's guest.cmdline.")
    var cmdline: String?

    @Option(name: .long, help: "Guest RAM: 'uffd' (userfaultfd + the config's coherence plugin, the default) or 'anonymous' (a plain mapping, no coherence; for comparison).")
    var memory: String = "uffd"

    @Flag(name: .long, help: "Print per-vCPU exit counts and device counters to stderr at the end.")
    var stats = false

    @OptionGroup var global: GlobalOptions

    func run() throws {
        let logger = global.bootstrapLogging()
        let cfg: ClusterConfig
        do { cfg = try ConfigLoader.load(path: config) } catch { fail("\(error)") }
        guard cfg.nodes.count == 1 else {
            fail("\(config): `giantvm run` runs a one-node VM; this config has \(cfg.nodes.count) nodes")
        }
        guard let guest = cfg.guest else { fail("\(config): guest.image is missing: nothing to boot") }
        let imageBytes: [UInt8]
        do {
            imageBytes = Array(try Data(contentsOf: URL(fileURLWithPath: guest.image)))
        } catch {
            fail("\(config): guest.image: cannot read \(guest.image): \(error.localizedDescription)")
        }
        // The boot protocol, from the image (or guest.protocol): GiantVM's own 64-bit entry for
        // a plain ELF64, the firmware loaders for multiboot and Linux images.
        let format: ImageFormat
        do {
            format = try Bootloader.detect(imageBytes, file: guest.image, bootProtocol: BootProtocol(rawValue: guest.bootProtocol) ?? .auto)
        } catch { fail("\(config): guest.image: \(error)") }
        var image: ELFImage?
        if format == .giantvm {
            do { image = try ELFImage(bytes: imageBytes, name: guest.image) } catch { fail("\(error)") }
        }
        var initrd: BootModule?
        if let path = guest.initrd {
            do { initrd = BootModule(name: path, bytes: Array(try Data(contentsOf: URL(fileURLWithPath: path))), cmdline: path) } catch {
                fail("\(config): guest.initrd: cannot read \(path): \(error.localizedDescription)")
            }
        }
        let kernelCmdline = cmdline ?? guest.cmdline

        guard memory == "uffd" || memory == "anonymous" else {
            fail("--memory '\(memory)' is not one of uffd, anonymous")
        }
        let metrics = MetricsRegistry()
        let loader = PluginLoader(searchPath: PluginLoader.defaultSearchPath(config: cfg))

        final class FatalTarget: @unchecked Sendable { weak var machine: Machine? }
        let fatalTarget = FatalTarget()

        // Guest RAM: userfaultfd-backed GuestMemory with the coherence plugin, or a plain mapping.
        let ram: any GuestRAM
        var guestMemory: GuestMemory?
        var coherence: CoherencePluginInstance?
        var keepMemory: [AnyObject] = []
        if memory == "uffd" {
            do {
                let plugin = try loader.load(cfg.coherence.plugin, kind: .coherence)
                guard let ops = plugin.coherenceOps else { fail("\(config): coherence.plugin: \(plugin.name) has no coherence ops") }
                let mem = try GuestMemory(bytes: cfg.memoryBytes, logger: logger,
                                          send: { _, _ in GVM_ERR_CLOSED.rawValue },
                                          sendUrgent: { _, _ in GVM_ERR_CLOSED.rawValue })
                let services = HostServicesTable(pluginName: plugin.name, metrics: metrics, logger: logger) { msg in
                    // Stop the VM (once it exists) so every thread ends cleanly.
                    if let m = fatalTarget.machine {
                        m.requestStop(.failure("coherence plugin fatal: \(msg)"))
                    } else {
                        FileHandle.standardError.write(Data("giantvm: error: coherence plugin fatal: \(msg)\n".utf8))
                        Foundation.exit(RunExitStatus.machineFailure)
                    }
                }
                let cluster = ClusterInfoTable(config: cfg, selfID: 0)
                let settings = SettingsTable(cfg.coherence.settings)
                let inst = try CoherencePluginInstance(name: plugin.name, ops: ops, services: services.pointer, memory: mem,
                                                       cluster: cluster.pointer, settings: settings.pointer,
                                                       settingCount: settings.count)
                try inst.start()
                try mem.start()
                keepMemory = [services, cluster, settings]
                guestMemory = mem
                coherence = inst
                ram = mem
            } catch {
                fail("\(config): guest memory (userfaultfd, coherence plugin \(cfg.coherence.plugin)): \(error)",
                     code: RunExitStatus.machineFailure)
            }
        } else {
            do { ram = try AnonymousGuestRAM(size: cfg.memoryBytes) } catch {
                fail("cannot map guest RAM: \(error)", code: RunExitStatus.machineFailure)
            }
        }

        var mc = MachineConfiguration(memoryBytes: cfg.memoryBytes, vcpus: cfg.totalVCPUs, cmdline: cmdline ?? guest.cmdline)
        mc.nodes = cfg.nodes.map { (cfg.firstVCPU(of: $0.id), $0.vcpus) }
        mc.nodeID = 0
        let machine: Machine
        do {
            // One node: no remote interrupts. Multiple-writer protocols flush at the VMM's
            // synchronisation points.
            machine = try Machine(config: mc, ram: ram, remote: nil, fence: coherence?.fenceHook, logger: logger)
            fatalTarget.machine = machine
        } catch {
            fail("cannot create the VM: \(error)", code: RunExitStatus.machineFailure)
        }

        // Devices on this node, each from its plugin.
        let keep: [PluginDevice]
        do {
            keep = try machine.addDevices(of: cfg, onNode: 0, loader: loader, metrics: metrics, logger: logger) { d in
                FirmwareDeviceSettings.fill(model: d.model, settings: d.settings, vcpus: cfg.totalVCPUs,
                                            memoryBytes: cfg.memoryBytes, cmdline: kernelCmdline)
            }
        } catch {
            fail("\(config): \(error)")
        }
        var bootSummary: String
        if let image {
            do { try machine.load(image: image) } catch { fail("\(error)") }
            bootSummary = "GiantVM 64-bit entry 0x\(String(image.entry, radix: 16))"
        } else {
            do {
                let plan = try machine.boot(BootRequest(file: guest.image, image: imageBytes, cmdline: kernelCmdline, initrd: initrd,
                                                        vcpus: cfg.totalVCPUs, bootProtocol: BootProtocol(rawValue: guest.bootProtocol) ?? .auto))
                bootSummary = plan.summary
            } catch { fail("\(error)") }
        }

        // Host console input goes to every device that takes it (the UART's receive FIFO).
        let inputDevices = keep.filter { $0.takesConsoleInput }
        if !inputDevices.isEmpty {
            let reader = Thread {
                var buf = [UInt8](repeating: 0, count: 256)
                while true {
                    let n = buf.withUnsafeMutableBytes { Glibc.read(0, $0.baseAddress, $0.count) }
                    if n <= 0 { break }
                    for d in inputDevices { d.consoleInput(Array(buf[0..<n])) }
                }
            }
            reader.name = "console-input"
            reader.start()
        }

        // Ctrl-C stops the VM cleanly.
        signal(SIGINT, SIG_IGN)
        let sigint = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
        sigint.setEventHandler { machine.requestStop(.requested("interrupted (SIGINT)")) }
        sigint.resume()

        logger.info("booting \(guest.image) (\(bootSummary)) on \(cfg.totalVCPUs) vCPU(s), \(cfg.memoryBytes) bytes")
        let started = monotonicNanoseconds()
        let stop = machine.run(timeout: timeout)
        let elapsed = Double(monotonicNanoseconds() - started) / 1e9
        machine.shutdownDevices()
        // Stop order: no vCPU runs any more; stop the fault handlers, then the protocol.
        guestMemory?.stop()
        coherence?.stop()
        withExtendedLifetime(keepMemory) {}
        if stats {
            var lines = ["run time: \(String(format: "%.3f", elapsed)) s"]
            for (i, c) in machine.exitCounts.sorted(by: { $0.key < $1.key }) {
                lines.append("vCPU \(i) exits: " + c.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
            }
            lines.append("interrupt messages delivered: \(machine.router.deliveredCount)")
            lines.append("guest memory: \(memory == "uffd" ? "userfaultfd + \(cfg.coherence.plugin)" : "anonymous mapping")")
            lines.append(metrics.snapshot().table(title: "device counters"))
            if case .requested = stop { lines.append(machine.registerDumps()) }
            FileHandle.standardError.write(Data((lines.joined(separator: "\n") + "\n").utf8))
        }
        switch stop {
        case let .guestExit(status, reason):
            let (code, message) = RunExitStatus.forGuest(status: status)
            FileHandle.standardError.write(Data("giantvm: \(message) [\(reason)]\n".utf8))
            Foundation.exit(code)
        case let .failure(text):
            fail("VM stopped: \(text)", code: RunExitStatus.machineFailure)
        case let .requested(reason):
            let code = reason.hasPrefix("timed out") ? RunExitStatus.timeout : RunExitStatus.interrupted
            fail("VM stopped: \(reason)", code: code)
        }
    }
}
