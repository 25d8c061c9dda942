#!/usr/bin/env bash
# Installs the built Debian packages in a fresh Debian root and runs the
# installed daemon there:
#   chroot_install.sh --prepare DEB...   make (once) the root's cached tarball:
#                                        bookworm with apt and the packages'
#                                        dependencies, from the mirror
#   chroot_install.sh DEB...             the test, offline: a fresh root from
#                                        the tarball, `apt-get install ./DEB`,
#                                        `ephemerad check` (boots a VM from the
#                                        image in $EPHEMERA_IMAGE_DIR), the
#                                        installed daemon and client make a
#                                        VM, the daemon stops, and the purge
#                                        takes the VM with it
# The dependencies are installed ahead (the test reaches no mirror: it runs
# in a network namespace of its own), so apt-get only has to find every one
# of them there; the root has nothing else but apt. The cache,
# ${EPHEMERA_TEST_CACHE:-/var/cache/ephemera/test-sources}, is keyed by this
# script and the packages' dependencies.
set -euo pipefail
cache=${EPHEMERA_TEST_CACHE:-/var/cache/ephemera/test-sources}
image_dir=${EPHEMERA_IMAGE_DIR:-/var/cache/ephemera/images}

end_namespace_processes() {
  local ns pid
  ns=$(readlink /proc/self/ns/net)
  for pid in /proc/[0-9]*; do
    pid=${pid#/proc/}
    [ "$pid" != $$ ] && [ "$pid" != "$BASHPID" ] && [ "$pid" != "$PPID" ] || continue
    [ "$(readlink "/proc/$pid/ns/net" 2>/dev/null)" = "$ns" ] && kill -KILL "$pid" 2>/dev/null || true
  done
  return 0
}

# The test's steps, in mount and network namespaces of their own (see the
# end of this script): the mounts go with them, and apt-get cannot reach a
# mirror.
inside() {
  # Whatever fails, nothing this test started outlives it: every process
  # in its network namespace (QEMU, dnsmasq, the daemon) is its own.
  trap end_namespace_processes EXIT
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
  unit=$root/lib/systemd/system/ephemerad.service
  grep -q "^ExecStart=/usr/bin/ephemerad$" "$unit"
  # The socket group's members must reach the socket in the runtime folder.
  grep -q "^RuntimeDirectoryMode=0755$" "$unit" ||
    { echo "the unit's runtime folder is not searchable by the socket's group" >&2; exit 1; }
  [ -L "$root/etc/systemd/system/multi-user.target.wants/ephemerad.service" ] ||
    { echo "the unit is not enabled" >&2; exit 1; }
  in_root dpkg-query -W -f="\${Conffiles}\n" ephemera | grep -q " /etc/ephemera/config.yaml " ||
    { echo "/etc/ephemera/config.yaml is not a conffile" >&2; exit 1; }
  in_root ephemerad --version
  in_root ephemera --version
  # The packaged configuration is the one the daemon reads by default.
  help=$(in_root ephemerad --help)
  [[ $help == *"default /etc/ephemera/config.yaml"* ]] ||
    { echo "ephemerad does not read /etc/ephemera/config.yaml by default" >&2; exit 1; }

  echo "== ephemerad check (the installed daemon boots a VM from the host image)"
  # The host's images, read-only, where the package's purge never looks.
  mkdir "$root/srv/images"
  mount --bind "$image_dir" "$root/srv/images"
  mount -o remount,bind,ro "$root/srv/images"
  in_root ephemerad --image-dir /srv/images check --boot-timeout 180

  echo "== the installed daemon and client make a VM; the daemon stops, the VM stays"
  in_root sh -c "ephemerad --image-dir /srv/images >/var/log/ephemerad.log 2>&1 & echo \$! >/run/ephemerad.pid"
  daemon=$(cat "$root/run/ephemerad.pid")
  for _ in $(seq 100); do in_root ephemera status >/dev/null 2>&1 && break; sleep 0.1; done
  created=$(in_root ephemera --json create --ttl 600) ||
    { cat "$root/var/log/ephemerad.log" >&2; exit 1; }
  id=$(python3 -c "import json, sys; print(json.loads(sys.argv[1])[\"id\"])" "$created")
  qemu=$(pgrep -f "qemu-system.*$id" | head -1)
  [ -n "$qemu" ] || { echo "no QEMU runs for $id" >&2; exit 1; }
  if refused=$(in_root ephemerad cleanup 2>&1); then
    echo "ephemerad cleanup ran while the daemon served" >&2
    exit 1
  fi
  [[ $refused == *"another ephemerad (or its cleanup) uses /var/lib/ephemera"* ]] ||
    { echo "ephemerad cleanup failed otherwise: $refused" >&2; exit 1; }
  kill -TERM "$daemon"
  for _ in $(seq 300); do kill -0 "$daemon" 2>/dev/null || break; sleep 0.1; done
  ! kill -0 "$daemon" 2>/dev/null || { echo "ephemerad did not stop" >&2; exit 1; }
  kill -0 "$qemu" || { echo "the VM did not outlive the daemon" >&2; exit 1; }

  echo "== again over itself (maintainer scripts run a second time)"
  in_root sh -c "cd /debs && apt-get install -y -q --reinstall --no-install-recommends ./*.deb" >/dev/null
  in_root getent group ephemera
  kill -0 "$qemu" || { echo "the VM did not outlive an upgrade of the package" >&2; exit 1; }

  echo "== dpkg --purge (its prerm runs ephemerad cleanup)"
  in_root dpkg --purge ephemera ephemera-client
  for _ in $(seq 100); do kill -0 "$qemu" 2>/dev/null || break; sleep 0.1; done
  ! kill -0 "$qemu" 2>/dev/null || { echo "the VM outlived the package" >&2; exit 1; }
  [ -z "$(ip -o link show type tun)" ] || { echo "TAPs left: $(ip -o link show type tun)" >&2; exit 1; }
  for pid in $(pgrep -x dnsmasq); do
    [ "$(readlink "/proc/$pid/ns/net")" != "$(readlink /proc/self/ns/net)" ] ||
      { echo "dnsmasq left running" >&2; exit 1; }
  done
  for f in /usr/bin/ephemerad /usr/bin/ephemera /etc/ephemera/config.yaml /var/lib/ephemera \
      /var/cache/ephemera; do
    [ ! -e "$root$f" ] || { echo "left after purge: $f" >&2; exit 1; }
  done
}

if [ "${1:-}" = --inside ]; then
  shift
  inside
  exit 0
fi

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

export root image_dir
unshare --mount --net --fork "$0" --inside "${debs[@]}"
echo "chroot install: passed"
