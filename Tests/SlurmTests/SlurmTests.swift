import Foundation
import TestSupport
import XCTest

/// A real Slurm on this machine runs a 2-node VM: `srun -n2 giantvm node --config C --id auto`.
final class SlurmTests: XCTestCase {
    private func requirements() throws {
        try Requirement.root()
        try Requirement.kvm()
        try Requirement.userfaultfd()
        try Requirement.builtGiantVM()
        let guest = Built.packageRoot + "/Guests/build/testguest.elf"
        if !FileManager.default.fileExists(atPath: guest) {
            throw XCTSkip("the test guest is not built at \(guest): run `make -s -C Guests all`")
        }
        try SlurmCluster.requireInstalled()
    }

    /// Lines of srun --label output from task `task` ("0: text" -> "text").
    private func lines(_ output: String, task: Int) -> [String] {
        output.split(separator: "\n").compactMap { line in
            let prefix = "\(task): "
            let trimmed = line.drop { $0 == " " }
            return trimmed.hasPrefix(prefix) ? String(trimmed.dropFirst(prefix.count)) : nil
        }
    }

    func testSrunStartsBothNodesOfAVMWithIdAuto() throws {
        try requirements()
        let started = Date()
        let slurm = try SlurmCluster()
        defer { slurm.stop() }
        let config = vmConfig(port: 23710, cmdline: "hello")
        let work = (config as NSString).deletingLastPathComponent

        // Two tasks on this one machine: the two nodes of the VM (both on 127.0.0.1, ports 23710-23711).
        let r = try TestSupport.run("/usr/bin/srun", ["-N1", "-n2", "--label", "--kill-on-bad-exit=1", "--time=2", "--job-name=giantvm",
                                          Built.giantvm, "node", "--config", config, "--id", "auto", "--timeout", "60"],
                        timeout: 80, environment: slurm.clientEnvironment, directory: work)
        let context = "srun output:\n\(r.output)\n\(r.status == 0 ? "" : slurm.logs())"
        XCTAssertFalse(r.timedOut, context)
        XCTAssertEqual(r.status, 0, "the job must end cleanly: \(context)")
        let task0 = lines(r.output, task: 0), task1 = lines(r.output, task: 1)
        // Each task took its id from SLURM_PROCID, checked against the step's 2 tasks.
        XCTAssertTrue(task0.contains { $0.hasPrefix("node 0: this is node 0 (--id auto: SLURM_PROCID=0 from Slurm, process 0 of 2, job ") },
                      context)
        XCTAssertTrue(task1.contains { $0.hasPrefix("node 1: this is node 1 (--id auto: SLURM_PROCID=1 from Slurm, process 1 of 2, job ") },
                      context)
        XCTAssertTrue(task0.contains { $0.hasPrefix("node 0: stopped cleanly: guest passed") }, context)
        XCTAssertTrue(task1.contains { $0.hasPrefix("node 1: stopped cleanly: node 0 finished: guest passed") }, context)
        // srun returns once every task has ended: no node process is left.
        XCTAssertEqual(livingProcesses(matching: config), [], "giantvm processes left after the job")

        // Three tasks for a 2-node config: every task refuses before starting anything.
        let bad = try TestSupport.run("/usr/bin/srun", ["-N1", "-n3", "--overcommit", "--label", "--time=1",
                                            Built.giantvm, "node", "--config", config, "--id", "auto"],
                          timeout: 30, environment: slurm.clientEnvironment, directory: work)
        XCTAssertNotEqual(bad.status, 0, bad.output)
        XCTAssertTrue(bad.output.contains("--id auto: Slurm started 3 processes (SLURM_STEP_NUM_TASKS=3) but \(config) has 2 nodes"),
                      "srun -n3: \(bad.output)\n\(slurm.logs())")
        XCTAssertEqual(livingProcesses(matching: config), [])

        slurm.stop()
        XCTAssertEqual(livingProcesses(matching: slurm.directory), [], "Slurm daemons left running")
        XCTAssertLessThan(Date().timeIntervalSince(started), 180)
    }

    /// examples/slurm/giantvm.sbatch as a user submits it (its config template, its srun line), on
    /// this one machine: 1 host x 2 tasks instead of its 2 hosts x 1.
    func testTheExampleBatchScriptRunsTheVM() throws {
        try requirements()
        let slurm = try SlurmCluster()
        defer { slurm.stop() }
        let example = Built.packageRoot + "/examples/slurm"
        let output = slurm.directory + "/job.out"
        let env = slurm.clientEnvironment.merging(["GIANTVM": Built.giantvm, "GIANTVM_ADDRESS": "127.0.0.1",
                                                   "GIANTVM_PORT_BASE": "23720", "GIANTVM_ARGS": "--timeout 60"]) { $1 }
        let r = try TestSupport.run("/usr/bin/sbatch", ["--wait", "-N1", "-n2", "--ntasks-per-node=2", "--cpus-per-task=1",
                                                        "--time=2", "-o", output, example + "/giantvm.sbatch"],
                                    timeout: 100, environment: env, directory: Built.packageRoot)
        let job = (try? String(contentsOfFile: output, encoding: .utf8)) ?? "(no job output)"
        let context = "sbatch: \(r.output)\njob output:\n\(job)\n\(r.status == 0 ? "" : slurm.logs())"
        XCTAssertFalse(r.timedOut, context)
        XCTAssertEqual(r.status, 0, "the job must end cleanly: \(context)")
        XCTAssertTrue(job.contains("giantvm.sbatch: job "), context)
        XCTAssertTrue(job.contains("0: node 0: stopped cleanly: guest passed"), context)
        XCTAssertTrue(job.contains("1: node 1: stopped cleanly: node 0 finished: guest passed"), context)
        XCTAssertTrue(job.contains("1: node 1: this is node 1 (--id auto: SLURM_PROCID=1 from Slurm"), context)
        // The job's config is removed when the job ends, and no node is left.
        let leftover = (try FileManager.default.contentsOfDirectory(atPath: example)).filter { $0.hasPrefix("giantvm-job-") }
        XCTAssertEqual(leftover, [], "the job's config must be removed")
        XCTAssertEqual(livingProcesses(matching: "giantvm-job-"), [])
    }
}
