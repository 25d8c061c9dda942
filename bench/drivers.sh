#!/usr/bin/env bash
# The libvirt driver against the qemu driver, measured in the same run on
# the same machine: create to SSH-ready and destroy, median of N each, the
# real daemon and CLI with the default image, in a private network
# namespace with a libvirtd of the script's own.
#   bench/drivers.sh [-n RUNS] [-m GUEST_MIB]
set -euo pipefail
cd "$(dirname "$0")/.."

runs=5 memory=128
while getopts "n:m:" opt; do
  case $opt in
    n) runs=$OPTARG ;; m) memory=$OPTARG ;;
    *) echo "usage: $0 [-n RUNS] [-m GUEST_MIB]" >&2; exit 2 ;;
  esac
done
# shellcheck source=scripts/lib/daemon-in-netns.sh
. scripts/lib/daemon-in-netns.sh
# shellcheck source=scripts/lib/private-libvirtd.sh
. scripts/lib/private-libvirtd.sh
# A PID namespace whose init (this script's bash) reaps orphans at once:
# libvirt's destroy waits until its daemonized QEMU is reaped, and some
# hosts' PID 1 (not systemd's) reaps orphans only every second or two.
if [ "${EPHEMERA_BENCH_PIDNS:-}" != 1 ]; then
  EPHEMERA_BENCH_PIDNS=1 exec unshare --pid --fork --mount-proc "$0" "$@"
fi
in_private_netns "$0" "$@"
trap 'stop_daemon 2>/dev/null; stop_private_libvirtd' EXIT
start_private_libvirtd

now_ms() { date +%s%3N; }
median() { sort -n | awk '{v[NR]=$1} END {printf "%.0f", (NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2}'; }

# measure DRIVER: N creates (client-observed, to SSH-ready) and destroys.
measure() {
  local driver=$1 work
  work=$(mktemp -d /tmp/ephemera-bench.XXXXXX)
  chmod 0711 "$work"  # libvirt's QEMU user reaches the overlays below it
  local vm="vm: {accel: tcg, driver: $driver"
  [ "$driver" = libvirt ] && vm+=", libvirt_uri: '$libvirt_uri'"
  start_daemon "$work" "log: {level: warn}" "$vm}" "defaults: {memory_mib: $memory}"
  for _ in $(seq "$runs"); do
    local t0 t1 t2 t3 id
    t0=$(now_ms)
    id=$(e create --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    t1=$(now_ms)
    e ssh "$id" -- true  # reachable with what it returned
    t2=$(now_ms); e destroy "$id" >/dev/null; t3=$(now_ms)
    echo $((t1 - t0)) >>"/tmp/ephemera-bench-create-$driver"
    echo $((t3 - t2)) >>"/tmp/ephemera-bench-destroy-$driver"
  done
  stop_daemon
}

rm -f /tmp/ephemera-bench-{create,destroy}-{qemu,libvirt}
echo "== $runs creates and destroys per driver (${memory} MiB guest, TCG)"
measure qemu
measure libvirt
for d in qemu libvirt; do
  printf "  %-8s create median %6s ms   destroy median %5s ms\n" "$d" \
    "$(median <"/tmp/ephemera-bench-create-$d")" "$(median <"/tmp/ephemera-bench-destroy-$d")"
done
q=$(median </tmp/ephemera-bench-create-qemu)
l=$(median </tmp/ephemera-bench-create-libvirt)
awk -v q="$q" -v l="$l" 'BEGIN { printf "  create ratio libvirt/qemu: %.2f (target <= 1.25)\n", l / q }'
rm -f /tmp/ephemera-bench-{create,destroy}-{qemu,libvirt}
