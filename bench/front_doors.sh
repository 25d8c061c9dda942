#!/usr/bin/env bash
# Front-door throughput against a real ephemerad in a private network
# namespace: GET /v1/status per second over plain HTTP and over HTTPS with
# kept-alive connections (api_bench), and Anweddol classic-protocol
# handshakes per second (anweddol_classic_bench, in-process server with an
# RSA-4096 key). Usage: bench/front_doors.sh [-s SECONDS] [-c CONNECTIONS]
set -euo pipefail
source "$(dirname "$0")/../scripts/lib/daemon-in-netns.sh"
in_private_netns "$0" "$@"

seconds=5
connections=4
while getopts "s:c:" opt; do
  case $opt in
    s) seconds=$OPTARG ;;
    c) connections=$OPTARG ;;
    *) exit 2 ;;
  esac
done
bin=$(cd "$(dirname "$0")/.." && pwd)/build/bench

# An access token for the bench, from the local socket.
bench_token() { e token add --name bench --json | sed -n 's/.*"token": *"\([^"]*\)".*/\1/p'; }

work=$(mktemp -d)
trap stop_daemon EXIT
# The rate limit is lifted so that it does not cap the measurement.
start_daemon "$work" "remote: {listen: '127.0.0.1:8443', rate_limit_per_minute: 10000000, rate_limit_burst: 1000000}"
"$bin/api_bench" https://127.0.0.1:8443 --token "$(bench_token)" --connections "$connections" --seconds "$seconds"
stop_daemon
trap - EXIT

work=$(mktemp -d)
trap stop_daemon EXIT
start_daemon "$work" "remote: {listen: '127.0.0.1:8080', insecure_http: true, rate_limit_per_minute: 10000000, rate_limit_burst: 1000000}"
"$bin/api_bench" http://127.0.0.1:8080 --token "$(bench_token)" --connections "$connections" --seconds "$seconds"

"$bin/anweddol_classic_bench" --seconds "$seconds"
