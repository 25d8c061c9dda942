#!/usr/bin/env bash
# Makes a kernel-testing style pair of OCI images from the default image,
# for the import tests and benchmarks:
#   OUT/kernel          an OCI image layout (tag "default"): /boot/vmlinux, /boot/initrd
#   OUT/rootfs.tar      a docker-archive of the default image's root filesystem
#   OUT/no-sshd.tar     a docker-archive whose root filesystem has no sshd
# usage: make_oci_images.sh OUT [IMAGE_DIR]
set -euo pipefail
out=$1
base=$(readlink -f "${2:-/var/cache/ephemera/images}/default")
mkdir -p "$out"
work=$(mktemp -d "$out/.work-XXXXXX")
trap 'rm -rf "$work"' EXIT

sha() { sha256sum "$1" | cut -d' ' -f1; }
# tar of a folder's contents as image builders write it (numeric owners).
tar_of() { tar --numeric-owner --sort=name -C "$1" -cf "$2" .; }

# The kernel image, as an OCI layout with one gzip'd layer.
mkdir -p "$work/k/boot"
cp "$base/vmlinux" "$work/k/boot/vmlinux"
cp "$base/initrd.img" "$work/k/boot/initrd"
tar_of "$work/k" "$work/k.tar"
gzip -n -1 "$work/k.tar"
layout=$out/kernel
rm -rf "$layout"
mkdir -p "$layout/blobs/sha256"
blob() { local h; h=$(sha "$1"); cp "$1" "$layout/blobs/sha256/$h"; echo "$h"; }
lh=$(blob "$work/k.tar.gz")
ls=$(stat -c %s "$work/k.tar.gz")
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' >"$work/kcfg"
ch=$(blob "$work/kcfg")
cs=$(stat -c %s "$work/kcfg")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
  "$ch" "$cs" "$lh" "$ls" >"$work/kman"
mh=$(blob "$work/kman")
ms=$(stat -c %s "$work/kman")
printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"default"}}]}' \
  "$mh" "$ms" >"$layout/index.json"

# docker-archive NAME ROOT: what `docker save` writes for a one-layer image.
docker_archive() {
  local name=$1 root=$2 d=$work/$1
  mkdir -p "$d/layer"
  tar_of "$root" "$d/layer/layer.tar"
  printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$(sha "$d/layer/layer.tar")" >"$d/config.json"
  printf '[{"Config":"config.json","RepoTags":["ephemera/%s:test"],"Layers":["layer/layer.tar"]}]' \
    "$name" >"$d/manifest.json"
  tar -C "$d" -cf "$out/$name.tar" manifest.json config.json layer
}
mkdir -p "$work/root"
debugfs -R "rdump / $work/root" "$base/rootfs.ext4" >/dev/null 2>&1
[ -x "$work/root/usr/sbin/sshd" ] || { echo "rdump of $base/rootfs.ext4 failed" >&2; exit 1; }
rm -rf "$work/root/lost+found"
# rdump drops set-id bits (sudo needs its setuid): put them back, read
# from the ext4 itself with one debugfs run listing every folder.
(cd "$work/root" && find . -type d) | sed -e 's|^\.||' -e 's|^$|/|' -e 's|^|ls -p |' >"$work/ls.cmds"
debugfs -f "$work/ls.cmds" "$base/rootfs.ext4" 2>/dev/null | awk -v root="$work/root" '
  /^debugfs: ls -p / { dir = substr($0, 16); if (dir == "/") dir = ""; next }
  {
    n = split($0, f, "/")
    if (n < 7 || f[6] == "." || f[6] == "..") next
    mode = f[3]
    perm = substr(mode, length(mode) - 3)
    if (substr(perm, 1, 1) != "0") printf "%s %s%s/%s\n", perm, root, dir, f[6]
  }' | while read -r perm path; do [ -L "$path" ] || chmod "$perm" "$path"; done
[ -u "$work/root/usr/bin/sudo" ] || { echo "sudo lost its setuid bit" >&2; exit 1; }
docker_archive rootfs "$work/root"
mkdir -p "$work/bare/etc"
echo bare >"$work/bare/etc/hostname"
docker_archive no-sshd "$work/bare"
chmod -R a+rX "$out"
