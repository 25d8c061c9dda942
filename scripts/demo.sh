#!/usr/bin/env bash
# The life of a sandbox, for real: starts ephemerad in a network namespace
# of its own (so its TAPs, dnsmasq and guests touch no real network),
# creates a sandbox, logs in over SSH with the returned credentials, runs a
# command, destroys it, and stops the daemon. Needs root and a build.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib/daemon-in-netns.sh
. scripts/lib/daemon-in-netns.sh
in_private_netns "$0" "$@"
work=$(mktemp -d /tmp/ephemera-demo.XXXXXX)
trap stop_daemon EXIT
start_daemon "$work"

echo "\$ ephemera status"; e status
echo "\$ ephemera create --ttl 600"; e create --ttl 600 | grep -v '^password\|^token' | tee "$work/created"
id=$(awk '/^id:/{print $2}' "$work/created")
echo "\$ ephemera ssh $id -- 'id; uname -r; sudo -n true 2>/dev/null || echo sudo asks for the password'"
e ssh "$id" -- 'id; uname -r; sudo -n true 2>/dev/null || echo sudo asks for the password'
echo "\$ ephemera list"; e list
echo "\$ ephemera destroy $id"; e destroy "$id"
echo "\$ ephemera list"; e list
