#!/usr/bin/env bash
# Container sandboxes against their floor and against a VM, in one run,
# inside a private network namespace, with the default image:
#   - `crun run` of a trivial command (/bin/true) on the image's rootfs,
#     read-only, no namespaces beyond crun's defaults: the runtime's floor;
#   - container create -> credentials that log in (`ephemera create --kind
#     container`, wall clock, and the engine's own "ready in" with its
#     phases), then destroy, RUNS times (median);
#   - VM creates (TCG), VMS times (median), for the ratio;
#   - COUNT containers at once: created, all logged in, then the host's
#     memory they take beyond their processes (MemAvailable's drop less
#     what their cgroups charge), and the daemon's resident memory.
#   bench/containers.sh [-n RUNS] [-v VMS] [-c COUNT]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=20
vms=3
count=50
while getopts "n:v:c:" opt; do
  case $opt in
    n) runs=$OPTARG ;;
    v) vms=$OPTARG ;;
    c) count=$OPTARG ;;
    *) echo "usage: $0 [-n RUNS] [-v VMS] [-c COUNT]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "$0: needs root" >&2; exit 1; }
# shellcheck source=scripts/lib/daemon-in-netns.sh
. scripts/lib/daemon-in-netns.sh
in_private_netns "$0" "$@"
work=$(mktemp -d /tmp/ephemera-containers-bench.XXXXXX)
chmod 0711 "$work"  # the runtime reaches the rootfs as the container's root
image=${EPHEMERA_IMAGE_DIR:-/var/cache/ephemera/images}/default/rootfs.ext4
cleanup() {
  stop_daemon 2>/dev/null || true
  umount "$work/floor/rootfs" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
now_ns() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

echo "== the floor: crun run /bin/true on the image's rootfs ($runs runs)"
mkdir -p "$work/floor/rootfs" "$work/floor/state"
mount -o loop,ro,noload "$image" "$work/floor/rootfs"
(cd "$work/floor" && crun spec && python3 - <<'EOF'
import json
spec = json.load(open("config.json"))
spec["process"]["terminal"] = False
spec["process"]["args"] = ["/bin/true"]
spec["root"] = {"path": "rootfs", "readonly": True}
json.dump(spec, open("config.json", "w"))
EOF
)
# crun refuses a hybrid cgroup host while the v2 mount shows (as the daemon
# does, it runs in a mount namespace without it), its cgroup manager off.
floor=$(unshare --mount --propagation private bash -c '
  umount -l /sys/fs/cgroup/unified 2>/dev/null || true
  for i in $(seq '"$runs"'); do
    t0=$(date +%s%N)
    crun --root '"$work/floor/state"' --cgroup-manager=disabled run --bundle '"$work/floor"' floor$i >/dev/null
    t1=$(date +%s%N)
    echo $(( (t1 - t0) / 1000 ))
  done' | median)
echo "crun run /bin/true: median $(awk -v u="$floor" 'BEGIN {printf "%.1f", u / 1000}') ms"

mkdir -p "$work/d"
start_daemon "$work/d" "log: {level: info}" "vm: {accel: tcg}" \
  "limits: {max_sandboxes: $((count + 4)), max_parallel_creates: 4}"
log=$work/d/ephemerad.log
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
ready_ms() { # ID: the engine's create time and its phases
  sed -n "s/.*sandbox $1: ready in \([0-9]*\) ms (network \([0-9]*\) ms, vm \([0-9]*\) ms, sshd \([0-9]*\) ms, provision \([0-9]*\) ms).*/\1 \2 \3 \4 \5/p" "$log" | tail -1
}

echo "== container create -> credentials, then destroy ($runs runs)"
: >"$work/creates"
: >"$work/destroys"
: >"$work/phases"
e create --kind container --json >"$work/warm.json"  # mounts the image once
e destroy "$(field id <"$work/warm.json")" >/dev/null
for _ in $(seq "$runs"); do
  t0=$(now_ns)
  e create --kind container --json >"$work/c.json"
  t1=$(now_ns)
  id=$(field id <"$work/c.json")
  echo $(( (t1 - t0) / 1000000 )) >>"$work/creates"
  ready_ms "$id" >>"$work/phases"
  t0=$(now_ns)
  e destroy "$id" >/dev/null
  t1=$(now_ns)
  echo $(( (t1 - t0) / 1000000 )) >>"$work/destroys"
done
create=$(median <"$work/creates")
destroy=$(median <"$work/destroys")
for i in 1 2 3 4 5; do
  name=$(echo "total network vm sshd provision" | cut -d' ' -f$i)
  echo "  engine $name: median $(cut -d' ' -f$i "$work/phases" | median) ms"
done
echo "container create (CLI, wall clock): median $create ms"
echo "container destroy (CLI, wall clock): median $destroy ms"
: >"$work/cli"
for _ in $(seq "$runs"); do
  t0=$(now_ns)
  e status >/dev/null
  t1=$(now_ns)
  echo $(( (t1 - t0) / 1000000 )) >>"$work/cli"
done
echo "the CLI's own cost (ephemera status): median $(median <"$work/cli") ms"

echo "== VM create (TCG), $vms runs"
: >"$work/vm"
for _ in $(seq "$vms"); do
  t0=$(now_ns)
  e create --json >"$work/v.json"
  t1=$(now_ns)
  echo $(( (t1 - t0) / 1000000 )) >>"$work/vm"
  e destroy "$(field id <"$work/v.json")" >/dev/null
done
vm=$(median <"$work/vm")
echo "VM create (CLI, wall clock): median $vm ms"
echo "ratio VM / container create: $(awk -v a="$vm" -v b="$create" 'BEGIN {printf "%.1f", a / b}')x"
echo "container create / crun floor: $(awk -v a="$create" -v b="$floor" 'BEGIN {printf "%.1f", a * 1000 / b}')x"

echo "== $count containers at once"
avail() { awk '/MemAvailable/ {print $2}' /proc/meminfo; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$daemon/status"; }
sync
echo 3 >/proc/sys/vm/drop_caches
before_avail=$(avail)
before_rss=$(rss)
ids=()
t0=$(now_ns)
batch=()
for i in $(seq "$count"); do
  e create --kind container --json >"$work/m$i.json" &
  batch+=($!)
  if ((i % 4 == 0)); then wait "${batch[@]}"; batch=(); fi
done
if ((${#batch[@]})); then wait "${batch[@]}"; fi
t1=$(now_ns)
for i in $(seq "$count"); do ids+=("$(field id <"$work/m$i.json")"); done
logged=0
for id in "${ids[@]}"; do
  [ "$(e ssh "$id" -- echo ok 2>/dev/null)" = ok ] && logged=$((logged + 1))
done
sleep 2
sync
echo 3 >/proc/sys/vm/drop_caches
after_avail=$(avail)
after_rss=$(rss)
charged=0
for id in "${ids[@]}"; do
  dir=$(find /sys/fs/cgroup/memory /sys/fs/cgroup -maxdepth 8 -type d -name "ct-$id" 2>/dev/null | head -1)
  for f in "$dir/memory.usage_in_bytes" "$dir/memory.current"; do
    [ -f "$f" ] && charged=$((charged + $(cat "$f") / 1024)) && break
  done
done
echo "created $count in $(( (t1 - t0) / 1000000 )) ms (4 at a time); $logged of $count logged in"
used=$((before_avail - after_avail))
echo "host memory: $((used / 1024)) MiB for $count ($((used / count)) KiB each), of which the cgroups charge $((charged / 1024)) MiB ($((charged / count)) KiB each)"
echo "beyond their processes: $(( (used - charged) / count )) KiB each"
echo "daemon RSS: $((before_rss / 1024)) -> $((after_rss / 1024)) MiB ($(( (after_rss - before_rss) / count )) KiB each)"
t0=$(now_ns)
for id in "${ids[@]}"; do e destroy "$id" >/dev/null; done
t1=$(now_ns)
echo "destroyed $count in $(( (t1 - t0) / 1000000 )) ms"
