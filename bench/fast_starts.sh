#!/usr/bin/env bash
# Fast starts, in one run, inside a private network namespace, under TCG,
# with the default image (which carries the guest agent):
#   - boot to sshd with nothing provisioned: `ephemerad check` (the
#     baseline a create's provisioning is measured against);
#   - cold create -> credentials (`ephemera create`, identity applied
#     through the agent, sshd answering with the new host key), with the
#     engine's phases; then an SSH login with them;
#   - pause (state to disk, QEMU ended) and resume -> a working SSH session;
#   - the QEMU's PSS of an idle sandbox.
# Creates and checks alternate, so the machine's drift hits both alike.
#   bench/fast_starts.sh [-n RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=7
while getopts "n:" opt; do
  case $opt in
    n) runs=$OPTARG ;;
    *) echo "usage: $0 [-n RUNS]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "$0: needs root" >&2; exit 1; }
# shellcheck source=scripts/lib/daemon-in-netns.sh
. scripts/lib/daemon-in-netns.sh
in_private_netns "$0" "$@"
work=$(mktemp -d /tmp/ephemera-fast-starts.XXXXXX)
cleanup() {
  stop_daemon 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
now_ms() { echo $(($(date +%s%N) / 1000000)); }
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
