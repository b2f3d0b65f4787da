#!/usr/bin/env bash
# virtio tests (Tests/CLITests/VirtioVMTests.swift): the TAP backend runs in a network namespace
# (`ip`, iproute2) with a packet-socket echo peer (python3); /dev/net/tun must exist.
set -euo pipefail
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}"
fi
if [ ! -e /dev/net/tun ] && [ "$(id -u)" = 0 ]; then
    mkdir -p /dev/net
    mknod /dev/net/tun c 10 200 2>/dev/null || true
    chmod 666 /dev/net/tun 2>/dev/null || true
fi
