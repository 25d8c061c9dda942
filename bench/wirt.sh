#!/usr/bin/env bash
# The wirt file interface against `ephemera create`, in one run, inside a
# private network namespace, with real users of a real group:
#   - from the `start` request (written as the user) to the credentials
#     file (both files' mtimes), and from
#     `ephemera create` to its answer; each less the engine's own create
#     time (its "ready in N ms" log line), which is what the front door adds;
#   - the watcher with USERS users' trees watched and idle: the daemon's CPU
#     time over 10 s and its resident memory, before and after.
#   bench/wirt.sh [-n RUNS] [-u USERS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=5
users=200
while getopts "n:u:" opt; do
  case $opt in
    n) runs=$OPTARG ;;
    u) users=$OPTARG ;;
    *) echo "usage: $0 [-n RUNS] [-u USERS]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "$0: needs root (it makes users and a group)" >&2; exit 1; }
# shellcheck source=scripts/lib/daemon-in-netns.sh
. scripts/lib/daemon-in-netns.sh
in_private_netns "$0" "$@"
work=$(mktemp -d /tmp/ephemera-wirt-bench.XXXXXX)
chmod 0755 "$work"
group=ewb$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')
made_users=()
cleanup() {
  stop_daemon 2>/dev/null || true
  for u in "${made_users[@]}"; do userdel -f "$u" 2>/dev/null || true; done
  groupdel "$group" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
groupadd "$group"
add_user() { # NAME: a member with a home under $work/home
  useradd -M -d "$work/home/$1" -s /bin/sh -U -G "$group" "$1"
  made_users+=("$1")
  install -d -m 0755 -o "$1" -g "$1" "$work/home/$1"
}
as() { # USER CMD...: as that user, in their home
  local user=$1
  shift
  (cd "$work/home/$user" && setpriv --reuid="$user" --regid="$user" --init-groups -- "$@")
}
mkdir -p "$work/home"
user=${group}a
add_user "$user"
mkdir -p "$work/d"
start_daemon "$work/d" "log: {level: info}" "vm: {accel: tcg}" \
  "wirt: {enabled: true, group: $group}"
log=$work/d/ephemerad.log
now_ms() { date +%s%3N; }
ready_ms() { # ID: the engine's create time and its phases, from the daemon's log
  sed -n "s/.*sandbox $1: ready in \([0-9]*\) ms (network \([0-9]*\) ms, vm \([0-9]*\) ms, sshd \([0-9]*\) ms, provision \([0-9]*\) ms).*/\1 \2 \3 \4 \5/p" "$log" | tail -1
}
as "$user" mkdir -p wirt/service/vm/bench
info=$work/home/$user/wirt/info/vm/bench
for _ in $(seq "$runs"); do
  # ephemera create, as root on the socket
  t0=$(now_ms)
  e create --json >"$work/one.json"
  t1=$(now_ms)
  id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$work/one.json")
  echo "create $((t1 - t0)) $(ready_ms "$id")" >>"$work/runs"
  e destroy "$id" >/dev/null
  # start, as the user (the wirt command, which waits with inotify): from
  # the request's mtime (kept by the history) to the credentials file's
  wirt=$daemon_bin/cli/wirt
  as "$user" "$wirt" start bench --wait --timeout 600 >/dev/null
  request=$(ls -t "$work/home/$user"/wirt/logs/history/*-bench-start.ok | head -1)
  t0=$(stat -c %.9Y "$request" | tr -d .)
  t1=$(stat -c %.9Y "$info/credentials" | tr -d .)
  id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$info/credentials")
  echo "wirt $(((t1 - t0) / 1000000)) $(ready_ms "$id")" >>"$work/runs"
  as "$user" "$wirt" destroy bench --wait --timeout 600 >/dev/null
done
median() { sort -n | awk '{v[NR]=$1} END {printf "%.0f", (NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2}'; }
col() { awk -v n="$1" -v c="$2" '$1 == n { print $c }' "$work/runs" | median; }
over() { awk -v n="$1" '$1 == n { print $2 - $3 }' "$work/runs" | median; }
echo "== to credentials, median of $runs (ms): total, the engine's create, what the door adds"
for door in create wirt; do
  printf "  %-16s %6s %6s %6s   (engine: network %s, vm %s, sshd %s, provision %s)\n" \
    "$([ $door = create ] && echo "ephemera create" || echo "touch start")" "$(col $door 2)" \
    "$(col $door 3)" "$(over $door)" "$(col $door 4)" "$(col $door 5)" "$(col $door 6)" \
    "$(col $door 7)"
done
awk -v c="$(over create)" -v w="$(over wirt)" -v ct="$(col create 2)" -v wt="$(col wirt 2)" 'BEGIN {
  printf "  wirt adds %d ms beyond the engine (target <= 50); touch start / ephemera create: %.3f\n",
    w, wt / ct }'

# The watcher, idle, with many users' trees.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$daemon/stat"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$daemon/status"; }
idle() { # LABEL: CPU over 10 s of nothing happening
  local a b
  a=$(cpu_ticks)
  sleep 10
  b=$(cpu_ticks)
  printf "  %-24s cpu %5.2f%% over 10 s, rss %6d KiB\n" "$1" \
    "$(awk -v t=$((b - a)) -v hz="$(getconf CLK_TCK)" 'BEGIN {print t / hz / 10 * 100}')" \
    "$(rss_kib)"
}
echo "== the watcher, idle"
idle "1 user"
for i in $(seq "$users"); do
  u=${group}u$i
  add_user "$u"
  as "$u" mkdir -p wirt/service/vm/web virsh/dom-old
done
# The daemon sees /etc/group change and watches the new trees.
sleep 2
idle "$((users + 1)) users"
echo "  inotify watches: $(grep -c '^inotify wd' /proc/"$daemon"/fdinfo/* 2>/dev/null |
  awk -F: '{s += $2} END {print s}')"
