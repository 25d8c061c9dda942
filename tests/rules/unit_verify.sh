#!/usr/bin/env bash
# The systemd unit as cmake generates it passes `systemd-analyze verify`
# (unknown keys, bad values, a missing binary): any complaint fails.
# Usage: unit_verify.sh GENERATED_UNIT EPHEMERAD_BINARY
set -euo pipefail
unit=$1
binary=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Verified against the built binary: the installed path need not exist here.
sed "s|^ExecStart=.*/ephemerad|ExecStart=$binary|" "$unit" >"$work/ephemerad.service"
grep -q "^ExecStart=$binary\$" "$work/ephemerad.service" || {
  echo "unit_verify: no ExecStart naming ephemerad in $unit" >&2
  exit 1
}
# Its man: pages are installed with it, not on this host.
out=$(systemd-analyze verify --man=no "$work/ephemerad.service" 2>&1) || {
  echo "$out" >&2
  exit 1
}
if [ -n "$out" ]; then
  echo "unit_verify: systemd-analyze complained:" >&2
  echo "$out" >&2
  exit 1
fi
echo "unit_verify: $unit verified"
