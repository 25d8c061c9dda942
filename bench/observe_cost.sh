#!/usr/bin/env bash
# What watching the daemon costs its front doors: STAT throughput (GET
# /v1/status over plain HTTP, kept-alive connections, build/bench/api_bench)
# with nothing watching, and with a Prometheus-like scraper reading
# /metrics once a second plus an `ephemera events --follow` subscriber,
# alternated in blocks within one run against one real ephemerad (in a
# private network namespace) that holds two container sandboxes, so that
# every scrape reads their CPU, memory and network too. Then what one
# counted request and one scrape cost in-process (build/bench/metrics_bench).
# Usage: bench/observe_cost.sh [-s SECONDS per block] [-n PAIRS of blocks] [-c CONNECTIONS]
set -euo pipefail
source "$(dirname "$0")/../scripts/lib/daemon-in-netns.sh"
in_private_netns "$0" "$@"

seconds=5
blocks=6
connections=4
while getopts "s:n:c:" opt; do
  case $opt in
    s) seconds=$OPTARG ;;
    n) blocks=$OPTARG ;;
    c) connections=$OPTARG ;;
    *) exit 2 ;;
  esac
done
bin=$(cd "$(dirname "$0")/.." && pwd)/build/bench

work=$(mktemp -d)
chmod 0711 "$work"  # containers' roots reach their rootfs below it
watchers=()
cleanup() {
  for pid in "${watchers[@]}"; do kill "$pid" 2>/dev/null || true; done
  stop_daemon
}
trap cleanup EXIT
start_daemon "$work" \
  "remote: {listen: '127.0.0.1:8080', insecure_http: true, rate_limit_per_minute: 10000000, rate_limit_burst: 1000000}"
token=$(e token add --name bench --json | sed -n 's/.*"token": *"\([^"]*\)".*/\1/p')
for _ in 1 2; do e create --kind container --memory 128 >/dev/null; done

# One block: the STAT rate api_bench reports.
block() {
  "$bin/api_bench" http://127.0.0.1:8080 --token "$token" --connections "$connections" \
    --seconds "$seconds" | sed -n 's/.* \([0-9][0-9]*\) STAT\/s.*/\1/p'
}
start_watchers() {
  e events --follow >/dev/null &
  watchers+=($!)
  # As Prometheus scrapes: one kept-alive connection, a GET each second
  # (a process per scrape would cost the shared cores more than the scrape).
  python3 - "$work/ephemera.sock" <<'PY' &
import http.client, socket, sys, time
class Unix(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(sys.argv[1])
conn = Unix("localhost")
while True:
    conn.request("GET", "/metrics")
    body = conn.getresponse().read()
    assert b"ephemera_sandbox_memory_bytes" in body
    time.sleep(1)
PY
  watchers+=($!)
}
stop_watchers() {
  for pid in "${watchers[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait "${watchers[@]}" 2>/dev/null || true
  watchers=()
}

# Pairs of blocks, in ABBA order (quiet first, then watched first), so
# that a machine slowing down or speeding up over the run weighs on both;
# each pair gives a ratio, and the median ratio is the figure.
ratios=()
for i in $(seq "$blocks"); do
  if [ $((i % 2)) -eq 1 ]; then
    q=$(block)
    start_watchers
    sleep 1  # the subscriber connected, the first scrape done
    w=$(block)
    stop_watchers
  else
    start_watchers
    sleep 1
    w=$(block)
    stop_watchers
    q=$(block)
  fi
  ratio=$(awk -v q="$q" -v w="$w" 'BEGIN { printf "%.3f", w / q }')
  ratios+=("$ratio")
  echo "pair $i: quiet $q STAT/s, watched $w STAT/s, watched/quiet $ratio"
done
median=$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
awk -v r="$median" -v c="$connections" -v s="$seconds" -v n="$blocks" 'BEGIN {
  printf "observe_cost: %d pairs of %d s blocks, %d connections: median watched/quiet = %.3f (scraper at 1 Hz + events subscriber), loss %.1f%%\n",
    n, s, c, r, (1 - r) * 100 }'
stop_daemon
trap - EXIT

"$bin/metrics_bench" --benchmark_min_time=0.5 2>/dev/null | grep -E "^BM_"
