#!/usr/bin/env bash
# Installs what a fresh machine lacks, then builds everything (host, plugins, test guest).
# Idempotent: a second run only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# spin: the model checker for Model/check.sh (the Ivy protocol tables).
for pkg in libibverbs-dev libyaml-dev libffi-dev iproute2 gcc make binutils spin; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "== installing Debian packages: ${need_apt[*]}"
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v swift >/dev/null; then
    echo "setup: no Swift toolchain on PATH (expected Swift 6.x, e.g. /opt/swift/usr/bin)" >&2
    exit 1
fi

echo "== building giantvm and its plugins (swift build)"
# Progress lines are filtered out; the status is swift build's own (PIPESTATUS), not grep's, so a
# failed build stops here instead of leaving stale products for the tests.
set +e
swift build 2>&1 | grep --line-buffered -vE '^\[[0-9]+/[0-9]+\] (Compiling|Emitting|Linking|Write|Planning|Wrapping)'
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then echo "setup: swift build failed (exit $status)" >&2; exit "$status"; fi
test -x .build/debug/giantvm || { echo "setup: swift build succeeded but .build/debug/giantvm is missing" >&2; exit 1; }

if [ -f Guests/Makefile ]; then
    echo "== building the test guest (make -C Guests)"
    make -s -C Guests all kvm-smoke
fi
echo "== setup done: .build/debug/giantvm"
