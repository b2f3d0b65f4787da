import ArgumentParser
import Config
import Foundation
import NodeAssembly

struct Migrate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Move a running vCPU to another node (live vCPU migration).",
        discussion: """
            Asks one node's control endpoint (POST /migrate on its metrics listener: the config
            needs a `metrics:` section) to move vCPU N to node M while the guest runs. The vCPU
            stops at its next exit, its registers, FPU/XSAVE, MSRs and local APIC (timer, pending
            interrupts) go to node M and it resumes there; its memory follows through the DSM.
            Prints the answer: the pause (vCPU stopped on the source until the source heard it runs
            on the destination) and the bytes of vCPU state sent. Exit status 0 when it moved (or
            was already there), 1 otherwise. See docs/migration.md.
            """)

    @Argument(help: "The cluster config (YAML) the VM runs from.")
    var config: String

    @Option(name: .long, help: "The vCPU to move (global index).")
    var vcpu: Int

    @Option(name: .long, help: "The node to move it to.")
    var to: UInt32

    @Option(name: .long, help: "The node whose control endpoint takes the request (any node routes it).")
    var via: UInt32 = 0

    @OptionGroup var global: GlobalOptions

    func run() throws {
        _ = global.bootstrapLogging()
        let cfg: ClusterConfig
        do { cfg = try ConfigLoader.load(path: config) } catch { fail("\(error)") }
        do {
            let r = try ControlClient.migrate(config: cfg, vcpu: vcpu, to: to, via: via)
            print(r.answer)
            if !r.ok { throw ExitCode(1) }
        } catch let e as ExitCode {
            throw e
        } catch {
            fail("\(error)")
        }
    }
}
