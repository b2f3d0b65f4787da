// `giantvm node --config F --id N` for a config with `guest:`: this node's part of one VM
// spread over every node of the config (Sources/Distributed).

import Metrics
import Cluster
import Config
import Distributed
import Foundation
import Glibc
import Logging
import PluginHost

extension NodeCommand {
    /// Runs the VM node and exits the process with its status (never returns).
    func runVMNode(config cfg: ClusterConfig, loader: PluginLoader, logger: Logger, signals: SignalWaiter) -> Never {
        var options = DistributedOptions()
        options.timeout = timeout
        options.cmdline = cmdline
        options.tscSkew = tscSkew
        options.timeSync = !noTimeSync
        options.deviceSettings = { FirmwareDeviceSettings.fill(model: $0, settings: $1, vcpus: $2, memoryBytes: $3, cmdline: $4) }
        let vm: DistributedVM
        do {
            vm = try DistributedVM(config: cfg, id: id, loader: loader, logger: logger, options: options,
                                   guestStatus: { RunExitStatus.forGuest(status: $0) }, say: say)
        } catch {
            fail("node \(id): \(error)")
        }
        let node = vm.node
        signals.start { sig in
            node.stop(reason: "interrupted by signal \(sig)", status: 128 + sig)
        }
        if let duration {
            _ = try? OSThread(name: "duration") {
                let deadline = monotonicNanoseconds() + UInt64(duration * 1e9)
                while monotonicNanoseconds() < deadline && node.stopReason == nil { usleep(20_000) }
                node.stop(reason: "finished after --duration \(duration) s")
            }
        }
        let outcome = vm.run()
        if stats {
            FileHandle.standardError.write(Data((vm.metrics.snapshot().table(title: "node \(id) counters") + "\n").utf8))
        }
        if outcome.status == 0 {
            say("node \(id): stopped cleanly: \(outcome.message)")
            Glibc.exit(0)
        }
        FileHandle.standardError.write(Data("giantvm: error: node \(id): \(outcome.message)\n".utf8))
        Glibc.exit(outcome.status > 0 && outcome.status < 256 ? outcome.status : 1)
    }
}
