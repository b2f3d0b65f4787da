#!/usr/bin/env bash
# Placement experiment (docs/virtio.md): the test guest's `readfile` (sequential read of the
# whole virtio-blk disk, 1 MiB requests) with the disk on the reading vCPU's node (local) and on
# the other node (remote, with and without DMA forwarding), beside the raw read of the same file
# on the host; then `net-echo` with the NIC local and remote. Two node processes on this machine
# (dsm-ivy over loopback TCP), vCPU 0 on node 0.
#
#   scripts/bench-virtio-placement.sh [disk-MiB] [runs]        default 64 MiB, 3 runs per case
#
# Needs: swift build, make -C Guests, KVM, root (userfaultfd). Prints one line per run and the
# median per case; each line carries job time, I/O forwarded, DMA forwarded and pages moved.
set -euo pipefail
cd "$(dirname "$0")/.."
mib=${1:-64}
runs=${2:-3}
gvm=$(swift build --show-bin-path 2>/dev/null)/giantvm
[ -x "$gvm" ] || { echo "build giantvm first (swift build)" >&2; exit 2; }
[ -f Guests/build/testguest.elf ] || { echo "build the test guest first (make -C Guests)" >&2; exit 2; }
work=$(mktemp -d /tmp/giantvm-virtio-bench.XXXXXX)
echo_pid=
cleanup() { [ -n "$echo_pid" ] && kill "$echo_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
head -c "$((mib << 20))" /dev/urandom > "$work/disk.img"
mem=$((mib + 96))

config() { # node-of-disk node-of-nic port
    cat > "$work/vm-$1-$2.yaml" <<YAML
cluster: virtiobench
nodes:
  - {id: 0, address: 127.0.0.1, port: $3, vcpus: 1}
  - {id: 1, address: 127.0.0.1, port: $(($3 + 1)), vcpus: 1}
memory: ${mem}MiB
transport: {plugin: transport-tcp}
coherence: {plugin: dsm-ivy}
devices:
  - {name: com1, model: uart16550, node: 0, base: 0x3f8, irq: 4}
  - {name: exit, model: isa-debug-exit, node: 0, base: 0xf4}
  - {name: results, model: results, node: 0, base: 0xe0}
  - {name: disk0, model: virtio-blk, node: $1, base: 0xd0000000, settings: {path: "$work/disk.img", read_only: true}}
  - {name: nic0, model: virtio-net, node: $2, base: 0xd0001000, settings: {backend: socket, peer: "127.0.0.1:23599"}}
ioapic_node: 0
timeouts: {connect: 10s, heartbeat: 200ms, failure: 5s}
guest:
  image: $PWD/Guests/build/testguest.elf
  cmdline: "hello"
YAML
    echo "$work/vm-$1-$2.yaml"
}

field() { sed -n "s/.*\"$1\":\"\{0,1\}\([^,\"}]*\).*/\1/p" | head -1; }
stat_of() { # output node key  (from the --stats lines)
    grep -E "^\[node $2\] $3 " <<<"$1" | awk '{print $NF}' | head -1
}
pages_moved() { # pages sent with data by both nodes
    local a b
    a=$(grep -o "node 0: DSM stats:.*" <<<"$1" | grep -o "pages_sent=[0-9]*" | cut -d= -f2)
    b=$(grep -o "node 1: DSM stats:.*" <<<"$1" | grep -o "pages_sent=[0-9]*" | cut -d= -f2)
    echo $(( ${a:-0} + ${b:-0} ))
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

host_read() {
    cat "$work/disk.img" > /dev/null   # warm: the guest's reads hit the page cache too
    python3 - "$work/disk.img" <<'PY'
import sys, time
f = open(sys.argv[1], 'rb', buffering=0)
t = time.perf_counter(); n = 0
while True:
    b = f.read(1 << 20)
    if not b: break
    n += len(b)
print("%.1f" % (n / (time.perf_counter() - t) / (1 << 20)))
PY
}

echo "# disk ${mib} MiB, ${runs} runs per case; MiB/s = bytes / job time of a pass (guest touches every byte: checksum)"
printf "%-28s %10s %10s %12s %12s %12s\n" case MiB/s job_ms io_forwarded dma_forwarded pages_moved
declare -A results
run_case() { # name disk-node env
    local name=$1 node=$2 envs=$3 cfg out v
    cfg=$(config "$node" 0 23500)
    for i in $(seq "$runs"); do
        out=$(env $envs "$gvm" up "$cfg" --cmdline "readfile passes=2" --timeout 120 --stats 2>&1) || { echo "$name: run failed" >&2; echo "$out" | tail -20 >&2; exit 1; }
        v=$(grep RESULT <<<"$out" | head -1 | field best_pass_mib_s)
        printf "%-28s %10s %10s %12s %12s %12s\n" "$name" "$v" "$(grep RESULT <<<"$out" | head -1 | field elapsed_us | awk '{printf "%d", $1/2000}')" \
            "$(stat_of "$out" 0 io.forwarded)" "$(stat_of "$out" "$node" io.dma_forwarded)" "$(pages_moved "$out")"
        results[$name]+="$v "
    done
}
run_case "local (disk on node 0)" 0 ""
run_case "remote, DMA forwarded" 1 ""
run_case "remote, pages move" 1 "GIANTVM_DMA_FORWARD=0"
hr=""
for i in $(seq "$runs"); do hr+="$(host_read) "; done
echo "# medians (MiB/s)"
for k in "local (disk on node 0)" "remote, DMA forwarded" "remote, pages move"; do
    printf "%-28s %10s\n" "$k" "$(tr ' ' '\n' <<<"${results[$k]}" | grep . | median)"
done
printf "%-28s %10s\n" "host raw read (page cache)" "$(tr ' ' '\n' <<<"$hr" | grep . | median)"

# net-echo: a UDP echo peer on the host, the NIC on node 0 or node 1
python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 23599))
while True:
    d, a = s.recvfrom(70000); s.sendto(d, a)' &
echo_pid=$!
sleep 0.3
echo "# net-echo, 1000 frames of 1024 bytes"
printf "%-28s %12s %12s %12s\n" case rtt_avg_us rtt_min_us stream_fps
for node in 0 1; do
    cfg=$(config 0 "$node" 23510)
    out=$("$gvm" up "$cfg" --cmdline "net-echo packets=1000 size=1024" --timeout 120 2>&1)
    line=$(grep RESULT <<<"$out" | head -1)
    printf "%-28s %12s %12s %12s\n" "NIC on node $node" "$(field rtt_avg_us_x100 <<<"$line" | awk '{print $1/100}')" \
        "$(field rtt_min_us_x100 <<<"$line" | awk '{print $1/100}')" "$(field stream_frames_s <<<"$line")"
done
