#!/usr/bin/env bash
# The daemon under its systemd unit's confinement, where it can be had
# without systemd: the unit's CapabilityBoundingSet (and no ambient or
# inheritable capabilities), its NoNewPrivileges, ProtectSystem=strict with
# only its ReadWritePaths writable (here: the test's state folder and the
# image cache), and PrivateTmp. Under it, a real daemon in a private
# network namespace creates a VM and a container, runs a command in each
# and removes them.
#   unit_confinement.sh UNIT     (the unit cmake generated: build/ephemerad.service)
set -euo pipefail
unit=$(realpath "${1:?usage: unit_confinement.sh UNIT}")
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/lib/daemon-in-netns.sh
. scripts/lib/daemon-in-netns.sh
in_private_netns "$0" "$@"

setting() { sed -n "s/^$1=//p" "$unit"; }
caps=$(setting CapabilityBoundingSet)
[ -n "$caps" ] || { echo "$unit sets no CapabilityBoundingSet" >&2; exit 1; }
bounding=-all
for cap in $caps; do
  name=${cap#CAP_}
  bounding+=",+${name,,}"
done
no_new_privs=()
[ "$(setting NoNewPrivileges)" != yes ] || no_new_privs=(--no-new-privs)
grep -qx "ProtectSystem=strict" "$unit" || { echo "$unit: ProtectSystem is not strict" >&2; exit 1; }

work=$(mktemp -d /var/tmp/ephemera-confined.XXXXXX)
chmod 0711 "$work"
image_dir=${EPHEMERA_IMAGE_DIR:-/var/cache/ephemera/images}
# The programs run from the work folder, as an installed daemon runs from
# /usr/bin: a build under /tmp would vanish under the private /tmp.
build=${EPHEMERA_BUILD_DIR:-$PWD/build}
mkdir -p "$work/build/src/daemon" "$work/build/src/cli"
cp "$build/src/daemon/ephemerad" "$work/build/src/daemon/"
cp "$build/src/cli/ephemera" "$work/build/src/cli/"
export EPHEMERA_BUILD_DIR=$work/build
# The daemon's own mount namespace: ProtectSystem=strict (every mount
# read-only but the API file systems /dev, /proc, /sys and the writable
# paths) and PrivateTmp (a /tmp of its own); then the unit's capabilities.
confine='
  set -euo pipefail
  mount --bind "$WORK" "$WORK"
  mount --bind "$IMAGES" "$IMAGES"
  findmnt -rn -o TARGET | sort -u | while read -r target; do
    case $target in
      /dev | /dev/* | /proc | /proc/* | /sys | /sys/* | "$WORK" | "$IMAGES") ;;
      *) mount -o remount,bind,ro "$target" 2>/dev/null || true ;;
    esac
  done
  mount -t tmpfs -o mode=1777 tmpfs /tmp
  for path in / /etc /usr /var /var/lib /var/cache /run /home; do
    [ -e "$path" ] || continue
    findmnt -rno OPTIONS --target "$path" | tr , "\n" | grep -qx ro ||
      { echo "the emulated ProtectSystem=strict left $path writable" >&2; exit 1; }
  done
  exec setpriv --bounding-set="$BOUNDING" --inh-caps=-all --ambient-caps=-all "$@"'
daemon_wrapper=(env WORK="$work" IMAGES="$image_dir" BOUNDING="$bounding"
  unshare --mount --propagation private bash -c "$confine" confine ${no_new_privs[@]+"${no_new_privs[@]}"})
echo "== ephemerad with ProtectSystem=strict, PrivateTmp, ${no_new_privs[*]:-} and bounding set $bounding"
trap 'cat "$work/ephemerad.log" >&2 2>/dev/null; stop_daemon' EXIT
start_daemon "$work" "container: {enabled: true}"
grep -q "^CapBnd:" "/proc/$daemon/status"
expected=$(setpriv --bounding-set="$bounding" grep "^CapBnd:" /proc/self/status)
[ "$(grep "^CapBnd:" "/proc/$daemon/status")" = "$expected" ] ||
  { echo "the daemon does not run with the unit's bounding set" >&2; exit 1; }

id_of() { python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])'; }
for kind in vm container; do
  echo "== a $kind"
  id=$(e --json create --kind "$kind" --ttl 600 | id_of)
  [ -n "$id" ] || { echo "no $kind was made" >&2; exit 1; }
  out=$(e exec "$id" -- sh -c 'echo in-$(uname -s)')
  [ "$out" = in-Linux ] || { echo "exec in the $kind printed '$out'" >&2; exit 1; }
  e destroy "$id"
done
left=$(e --json list | python3 -c 'import json, sys; print(len(json.load(sys.stdin)))')
[ "$left" = 0 ] || { echo "$left sandbox(es) left" >&2; exit 1; }
trap - EXIT
stop_daemon
echo "confined daemon: passed"
