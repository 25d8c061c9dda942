#!/usr/bin/env bash
# A kernel-testing style rootfs image from Debian packages: bookworm with
# systemd and openssh-server (and sudo), root:root set with chpasswd as
# those images do, written as a docker-archive:
#   make_debian_rootfs.sh --fetch     download and install the packages into the cache
#   make_debian_rootfs.sh OUT.tar     write the docker-archive from the cache
# The download and install (under a minute) is done by scripts/build.sh,
# never by a test: tests run in network namespaces that reach no mirror.
# The cache, ${EPHEMERA_TEST_CACHE:-/var/cache/ephemera/test-sources}, is
# keyed by this script's content: an edit here rebuilds it.
set -euo pipefail
out=$1
cache=${EPHEMERA_TEST_CACHE:-/var/cache/ephemera/test-sources}
key=$(sha256sum "$0" | cut -c1-12)
tree_tar=$cache/debian-bookworm-$key.tar
if [ ! -s "$tree_tar" ]; then
  if [ "$out" != --fetch ]; then
    echo "no Debian root filesystem in $cache: run scripts/build.sh (it fetches the packages)" >&2
    exit 1
  fi
  mkdir -p "$cache"
  tmp=$(mktemp "$cache/.debian-XXXXXX.tar")
  trap 'rm -f "$tmp"' EXIT
  mmdebstrap --quiet --variant=apt --format=tar \
    --include=systemd-sysv,openssh-server,sudo,iproute2 \
    --customize-hook='chroot "$1" sh -c "echo root:root | chpasswd"' \
    --customize-hook='rm -f "$1"/var/cache/apt/*.bin "$1"/var/lib/apt/lists/*_Packages' \
    bookworm "$tmp" http://deb.debian.org/debian
  mv "$tmp" "$tree_tar"
  trap - EXIT
  # Older versions of this script left theirs.
  find "$cache" -maxdepth 1 -name 'debian-bookworm-*.tar' ! -name "${tree_tar##*/}" -delete
fi
[ "$out" = --fetch ] && exit 0
# docker save's layout: manifest.json, the config, one layer.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/layer"
cp "$tree_tar" "$work/layer/layer.tar"
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
  "$(sha256sum "$work/layer/layer.tar" | cut -d' ' -f1)" >"$work/config.json"
printf '[{"Config":"config.json","RepoTags":["ephemera/debian:test"],"Layers":["layer/layer.tar"]}]' \
  >"$work/manifest.json"
tar -C "$work" -cf "$out" manifest.json config.json layer
chmod a+r "$out"
