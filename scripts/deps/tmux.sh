#!/usr/bin/env bash
# Live metrics tests: `curl` reads a node's Prometheus endpoint, `giantvm top` runs under tmux.
set -euo pipefail
need=()
command -v tmux >/dev/null || need+=(tmux)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}"
fi
