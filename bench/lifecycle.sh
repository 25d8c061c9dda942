#!/usr/bin/env bash
# Sandbox lifecycle figures with the real daemon, CLI and default image,
# inside a private network namespace (nothing leaves this machine):
#   - create to SSH-ready, N sequential runs, split into phases;
#   - destroy time;
#   - K concurrent creates, total wall time;
#   - host memory per idle sandbox (QEMU RSS, and the daemon's share).
#   bench/lifecycle.sh [-n RUNS] [-c CONCURRENT] [-m GUEST_MIB] [-t TB_MIB]
set -euo pipefail
cd "$(dirname "$0")/.."

runs=5 concurrent=10 memory=128 tb=32
while getopts "n:c:m:t:" opt; do
  case $opt in
    n) runs=$OPTARG ;; c) concurrent=$OPTARG ;; m) memory=$OPTARG ;; t) tb=$OPTARG ;;
    *) echo "usage: $0 [-n RUNS] [-c CONCURRENT] [-m GUEST_MIB] [-t TB_MIB]" >&2; exit 2 ;;
  esac
done
# shellcheck source=scripts/lib/daemon-in-netns.sh
. scripts/lib/daemon-in-netns.sh
in_private_netns "$0" "$@"
work=$(mktemp -d /tmp/ephemera-bench.XXXXXX)
trap stop_daemon EXIT
start_daemon "$work" "log: {level: warn}" "vm: {accel: tcg, tcg_tb_size_mib: $tb}" \
  "defaults: {memory_mib: $memory}" \
  "limits: {max_sandboxes: $((concurrent + 2)), max_parallel_creates: $concurrent}"

now_ms() { date +%s%3N; }
stats() { sort -n | awk '{v[NR]=$1} END {m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; printf "median %6.0f  max %6.0f", m, v[NR]}'; }

echo "== create to SSH-ready, $runs sequential runs (${memory} MiB guest, TCG tb-size ${tb} MiB)"
: >"$work/phases" ; : >"$work/destroy"
for _ in $(seq "$runs"); do
  t0=$(now_ms)
  e create --json >"$work/one.json"
  t1=$(now_ms)
  python3 - "$work/one.json" $((t1 - t0)) >>"$work/phases" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))["phases_ms"]
print(sys.argv[2], p["network"], p["vm_start"], p["sshd_up"], p["provision"])
PY
  id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$work/one.json")
  e ssh "$id" -- true  # it really is reachable with what it returned
  t2=$(now_ms); e destroy "$id" >/dev/null; t3=$(now_ms)
  echo $((t3 - t2)) >>"$work/destroy"
done
printf "  %-22s %s\n" "client-observed total" "$(awk '{print $1}' "$work/phases" | stats) ms"
printf "  %-22s %s\n" "network" "$(awk '{print $2}' "$work/phases" | stats) ms"
printf "  %-22s %s\n" "clone + QEMU launch" "$(awk '{print $3}' "$work/phases" | stats) ms"
printf "  %-22s %s\n" "boot to sshd up" "$(awk '{print $4}' "$work/phases" | stats) ms"
printf "  %-22s %s\n" "provisioning" "$(awk '{print $5}' "$work/phases" | stats) ms"
printf "  %-22s %s\n" "destroy" "$(stats <"$work/destroy") ms"

echo "== $concurrent concurrent creates"
daemon_rss_before=$(awk '/VmRSS/{print $2}' "/proc/$daemon/status")
t0=$(now_ms)
pids=()
for i in $(seq "$concurrent"); do
  e create --json >"$work/c$i.json" &
  pids+=($!)
done
wait "${pids[@]}"  # not a bare wait: the daemon is a child too
t1=$(now_ms)
ok=$(e list --json | python3 -c 'import json,sys; print(sum(1 for s in json.load(sys.stdin) if s["state"]=="ready"))')
echo "  total $((t1 - t0)) ms, $ok of $concurrent ready"
sleep 2  # idle
# PSS shares pages that all QEMUs map (binary, libraries, the guest kernel
# file) among them; anonymous memory is each one's own.
pss_kib=0 anon_kib=0 rss_kib=0
for pidfile in "$work"/state/vms/*/qemu.pid; do
  rollup=/proc/$(cat "$pidfile")/smaps_rollup
  pss_kib=$((pss_kib + $(awk '/^Pss:/{print $2}' "$rollup")))
  anon_kib=$((anon_kib + $(awk '/^Anonymous:/{print $2}' "$rollup")))
  rss_kib=$((rss_kib + $(awk '/^Rss:/{print $2}' "$rollup")))
done
daemon_rss_after=$(awk '/VmRSS/{print $2}' "/proc/$daemon/status")
echo "  QEMU memory per idle sandbox (guest RAM ${memory} MiB): PSS $((pss_kib / ok / 1024)) MiB," \
  "anonymous $((anon_kib / ok / 1024)) MiB, RSS $((rss_kib / ok / 1024)) MiB"
echo "  daemon RSS growth per sandbox: $(((daemon_rss_after - daemon_rss_before) / ok)) KiB"
t0=$(now_ms)
pids=()
for s in $(e list --json | python3 -c 'import json,sys; print(" ".join(s["id"] for s in json.load(sys.stdin)))'); do
  e destroy "$s" >/dev/null &
  pids+=($!)
done
wait "${pids[@]}"
echo "  destroying all $ok: $(($(now_ms) - t0)) ms"
