// `giantvm run --config F`: the VM of a one-node config, in this process (NodeAssembly's VMNode,
// the one-node case of the same assembly every `giantvm node` uses).
import ArgumentParser
import Config
import Foundation
import Glibc
import Machine
import Metrics
import NodeAssembly
import PluginHost

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the VM of a one-node config in this process.",
        discussion: """
            Loads the device plugins the config places on the node, boots the guest image (ELF64, \
            entered in 64-bit mode on vCPU 0 per the entry contract; multiboot; Linux), prints the \
            UART output and each result line (as {"result":...}) on stdout, and exits when the \
            guest does.
            Exit status: 0 when the guest writes 0 to isa-debug-exit (status 1); 32+v when it \
            writes v != 0 (127 for v >= 95); 3 when it asks for a reset; 2 when a vCPU fails \
            (triple fault, emulation failure, KVM error) or a plugin calls fatal; 124 on \
            --timeout; 130 on Ctrl-C; 1 for config/plugin/image errors.
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

    func validate() throws {
        if let timeout { try checkSeconds(timeout, option: "--timeout") }
    }

    func run() throws {
        let logger = global.bootstrapLogging()
        guard memory == "uffd" || memory == "anonymous" else { fail("--memory '\(memory)' is not one of uffd, anonymous") }
        let cfg: ClusterConfig
        do { cfg = try ConfigLoader.load(path: config) } catch { fail("\(error)") }
        guard cfg.nodes.count == 1 else {
            fail("\(config): `giantvm run` runs a one-node VM; this config has \(cfg.nodes.count) nodes")
        }
        var options = VMOptions()
        options.timeout = timeout
        options.cmdline = cmdline
        options.coherentMemory = memory == "uffd"
        options.consoleInput = true
        let vm: VMNode
        do {
            vm = try VMNode(config: cfg, id: 0, loader: PluginLoader(searchPath: PluginLoader.defaultSearchPath(config: cfg)),
                            logger: logger, options: options, say: say)
        } catch {
            fail("\(error)")
        }
        // Ctrl-C and SIGTERM stop the VM cleanly.
        let signals = SignalWaiter.blockTerminationSignals()
        signals.start { vm.stop(.signal($0)) }
        logger.info("booting \(vm.image.path) on \(cfg.totalVCPUs) vCPU(s), \(cfg.memoryBytes) bytes")
        let outcome = vm.run()
        if stats { printStats(vm, outcome) }
        let cause = outcome.cause ?? .finished(outcome.message)
        switch cause {
        case .guestExit:
            FileHandle.standardError.write(Data("giantvm: \(cause)\n".utf8))
            Glibc.exit(cause.exitStatus)
        case let .vcpuFailure(_, text):
            fail("VM stopped: \(text)", code: cause.exitStatus)
        default:
            fail("VM stopped: \(cause)", code: StopCause.processStatus(outcome.status))
        }
    }

    private func printStats(_ vm: VMNode, _ outcome: NodeOutcome) {
        let machine = vm.machine
        var lines = ["run time: \(String(format: "%.3f", outcome.elapsed)) s"]
        for (i, c) in machine.exitCounts.sorted(by: { $0.key < $1.key }) {
            lines.append("vCPU \(i) exits: " + c.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
        }
        lines.append("interrupt messages delivered: \(machine.router.deliveredCount)")
        lines.append("guest memory: \(vm.coherence.map { "userfaultfd + \($0.pluginName)" } ?? "anonymous mapping")")
        lines.append(vm.metrics.snapshot().table(title: "device counters"))
        if case .signal? = outcome.cause { lines.append(machine.registerDumps()) }
        if case .timeout? = outcome.cause { lines.append(machine.registerDumps()) }
        FileHandle.standardError.write(Data((lines.joined(separator: "\n") + "\n").utf8))
    }
}
