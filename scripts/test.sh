#!/usr/bin/env bash
# Sets up a fresh machine (scripts/setup.sh), then runs every test.
# Tests that need /dev/kvm, root or network namespaces skip with a message where those are missing.
# Extra arguments go to `swift test` (e.g. --filter ConfigTests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== swift build --build-tests"
swift build --build-tests 2>&1 | grep --line-buffered -vE '^\[[0-9]+/[0-9]+\] (Compiling|Emitting|Linking|Write|Planning|Wrapping)' || true
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
