#!/usr/bin/env python3
"""x86-TSO litmus tests across nodes at scale (issue 13): MP, SB, LB, 2+2W and IRIW, at least
--trials trials per test, run by the test guest on `giantvm up` (real node processes, KVM,
userfaultfd, TCP on loopback), in four cases:

  tso-sc       dsm-tso, all memory sc (the `litmus` workload)        zero TSO-forbidden outcomes
  ivy-sc       dsm-ivy, the same                                       zero TSO-forbidden outcomes
  tso-fence    dsm-tso, x and y in relaxed (mw) memory, a fence-port   zero forbidden in MP, SB, LB,
               write where x86 needs mfence (`rlitmus-fence`)          2+2W (IRIW: reported)
  tso-relaxed  dsm-tso, relaxed x and y, no fences (`rlitmus`)         relaxations counted, reported

Trials start on a shared clock (the guest's gap=N option, Guests/src/u_litmus.c): trial t of a
test starts at T0 + t*gap on every member's TSC, so starting a trial moves no page and is no
dsm-tso release point; --gap 0 uses the old group barrier before every trial instead (an sc page
crossing the nodes several times per trial: 100x slower, and a release between trials).

The guest prints a progress line per test ("litmus: MP done: 20000 trials, 0 forbidden, ..."),
relayed here with the elapsed time; the table at the end gives every outcome's count per test.
Exit status 1 when a case that must show no forbidden outcome shows one.

    python3 scripts/litmus-trials.py [--trials 10000] [--gap 200] [--fence-gap 3000] [--shape 2x2]
        [--cases tso-sc,ivy-sc,tso-fence,tso-relaxed] [--giantvm .build/release/giantvm]
        [--port 23600] [--json out.json]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = {
    "tso-sc": ("dsm-tso", "litmus"),
    "ivy-sc": ("dsm-ivy", "litmus"),
    "tso-fence": ("dsm-tso", "rlitmus-fence"),
    "tso-relaxed": ("dsm-tso", "rlitmus"),
}
TESTS = ["MP", "SB", "LB", "2+2W", "IRIW"]
THREADS = {"MP": 2, "SB": 2, "LB": 2, "2+2W": 2, "IRIW": 4}
# outcomes x86-TSO forbids (names as the guest prints them); SB's 00 only with fences
FORBIDDEN = {"MP": {"10"}, "SB": set(), "LB": {"11"}, "2+2W": {"11"}, "IRIW": {"1010"}}


def config(protocol, shape, port, cmdline):
    nodes = "".join(f"  - {{id: {i}, address: 127.0.0.1, port: {port + i}, vcpus: {v}}}\n" for i, v in enumerate(shape))
    image = os.path.join(ROOT, "Guests/build/testguest.elf")
    return f"""cluster: litmus
nodes:
{nodes}memory: 32MiB
transport: {{plugin: transport-tcp}}
coherence: {{plugin: {protocol}}}
devices:
  - {{name: com1, model: uart16550, node: 0, base: 0x3f8, irq: 4}}
  - {{name: exit, model: isa-debug-exit, node: 0, base: 0xf4}}
  - {{name: results, model: results, node: 0, base: 0xe0}}
  - {{name: hints, model: coherence-hint, node: 0, base: 0x580}}
ioapic_node: 0
timeouts: {{connect: 10s, heartbeat: 100ms, failure: 3s}}
guest:
  image: {image}
  cmdline: "{cmdline}"
"""


def run_case(name, args, shape, t_start):
    protocol, workload = CASES[name]
    vcpus = sum(shape)
    groups = {t: vcpus // THREADS[t] for t in TESTS}
    least = min(g for g in groups.values() if g) if any(groups.values()) else 0
    if least == 0:
        sys.exit(f"litmus-trials: shape {args.shape} has fewer than 2 vCPUs")
    per_group = -(-args.trials // least)
    gap = args.fence_gap if workload == "rlitmus-fence" and args.gap else args.gap
    cmd = f"{workload} trials={per_group} gap={gap} timeout=600"
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(config(protocol, shape, args.port, cmd))
        path = f.name
    print(f"== {name}: {protocol}, {workload}, {args.shape}, trials={per_group} per group, gap={gap}us", flush=True)
    p = subprocess.Popen([args.giantvm, "up", path, "--timeout", str(args.timeout)], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    result, tail = None, []
    for line in p.stdout:
        line = line.rstrip("\n")
        tail = (tail + [line])[-40:]
        if " done: " in line and line.startswith("[node 0] "):
            print(f"  [{time.time() - t_start:7.1f}s] {line[9:]}", flush=True)
        elif line.startswith("[node 0] RESULT "):
            result = json.loads(line[len("[node 0] RESULT "):])
    p.wait()
    os.unlink(path)
    if p.returncode != 0 or result is None:
        print("\n".join(tail), file=sys.stderr)
        sys.exit(f"litmus-trials: {name}: giantvm up exited with status {p.returncode}")
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=10000, help="at least this many trials per test (default 10000)")
    ap.add_argument("--gap", type=int, default=200, help="µs between trial starts; 0: a barrier per trial")
    ap.add_argument("--fence-gap", type=int, default=3000,
                    help="µs between trial starts for tso-fence (default 3000: a fence is a port exit and a release "
                         "waited for, about 1 ms; a shorter gap leaves the fenced member always behind, and the trials stop racing)")
    ap.add_argument("--shape", default="2x2", help="NODESxVCPUS (default 2x2)")
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES))
    ap.add_argument("--giantvm", default=None, help="default: .build/release/giantvm if built, else .build/debug")
    ap.add_argument("--port", type=int, default=23600)
    ap.add_argument("--timeout", type=int, default=3600, help="seconds each VM may run")
    ap.add_argument("--json", help="write every case's RESULT here")
    args = ap.parse_args()
    if not 1 <= args.trials <= 1_000_000:
        sys.exit("litmus-trials: --trials must be 1 ... 1000000")
    if not 0 <= args.gap <= 1_000_000 or not 1 <= args.fence_gap <= 1_000_000:
        sys.exit("litmus-trials: --gap must be 0 ... 1000000 and --fence-gap 1 ... 1000000 (µs)")
    try:
        n, v = (int(x) for x in args.shape.lower().split("x"))
        assert 1 <= n <= 8 and 1 <= v <= 8
    except (ValueError, AssertionError):
        sys.exit(f"litmus-trials: --shape {args.shape!r}: expected NODESxVCPUS, 1 ... 8 each")
    shape = [v] * n
    if not args.giantvm:
        rel = os.path.join(ROOT, ".build/release/giantvm")
        args.giantvm = rel if os.path.exists(rel) else os.path.join(ROOT, ".build/debug/giantvm")
    cases = [c for c in args.cases.split(",") if c]
    for c in cases:
        if c not in CASES:
            sys.exit(f"litmus-trials: unknown case {c!r} (expected {', '.join(CASES)})")
    t0 = time.time()
    results, bad = {}, []
    for c in cases:
        t_case = time.time()
        r = run_case(c, args, shape, t0)
        r["wall_s"] = round(time.time() - t_case, 1)
        results[c] = r
    print(f"\n{'case':12} {'test':5} {'trials':>7} {'forbidden':>9} {'late':>7}  outcomes")
    for c, r in results.items():
        fenced = CASES[c][1] == "rlitmus-fence"
        for t in TESTS:
            x = r["tests"].get(t, {})
            outs = x.get("outcomes", {})
            total = sum(outs.values())
            forb = sum(k for o, k in outs.items() if o in FORBIDDEN[t] or (fenced and t == "SB" and o == "00"))
            print(f"{c:12} {t:5} {total:7} {forb:9} {x.get('late', 0):7}  " + " ".join(f"{o}:{k}" for o, k in sorted(outs.items())))
            must_be_zero = c != "tso-relaxed" and not (c == "tso-fence" and t == "IRIW")
            if forb and must_be_zero:
                bad.append(f"{c} {t}: {forb} forbidden")
            if total < args.trials and THREADS[t] <= sum(shape):
                bad.append(f"{c} {t}: only {total} trials")
        print(f"{c:12} wall {r['wall_s']} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if bad:
        print("FAIL: " + "; ".join(bad))
        return 1
    print("PASS: no TSO-forbidden outcome where none is allowed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
