#!/bin/bash
# Live vCPU migration pause: runs the test guest's counter on a 2-node VM (loopback TCP) and moves
# vCPU 1 back and forth MOVES times with `giantvm migrate`, then prints the pause median/p90/p99
# over the answers, the bytes of vCPU state, and the guest's result (it must be exact).
# Usage: scripts/bench-migrate.sh [MOVES] [BUILD_DIR]   (after `swift build` and `make -C Guests all`)
set -euo pipefail
moves=${1:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${2:-$root/.build/debug}/giantvm
work=$(mktemp -d)
trap 'kill $(cat $work/pid 2>/dev/null) 2>/dev/null || true; rm -rf $work' EXIT
cat > $work/vm.yaml <<YAML
cluster: migbench
nodes:
  - {id: 0, address: 127.0.0.1, port: 24700, vcpus: 2}
  - {id: 1, address: 127.0.0.1, port: 24701, vcpus: 2}
memory: 32MiB
transport: {plugin: transport-tcp}
coherence: {plugin: dsm-ivy}
devices:
  - {name: com1, model: uart16550, node: 0, base: 0x3f8, irq: 4}
  - {name: exit, model: isa-debug-exit, node: 0, base: 0xf4}
  - {name: results, model: results, node: 0, base: 0xe0}
metrics: {address: 127.0.0.1, port: 24790}
timeouts: {connect: 10s, heartbeat: 100ms, failure: 2s}
guest:
  image: $root/Guests/build/testguest.elf
  cmdline: "counter iters=400000000 timeout=120"
YAML
"$bin" up $work/vm.yaml --timeout 150 > $work/out.txt 2>&1 &
echo $! > $work/pid
for _ in $(seq 300); do grep -q "guest: workload" $work/out.txt && break; sleep 0.1; done
for i in $(seq "$moves"); do
  "$bin" migrate $work/vm.yaml --vcpu 1 --to $((i % 2)) --via $((i % 2)) >> $work/answers.txt || break
done
wait "$(cat $work/pid)" || true
grep "^ok" $work/answers.txt | sed 's/.*pause_ns=\([0-9]*\).*/\1/' | sort -n |
  awk '{a[NR]=$1} END {p=int(NR*0.99); if (p<1) p=1; printf "moves=%d pause_ms: median=%.3f p90=%.3f p99=%.3f max=%.3f\n", NR, a[int((NR+1)/2)]/1e6, a[int(NR*0.9)]/1e6, a[p]/1e6, a[NR]/1e6}'
grep "^ok" $work/answers.txt | head -1 | sed 's/.*\(state_bytes=[0-9]*\).*/\1/'
grep -E "RESULT|migration:" $work/out.txt
