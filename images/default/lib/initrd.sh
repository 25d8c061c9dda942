#!/usr/bin/env bash
# initrd stage of build.sh; run under fakeroot for the /dev/console node.
#
#   initrd.sh ROOT KVER IMAGEDIR WORKDIR OUTPUT LIVE_OUTPUT
#
# Takes busybox and the modules from the assembled rootfs ROOT, so that
# the initrd and the rootfs always agree, and writes a gzip'd newc cpio.
# LIVE_OUTPUT gets the "live" modules alone under lib/modules/live, an
# archive that a live ISO appends to OUTPUT (the kernel unpacks both).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
. "$here/common.sh"

root=$1 kver=$2 imagedir=$3 work=$4 output=$5 live_output=$6
moddir=$root/usr/lib/modules/$kver

mkdir -p "$work"/{bin,dev,proc,sys,newroot,lib/modules}
cp "$root/usr/bin/busybox" "$work/bin/busybox"
for applet in $("$work/bin/busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$work/bin/$applet"
done
cp "$imagedir/initrd/init" "$work/init"
chmod 0755 "$work/init"
# The kernel opens /dev/console before /init runs.
mknod -m 0600 "$work/dev/console" c 5 1

# Flat directory plus load.order (file names, dependencies first): /init
# reads it with busybox insmod, which knows nothing about modules.dep.
mapfile -t mods < <(modules_for "$imagedir/modules.list" initrd)
module_closure "$moddir" "${mods[@]}" | while read -r mod; do
  cp "$moddir/$mod" "$work/lib/modules/"
  echo "${mod##*/}"
done >"$work/lib/modules/load.order"

# Modules already in the main archive are not repeated.
mapfile -t live_mods < <(modules_for "$imagedir/modules.list" live)
mkdir -p "$work.live/lib/modules/live"
module_closure "$moddir" "${live_mods[@]}" | while read -r mod; do
  grep -qxF "${mod##*/}" "$work/lib/modules/load.order" && continue
  cp "$moddir/$mod" "$work.live/lib/modules/live/"
  echo "${mod##*/}"
done >"$work.live/lib/modules/live/load.order"

archive() { # DIR OUTPUT
  chown -R 0:0 "$1"
  (cd "$1" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
    cpio --null --create --format=newc --reproducible --quiet) | gzip -9n >"$2"
}
archive "$work" "$output"
archive "$work.live" "$live_output"
