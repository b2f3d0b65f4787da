#!/usr/bin/env bash
# Model-checks dsm-ivy's protocol tables with spin: dumps the table the plugin runs
# (IvyTable.describe() from the built IvyCore objects), generates the Promela transitions from it
# (Model/generate.py), and verifies Model/ivy.pml exhaustively for 3 nodes and 2 pages: single
# writer, no lost write, one owner, no deadlock, no table error reached. Fails on a violation and
# prints the counterexample. See docs/robustness.md.
#
#   Model/check.sh                 the table as built must pass (from the usual initial state and
#                                  from replicated pages, every page a read copy on every node:
#                                  GVM_HINT_REPLICATED), and deliberately broken tables (one entry
#                                  each, listed below) must each be caught
#   Model/check.sh --table-only    only the table as built
#   Model/check.sh --mutate 'S Inv -> I: s_sendInvAck'
#                                  the table with that entry replaced (repeatable): must FAIL
#   MODEL_REPLICATED=1             --mutate and --mutants-only from the replicated initial state
#   MODEL_FAULTS=2 MODEL_WRITES=1 MODEL_TIME=300   bounds: faults per node, writes per page,
#                                  seconds; defaults check 3.3 M states in about 75 s
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"

faults=${MODEL_FAULTS:-2}
writes=${MODEL_WRITES:-1}
limit=${MODEL_TIME:-300}
replicated=${MODEL_REPLICATED:-0}
out=${MODEL_OUT:-.build-model}
mkdir -p "$out"

if ! command -v spin >/dev/null; then
    echo "Model/check.sh: spin is not installed (apt-get install spin; scripts/setup.sh does it)" >&2
    exit 1
fi

prepare() {
    # The table as the plugin has it: IvyCore compiled by swift build, printed by dump-table.swift.
    set +e
    swift build --target IvyCore 2>&1 | grep --line-buffered -vE '^\[[0-9]+/[0-9]+\] |^Building for|^Build complete'
    local status=${PIPESTATUS[0]}
    set -e
    [ "$status" -eq 0 ] || { echo "Model/check.sh: swift build --target IvyCore failed (exit $status)" >&2; exit "$status"; }
    local bin
    bin=$(swift build --show-bin-path)
    rm -f "$out/ivycore.a"
    find "$bin/IvyCore.build" "$bin/PluginKit.build" -name '*.o' ! -name '*.swiftmodule.o' -print0 | xargs -0 ar rcs "$out/ivycore.a"
    mapfile -t args < <(python3 Fuzz/swiftc-args.py .build IvyCore | grep -v '^@')
    swiftc "${args[@]}" -module-cache-path "$out/ModuleCache" Model/dump-table.swift "$out/ivycore.a" -o "$out/dump-table"
    "$out/dump-table" >"$out/table.txt"
}

# verify NAME [--mutate ENTRY]...: generates, compiles and runs the verifier; returns pan's verdict.
verify() {
    local name=$1; shift
    local dir="$out/$name"
    rm -rf "$dir"; mkdir -p "$dir"
    python3 Model/generate.py "$out/table.txt" Model/ivy.pml "$dir/table.pml" "$@"
    cp Model/ivy.pml "$dir/ivy.pml"
    (cd "$dir" && spin -DFAULTS="$faults" -DWRITES="$writes" -DREPLICATED="$replicated" -a ivy.pml >spin.log 2>&1) \
        || { cat "$dir/spin.log" >&2; echo "Model/check.sh: spin could not read the model" >&2; exit 1; }
    # -O2 pays for itself on the full state space; the broken tables fail within a few thousand
    # states, where compiling pan.c is the whole cost (-O0: 2 s instead of 45 s).
    (cd "$dir" && gcc "${PAN_OPT:--O2}" -w -DSAFETY -DCOLLAPSE -DMEMLIM=6000 -DVECTORSZ=4096 -o pan pan.c)
    local start=$SECONDS rc=0
    (cd "$dir" && timeout "$limit" ./pan -m200000 -E >pan.log 2>&1) || rc=$?
    local took=$((SECONDS - start))
    local states errors
    states=$(grep -oE '[0-9]+ states, stored' "$dir/pan.log" | head -1 || true)
    errors=$(grep -oE 'errors: [0-9]+' "$dir/pan.log" | head -1 | grep -oE '[0-9]+' || true)
    if [ "$rc" -eq 124 ]; then
        echo "Model/check.sh [$name]: verification did not finish in ${limit} s (raise MODEL_TIME or lower MODEL_FAULTS)" >&2
        return 2
    fi
    if grep -q 'max search depth too small' "$dir/pan.log"; then
        echo "Model/check.sh [$name]: search depth too small: the check was not exhaustive" >&2
        return 2
    fi
    if [ "${errors:-1}" != 0 ]; then
        echo "Model/check.sh [$name]: VIOLATION found in ${took} s ($states): $(grep -m1 -E '^pan:[0-9]+: ' "$dir/pan.log")"
        # The counterexample: the protocol steps (table transitions taken, messages) up to the violation.
        (cd "$dir" && spin -DFAULTS="$faults" -DWRITES="$writes" -DREPLICATED="$replicated" -t -k ivy.pml.trail ivy.pml >trail.txt 2>&1) || true
        (cd "$dir" && spin -DFAULTS="$faults" -DWRITES="$writes" -DREPLICATED="$replicated" -t -p -g -k ivy.pml.trail ivy.pml >trail-full.txt 2>&1) || true
        grep -E 'VIOLATION|assertion violated' "$dir/trail.txt" | head -5 || true
        echo "  full trail: $dir/trail-full.txt (spin -t -p -g)"
        return 1
    fi
    echo "Model/check.sh [$name]: no violation: $states in ${took} s (3 nodes, 2 pages, $faults faults/node, $writes writes/page$([ "$replicated" = 1 ] && echo ', pages replicated at start'))"
    return 0
}

# Broken tables the check must reject (one entry replaced each), and what catches them:
#   a sharer acks an invalidation but keeps its copy       -> a reader next to the writer (SWMR)
#   the owner serves a reader but keeps its writable copy  -> state OS with a modified page
#   the owner hands a written page over as zeros            -> a lost write
#   a read miss completes without confirming to the manager -> the manager stays busy: deadlock
mutants=('S Inv -> S: s_sendInvAck'
         'OM FwdGetS -> OS: p_readToBuffer, o_addSharer, o_sendDataS'
         'OM FwdGetX -> I: p_dropCopy, p_zeroBuffer, o_handOver'
         'IS_D Data_S -> S: p_installData, r_complete')

check_mutants() {
    # Small bounds: a violation shows up within a few thousand states.
    local save_f=$faults save_w=$writes failures=0 m rc
    faults=1; writes=1
    for m in "${mutants[@]}"; do
        set +e
        PAN_OPT=-O0 verify mutant --mutate "$m" >"$out/mutant.out" 2>&1
        rc=$?
        set -e
        if [ "$rc" -eq 1 ]; then
            echo "Model/check.sh [mutant '$m']: caught: $(grep -m1 -oE 'pan:[0-9]+: .*' "$out/mutant.out")$(grep -m1 -oE 'VIOLATION (node|manager).*' "$out/mutant.out" | tr -s ' ' | sed 's/^/ -- /')"
        else
            cat "$out/mutant.out"
            echo "Model/check.sh [mutant '$m']: NOT caught (exit $rc): the check is too weak" >&2
            failures=$((failures + 1))
        fi
    done
    faults=$save_f; writes=$save_w
    [ "$failures" -eq 0 ]
}

prepare
case "${1:-}" in
    "")
        verify table
        replicated=1 verify table-replicated
        check_mutants
        ;;
    --table-only)
        verify table
        replicated=1 verify table-replicated
        ;;
    --mutants-only)
        check_mutants
        ;;
    --mutate)
        shift
        args=()
        while [ $# -gt 0 ]; do args+=(--mutate "$1"); shift; [ "${1:-}" = --mutate ] && shift; done
        verify mutant "${args[@]}"
        ;;
    *)
        echo "usage: Model/check.sh [--table-only | --mutants-only | --mutate 'STATE EVENT -> NEXT: actions'...]" >&2
        exit 2
        ;;
esac
