#!/usr/bin/env bash
# Guests/test-qemu.sh - boot every workload of the test guest under QEMU TCG
# and assert its RESULT line exactly. Needs qemu-system-x86_64 and python3.
#   Guests/test-qemu.sh              build (make -C Guests) and run all cases
#   Guests/test-qemu.sh counter      run only the cases whose name contains "counter"
#   Guests/test-qemu.sh --kvm-smoke  the same cases on /dev/kvm through the
#                                    minimal runner build/kvm-smoke (GiantVM entry path)
# QEMU's exit status is (v << 1) | 1 for a guest write of v to port 0xf4, so
# a passing guest (v = 0) makes QEMU exit 1; kvm-smoke exits with v itself.
set -u
here=$(cd "$(dirname "$0")" && pwd)
elf=$here/build/testguest.elf
mode=qemu
if [[ ${1:-} == --kvm-smoke ]]; then mode=kvm; shift; fi
filter=${1:-}
qemu=${QEMU:-qemu-system-x86_64}
timeout_s=${TIMEOUT:-180}

command -v python3 >/dev/null || { echo "test-qemu: python3 not found" >&2; exit 2; }
make -s -C "$here" || { echo "test-qemu: build failed" >&2; exit 2; }
if [[ $mode == qemu ]]; then
    command -v "$qemu" >/dev/null || { echo "test-qemu: $qemu not found (apt-get install qemu-system-x86)" >&2; exit 2; }
else
    [[ -w /dev/kvm ]] || { echo "test-qemu: /dev/kvm not usable" >&2; exit 2; }
    make -s -C "$here" kvm-smoke || { echo "test-qemu: kvm-smoke build failed" >&2; exit 2; }
fi

pass=0; failed=0; failures=()
logdir=$(mktemp -d /tmp/guest-test.XXXXXX)

# run NAME SMP GUEST_EXIT_VALUE CMDLINE CHECK_PY
# CHECK_PY is a python expression over r (the RESULT object), out (whole
# serial output) and n (vCPUs); it must be true.
run() {
    local name=$1 smp=$2 want=$3 cmdline=$4 check=$5
    [[ -n $filter && $name != *"$filter"* ]] && return
    local log=$logdir/$name.log start=$SECONDS
    local nresults=1
    if [[ $want == shutdown ]]; then      # triple fault: no RESULT, runner-specific status
        nresults=0
        if [[ $mode == qemu ]]; then want=0; else want=102; fi
    fi
    if [[ $mode == qemu ]]; then
        [[ $nresults == 0 ]] || want=$(( (want << 1) | 1 ))
        timeout "$timeout_s" "$qemu" -kernel "$elf" -smp "$smp" -m 64 -nographic -no-reboot \
            -device isa-debug-exit,iobase=0xf4,iosize=4 -accel tcg -append "$cmdline" >"$log" 2>&1 </dev/null
    else
        timeout "$timeout_s" "$here/build/kvm-smoke" "$elf" "$cmdline" "$smp" 64 "${NODES:-1}" >"$log" 2>&1 </dev/null
    fi
    local st=$?
    local verdict
    verdict=$(python3 - "$log" "$smp" "$st" "$want" "$check" "$nresults" <<'EOF'
import json, sys
log, n, st, want, check = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
nres = int(sys.argv[6])
out = open(log, 'rb').read().decode('latin1')
lines = [l[len('RESULT '):] for l in out.splitlines() if l.startswith('RESULT ')]
if st != want:
    print(f"exit status {st}, expected {want}"); sys.exit()
if len(lines) != nres:
    print(f"{len(lines)} RESULT lines, expected exactly {nres}"); sys.exit()
if nres == 0:
    lines = ['{}']
try:
    r = json.loads(lines[0])
except Exception as e:
    print(f"RESULT is not JSON ({e}): {lines[0]}"); sys.exit()
try:
    ok = eval(check, {'r': r, 'out': out, 'n': n})
except Exception as e:
    ok = False; print(f"check raised {e!r}", end='; ')
print('PASS' if ok else 'check failed: ' + check + ' on ' + lines[0])
EOF
)
    if [[ $verdict == PASS ]]; then
        pass=$((pass + 1)); echo "PASS $name ($((SECONDS - start)) s)"
    else
        failed=$((failed + 1)); failures+=("$name"); echo "FAIL $name: $verdict (log: $log)"
    fi
}

lit_ok='r["ok"] and r["forbidden"] == 0 and all(sum(t["outcomes"].values()) == t["groups"] * r["trials"] and t["forbidden"] == 0 and t["cross_node"] == 0 for t in r["tests"].values())'
NODES=1

run hello-smp1   1 0 "hello" \
    'r == {"workload":"hello","vcpus":1,"greeted":1,"ticks_min":r["ticks_min"],"ok":True} and r["ticks_min"] >= 2 and "hello from vCPU 0" in out'
run hello        4 0 "hello" \
    'r["ok"] and r["greeted"] == 4 and r["ticks_min"] >= 2 and all(f"hello from vCPU {i}\n" in out.replace("\r", "") for i in range(4))'
run ipi          4 0 "ipi ipis=20" \
    'r["ok"] and r["per_pair"] == 20 and r["expected"] == 240 and r["total"] == 240'
run ipi-smp2     2 0 "ipi ipis=50" \
    'r["ok"] and r["expected"] == 100 and r["total"] == 100'
run counter      4 0 "counter iters=50000" \
    'r["ok"] and r["expected"] == 200000 and r["total"] == 200000'
run counter-default 4 0 "counter" \
    'r["ok"] and r["expected"] == 400000 and r["total"] == 400000'
run litmus       4 0 "litmus trials=200" \
    "$lit_ok"' and r["trials"] == 200 and r["tests"]["MP"]["groups"] == 2 and r["tests"]["IRIW"]["groups"] == 1'
run litmus-smp2  2 0 "litmus trials=200" \
    "$lit_ok"' and r["tests"]["SB"]["groups"] == 1 and r["tests"]["IRIW"]["groups"] == 0'
run memory       4 0 "memory total=8" \
    'r["ok"] and len(r["cases"]) == 8 and all(c["mib_s"] > 0 for c in r["cases"]) and {(c["block"], c["scope"], c["op"]) for c in r["cases"]} == {(b, s, o) for b in (4096, 4194304) for s in ("local", "global") for o in ("read", "write")}'
run mutex        4 0 "mutex ops=5000" \
    'r["ok"] and r["expected"] == 20000 and [c["locks"] for c in r["cases"]] == [1, 16] and all(c["total"] == 20000 and c["ops_per_s"] > 0 for c in r["cases"])'
run cpu          4 0 "cpu events=4" \
    'r["ok"] and r["events"] == 16 and r["primes"] == 1229 and r["bad_events"] == 0 and r["events_per_s"] > 0'
run cpu-prime    4 0 "cpu events=2 prime=100000" \
    'r["ok"] and r["primes"] == 9592'
# failures must be reported, not hang: guest exit value 1
run bad-workload 4 1 "bogus" \
    'not r["ok"] and "unknown workload" in r["error"] and r["workload"] == "bogus"'
run bad-option   4 1 "counter iters=12x" \
    'not r["ok"] and "bad option" in r["error"]'
run empty-cmdline 2 1 "" \
    'not r["ok"] and "empty command line" in r["error"]'
if [[ $mode == kvm ]]; then
    # boot info says 2 nodes (vCPUs 0-1 on node 0, 2-3 on node 1): every litmus group spans both
    NODES=2 run litmus-2nodes 4 0 "litmus trials=100" \
        'r["ok"] and r["forbidden"] == 0 and [t["cross_node"] for t in r["tests"].values()] == [2, 2, 2, 2, 1] and "nodes=2" in out'
fi
# a ring-3 exception is reported by the guest with vCPU and registers: exit value 3
run fault        4 3 "fault" \
    'not r["ok"] and "exception 14 #PF on vCPU 0" in r["error"] and "cr2=0x100000" in r["error"]'
# a triple fault ends the VM without a RESULT (QEMU -no-reboot: status 0; kvm-smoke: 102)
run triplefault  4 shutdown "triplefault" \
    'r == {} and "RESULT" not in out'

if [[ $failed -eq 0 ]]; then
    rm -rf "$logdir"
    echo "test-qemu ($mode): $pass passed, 0 failed"
else
    echo "test-qemu ($mode): $pass passed, $failed failed (logs in $logdir)"
    echo "failed: ${failures[*]}"
    exit 1
fi
