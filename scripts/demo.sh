#!/usr/bin/env bash
# The life of a sandbox, for real: starts ephemerad in a network namespace
# of its own (so its TAPs, dnsmasq and guests touch no real network),
# creates a sandbox, logs in over SSH with the returned credentials, runs a
# command, destroys it, and stops the daemon. Needs root and a build.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${EPHEMERA_DEMO_IN_NETNS:-}" != 1 ]; then
  EPHEMERA_DEMO_IN_NETNS=1 exec unshare --net --mount --propagation private "$0" "$@"
fi
mount -t sysfs sysfs /sys
ip link set lo up

bin=$PWD/build/src
work=$(mktemp -d /tmp/ephemera-demo.XXXXXX)
export XDG_CONFIG_HOME=$work/client
cat >"$work/config.yaml" <<YAML
state_dir: $work/state
image_dir: ${EPHEMERA_IMAGE_DIR:-/var/cache/ephemera/images}
socket: $work/ephemera.sock
network: {forward_address: 127.0.0.1}
destroy_on_exit: true
YAML
"$bin/daemon/ephemerad" --config "$work/config.yaml" 2>"$work/ephemerad.log" &
daemon=$!
cleanup() {
  kill -TERM "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
e() { "$bin/cli/ephemera" --socket "$work/ephemera.sock" "$@"; }
for _ in $(seq 100); do e status >/dev/null 2>&1 && break; sleep 0.05; done

echo "\$ ephemera status"; e status
echo "\$ ephemera create --ttl 600"; e create --ttl 600 | grep -v '^password\|^token' | tee "$work/created"
id=$(awk '/^id:/{print $2}' "$work/created")
echo "\$ ephemera ssh $id -- 'id; uname -r; sudo -n true 2>/dev/null || echo sudo asks for the password'"
e ssh "$id" -- 'id; uname -r; sudo -n true 2>/dev/null || echo sudo asks for the password'
echo "\$ ephemera list"; e list
echo "\$ ephemera destroy $id"; e destroy "$id"
echo "\$ ephemera list"; e list
