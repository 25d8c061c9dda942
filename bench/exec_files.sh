#!/usr/bin/env bash
# Programs and files through the daemon's channel (the guest agent for a
# VM, the runtime's exec and the container's root for a container) against
# SSH, in one run, inside a private network namespace, under TCG, on one
# default-image sandbox of KIND (vm, or container):
#   - exec round trip of `true`: POST /v1/sandboxes/{id}/exec over the local
#     socket (curl's own time, its process start excluded), p50 and p99 of
#     RUNS, against `ssh host true` with a key (the ssh client's whole run);
#   - upload: PUT /v1/sandboxes/{id}/files of SIZE MiB against `scp` of the
#     same file, MB/s; download (GET) against scp back.
# The two kinds alternate in blocks, so the machine's drift hits both alike.
#   bench/exec_files.sh [-n RUNS] [-s SIZE_MIB] [-k KIND]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=30
size=32
kind=vm
while getopts "n:s:k:" opt; do
  case $opt in
    n) runs=$OPTARG ;;
    s) size=$OPTARG ;;
    k) kind=$OPTARG ;;
    *) echo "usage: $0 [-n RUNS] [-s SIZE_MIB] [-k vm|container]" >&2; exit 2 ;;
  esac
done
case $kind in
  vm) memory=256 ;;
  container) memory=256 ;;  # its writable layer, a tmpfs, is charged to it
  *) echo "$0: KIND is vm or container" >&2; exit 2 ;;
esac
# shellcheck source=scripts/lib/daemon-in-netns.sh
. scripts/lib/daemon-in-netns.sh
in_private_netns "$0" "$@"
work=$(mktemp -d)
chmod 0711 "$work"  # a container's runtime reaches its rootfs as the container's root
trap 'stop_daemon 2>/dev/null || true; rm -rf "$work"' EXIT
start_daemon "$work"
sock=$work/ephemera.sock
api() { curl -sS --unix-socket "$sock" "$@"; }

ssh-keygen -q -t ed25519 -N '' -f "$work/key"
api -X POST -d "$(jq -nc --arg k "$(cat "$work/key.pub")" --arg kind "$kind" --argjson m "$memory" \
  '{kind: $kind, memory_mib: $m, ssh_keys: [$k]}')" \
  http://localhost/v1/sandboxes >"$work/create.json"
id=$(jq -r .id "$work/create.json")
port=$(jq -r .port "$work/create.json")
user=$(jq -r .username "$work/create.json")
[ "$id" != null ] || { cat "$work/create.json" >&2; exit 1; }
ssh_opts=(-q -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes
  -i "$work/key")
ssh "${ssh_opts[@]}" -p "$port" "$user@127.0.0.1" true || {
  echo "ssh login failed" >&2; exit 1; }

now_ms() { date +%s%3N; }
# p50 and p99 of the numbers on stdin
stats() { sort -n | awk '{v[NR]=$1} END {printf "p50 %7.1f  p99 %7.1f", v[int((NR+1)/2)], v[int(NR*0.99+0.999)]}'; }

: >"$work/exec.ms"
: >"$work/ssh.ms"
# Blocks of five of each kind, alternating, each after a second's pause:
# an SSH login leaves the guest's one vCPU busy with the session's end for
# a while after its client has gone, which would land on the next exec.
for _ in $(seq $(((runs + 4) / 5))); do
  sleep 1
  for _ in 1 2 3 4 5; do
    api -o "$work/exec.out" -w '%{time_total}\n' -X POST -d '{"argv":["true"]}' \
      "http://localhost/v1/sandboxes/$id/exec" | awk '{print $1 * 1000}' >>"$work/exec.ms"
    grep -q '"exit":{"code":0' "$work/exec.out" || { cat "$work/exec.out" >&2; exit 1; }
  done
  sleep 1
  for _ in 1 2 3 4 5; do
    t0=$(now_ms)
    ssh "${ssh_opts[@]}" -p "$port" "$user@127.0.0.1" true
    echo $(($(now_ms) - t0)) >>"$work/ssh.ms"
  done
done
exec_p50=$(sort -n "$work/exec.ms" | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')
ssh_p50=$(sort -n "$work/ssh.ms" | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')
printf "exec true (ms)    %s\n" "$(stats <"$work/exec.ms")"
printf "ssh true (ms)     %s\n" "$(stats <"$work/ssh.ms")"
awk -v e="$exec_p50" -v s="$ssh_p50" 'BEGIN {printf "exec / ssh p50    %.2f\n", e / s}'

head -c $((size * 1048576)) /dev/urandom >"$work/blob"
mbps() { awk -v b=$((size * 1048576)) -v ms="$1" 'BEGIN {printf "%.1f", b / 1e6 / (ms / 1000)}'; }
t0=$(now_ms)
api -f -o /dev/null -T "$work/blob" "http://localhost/v1/sandboxes/$id/files?path=/tmp/blob"
up_ms=$(($(now_ms) - t0))
t0=$(now_ms)
scp "${ssh_opts[@]}" -P "$port" "$work/blob" "$user@127.0.0.1:/tmp/blob.scp"
scp_up_ms=$(($(now_ms) - t0))
t0=$(now_ms)
api -f -o "$work/back" "http://localhost/v1/sandboxes/$id/files?path=/tmp/blob"
down_ms=$(($(now_ms) - t0))
t0=$(now_ms)
scp "${ssh_opts[@]}" -P "$port" "$user@127.0.0.1:/tmp/blob.scp" "$work/back.scp"
scp_down_ms=$(($(now_ms) - t0))
cmp -s "$work/blob" "$work/back" || { echo "the download differs" >&2; exit 1; }
cmp -s "$work/blob" "$work/back.scp" || { echo "the scp copy differs" >&2; exit 1; }
printf "upload %d MiB     files %s MB/s  scp %s MB/s  ratio %s\n" "$size" "$(mbps $up_ms)" \
  "$(mbps $scp_up_ms)" "$(awk -v a=$up_ms -v b=$scp_up_ms 'BEGIN {printf "%.2f", b / a}')"
printf "download %d MiB   files %s MB/s  scp %s MB/s  ratio %s\n" "$size" "$(mbps $down_ms)" \
  "$(mbps $scp_down_ms)" "$(awk -v a=$down_ms -v b=$scp_down_ms 'BEGIN {printf "%.2f", b / a}')"
