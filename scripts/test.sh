#!/usr/bin/env bash
# Sets up a fresh machine (scripts/setup.sh), then runs every test.
# Tests that need /dev/kvm, root or network namespaces skip with a message where those are missing.
# Extra arguments go to `swift test` (e.g. --filter ConfigTests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The guest is also checked under QEMU TCG (a reference machine); those tests skip without it.
if ! command -v qemu-system-x86_64 >/dev/null; then
    echo "== installing qemu-system-x86 (reference runs of the test guest)"
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    ($SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq qemu-system-x86 >/dev/null) \
        || echo "warning: could not install qemu-system-x86; the QEMU reference tests will skip"
fi
# A stock Debian kernel for the Linux boot-protocol test (its vmlinux is extracted by the test).
if ! ls /boot/vmlinuz-* >/dev/null 2>&1; then
    echo "== installing linux-image-cloud-amd64 (stock kernel for the Linux boot test)"
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    ($SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends linux-image-cloud-amd64 >/dev/null) \
        || echo "warning: could not install linux-image-cloud-amd64; the Linux boot test will skip"
fi
echo "== swift build --build-tests"
# Quiet, but with swift build's own exit status: never test stale products after a failed build.
set +e
swift build --build-tests 2>&1 | grep --line-buffered -vE '^\[[0-9]+/[0-9]+\] (Compiling|Emitting|Linking|Write|Planning|Wrapping)'
build_status=${PIPESTATUS[0]}
set -e
if [ "$build_status" -ne 0 ]; then echo "test: swift build --build-tests failed (exit $build_status)" >&2; exit "$build_status"; fi
echo "== swift test"
log=$(mktemp)
set +e
swift test --skip-build --disable-swift-testing "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One plain closing line: the XCTest totals (the last "Executed" line is the grand total).
total=$(grep -E '^[[:space:]]*Executed [0-9]+ tests?' "$log" | tail -1 || true)
rm -f "$log"
if [ -n "$total" ]; then
    n=$(sed -E 's/.*Executed ([0-9]+) tests?.*/\1/' <<<"$total")
    failed=$(sed -E 's/.* ([0-9]+) failures?.*/\1/' <<<"$total")
    skipped=0
    if grep -qE 'skipped' <<<"$total"; then skipped=$(sed -E 's/.*with ([0-9]+) tests? skipped.*/\1/' <<<"$total"); fi
    echo "tests: $((n - failed - skipped)) passed, $failed failed, $skipped skipped"
fi
exit "$status"
