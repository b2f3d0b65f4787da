#!/usr/bin/env bash
# Sets up a fresh machine (scripts/setup.sh), then runs every test.
# Tests that need /dev/kvm, root or network namespaces skip with a message where those are missing.
# Extra arguments go to `swift test` (e.g. --filter ConfigTests); without any, the fuzzers and the
# model check run too (Fuzz/run.sh, Model/check.sh).
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
# What particular tests need (a Slurm, an sshd, a browser...): one script each in scripts/deps/.
for dep in scripts/deps/*.sh; do
    [ -e "$dep" ] || continue
    echo "== $dep"
    bash "$dep"
done
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
# Hostile input and the protocol, kept running (docs/robustness.md): every fuzz target for a
# bounded time (FUZZ_SECONDS each, default 15; a crash, hang or memory blow-up fails), then the
# spin model check of dsm-ivy's tables (a violation fails; broken tables must be caught).
# Skipped when arguments select a subset of the tests.
if [ $# -eq 0 ] && [ "${SKIP_FUZZ_AND_MODEL:-0}" != 1 ]; then
    echo "== fuzz (Fuzz/run.sh, ${FUZZ_SECONDS:-15} s per target)"
    fuzz_status=0
    bash Fuzz/run.sh "${FUZZ_SECONDS:-15}" || fuzz_status=$?
    echo "== model check (Model/check.sh)"
    model_status=0
    bash Model/check.sh || model_status=$?
    echo "fuzz: $([ "$fuzz_status" -eq 0 ] && echo ok || echo "FAILED ($fuzz_status)"), model check: $([ "$model_status" -eq 0 ] && echo ok || echo "FAILED ($model_status)")"
    if [ "$status" -eq 0 ] && [ "$fuzz_status" -ne 0 ]; then status=$fuzz_status; fi
    if [ "$status" -eq 0 ] && [ "$model_status" -ne 0 ]; then status=$model_status; fi
fi
exit "$status"
