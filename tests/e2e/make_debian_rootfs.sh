#!/usr/bin/env bash
# A kernel-testing style rootfs image from Debian packages: bookworm with
# systemd and openssh-server (and sudo), root:root set with chpasswd as
# those images do, written as a docker-archive:
#   make_debian_rootfs.sh --fetch     download and install the packages into the cache
#   make_debian_rootfs.sh [--with-kernel] OUT.tar
#                                     write the docker-archive from the cache; with
#                                     --with-kernel, the tree also has Debian's kernel
#                                     (linux-image-amd64: /boot/vmlinuz-*, its modules)
# The download and install (a minute or two) is done by scripts/build.sh,
# never by a test: tests run in network namespaces that reach no mirror.
# The cache, ${EPHEMERA_TEST_CACHE:-/var/cache/ephemera/test-sources}, is
# keyed by this script's content: an edit here rebuilds it.
set -euo pipefail
cache=${EPHEMERA_TEST_CACHE:-/var/cache/ephemera/test-sources}
key=$(sha256sum "$0" | cut -c1-12)

# tree_tar FLAVOUR: the cached tree's tar ("" or "-kernel").
tree_tar() { echo "$cache/debian-bookworm$1-$key.tar"; }

# With the kernel: the distribution's initrd is not what ephemera boots,
# and modules for hardware a VM never has only make the tests' image
# bigger (depmod is run again over what stays).
trim_kernel='for m in "$1"/lib/modules/*/; do
  rm -rf "$m"kernel/drivers/gpu "$m"kernel/drivers/net/wireless "$m"kernel/drivers/media \
    "$m"kernel/drivers/infiniband "$m"kernel/drivers/staging "$m"kernel/sound
  chroot "$1" depmod "$(basename "$m")"
done
rm -f "$1"/boot/initrd.img-*'

fetch() { # FLAVOUR EXTRA-PACKAGES [HOOK]
  local out hooks=()
  out=$(tree_tar "$1")
  [ -s "$out" ] && return 0
  [ -z "${3:-}" ] || hooks=(--customize-hook="$3")
  mkdir -p "$cache"
  tmp=$(mktemp "$cache/.debian-XXXXXX.tar")
  trap 'rm -f "$tmp"' EXIT
  mmdebstrap --quiet --variant=apt --format=tar \
    --include="systemd-sysv,openssh-server,sudo,iproute2$2" \
    --customize-hook='chroot "$1" sh -c "echo root:root | chpasswd"' \
    --customize-hook='rm -f "$1"/var/cache/apt/*.bin "$1"/var/lib/apt/lists/*_Packages' \
    "${hooks[@]}" \
    bookworm "$tmp" http://deb.debian.org/debian
  mv "$tmp" "$out"
  trap - EXIT
}

if [ "${1:-}" = --fetch ]; then
  fetch "" ""
  fetch "-kernel" ",linux-image-amd64" "$trim_kernel"
  # Older versions of this script left theirs.
  find "$cache" -maxdepth 1 -name 'debian-bookworm*.tar' ! -name "*-$key.tar" -delete
  exit 0
fi
flavour=
if [ "${1:-}" = --with-kernel ]; then
  flavour=-kernel
  shift
fi
out=$1
tree=$(tree_tar "$flavour")
if [ ! -s "$tree" ]; then
  echo "no Debian root filesystem in $cache: run scripts/build.sh (it fetches the packages)" >&2
  exit 1
fi
# docker save's layout: manifest.json, the config, one layer.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/layer"
cp "$tree" "$work/layer/layer.tar"
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
  "$(sha256sum "$work/layer/layer.tar" | cut -d' ' -f1)" >"$work/config.json"
printf '[{"Config":"config.json","RepoTags":["ephemera/debian:test"],"Layers":["layer/layer.tar"]}]' \
  >"$work/manifest.json"
tar -C "$work" -cf "$out" manifest.json config.json layer
chmod a+r "$out"
