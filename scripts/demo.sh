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
