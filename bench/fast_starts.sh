#!/usr/bin/env bash
# Fast starts, in one run, inside a private network namespace, under TCG,
# with the default image (which carries the guest agent):
#   - boot to sshd with nothing provisioned: `ephemerad check` (the
#     baseline a create's provisioning is measured against);
#   - cold create -> credentials (`ephemera create`, identity applied
#     through the agent, sshd answering with the new host key), with the
#     engine's phases; then an SSH login with them;
#   - pause (state to disk, QEMU ended) and resume -> a working SSH session;
#   - the QEMU's PSS of an idle sandbox;
#   - create -> credentials from a ready warm pool (another daemon, with
#     `pool:` of size 3: three creates, destroyed, the pool refilled,
#     ROUNDS times), p50 and p99 of the command's wall clock and of the
#     engine's own hand-out time;
#   - create -> credentials restored from a snapshot (another daemon, with
#     vm.snapshots on: RUNS creates of 256 MiB, each then logged in to),
#     as a ratio of the cold create above; the PSS of 3 idle 128 MiB
#     clones; 20 creates of 128 MiB at once, from a snapshot;
#   - KSM (another daemon, with vm.ksm on): the PSS of 3 idle cold-booted
#     256 MiB sandboxes before and after two full scans of ksmd (its
#     pages_to_scan raised for the run, then set back with run).
# Creates and checks alternate, so the machine's drift hits both alike.
#   bench/fast_starts.sh [-n RUNS] [-p ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=7
rounds=5
while getopts "n:p:" opt; do
  case $opt in
    n) runs=$OPTARG ;;
    p) rounds=$OPTARG ;;
    *) echo "usage: $0 [-n RUNS] [-p ROUNDS]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "$0: needs root" >&2; exit 1; }
# shellcheck source=scripts/lib/daemon-in-netns.sh
. scripts/lib/daemon-in-netns.sh
in_private_netns "$0" "$@"
work=$(mktemp -d /tmp/ephemera-fast-starts.XXXXXX)
ksm=/sys/kernel/mm/ksm
ksm_run=$(cat "$ksm/run" 2>/dev/null || echo 0)
ksm_pages=$(cat "$ksm/pages_to_scan" 2>/dev/null || echo 100)
cleanup() {
  stop_daemon 2>/dev/null || true
  if [ -d "$ksm" ]; then
    echo "$ksm_pages" >"$ksm/pages_to_scan"
    echo "$ksm_run" >"$ksm/run"
  fi
  rm -rf "$work"
}
trap cleanup EXIT
now_ms() { echo $(($(date +%s%N) / 1000000)); }
percentile() { # P: the P-th percentile (nearest rank) of the numbers on stdin
  sort -n | awk -v p="$1" '{a[NR]=$1} END {i=int((p*NR+99)/100); if (i<1) i=1; print a[i]}'
}
median() { sort -n | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

mkdir -p "$work/d" "$work/check"
cat >"$work/check/config.yaml" <<YAML
state_dir: $work/check/state
image_dir: ${EPHEMERA_IMAGE_DIR:-/var/cache/ephemera/images}
log: {level: warn}
vm: {accel: tcg}
YAML
start_daemon "$work/d" "log: {level: debug}" "vm: {accel: tcg}"
log=$work/d/ephemerad.log
login() { # JSON-FILE: one SSH login with the returned credentials, running `true`
  e ssh "$(field '["id"]' <"$1")" -- true
}

: >"$work/check.ms"
: >"$work/create.ms"
: >"$work/provision.ms"
: >"$work/boot.ms"
: >"$work/pause.ms"
: >"$work/resume.ms"
for i in $(seq "$runs"); do
  build/src/daemon/ephemerad --config "$work/check/config.yaml" check --memory 256 |
    sed -E 's/.*sshd up ([0-9]+) ms.*/\1/' >>"$work/check.ms"
  t0=$(now_ms)
  e create --json >"$work/s.json"
  t1=$(now_ms)
  echo $((t1 - t0)) >>"$work/create.ms"
  id=$(field '["id"]' <"$work/s.json")
  field '["phases_ms"]["provision"]' <"$work/s.json" >>"$work/provision.ms"
  field '["phases_ms"]["sshd_up"]' <"$work/s.json" >>"$work/boot.ms"
  login "$work/s.json"
  if [ "$i" = 1 ]; then
    sleep 2
    pss=$(awk '/^Pss:/{print $2}' "/proc/$(cat "$work/d/state/vms/$id/qemu.pid")/smaps_rollup")
  fi
  t0=$(now_ms)
  e pause "$id" >/dev/null
  t1=$(now_ms)
  e resume "$id" >/dev/null
  login "$work/s.json"
  t2=$(now_ms)
  echo $((t1 - t0)) >>"$work/pause.ms"
  echo $((t2 - t1)) >>"$work/resume.ms"
  e destroy "$id" >/dev/null
done

check=$(median <"$work/check.ms")
create=$(median <"$work/create.ms")
echo "== $runs runs, each figure a median (ms)"
echo "boot to sshd, nothing provisioned (ephemerad check):  $check"
echo "cold create -> credentials (ephemera create):         $create"
echo "  of which boot to the agent's answer:                $(median <"$work/boot.ms")"
echo "  of which provisioning (identity + sshd answering):  $(median <"$work/provision.ms")"
echo "  create - boot to sshd:                              $(awk -v a="$create" -v b="$check" 'BEGIN {print a - b}')"
echo "pause, 256 MiB guest (ephemera pause):                $(median <"$work/pause.ms")"
echo "resume -> a working SSH session:                      $(median <"$work/resume.ms")"
echo "QEMU PSS of an idle cold-booted sandbox:              $((pss / 1024)) MiB"
grep -o 'guest: {[^}]*}' "$log" | tail -1 | sed 's/^/agent steps of the last create: /'

stop_daemon
echo "== warm pool: $rounds rounds of 3 creates from a ready pool of 3"
mkdir -p "$work/p"
start_daemon "$work/p" "log: {level: info}" "vm: {accel: tcg}" \
  "pool: [{image: default, memory_mib: 256, vcpus: 1, size: 3}]"
pool_ready() { e status --json | field '["pools"][0]["ready"]'; }
: >"$work/pool.ms"
for _ in $(seq "$rounds"); do
  until [ "$(pool_ready)" = 3 ]; do sleep 0.5; done
  ids=()
  for _ in 1 2 3; do
    t0=$(now_ms)
    e create --json >"$work/p.json"
    t1=$(now_ms)
    echo $((t1 - t0)) >>"$work/pool.ms"
    ids+=("$(field '["id"]' <"$work/p.json")")
  done
  login "$work/p.json"
  for id in "${ids[@]}"; do e destroy "$id" >/dev/null; done
done
sed -n 's/.*handed out from the warm pool in \([0-9]*\) ms.*/\1/p' "$work/p/ephemerad.log" >"$work/handout.ms"
echo "create from a ready pool, ephemera create wall clock:  p50 $(percentile 50 <"$work/pool.ms")  p99 $(percentile 99 <"$work/pool.ms")  (n=$(wc -l <"$work/pool.ms"))"
echo "  the engine's hand-out:                               p50 $(percentile 50 <"$work/handout.ms")  p99 $(percentile 99 <"$work/handout.ms")"
echo "  the CLI alone (ephemera status):                     $( t0=$(now_ms); e status >/dev/null; echo $(($(now_ms) - t0)) )"
e status | sed -n '/warm pools/,$p'
stop_daemon

echo "== snapshots: $runs creates restored from a template, 3 idle clones, 20 at once"
mkdir -p "$work/s"
start_daemon "$work/s" "log: {level: debug}" "vm: {accel: tcg, snapshots: true}" \
  "limits: {max_sandboxes: 24}"
snapshots_ready() { # N: until N templates are ready
  until [ "$(e status --json | python3 -c 'import json,sys; print(sum(s["state"] == "ready" for s in json.load(sys.stdin)["snapshots"]))')" = "$1" ]; do
    sleep 0.5
  done
}
for mib in 256 128; do e destroy "$(e create --memory "$mib" --json | field '["id"]')" >/dev/null; done
snapshots_ready 2
: >"$work/restore.ms"
: >"$work/restore-vm.ms"
for _ in $(seq "$runs"); do
  t0=$(now_ms)
  e create --json >"$work/r.json"
  t1=$(now_ms)
  [ "$(field '["start"]' <"$work/r.json")" = snapshot ] || { echo "not restored: $(cat "$work/r.json")" >&2; exit 1; }
  echo $((t1 - t0)) >>"$work/restore.ms"
  field '["phases_ms"]["vm_start"]' <"$work/r.json" >>"$work/restore-vm.ms"
  login "$work/r.json"
  e destroy "$(field '["id"]' <"$work/r.json")" >/dev/null
done
restore=$(median <"$work/restore.ms")
echo "create -> credentials from a snapshot (ephemera create): $restore  ($(awk -v a="$restore" -v b="$create" 'BEGIN {printf "%.2f", a / b}') x the cold create)"
echo "  of which the restore (a new QEMU, state loaded):      $(median <"$work/restore-vm.ms")"
grep -o 'guest: {[^}]*}' "$work/s/ephemerad.log" | tail -1 | sed 's/^/  agent steps of the last restore: /'
ids=()
for _ in 1 2 3; do
  e create --memory 128 --json >"$work/c.json"
  ids+=("$(field '["id"]' <"$work/c.json")")
  # A clone that fell back to a boot would count a booted VM's memory.
  [ "$(field '["start"]' <"$work/c.json")" = snapshot ] || echo "  (one of the 3 booted instead)"
done
sleep 3
total=0
for id in "${ids[@]}"; do
  kib=$(awk '/^Pss:/{print $2}' "/proc/$(cat "$work/s/state/vms/$id/qemu.pid")/smaps_rollup")
  total=$((total + kib))
done
echo "QEMU PSS of an idle 128 MiB clone (mean of 3):         $((total / 3 / 1024)) MiB"
for id in "${ids[@]}"; do e destroy "$id" >/dev/null; done
t0=$(now_ms)
pids=()
for i in $(seq 20); do
  e create --memory 128 --json >"$work/many-$i.json" &
  pids+=($!)
done
wait "${pids[@]}"  # (a bare wait would wait for the daemon too)
t1=$(now_ms)
restored=$(cat "$work"/many-*.json | grep -c '"start": *"snapshot"' || true)
echo "20 creates of 128 MiB at once:                         $((t1 - t0)) ms in all ($restored from the snapshot)"
for f in "$work"/many-*.json; do e destroy "$(field '["id"]' <"$f")" >/dev/null; done
e status | sed -n '/snapshots/,$p'
grep -E "booting cold|restoring it again|dropped" "$work/s/ephemerad.log" | cut -c1-300 || true
stop_daemon

if [ -d "$ksm" ]; then
  echo "== KSM: 3 idle 256 MiB sandboxes booted cold, before and after merging"
  mkdir -p "$work/k"
  start_daemon "$work/k" "log: {level: info}" "vm: {accel: tcg, ksm: true}"
  ids=()
  for _ in 1 2 3; do ids+=("$(e create --json | field '["id"]')"); done
  sleep 3
  mean_pss() {
    local total=0 id
    for id in "${ids[@]}"; do
      total=$((total + $(awk '/^Pss:/{print $2}' "/proc/$(cat "$work/k/state/vms/$id/qemu.pid")/smaps_rollup")))
    done
    echo $((total / ${#ids[@]} / 1024))
  }
  before=$(mean_pss)
  echo 4000 >"$ksm/pages_to_scan"
  scans=$(cat "$ksm/full_scans")
  t0=$(now_ms)
  until [ "$(cat "$ksm/full_scans")" -ge $((scans + 2)) ]; do sleep 1; done
  echo "QEMU PSS per idle sandbox (mean of 3):                $before MiB before, $(mean_pss) MiB after two full scans ($(($(now_ms) - t0)) ms; $(cat "$ksm/pages_sharing") pages sharing)"
  for id in "${ids[@]}"; do e destroy "$id" >/dev/null; done
fi
