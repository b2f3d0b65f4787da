#!/usr/bin/env python3
"""Data workload benchmark (issue 15; GiantVM paper section 5, Figure 11b): word count (or the
inverted index) over a seeded Zipf text given to the VM as guest.modules, side by side:

  native      Guests/build/wordcount-ref (same algorithm, C -O2, pthreads) with 1 and N threads
  1x2 ...     the test guest on `giantvm up` topologies (nodes x vCPUs per node), transport-tcp on
              loopback, once per --coherence column (by default dsm-ivy and dsm-tso, each with its
              defaults)

with the guest's job time (scan + export + merge, measured by the guest's TSC; the text is
already in guest RAM), the ratio to native with as many threads as the VM has vCPUs, the
whole-command wall time, and each node's DSM statistics (the `node N: DSM stats:` line of the
median run). The guest's DATA line must equal the reference's, or the run counts as failed.

Then the sequential remote read: the test guest's `seqread` on 2 nodes x 1 vCPU (vCPU 0 on node 0
reads what vCPU 1 wrote on node 1: pages/s, MiB/s), once per --coherence column (by default:
dsm-ivy with read-ahead off, dsm-ivy, dsm-tso), beside the transport's own one-way bandwidth
between the same two nodes (`giantvm net-bench`).

Every figure is the median of --reps runs (min-max beside it); the runs are interleaved (every
case once per round, --reps rounds), so a load that comes and goes falls on every case alike. The last lines compare the medians
with issue 15's bars (2x1 at most 1.5x native, 1x2 at most 1.1x; seqread at least 5x the first
sequential-read column's pages/s and at least half the transport's bandwidth).

    python3 scripts/bench-data.py [--size 200M] [--reps 3] [--quick]
        [--topologies 1x2,2x1,2x2,4x1] [--workload wordcount|invindex]
        [--coherence 'ra-off={read_ahead: 0}' --coherence 'tso=dsm-tso:{}' ...]
        [--giantvm .build/release/giantvm] [--json out.json]

--coherence LABEL=[PLUGIN:]SETTINGS (repeatable) names a coherence plugin (dsm-ivy when left out)
and its `settings:` mapping in YAML flow style; each becomes a column set, so the same command
compares e.g. read-ahead off and on, or dsm-ivy and dsm-tso (a setting the plugin does not know
fails that column, with its message). Given once or more, the same columns serve the sequential
read too.
"""
import argparse, json, os, re, shutil, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(ROOT, "Guests/build")
IMAGE = os.path.join(TOOLS, "testguest.elf")
PORT = 20900


def default_giantvm():
    rel, dbg = os.path.join(ROOT, ".build/release/giantvm"), os.path.join(ROOT, ".build/debug/giantvm")
    if os.path.exists(rel) and (not os.path.exists(dbg) or os.path.getmtime(rel) >= os.path.getmtime(dbg)):
        return rel
    return dbg


def config(tmp, name, nodes, vcpus, memory, coherence, text, cmdline):
    lines = [f"cluster: {name}", "nodes:"]
    for i in range(nodes):
        lines.append(f"  - {{id: {i}, address: 127.0.0.1, port: {PORT + i}, vcpus: {vcpus}}}")
    lines += [
        f"memory: {memory}",
        "transport: {plugin: transport-tcp}",
        f"coherence: {coherence}",
        "devices:",
        "  - {name: com1, model: uart16550, node: 0, base: 0x3f8, irq: 4}",
        "  - {name: exit, model: isa-debug-exit, node: 0, base: 0xf4}",
        "  - {name: results, model: results, node: 0, base: 0xe0}",
        "ioapic_node: 0",
        "timeouts: {connect: 20s, heartbeat: 200ms, failure: 5s}",
        "guest:",
        f"  image: {IMAGE}",
        f"  cmdline: \"{cmdline}\"",
    ]
    if text:
        lines.append(f"  modules: [\"{text}\"]")
    path = os.path.join(tmp, name + ".yaml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def run(cmd, timeout):
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout, p.stderr, time.monotonic() - t0
    except subprocess.TimeoutExpired as e:
        return 124, (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or ""), "timed out", time.monotonic() - t0


def node_stats(out):
    """{node: {key: value}} from the `node N: DSM stats: k=v ...` lines."""
    stats = {}
    for m in re.finditer(r"node (\d+): DSM stats: (.*)", out):
        kv = {}
        for w in m.group(2).split():
            if "=" in w:
                k, v = w.split("=", 1)
                try:
                    kv[k] = float(v) if "." in v else int(v)
                except ValueError:
                    pass
        stats[int(m.group(1))] = kv
    return stats


def guest_line(out, prefix):
    for l in out.splitlines():
        l = re.sub(r"^\[node \d+\] ", "", l)
        if l.startswith(prefix):
            return l[len(prefix):]
    return None


def failure(rc, out, err):
    """The most telling line of a failed run: the first error, FAIL or FATAL line, else the last line."""
    text = (out + "\n" + err).splitlines()
    for l in text:
        if "error:" in l or "FAIL" in l or "FATAL" in l or "timed out" in l:
            return re.sub(r"^\[node \d+\] ", "", l).strip()
    return (text or ["?"])[-1].strip()


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def spread(xs, fmt="{:.0f}"):
    return f"{fmt.format(med(xs))} ({fmt.format(min(xs))}-{fmt.format(max(xs))})" if xs else "failed"


def parse_coherence(c):
    """LABEL=[PLUGIN:]SETTINGS -> (label, the YAML flow value of `coherence:`). PLUGIN defaults
    to dsm-ivy; SETTINGS is a YAML flow mapping."""
    if "=" not in c:
        sys.exit(f"--coherence {c!r}: expected LABEL=[PLUGIN:]SETTINGS, e.g. 'ra-off={{read_ahead: 0}}' or 'tso=dsm-tso:{{}}'")
    label, spec = (x.strip() for x in c.split("=", 1))
    plugin = "dsm-ivy"
    m = re.fullmatch(r"([A-Za-z0-9_.-]+):(.*)", spec)
    if m:
        plugin, spec = m.group(1), m.group(2).strip()
    if not label:
        sys.exit(f"--coherence {c!r}: the label is empty")
    return label, f"{{plugin: {plugin}, settings: {spec or '{}'}}}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="200M", help="text size for zipf-text (default 200M)")
    ap.add_argument("--seed", default="1")
    ap.add_argument("--text", help="use this text file instead of generating one")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="16M text, 1 rep, 1x2 and 2x1 only (a smoke run)")
    ap.add_argument("--topologies", default="1x2,2x1,2x2,4x1")
    ap.add_argument("--workload", default="wordcount", choices=["wordcount", "invindex"])
    ap.add_argument("--memory", default="2GiB", help="guest RAM (at most 3GiB)")
    ap.add_argument("--coherence", action="append", metavar="LABEL=[PLUGIN:]SETTINGS",
                    help="a coherence column: dsm-ivy settings, e.g. 'ra-off={read_ahead: 0}', or another plugin's, "
                         "e.g. 'tso=dsm-tso:{}' (default: dsm-ivy and dsm-tso with their defaults; for the "
                         "sequential read also dsm-ivy with read_ahead 0 first)")
    ap.add_argument("--seqread-mib", type=int, default=64)
    ap.add_argument("--no-seqread", action="store_true", help="skip the sequential remote read and net-bench")
    ap.add_argument("--seqread-only", action="store_true", help="only the sequential remote read and net-bench")
    ap.add_argument("--giantvm", default=default_giantvm())
    ap.add_argument("--json", help="also write every figure here")
    a = ap.parse_args()
    if a.quick:
        a.size, a.reps, a.topologies = "16M", 1, "1x2,2x1"
    if not 1 <= a.reps <= 50:
        sys.exit("--reps must be 1..50")
    coh = [parse_coherence(c) for c in a.coherence] if a.coherence else \
        [parse_coherence("dsm-ivy={}"), parse_coherence("dsm-tso=dsm-tso:{}")]
    seq_coh = coh if a.coherence else [parse_coherence("ivy-ra-off={read_ahead: 0}")] + coh
    topo = []
    for t in a.topologies.split(","):
        m = re.fullmatch(r"(\d+)x(\d+)", t.strip())
        if not m or not (1 <= int(m.group(1)) <= 8 and 1 <= int(m.group(2)) <= 8):
            sys.exit(f"--topologies: {t!r} is not NODESxVCPUS (1-8 each)")
        topo.append((int(m.group(1)), int(m.group(2))))
    for f in (a.giantvm, IMAGE, os.path.join(TOOLS, "wordcount-ref"), os.path.join(TOOLS, "zipf-text")):
        if not os.path.exists(f):
            sys.exit(f"missing {f}: run `make -C Guests` and `swift build`")

    tmp = tempfile.mkdtemp(prefix="bench-data-")
    try:
        report = bench(a, coh, seq_coh, topo, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1)


def bench(a, coh, seq_coh, topo, tmp):
    """Every case runs once per round, rounds repeated --reps times (A/B interleaved: a load that
    comes and goes on a shared host falls on every case alike)."""
    if a.seqread_only:
        print(f"bench-data: seqread {a.seqread_mib} MiB, {a.reps} run(s) each, interleaved, giantvm {os.path.relpath(a.giantvm, ROOT)}")
        return seqread(a, seq_coh, tmp, {"workload": "seqread", "reps": a.reps, "native": {}, "vm": [], "seqread": []})
    text = a.text
    if not text:
        text = os.path.join(tmp, "text.txt")
        subprocess.run([os.path.join(TOOLS, "zipf-text"), "--size", a.size, "--seed", a.seed, "-o", text], check=True)
    size = os.path.getsize(text)
    print(f"bench-data: {a.workload} over {size / 2**20:.1f} MiB of Zipf text (seed {a.seed}), {a.reps} run(s) each, "
          f"interleaved, giantvm {os.path.relpath(a.giantvm, ROOT)}, guest RAM {a.memory}", flush=True)
    report = {"workload": a.workload, "bytes": size, "reps": a.reps, "native": {}, "vm": [], "seqread": []}

    # Native reference (1 thread and every vCPU count of the topologies) and the VM cases.
    threads = sorted({1} | {n * v for n, v in topo})
    native = {th: [] for th in threads}
    vm = [(n, v, label, settings, config(tmp, f"data{n}x{v}-{i}", n, v, a.memory, settings, text, a.workload))
          for n, v in topo for i, (label, settings) in enumerate(coh)]
    vm_runs = {k: [] for k in range(len(vm))}
    ref_line = None
    for rep in range(a.reps):
        for th in threads:
            args = [os.path.join(TOOLS, "wordcount-ref"), "--threads", str(th), text]
            if a.workload == "invindex":
                args.insert(1, "--invindex")
            rc, out, err, _ = run(args, 600)
            m = re.search(r"time_ms=([\d.]+)", err)
            if rc != 0 or not m:
                sys.exit(f"wordcount-ref failed: {err}")
            ref_line = ref_line or out.strip()
            if out.strip() != ref_line:
                sys.exit(f"wordcount-ref with {th} threads printed a different line:\n{out}\n{ref_line}")
            native[th].append(float(m.group(1)))
        for k, (n, v, label, settings, cfg) in enumerate(vm):
            rc, out, err, wall = run([a.giantvm, "up", cfg, "--timeout", "600"], 700)
            res = guest_line(out, "RESULT ")
            dl = next((re.sub(r"^\[node \d+\] ", "", l) for l in out.splitlines() if " DATA " in l or l.startswith("DATA ")), None)
            if rc == 0 and res is not None and dl == ref_line:
                j = json.loads(res)
                vm_runs[k].append({"job_ms": j["job_us"] / 1000, "wall_s": wall, "stats": node_stats(out), "result": j})
                continue
            why = failure(rc, out, err)
            if rc == 0 and dl != ref_line:
                why = f"guest DATA line differs from the reference: {dl}"
            print(f"  {n}x{v} {label}: run failed (status {rc}): {why[:300]}", flush=True)
            vm_runs[k].append(None)
    report["native"] = native
    print(f"reference: {ref_line[:160]}...")
    print()
    hdr = f"{'case':<14}{'settings':<22}{'job ms':<22}{'x native':<10}{'wall s':<8}per-node DSM stats of the median run"
    print(hdr)
    print("-" * len(hdr))
    for th in threads:
        print(f"{'native ' + str(th) + 't':<14}{'-':<22}{spread(native[th]):<22}{'1.00':<10}{'-':<8}")
    for k, (n, v, label, settings, _) in enumerate(vm):
        runs = vm_runs[k]
        good = [r for r in runs if r]
        jobs = [r["job_ms"] for r in good]
        ratio = med(jobs) / med(native[n * v]) if jobs else float("nan")
        stats = ""
        if good:
            mid = sorted(good, key=lambda r: r["job_ms"])[len(good) // 2]
            stats = "; ".join(f"n{i}: rm={s.get('read_miss', 0)} wm={s.get('write_miss', 0)} sent={s.get('pages_sent', 0)} "
                              f"p50={s.get('fault_p50_us', 0)}us" for i, s in sorted(mid["stats"].items()))
        walls = [r["wall_s"] for r in good]
        print(f"{f'{n}x{v}':<14}{label:<22}{spread(jobs):<22}{ratio:<10.2f}{med(walls) if walls else float('nan'):<8.1f}{stats}", flush=True)
        report["vm"].append({"topology": f"{n}x{v}", "coherence": label, "settings": settings, "runs": runs,
                             "job_ms_median": med(jobs) if jobs else None, "ratio_to_native": ratio if jobs else None})
    if a.no_seqread:
        targets(report, [])
        return report
    return seqread(a, seq_coh, tmp, report)


def seqread(a, coh, tmp, report):
    """The sequential remote read beside the transport's bandwidth between the same two nodes."""
    print()
    bench_cfg = config(tmp, "seq2x1", 2, 1, a.memory, "{plugin: dsm-ivy}", None, "hello")
    seq_cfgs = [config(tmp, f"seq2x1-{i}", 2, 1, a.memory, settings, None, f"seqread total={a.seqread_mib}")
                for i, (_, settings) in enumerate(coh)]
    bw, pps, mibs = [], [[] for _ in coh], [[] for _ in coh]
    for rep in range(a.reps):
        rc, out, err, _ = run([a.giantvm, "net-bench", bench_cfg, "--megabytes", "64", "--round-trips", "200"], 300)
        m = re.search(r"node 0 -> 1\s+bandwidth ([\d.]+) MiB/s", out + err)
        if m:
            bw.append(float(m.group(1)))
        for i, (label, _) in enumerate(coh):
            rc, out, err, _ = run([a.giantvm, "up", seq_cfgs[i], "--timeout", "300"], 400)
            res = guest_line(out, "RESULT ")
            if rc != 0 or not res:
                print(f"  seqread {label}: run failed (status {rc}): {failure(rc, out, err)[:300]}")
                continue
            j = json.loads(res)
            pps[i].append(j["pages_per_s"])
            mibs[i].append(j["mib_s"])
    print(f"{'seqread 2x1':<14}{'transport':<22}{'-':<22}{'-':<10}{'-':<8}net-bench node 0 -> 1: {spread(bw, '{:.1f}')} MiB/s")
    report["transport_mib_s"] = bw
    for i, (label, settings) in enumerate(coh):
        frac = med(mibs[i]) / med(bw) if mibs[i] and bw else float("nan")
        print(f"{'seqread 2x1':<14}{label:<22}{spread(pps[i]) + ' pages/s':<32}{spread(mibs[i], '{:.1f}')} MiB/s = {frac:.2f} of the transport")
        report["seqread"].append({"coherence": label, "settings": settings, "pages_per_s": pps[i], "mib_s": mibs[i]})
    targets(report, bw)
    return report


def targets(report, bw):
    """Issue 15's bars against this run's medians (the first --coherence column is the baseline
    for the read-ahead speed-up)."""
    print()
    print("issue 15 targets (medians of this run):")
    for v in report["vm"]:
        bar = {"2x1": 1.5, "1x2": 1.1}.get(v["topology"])
        if bar and v["ratio_to_native"] is not None:
            r = v["ratio_to_native"]
            print(f"  {v['topology']} {v['coherence']}: {r:.2f}x native with as many threads (at most {bar}x): {'met' if r <= bar else 'not met'}")
    seq = [x for x in report["seqread"] if x["pages_per_s"]]
    if seq:
        base = med(seq[0]["pages_per_s"])
        for x in seq:
            up = med(x["pages_per_s"]) / base if base else float("nan")
            frac = med(x["mib_s"]) / med(bw) if bw else float("nan")
            print(f"  seqread {x['coherence']}: {up:.2f}x the pages/s of {seq[0]['coherence']} (at least 5x), "
                  f"{frac:.2f} of the transport's bandwidth (at least 0.5)")


if __name__ == "__main__":
    main()
