import Foundation
import Launch
import XCTest

/// `--id auto` decisions with an injected environment, interface list and resolver (no launcher).
final class NodeIdentityTests: XCTestCase {
    private let two = [NodeAddress(id: 0, address: "10.0.0.1"), NodeAddress(id: 1, address: "10.0.0.2")]
    private let loopbackPair = [NodeAddress(id: 0, address: "127.0.0.1"), NodeAddress(id: 1, address: "127.0.0.1")]
    private let lo = LocalAddress(interface: "lo", address: "127.0.0.1")

    /// Resolves literals to themselves and names through `names`.
    private func resolver(_ names: [String: [String]] = [:]) -> (String) -> Result<[String], NodeIdentityError> {
        { host in
            if let a = names[host] { return .success(a) }
            if host.allSatisfy({ $0.isNumber || $0 == "." || $0 == ":" }) { return .success([host]) }
            return .failure(NodeIdentityError("Name or service not known"))
        }
    }

    private func resolve(_ request: NodeIDRequest = .auto, nodes: [NodeAddress]? = nil, env: [String: String],
                         local: [LocalAddress]? = nil, names: [String: [String]] = [:]) throws -> NodeIdentity {
        try NodeIdentity.resolve(request, nodes: nodes ?? two, configName: "vm.yaml", environment: env,
                                 localAddresses: {
                                     guard let local else {
                                         XCTFail("the local addresses must not be read when a launcher rank decides")
                                         return []
                                     }
                                     return local
                                 }, resolve: resolver(names))
    }

    /// The error message of a resolution that must fail.
    private func failure(_ request: NodeIDRequest = .auto, nodes: [NodeAddress]? = nil, env: [String: String],
                         local: [LocalAddress]? = nil, names: [String: [String]] = [:],
                         file: StaticString = #filePath, line: UInt = #line) -> String {
        do {
            let id = try resolve(request, nodes: nodes, env: env, local: local, names: names)
            XCTFail("expected an error, resolved \(id)", file: file, line: line)
            return ""
        } catch {
            return "\(error)"
        }
    }

    private func assertMentions(_ message: String, _ parts: [String], file: StaticString = #filePath, line: UInt = #line) {
        for p in parts { XCTAssertTrue(message.contains(p), "'\(p)' missing from: \(message)", file: file, line: line) }
    }

    // MARK: the argument

    func testTheArgumentIsANodeIdOrAuto() {
        XCTAssertEqual(NodeIDRequest(parsing: "auto"), .auto)
        XCTAssertEqual(NodeIDRequest(parsing: "0"), .fixed(0))
        XCTAssertEqual(NodeIDRequest(parsing: "15"), .fixed(15))
        for bad in ["", "-1", "+1", "1x", " 1", "AUTO", "0x1", "4294967296"] {
            XCTAssertNil(NodeIDRequest(parsing: bad), "'\(bad)' must be refused")
        }
    }

    func testAnExplicitIdIsRangeCheckedAndIgnoresTheEnvironment() throws {
        let id = try resolve(.fixed(1), env: ["SLURM_PROCID": "0", "SLURM_STEP_ID": "0"])
        XCTAssertEqual(id, NodeIdentity(id: 1, source: .option))
        assertMentions(failure(.fixed(2), env: [:]), ["vm.yaml", "there is no node 2", "nodes: 0-1"])
    }

    // MARK: Slurm

    func testASlurmTaskTakesItsProcessIdAndItsJobIsNamed() throws {
        let env = ["SLURM_PROCID": "1", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "2", "SLURM_NTASKS": "2",
                   "SLURM_JOB_ID": "42", "SLURMD_NODENAME": "c7"]
        let id = try resolve(env: env)
        XCTAssertEqual(id.id, 1)
        guard case .launcher(let name, let variable, _) = id.source else { return XCTFail("\(id.source)") }
        XCTAssertEqual(name, "Slurm")
        XCTAssertEqual(variable, "SLURM_PROCID")
        assertMentions(id.description, ["node 1", "SLURM_PROCID=1", "process 1 of 2", "job 42 step 0", "on c7"])
        XCTAssertEqual(try resolve(env: env.merging(["SLURM_PROCID": "0"]) { $1 }).id, 0)
    }

    func testTheStepTaskCountWinsOverTheJobs() throws {
        // sbatch -n 4, srun -n 2: the step has the VM's two tasks.
        let env = ["SLURM_PROCID": "1", "SLURM_STEP_ID": "3", "SLURM_STEP_NUM_TASKS": "2", "SLURM_NTASKS": "4"]
        XCTAssertEqual(try resolve(env: env).id, 1)
    }

    func testATaskCountOtherThanTheNodeCountIsAnError() {
        let m = failure(env: ["SLURM_PROCID": "0", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "3"])
        assertMentions(m, ["Slurm started 3 processes", "SLURM_NTASKS=3", "vm.yaml has 2 nodes", "srun -n 2"])
        // The legacy name is read when it is the only one.
        assertMentions(failure(env: ["SLURM_PROCID": "0", "SLURM_STEPID": "0", "SLURM_NPROCS": "1"]),
                       ["Slurm started 1 process ", "SLURM_NPROCS=1"])
    }

    func testTheBatchScriptIsNoTaskOfAStep() {
        // sbatch's script has SLURM_PROCID=0 but no step: every node would be node 0.
        let m = failure(env: ["SLURM_PROCID": "0", "SLURM_JOB_ID": "42", "SLURM_NTASKS": "2"])
        assertMentions(m, ["SLURM_PROCID=0", "SLURM_STEP_ID", "batch script of Slurm job 42",
                           "srun -n 2 giantvm node --config vm.yaml --id auto"])
    }

    func testARankBeyondTheConfigsNodesIsAnError() {
        assertMentions(failure(env: ["SLURM_PROCID": "2", "SLURM_STEP_ID": "0"]),
                       ["SLURM_PROCID=2", "vm.yaml has no node 2", "nodes: 0-1", "srun -n 2"])
        assertMentions(failure(env: ["PMIX_RANK": "5"]), ["PMIX_RANK=5", "PMIx", "no node 5"])
    }

    func testARankThatIsNoNumberIsAnError() {
        for bad in ["x", "-1", "1.0", "99999999999999999999", "2000000"] {
            assertMentions(failure(env: ["SLURM_PROCID": bad, "SLURM_STEP_ID": "0"]),
                           ["SLURM_PROCID='\(bad)' is not a process rank"])
        }
        assertMentions(failure(env: ["PMI_RANK": "0", "PMI_SIZE": "two"]), ["PMI_SIZE='two' is not a process count"])
    }

    // MARK: MPI launchers

    func testOpenMPIAndMPICHRanksAndSizes() throws {
        let ompi = try resolve(env: ["OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2", "PMIX_RANK": "1"])
        XCTAssertEqual(ompi.id, 1)
        guard case .launcher("Open MPI", "OMPI_COMM_WORLD_RANK", _) = ompi.source else { return XCTFail("\(ompi.source)") }
        let hydra = try resolve(env: ["PMI_RANK": "0", "PMI_SIZE": "2"])
        guard case .launcher("MPICH/Hydra (PMI)", "PMI_RANK", _) = hydra.source, hydra.id == 0 else { return XCTFail("\(hydra)") }
        XCTAssertEqual(try resolve(env: ["PMIX_RANK": "1"]).id, 1)
        assertMentions(failure(env: ["OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "4"]),
                       ["Open MPI started 4 processes", "OMPI_COMM_WORLD_SIZE=4", "mpirun -n 2"])
    }

    func testAnMPIRankWinsOverTheSlurmJobItRunsIn() throws {
        // mpirun inside a batch script: the script's SLURM_PROCID=0 is inherited, and so under Open MPI's
        // own srun of its daemons is the daemon's SLURM_PROCID (with a step id).
        XCTAssertEqual(try resolve(env: ["OMPI_COMM_WORLD_RANK": "1", "SLURM_PROCID": "0", "SLURM_JOB_ID": "7"]).id, 1)
        XCTAssertEqual(try resolve(env: ["PMI_RANK": "1", "SLURM_PROCID": "0", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "1"]).id, 1)
    }

    func testMPILaunchersThatDisagreeAreAnError() {
        assertMentions(failure(env: ["OMPI_COMM_WORLD_RANK": "0", "PMIX_RANK": "1"]),
                       ["disagree", "OMPI_COMM_WORLD_RANK=0", "PMIX_RANK=1", "--id N"])
    }

    // MARK: local addresses

    func testWithoutALauncherTheNodeWhoseAddressIsLocalIsChosen() throws {
        let eth0 = LocalAddress(interface: "eth0", address: "10.0.0.2")
        let id = try resolve(env: ["SLURM_PROCID": ""], local: [lo, eth0])
        XCTAssertEqual(id, NodeIdentity(id: 1, source: .localAddress(eth0)))
        assertMentions(id.description, ["node 1", "10.0.0.2", "eth0"])
    }

    func testHostNamesAreResolvedBeforeTheyAreCompared() throws {
        let nodes = [NodeAddress(id: 0, address: "a.cluster"), NodeAddress(id: 1, address: "b.cluster")]
        let local = [lo, LocalAddress(interface: "ib0", address: "fd00::b")]
        let id = try resolve(nodes: nodes, env: [:], local: local,
                             names: ["a.cluster": ["fd00::a", "10.1.0.1"], "b.cluster": ["10.1.0.2", "fd00::b"]])
        XCTAssertEqual(id.id, 1)
        XCTAssertEqual(id.source, .localAddress(LocalAddress(interface: "ib0", address: "fd00::b")))
    }

    func testSeveralLocalNodesAreAmbiguous() {
        let m = failure(nodes: loopbackPair, env: [:], local: [lo])
        assertMentions(m, ["no launcher rank", "OMPI_COMM_WORLD_RANK, PMIX_RANK, PMI_RANK, SLURM_PROCID",
                           "2 nodes of vm.yaml", "node 0 (127.0.0.1 on lo)", "node 1 (127.0.0.1 on lo)", "ambiguous",
                           "--id N"])
    }

    func testNoLocalNodeIsAnErrorNamingWhatWasCompared() {
        let nodes = [NodeAddress(id: 0, address: "10.0.0.1"), NodeAddress(id: 1, address: "gone.cluster")]
        let m = failure(nodes: nodes, env: [:], local: [lo, LocalAddress(interface: "eth0", address: "192.168.5.5")])
        assertMentions(m, ["no node address of vm.yaml is on this host", "node 0 10.0.0.1", "node 1 gone.cluster",
                           "127.0.0.1 on lo", "192.168.5.5 on eth0", "could not resolve node 1 gone.cluster",
                           "Name or service not known"])
    }

    func testInterfacesThatCannotBeListedAreAnError() {
        XCTAssertThrowsError(try NodeIdentity.resolve(.auto, nodes: two, configName: "vm.yaml", environment: [:],
                                                      localAddresses: { throw NodeIdentityError("getifaddrs: no memory") },
                                                      resolve: resolver())) { error in
            assertMentions("\(error)", ["local interfaces cannot be listed", "getifaddrs: no memory"])
        }
    }

    // MARK: this host

    func testThisHostsInterfacesAndResolverAgreeOnLoopback() throws {
        let local = try LocalAddresses.current()
        XCTAssertTrue(local.contains(lo), "lo 127.0.0.1 missing from \(local)")
        XCTAssertEqual(try HostResolver.numericAddresses(of: "127.0.0.1").get(), ["127.0.0.1"])
        XCTAssertEqual(try HostResolver.numericAddresses(of: "0:0:0::1").get(), ["::1"])
        XCTAssertThrowsError(try HostResolver.numericAddresses(of: "no-such-host.invalid").get())
        // 192.0.2.0/24 is for documentation: never a local address.
        let nodes = [NodeAddress(id: 0, address: "192.0.2.10"), NodeAddress(id: 1, address: "127.0.0.1")]
        let id = try NodeIdentity.resolve(.auto, nodes: nodes, configName: "vm.yaml", environment: [:],
                                          localAddresses: LocalAddresses.current, resolve: HostResolver.numericAddresses(of:))
        XCTAssertEqual(id, NodeIdentity(id: 1, source: .localAddress(lo)))
    }
}
