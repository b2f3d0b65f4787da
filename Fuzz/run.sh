#!/usr/bin/env bash
# Builds every coverage-guided fuzz target (libFuzzer, `swiftc -sanitize=fuzzer`) and runs each
# for a bounded time on its committed seed corpus; fails on the first crash, hang or leak-free
# out-of-memory and leaves the reproducer in Fuzz/out/<target>/ (copy it to Fuzz/crashes/<target>/
# and add the regression test). docs/robustness.md describes the targets.
#
#   Fuzz/run.sh [seconds-per-target] [target...]      default 20 s, every target
#   Fuzz/run.sh --build-only [target...]
#   Fuzz/run.sh --replay [target...]                  only Fuzz/crashes and the corpus, no fuzzing
#
# How a target is built: the module under test is recompiled from SwiftPM's own source list and
# flags (read from .build/debug.yaml by swiftc-args.py, so files may move freely) with
# -sanitize=fuzzer, together with Fuzz/targets/<target>/*.swift (the entry and its Exercise), into
# one executable; every other module comes uninstrumented from the debug build through a static
# archive. Needs a finished `swift build` (run first here; a no-op when up to date).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"

seconds=20
mode=fuzz
case "${1:-}" in
    --build-only) mode=build; shift ;;
    --replay) mode=replay; shift ;;
    ''|*[!0-9]*) ;;
    *) seconds=$1; shift ;;
esac

# target -> the SwiftPM module it fuzzes (compiled instrumented, with the target's files)
declare -A module=(
    [firmware]=Firmware            # multiboot, bzImage, vmlinux loaders, Bootloader.load
    [elf]=Machine                  # ELFImage: GiantVM's own ELF64 loader
    [config]=Config                # ConfigLoader.parse on YAML text
    [distributed-wire]=Distributed # CPU and I/O forwarding messages
    [ivy-wire]=IvyCore             # dsm-ivy protocol messages
    [tcp-wire]=TransportTCP        # transport-tcp frames and handshake
    [cluster-frame]=Cluster        # channel header, runtime messages, fault plans
    [virtio-chain]=DeviceModels    # virtqueue descriptor chains, virtio-mmio + virtio-net queues
)
order=(firmware elf config distributed-wire ivy-wire tcp-wire cluster-frame virtio-chain)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${order[@]}")
for t in "${targets[@]}"; do
    [ -n "${module[$t]:-}" ] || { echo "Fuzz/run.sh: unknown target '$t' (targets: ${order[*]})" >&2; exit 2; }
done

out=.build-fuzz
mkdir -p "$out/bin" "$out/lib" "$out/ModuleCache"

echo "== fuzz: swift build (the uninstrumented modules the targets link)"
set +e
swift build 2>&1 | grep --line-buffered -vE '^\[[0-9]+/[0-9]+\] (Compiling|Emitting|Linking|Write|Planning|Wrapping)'
status=${PIPESTATUS[0]}
set -e
[ "$status" -eq 0 ] || { echo "Fuzz/run.sh: swift build failed (exit $status)" >&2; exit "$status"; }
build=$(swift build --show-bin-path)          # .build/<triple>/debug
manifest_dir=.build

build_target() {
    local t=$1 m=${module[$1]}
    local exe="$out/bin/fuzz-$t" archive="$out/lib/deps-without-$m.a"
    # Every object of the debug build except the module under test, tests, executables and
    # debugger AST wrappers; the archive lets the linker take only what is referenced. Object
    # names may hold spaces (swift-atomics' "Unmanaged extensions.swift.o"): NUL-separated.
    rm -f "$archive"
    find "$build" -path "$build/$m.build" -prune -o -path "$build/*Tests.build" -prune \
         -o -path "$build/Host.build" -prune -o -path "$build/GiantVMPackage*" -prune \
         -o -path "$build/*-tool.build" -prune -o -path "$build/TestSupport.build" -prune \
         -o -name '*.o' ! -name '*.swiftmodule.o' -print0 | sort -z | xargs -0 ar rcs "$archive"
    mapfile -t args < <(python3 Fuzz/swiftc-args.py "$manifest_dir" "$m")
    echo "== fuzz: building fuzz-$t (module $m, instrumented)"
    swiftc -sanitize=fuzzer -parse-as-library -module-name "$m" -DFUZZING -Onone -g \
        -module-cache-path "$out/ModuleCache" "${args[@]}" Fuzz/targets/"$t"/*.swift \
        "$archive" -lstdc++ -o "$exe" 2>&1 | grep -vE 'warning:|^\s*[0-9]* \||^\s*\||note:|^$' || true
    [ -x "$exe" ] && [ "$exe" -nt "$archive" ] || { echo "Fuzz/run.sh: could not build fuzz-$t" >&2; return 1; }
}

for t in "${targets[@]}"; do build_target "$t"; done
[ "$mode" = build ] && exit 0

failed=()
for t in "${targets[@]}"; do
    exe="$out/bin/fuzz-$t"
    corpus=Fuzz/corpus/$t
    work="$out/corpus/$t"           # grows while fuzzing; the committed seeds stay small
    results=Fuzz/out/$t
    mkdir -p "$work" "$results"
    # Known reproducers first: each must now run clean.
    if compgen -G "Fuzz/crashes/$t/*" >/dev/null; then
        echo "== fuzz-$t: replaying Fuzz/crashes/$t"
        if ! SWIFT_BACKTRACE=enable=no "$exe" -runs=0 Fuzz/crashes/"$t"/* >"$results/replay.log" 2>&1; then
            echo "fuzz-$t: a committed reproducer still crashes:" >&2; tail -20 "$results/replay.log" >&2
            failed+=("$t"); continue
        fi
    fi
    if [ "$mode" = replay ]; then
        SWIFT_BACKTRACE=enable=no "$exe" -runs=0 "$corpus" >"$results/replay.log" 2>&1 || { failed+=("$t"); tail -20 "$results/replay.log" >&2; }
        continue
    fi
    echo "== fuzz-$t: ${seconds} s"
    # -timeout: one input running 10 s is a hang; -rss_limit_mb: a memory blow-up is a failure.
    set +e
    SWIFT_BACKTRACE=enable=no "$exe" "$work" "$corpus" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -max_len=16384 -print_final_stats=1 -artifact_prefix="$results/" >"$results/fuzz.log" 2>&1
    rc=$?
    set -e
    stats=$(grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb' "$results/fuzz.log" | sed 's/stat:://' | tr -s ' \n' ' ' || true)
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$results/fuzz.log" | tail -1 || true)
    if [ "$rc" -ne 0 ]; then
        echo "fuzz-$t: FAILED (exit $rc); reproducer and log in $results/:" >&2
        grep -E 'ERROR: libFuzzer|Fatal error|SUMMARY|Test unit written|ALARM' "$results/fuzz.log" | head -10 >&2
        failed+=("$t")
    else
        echo "fuzz-$t: ok, $stats$cov"
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "Fuzz/run.sh: failing targets: ${failed[*]}" >&2
    exit 1
fi
echo "Fuzz/run.sh: ${#targets[@]} targets, no crash, no hang"
