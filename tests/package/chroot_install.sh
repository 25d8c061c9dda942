#!/usr/bin/env bash
# Installs the built Debian packages in a fresh Debian root and runs the
# installed daemon there:
#   chroot_install.sh --prepare DEB...   make (once) the root's cached tarball:
#                                        bookworm with apt and the packages'
#                                        dependencies, from the mirror
#   chroot_install.sh DEB...             the test, offline: a fresh root from
#                                        the tarball, `apt-get install ./DEB`,
#                                        `ephemerad check` (boots a VM from the
#                                        image in $EPHEMERA_IMAGE_DIR), purge
# The dependencies are installed ahead (the test reaches no mirror: it runs
# in a network namespace of its own), so apt-get only has to find every one
# of them there: a dependency the packages do not declare is not in the
# root, and what needs it fails. The cache,
# ${EPHEMERA_TEST_CACHE:-/var/cache/ephemera/test-sources}, is keyed by this
# script and the packages' dependencies.
set -euo pipefail
cache=${EPHEMERA_TEST_CACHE:-/var/cache/ephemera/test-sources}
image_dir=${EPHEMERA_IMAGE_DIR:-/var/cache/ephemera/images}

prepare=0
if [ "${1:-}" = --prepare ]; then
  prepare=1
  shift
fi
[ $# -gt 0 ] || { echo "usage: chroot_install.sh [--prepare] DEB..." >&2; exit 2; }
debs=()
for deb in "$@"; do debs+=("$(realpath "$deb")"); done

# The packages' Depends, as names (the first of alternatives); ours are not.
depends() {
  for deb in "${debs[@]}"; do dpkg-deb -f "$deb" Depends; done | tr ',' '\n' |
    sed -E 's/\|.*//; s/\(.*\)//; s/[[:space:]]//g' | grep -v '^ephemera' | grep . | sort -u
}
mapfile -t packages < <(depends)
key=$( (sha256sum "$0" | cut -d' ' -f1; printf '%s\n' "${packages[@]}") | sha256sum | cut -c1-12)
tarball=$cache/package-root-$key.tar

if [ $prepare = 1 ]; then
  [ -s "$tarball" ] && exit 0
  mkdir -p "$cache"
  tmp=$(mktemp "$cache/.package-root-XXXXXX.tar")
  trap 'rm -f "$tmp"' EXIT
  include=$(IFS=,; echo "${packages[*]}")
  mmdebstrap --quiet --variant=apt --format=tar --include="$include" \
    --customize-hook='rm -f "$1"/var/cache/apt/archives/*.deb' \
    bookworm "$tmp" http://deb.debian.org/debian
  mv "$tmp" "$tarball"
  trap - EXIT
  find "$cache" -maxdepth 1 -name 'package-root-*.tar' ! -name "package-root-$key.tar" -delete
  exit 0
fi

if [ ! -s "$tarball" ]; then
  echo "no prepared root for these packages: run $0 --prepare ${*}" >&2
  exit 1
fi
root=$(mktemp -d /var/tmp/ephemera-root.XXXXXX)
cleanup() { rm -rf --one-file-system "$root"; }
trap cleanup EXIT
tar -C "$root" -xf "$tarball"
mkdir -p "$root/debs"
cp "${debs[@]}" "$root/debs/"

# Everything below runs in mount and network namespaces of its own: the
# mounts go with it, and apt-get cannot reach a mirror.
export root image_dir
unshare --mount --net --fork bash -euo pipefail -c '
  mount --make-rprivate /
  ip link set lo up
  mount -t proc proc "$root/proc"
  mount --rbind /sys "$root/sys"
  mount --rbind /dev "$root/dev"
  in_root() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    DEBIAN_FRONTEND=noninteractive "$@"; }

  echo "== apt-get install ./ephemera*.deb (offline)"
  in_root sh -c "cd /debs && apt-get install -y -q --no-install-recommends ./*.deb"

  echo "== what the packages set up"
  in_root getent group ephemera
  for f in /usr/bin/ephemerad /usr/bin/ephemera /usr/bin/wirt /lib/systemd/system/ephemerad.service \
      /etc/ephemera/config.yaml /usr/share/man/man8/ephemerad.8.gz /usr/lib/ephemera/ephemera-agent \
      /usr/share/ephemera/images/default/build.sh /var/lib/ephemera /var/cache/ephemera/images; do
    [ -e "$root$f" ] || { echo "missing after install: $f" >&2; exit 1; }
  done
  grep -q "^ExecStart=/usr/bin/ephemerad$" "$root/lib/systemd/system/ephemerad.service"
  [ -L "$root/etc/systemd/system/multi-user.target.wants/ephemerad.service" ] ||
    { echo "the unit is not enabled" >&2; exit 1; }
  in_root ephemerad --version
  in_root ephemera --version
  # The packaged configuration is the one the daemon reads by default.
  in_root ephemerad --help | grep -q "default /etc/ephemera/config.yaml" ||
    { echo "ephemerad does not read /etc/ephemera/config.yaml by default" >&2; exit 1; }

  echo "== ephemerad check (the installed daemon boots a VM from the host image)"
  mount --bind "$image_dir" "$root/var/cache/ephemera/images"
  in_root ephemerad check --boot-timeout 180
  umount "$root/var/cache/ephemera/images"

  echo "== dpkg --purge"
  in_root dpkg --purge ephemera ephemera-client
  for f in /usr/bin/ephemerad /usr/bin/ephemera /etc/ephemera/config.yaml /var/lib/ephemera \
      /var/cache/ephemera; do
    [ ! -e "$root$f" ] || { echo "left after purge: $f" >&2; exit 1; }
  done
'
echo "chroot install: passed"
