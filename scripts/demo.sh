#!/usr/bin/env bash
# Sets up a fresh machine and runs the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
GVM=.build/debug/giantvm
echo "== giantvm validate examples/cluster-3node.yaml"
$GVM validate examples/cluster-3node.yaml
echo "== giantvm plugins list --config examples/cluster-3node.yaml"
$GVM plugins list --config examples/cluster-3node.yaml
echo "== giantvm up examples/cluster-3node.yaml --duration 3   (3 nodes meet, traffic on every channel, clean stop)"
$GVM up examples/cluster-3node.yaml --duration 3
echo "== giantvm run --config examples/vm-1node.yaml   (the test guest on 1 node x 2 vCPUs, memory over userfaultfd)"
$GVM run --config examples/vm-1node.yaml --timeout 60 </dev/null
$GVM run --config examples/vm-1node.yaml --cmdline "counter iters=20000" --timeout 60 </dev/null

# One VM over two node processes (2 nodes x 2 vCPUs, dsm-ivy over transport-tcp on loopback):
# every vCPU says hello through the one UART (node 0), IPIs and a shared counter across nodes
# give exact results, the guest powers off through the exit device; each node prints its DSM
# stats. Every run is bounded (--timeout; `timeout` as a backstop).
for cmd in "hello" "ipi ipis=20" "counter iters=2000"; do
    echo "== giantvm up examples/vm-2node.yaml --cmdline \"$cmd\""
    timeout 90 $GVM up examples/vm-2node.yaml --timeout 60 --cmdline "$cmd"
done
