#!/usr/bin/env bash
# Create to SSH-ready for imported OCI images against the default image, in
# one run, inside a private network namespace:
#   default     the image scripts/build.sh makes;
#   kt-default  the same kernel and root filesystem imported as an OCI pair
#               (what a cached imported image adds to a create);
#   kt-debian   Debian bookworm from its packages (systemd, openssh-server),
#               the guest contract added at import, booted with the default
#               kernel image;
#   kt-own      the same with Debian's kernel inside (linux-image-amd64),
#               imported alone: it boots its own kernel.
# Runs alternate between the three so that a slow spell of the machine
# hits all alike. -t MIB replaces the TCG translation cache kt-debian's
# import asks for (128 MiB), to measure what that choice is worth.
#   bench/imported_create.sh [-n RUNS] [-t MIB]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=5
tb_size=
while getopts "n:t:" opt; do
  case $opt in
    n) runs=$OPTARG ;;
    t) tb_size=$OPTARG ;;
    *) echo "usage: $0 [-n RUNS] [-t MIB]" >&2; exit 2 ;;
  esac
done
# shellcheck source=scripts/lib/daemon-in-netns.sh
. scripts/lib/daemon-in-netns.sh
in_private_netns "$0" "$@"
base=${EPHEMERA_IMAGE_DIR:-/var/cache/ephemera/images}
work=$(mktemp -d /tmp/ephemera-imported-bench.XXXXXX)
trap 'stop_daemon 2>/dev/null; rm -rf "$work"' EXIT
bash tests/e2e/make_oci_images.sh "$work/sources" "$base"
bash tests/e2e/make_debian_rootfs.sh "$work/sources/debian.tar"
bash tests/e2e/make_debian_rootfs.sh --with-kernel "$work/sources/debian-kernel.tar"
images=$work/images
mkdir -p "$images"
chmod 0755 "$work" "$images"
ln -s "$(readlink -f "$base/default")" "$images/default"
mkdir -p "$work/d"
EPHEMERA_IMAGE_DIR=$images start_daemon "$work/d" "log: {level: warn}" "vm: {accel: tcg}"
for name in kt-default kt-debian; do
  rootfs=rootfs.tar
  [ "$name" = kt-debian ] && rootfs=debian.tar
  e image pull "$name" --kernel "oci:$work/sources/kernel:default" \
    --rootfs "docker-archive:$work/sources/$rootfs" --headroom 256 --json >/dev/null
done
e image pull kt-own --rootfs "docker-archive:$work/sources/debian-kernel.tar" --headroom 256 \
  --json >/dev/null
if [ -n "$tb_size" ]; then
  python3 - "$images/kt-debian/manifest.json" "$tb_size" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
m["tcg_tb_size_mib"] = int(sys.argv[2])
json.dump(m, open(sys.argv[1], "w"), indent=2)
PY
  echo "== kt-debian asks for a ${tb_size} MiB translation cache (vm.tcg_tb_size_mib is 32)"
fi
# The catalog's share of a create, alone: resolving each image, cold and warm.
echo "== resolving the image in the catalog (what an image adds to a create)"
"${EPHEMERA_BUILD_DIR:-build}/bench/image_resolve_bench" "$images" default kt-default kt-debian kt-own
for _ in $(seq "$runs"); do
  for name in default kt-default kt-debian kt-own; do
    e create --image "$name" --json >"$work/one.json"
    python3 - "$work/one.json" "$name" >>"$work/phases" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))["phases_ms"]
print(sys.argv[2], p["total"], p["vm_start"], p["sshd_up"], p["provision"])
PY
    id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$work/one.json")
    e ssh "$id" -- true
    e destroy "$id" >/dev/null
  done
done
median() { sort -n | awk '{v[NR]=$1} END {printf "%.0f", (NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2}'; }
col() { awk -v n="$1" -v c="$2" '$1 == n { print $c }' "$work/phases" | median; }
echo "== create to SSH-ready, median of $runs (ms): total, clone + launch, boot to sshd, provisioning"
for name in default kt-default kt-debian kt-own; do
  printf "  %-11s %6s %6s %6s %6s\n" "$name" "$(col $name 2)" "$(col $name 3)" "$(col $name 4)" "$(col $name 5)"
done
awk -v d="$(col default 2)" -v k="$(col kt-default 2)" -v b="$(col kt-debian 2)" \
  -v o="$(col kt-own 2)" 'BEGIN {
  printf "  kt-default - default: %+d ms (target <= 5)\n", k - d
  printf "  kt-debian / default:  %.2f (target <= 1.5)\n", b / d
  printf "  kt-own / default:     %.2f\n", o / d }'
