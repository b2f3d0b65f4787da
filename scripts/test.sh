#!/usr/bin/env bash
# Sets up a fresh machine (scripts/setup.sh), then runs every test.
# Tests that need /dev/kvm, root or network namespaces skip with a message where those are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== swift build --build-tests"
swift build --build-tests 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\] (Compiling|Emitting|Linking|Write|Planning)' || true
echo "== swift test"
swift test --skip-build
