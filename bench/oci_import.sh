#!/usr/bin/env bash
# Importing a kernel + rootfs pair of OCI images (made from the default
# image by tests/e2e/make_oci_images.sh: an OCI layout and a docker-archive
# with a ~50 MB layer), cold and warm, through the real daemon and CLI;
# and, in the same run, the floor on this machine: the same layer extracted
# with tar and turned into ext4 with mke2fs -d by hand. With -r, the same
# pair pushed to a real registry (docker-registry on 127.0.0.1, HTTPS with
# a test CA and htpasswd auth) and pulled with docker:// references, against
# the floor of its (gzip'd) layers unpacked by hand.
#   bench/oci_import.sh [-n RUNS] [-r]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=3
registry=0
while getopts "n:r" opt; do
  case $opt in
    n) runs=$OPTARG ;;
    r) registry=1 ;;
    *) echo "usage: $0 [-n RUNS] [-r]" >&2; exit 2 ;;
  esac
done
# shellcheck source=scripts/lib/daemon-in-netns.sh
. scripts/lib/daemon-in-netns.sh
in_private_netns "$0" "$@"
src=$(mktemp -d /tmp/ephemera-oci-bench.XXXXXX)
trap 'stop_daemon 2>/dev/null; bash tests/support/test_registry.sh stop "$src/registry"; rm -rf "$src"' EXIT
bash tests/e2e/make_oci_images.sh "$src/sources" "${EPHEMERA_IMAGE_DIR:-/var/cache/ephemera/images}"
now_ms() { date +%s%3N; }
median() { sort -n | awk '{v[NR]=$1} END {printf "%.0f", (NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2}'; }

# The floor's steps: the kernel image's layer unpacked, then the rootfs tree
# made into ext4 with the importer's size rule (content + 5 % + 64 MiB + 64
# MiB headroom).
unpack_kernel() {
  for blob in "$src"/sources/kernel/blobs/sha256/*; do
    [ "$(stat -c %s "$blob")" -gt 100000 ] && tar -C "$1" -xzf "$blob"
  done
}
make_ext4() {
  kib=$(du -sk "$1" | cut -f1)
  mke2fs -q -F -t ext4 -m 0 -E lazy_itable_init=0,lazy_journal_init=0 -d "$1" \
    "$2" "$((kib * 105 / 100 / 1024 + 128))M" >/dev/null
}
# time_pulls RUN KERNEL_REF ROOTFS_REF [CONFIG LINE...]: a cold and a warm
# pull through a fresh daemon and image folder, appended to $src/cold, $src/warm.
time_pulls() {
  local i=$1 kernel=$2 rootfs=$3
  shift 3
  mkdir -p "$src/images-$i" "$src/d$i"
  chmod 0755 "$src/images-$i"
  EPHEMERA_IMAGE_DIR=$src/images-$i start_daemon "$src/d$i" "log: {level: warn}" "$@"
  for kind in cold warm; do
    t0=$(now_ms)
    e image pull "bench-$i" --kernel "$kernel" --rootfs "$rootfs" --headroom 64 --json >/dev/null
    echo $(($(now_ms) - t0)) >>"$src/$kind"
  done
  stop_daemon
  rm -rf "$src/images-$i"
}
report() {
  floor=$(median <"$src/floor") cold=$(median <"$src/cold") warm=$(median <"$src/warm")
  echo "== $1, median of $runs"
  printf "  floor (%s) %6s ms\n" "$2" "$floor"
  printf "  cold %-28s %6s ms\n" "$3" "$cold"
  printf "  warm %-28s %6s ms\n" "$4" "$warm"
  awk -v c="$cold" -v f="$floor" 'BEGIN { printf "  cold / floor: %.2f (target <= 1.3)\n", c / f }'
  : >"$src/floor" ; : >"$src/cold" ; : >"$src/warm"
}

: >"$src/floor" ; : >"$src/cold" ; : >"$src/warm"
for i in $(seq "$runs"); do
  t0=$(now_ms)
  mkdir -p "$src/floor-$i/a" "$src/floor-$i/root" "$src/floor-$i/k"
  unpack_kernel "$src/floor-$i/k"
  tar -C "$src/floor-$i/a" -xf "$src/sources/rootfs.tar"
  tar -C "$src/floor-$i/root" --numeric-owner -xpf "$src/floor-$i/a/layer/layer.tar"
  make_ext4 "$src/floor-$i/root" "$src/floor-$i/rootfs.ext4"
  echo $(($(now_ms) - t0)) >>"$src/floor"
  rm -rf "$src/floor-$i"
  time_pulls "$i" "oci:$src/sources/kernel:default" "docker-archive:$src/sources/rootfs.tar"
done
report "import of the default image as an OCI pair" "tar -x + mke2fs -d" "import" "import (cached)"

[ "$registry" = 1 ] || exit 0
port=$(bash tests/support/test_registry.sh start "$src/registry" tls)
host=127.0.0.1:$port
push() {
  skopeo copy --quiet --dest-cert-dir "$src/registry/certs.d" --dest-creds "$(cat "$src/registry/creds")" \
    "$1" "docker://$host/$2"
}
push "oci:$src/sources/kernel:default" bench/kernel:1
push "docker-archive:$src/sources/rootfs.tar" bench/rootfs:1
# The registry's own blobs, as a local layout, for the floor.
skopeo copy --quiet --src-cert-dir "$src/registry/certs.d" --src-creds "$(cat "$src/registry/creds")" \
  "docker://$host/bench/rootfs:1" "oci:$src/pulled:rootfs"
for i in $(seq "$runs"); do
  t0=$(now_ms)
  mkdir -p "$src/floor-$i/root" "$src/floor-$i/k"
  unpack_kernel "$src/floor-$i/k"
  for blob in "$src"/pulled/blobs/sha256/*; do
    [ "$(stat -c %s "$blob")" -gt 100000 ] && tar -C "$src/floor-$i/root" --numeric-owner -xpzf "$blob"
  done
  make_ext4 "$src/floor-$i/root" "$src/floor-$i/rootfs.ext4"
  echo $(($(now_ms) - t0)) >>"$src/floor"
  rm -rf "$src/floor-$i"
  time_pulls "$i" "docker://$host/bench/kernel:1" "docker://$host/bench/rootfs:1" \
    "registries: [{host: \"$host\", ca_file: $src/registry/ca.crt, credentials_file: $src/registry/auth.json}]"
done
report "the same pair pulled from a registry (HTTPS, basic auth)" "tar -xz of its blobs + mke2fs -d" \
  "pull + import" "pull (tags re-resolved)"
