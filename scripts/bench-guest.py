#!/usr/bin/env python3
"""Guest benchmarks of one VM over nodes (GiantVM paper section 5: sysbench memory/mutex and
stress-ng cpu, here the test guest's `memory`, `mutex`, `cpu` workloads).

Topologies: 1 node x 2 vCPUs, 2 nodes x 1 vCPU, 2 nodes x 2 vCPUs (all through `giantvm up`
with dsm-ivy over transport-tcp on loopback), and the floor measured in the same run: the same
guest on 1 node x 2 vCPUs through `giantvm run --memory anonymous` (plain RAM, no DSM, no
userfaultfd). Each case runs --reps times; the median and min/max are printed beside the DSM
stats (per node, summed over nodes) of the median run.

    python3 scripts/bench-guest.py [--reps 3] [--quick]
"""
import argparse, json, os, re, statistics, subprocess, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GVM = os.path.join(ROOT, ".build/debug/giantvm")
IMAGE = os.path.join(ROOT, "Guests/build/testguest.elf")
PORT = 20600

WORKLOADS = {
    "memory": "memory total=32",
    "mutex": "mutex ops=100000",
    "cpu": "cpu events=40 prime=10000",
}


def config(nodes, vcpus, port):
    lines = ["cluster: bench", "nodes:"]
    for i in range(nodes):
        lines.append(f"  - {{id: {i}, address: 127.0.0.1, port: {port + i}, vcpus: {vcpus}}}")
    lines += [
        "memory: 64MiB",
        "transport: {plugin: transport-tcp}",
        "coherence: {plugin: dsm-ivy}",
        "devices:",
        "  - {name: com1, model: uart16550, node: 0, base: 0x3f8, irq: 4}",
        "  - {name: exit, model: isa-debug-exit, node: 0, base: 0xf4}",
        "  - {name: results, model: results, node: 0, base: 0xe0}",
        "ioapic_node: 0",
        "timeouts: {connect: 10s, heartbeat: 200ms, failure: 3s}",
        f"guest: {{image: {IMAGE}, cmdline: hello}}",
    ]
    f = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    f.write("\n".join(lines) + "\n")
    f.close()
    return f.name


def figures(result):
    """(name, value, unit) figures of one RESULT object."""
    w = result["workload"]
    if w == "memory":
        return [(f'{c["block"] // 1024}K-{c["scope"]}-{c["op"]}', c["mib_s"], "MiB/s") for c in result["cases"]]
    if w == "mutex":
        return [(f'{c["locks"]}-lock', c["ops_per_s"], "ops/s") for c in result["cases"]]
    if w == "cpu":
        return [("events", result["events_per_s"], "events/s")]
    return []


def run_case(cmd, cmdline):
    p = subprocess.run(cmd + ["--cmdline", cmdline] if "up" in cmd else cmd + ["--cmdline", cmdline],
                       capture_output=True, text=True, timeout=180)
    out = p.stdout
    m = re.search(r"RESULT (\{.*\})", out)
    if p.returncode != 0 or not m:
        raise RuntimeError(f"{' '.join(cmd)} --cmdline '{cmdline}' failed ({p.returncode}):\n{out}\n{p.stderr[-2000:]}")
    result = json.loads(m.group(1))
    if not result.get("ok"):
        raise RuntimeError(f"guest reported ok=false: {m.group(1)}")
    stats = {}
    for node, body in re.findall(r"node (\d+): DSM stats: (.*)", out):
        stats[int(node)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", body)}
    return result, stats


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="one repetition, for a smoke run")
    a = ap.parse_args()
    reps = 1 if a.quick else a.reps
    for f in (GVM, IMAGE):
        if not os.path.exists(f):
            sys.exit(f"bench-guest: {f} is missing (swift build; make -C Guests)")
    cores = os.cpu_count()
    print(f"== guest benchmarks: host has {cores} cores; every node and vCPU of a case shares them; "
          f"{reps} run(s) per case, median [min-max]")
    anon = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    anon.write(open(config(1, 2, PORT)).read().replace("dsm-ivy", "dsm-local"))
    anon.close()
    topologies = [
        ("floor: 1 node x 2 vCPUs, plain RAM (giantvm run --memory anonymous)",
         [GVM, "run", "--config", anon.name, "--memory", "anonymous", "--timeout", "150"]),
        ("1 node x 2 vCPUs (dsm-ivy, userfaultfd)", [GVM, "up", config(1, 2, PORT + 10), "--timeout", "150"]),
        ("2 nodes x 1 vCPU (dsm-ivy over TCP loopback)", [GVM, "up", config(2, 1, PORT + 20), "--timeout", "150"]),
        ("2 nodes x 2 vCPUs (dsm-ivy over TCP loopback)", [GVM, "up", config(2, 2, PORT + 30), "--timeout", "150"]),
    ]
    for wname, cmdline in WORKLOADS.items():
        print(f"\n-- {wname}: guest command line '{cmdline}'")
        for title, cmd in topologies:
            runs = [run_case(cmd, cmdline) for _ in range(reps)]
            figs = [figures(r) for r, _ in runs]
            names = [n for n, _, _ in figs[0]]
            print(f"  {title}")
            # Median run by the first figure, for its DSM stats.
            order = sorted(range(reps), key=lambda i: figs[i][0][1])
            med = order[len(order) // 2]
            for j, n in enumerate(names):
                vals = [f[j][1] for f in figs]
                unit = figs[0][j][2]
                print(f"    {n:<20} {statistics.median(vals):>12.1f} {unit:<9} [{min(vals):.1f}-{max(vals):.1f}]")
            stats = runs[med][1]
            if stats:
                keys = ["read_miss", "write_miss", "upgrade", "pages_sent", "invalidations_sent"]
                for node in sorted(stats):
                    print(f"    DSM node {node}: " + " ".join(f"{k}={stats[node].get(k, 0)}" for k in keys))
            else:
                print("    DSM: none (plain RAM)")


if __name__ == "__main__":
    main()
