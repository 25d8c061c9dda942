#!/usr/bin/env bash
# The life of a sandbox, for real: starts ephemerad in a network namespace
# of its own (so its TAPs, dnsmasq and guests touch no real network),
# creates a sandbox, logs in over SSH with the returned credentials, runs a
# command, destroys it; then does the same as a remote client over HTTPS
# with an access token, and stops the daemon. Needs root and a build.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib/daemon-in-netns.sh
. scripts/lib/daemon-in-netns.sh
in_private_netns "$0" "$@"
work=$(mktemp -d /tmp/ephemera-demo.XXXXXX)
trap stop_daemon EXIT
start_daemon "$work" "remote: {listen: '127.0.0.1:8443'}"

echo "\$ ephemera status"; e status
echo "\$ ephemera create --ttl 600"; e create --ttl 600 | grep -v '^password\|^token' | tee "$work/created"
id=$(awk '/^id:/{print $2}' "$work/created")
echo "\$ ephemera ssh $id -- 'id; uname -r; sudo -n true 2>/dev/null || echo sudo asks for the password'"
e ssh "$id" -- 'id; uname -r; sudo -n true 2>/dev/null || echo sudo asks for the password'
echo "\$ ephemera list"; e list
echo "\$ ephemera destroy $id"; e destroy "$id"
echo "\$ ephemera list"; e list

# A remote client: an access token from the local socket, then HTTPS.
echo "\$ ephemera token add --name demo --max-sandboxes 2"
token=$(e token add --name demo --max-sandboxes 2 --json | sed -n 's/.*"token": *"\([^"]*\)".*/\1/p')
r() { "$daemon_bin/cli/ephemera" --remote https://127.0.0.1:8443 "$@"; }
echo "\$ ephemera --remote https://127.0.0.1:8443 --token ... create --ttl 600"
r --token "$token" create --ttl 600 | grep -v '^password\|^token' | tee "$work/remote"
id=$(awk '/^id:/{print $2}' "$work/remote")
# The client remembers the server, credentials and host key of what it made.
echo "\$ ephemera ssh $id -- id -un"; "$daemon_bin/cli/ephemera" ssh "$id" -- id -un
echo "\$ ephemera destroy $id"; "$daemon_bin/cli/ephemera" destroy "$id"
