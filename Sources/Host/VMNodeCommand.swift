// `giantvm node --config F --id N` for a config with `guest:`: this node's part of one VM
// spread over every node of the config (NodeAssembly's VMNode).

import Config
import Foundation
import Glibc
import Logging
import Metrics
import NodeAssembly
import PluginHost

extension NodeCommand {
    /// Runs the VM node and exits the process with its status (never returns).
    func runVMNode(config cfg: ClusterConfig, loader: PluginLoader, logger: Logger, signals: SignalWaiter) -> Never {
        var options = VMOptions()
        options.timeout = timeout
        options.cmdline = cmdline
        options.tscSkew = tscSkew
        options.timeSync = !noTimeSync
        let vm: VMNode
        do {
            vm = try VMNode(config: cfg, id: id, loader: loader, logger: logger, options: options, say: say)
        } catch {
            fail("node \(id): \(error)")
        }
        signals.start { vm.stop(.signal($0)) }
        if let duration { stopAfter(duration) { vm.stop(.finished("finished after --duration \(duration) s")) } }
        let outcome = vm.run()
        say(vm.statsReport(elapsed: outcome.elapsed))
        if let statsOut {
            do { try NodeStatisticsFile(node: Int(id), seconds: outcome.elapsed, registry: vm.metrics).write(to: statsOut) } catch {
                fail("node \(id): cannot write --stats-out \(statsOut): \(error)")
            }
        }
        if stats {
            FileHandle.standardError.write(Data((vm.metrics.snapshot().table(title: "node \(id) counters") + "\n").utf8))
        }
        finish(status: outcome.status, message: outcome.message)
    }
}
