#!/usr/bin/env bash
# Builds a small live ISO from the default image, laid out like Anweddol's
# ISO mirror, so that ISO images boot for real under both drivers:
#   DIR/live-<hash12>/{anweddol_container.iso,sha256sum.txt,md5sum.txt,version.txt}
# and points DIR/live at it.
#
# The CD holds the default image's bzImage, its initrd with the live
# modules appended (initrd-live.img) and a shrunk copy of its rootfs.ext4,
# booted by isolinux with root=live:/live/rootfs.ext4 (a tmpfs overlay over
# the read-only ext4). Like an Anweddol ISO, its guest reads no key from
# the host: the endpoint logs in with a password baked into the image
# (--endpoint-password, default "endpoint"), so ephemerad needs the same
# endpoint_password; provisioning retires it on every sandbox.
#
# usage: images/live-iso/build.sh [--cache-dir DIR] [--endpoint-password PW] [--force]
set -euo pipefail
started=$EPOCHREALTIME
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../default/lib/common.sh
. "$here/../default/lib/common.sh"

cache_dir=/var/cache/ephemera/images
password=endpoint
force=0
usage() { echo "usage: images/live-iso/build.sh [--cache-dir DIR] [--endpoint-password PW] [--force]"; }
while [ $# -gt 0 ]; do
  case $1 in
    --cache-dir) [ $# -ge 2 ] || die "--cache-dir needs a directory"; cache_dir=$2; shift 2 ;;
    --cache-dir=*) cache_dir=${1#*=}; shift ;;
    --endpoint-password) [ $# -ge 2 ] || die "--endpoint-password needs a value"; password=$2; shift 2 ;;
    --force) force=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
[ -n "$password" ] || die "--endpoint-password must not be empty"

isolinux_bin=/usr/lib/ISOLINUX/isolinux.bin
ldlinux=/usr/lib/syslinux/modules/bios/ldlinux.c32
for tool in xorriso:xorriso debugfs:e2fsprogs resize2fs:e2fsprogs e2fsck:e2fsprogs \
  openssl:openssl md5sum:coreutils; do
  command -v "${tool%%:*}" >/dev/null 2>&1 ||
    die "missing tool ${tool%%:*} (Debian package ${tool#*:}; scripts/install-deps.sh installs it)"
done
[ -f "$isolinux_bin" ] || die "missing $isolinux_bin (Debian package isolinux)"
[ -f "$ldlinux" ] || die "missing $ldlinux (Debian package syslinux-common)"

base=$(readlink -f "$cache_dir/default") ||
  die "no default image in $cache_dir (images/default/build.sh builds it)"
for f in manifest.json vmlinuz initrd.img initrd-live.img rootfs.ext4; do
  [ -f "$base/$f" ] || die "the default image $base has no $f (rebuild it with images/default/build.sh)"
done
base_hash=$(sed -n 's/.*"inputs_hash": "\([0-9a-f]*\)".*/\1/p' "$base/manifest.json")
[ -n "$base_hash" ] || die "$base/manifest.json has no inputs_hash"
# The kernel command line of the default image, with the live root.
cmdline=$(sed -n 's/.*"cmdline": "\(.*\)",$/\1/p' "$base/manifest.json")
[ -n "$cmdline" ] || die "$base/manifest.json has no cmdline"
cmdline=$(sed -e 's#root=[^ ]*#root=live:/live/rootfs.ext4#' -e 's/ rw / /' <<<"$cmdline")

inputs=$(
  echo "ephemera live ISO inputs"
  echo "base $base_hash"
  echo "password $(sha256sum <<<"$password" | cut -d' ' -f1)"
  sha256sum "$here/build.sh" "$isolinux_bin" "$ldlinux" | cut -d' ' -f1
  xorriso -version 2>/dev/null | head -n 1
)
inputs_hash=$(sha256sum <<<"$inputs" | cut -d' ' -f1)
name=live-${inputs_hash:0:12}
final=$cache_dir/$name
link_current() {
  ln -sfn "$name" "$cache_dir/.live.link.$$"
  mv -T "$cache_dir/.live.link.$$" "$cache_dir/live"
}
if [ "$force" = 0 ] && [ -f "$final/version.txt" ]; then
  [ "$(readlink "$cache_dir/live" 2>/dev/null)" = "$name" ] || link_current
  echo "live ISO: cached at $final"
  exit 0
fi

exec 9>"$cache_dir/.live.lock"
flock 9
tmp=$(mktemp -d "$cache_dir/.build-live-XXXXXX")
cleanup() { rm -rf "$tmp" "$cache_dir/.live.link.$$"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP
cd_root=$tmp/cd
out=$tmp/$name
mkdir -p "$cd_root/isolinux" "$cd_root/live" "$out"

echo "[1/4] the root filesystem: a shrunk copy with the endpoint password"
rootfs=$cd_root/live/rootfs.ext4
cp --sparse=always "$base/rootfs.ext4" "$rootfs"
openssl passwd -6 -stdin <<<"$password" >"$tmp/endpoint_password_hash"
# debugfs writes as root whoever runs it; the hash stays root's alone.
debugfs -w -R "write $tmp/endpoint_password_hash /etc/ephemera/endpoint_password_hash" \
  "$rootfs" >/dev/null 2>&1 || die "debugfs cannot write the endpoint password hash"
debugfs -w -R "sif /etc/ephemera/endpoint_password_hash mode 0100600" "$rootfs" >/dev/null 2>&1 ||
  die "debugfs cannot set the hash's mode"
debugfs -R "cat /etc/ephemera/endpoint_password_hash" "$rootfs" 2>/dev/null |
  cmp -s - "$tmp/endpoint_password_hash" || die "the endpoint password hash did not land in the rootfs"
e2fsck -fy "$rootfs" >/dev/null 2>&1 || [ $? -le 1 ] || die "e2fsck finds errors in the rootfs copy"
resize2fs -M "$rootfs" >/dev/null 2>&1 || die "resize2fs -M failed"

echo "[2/4] kernel, initrd (with the live modules) and isolinux"
cp "$base/vmlinuz" "$cd_root/live/vmlinuz"
cat "$base/initrd.img" "$base/initrd-live.img" >"$cd_root/live/initrd.img"
cp "$isolinux_bin" "$ldlinux" "$cd_root/isolinux/"
cat >"$cd_root/isolinux/isolinux.cfg" <<CFG
SERIAL 0 115200
DEFAULT live
PROMPT 0
TIMEOUT 0
LABEL live
  KERNEL /live/vmlinuz
  APPEND initrd=/live/initrd.img $cmdline
CFG

echo "[3/4] the ISO (xorriso, El Torito with isolinux)"
iso=$out/anweddol_container.iso
xorriso -as mkisofs -quiet -o "$iso" -V EPHEMERA_LIVE -R -J \
  -b isolinux/isolinux.bin -c isolinux/boot.cat -no-emul-boot -boot-load-size 4 -boot-info-table \
  "$cd_root" 2>"$tmp/xorriso.log" || { cat "$tmp/xorriso.log" >&2; die "xorriso failed"; }

echo "[4/4] checksums and version (the Anweddol mirror layout)"
(cd "$out" && sha256sum anweddol_container.iso >sha256sum.txt && md5sum anweddol_container.iso >md5sum.txt)
echo "1.0.0-ephemera.${base_hash:0:8}" >"$out/version.txt"
chmod 0755 "$out"
chmod 0644 "$out"/*
mv "$out" "$final"
link_current
for old in "$cache_dir"/live-*; do
  [ "$old" = "$final" ] || rm -rf "$old"
done
elapsed=$(awk -v s="$started" -v e="$EPOCHREALTIME" 'BEGIN { printf "%.1f", e - s }')
echo "live ISO: built $final in ${elapsed}s ($(du -h "$final/anweddol_container.iso" | cut -f1))"
