#!/usr/bin/env bash
# Builds ephemera's default guest image from Debian packages:
#   DIR/default-<hash12>/{vmlinux,vmlinuz,initrd.img,initrd-live.img,rootfs.ext4,manifest.json}
# and points DIR/default at it. The hash covers every file under
# images/default/, the guest agent binary and the exact version of every
# .deb, so a rebuild happens only when one of them changes.
#
# usage: images/default/build.sh --agent PATH [--cache-dir DIR] [--force]
#
# --agent: the statically linked ephemera-agent (build/agent/ephemera-agent
# of a release build), installed as /usr/lib/ephemera/ephemera-agent.
#
# Needs no root: packages are unpacked under fakeroot and the ext4 image is
# written by mke2fs -d, without mounting anything. Needs a Debian apt
# configuration (apt-get update done) and the tools checked below.
set -euo pipefail
started=$EPOCHREALTIME
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/common.sh
. "$here/lib/common.sh"

cache_dir=/var/cache/ephemera/images
force=0
agent=
rootfs_size=512M          # apparent size; the file is sparse
usage() { echo "usage: images/default/build.sh --agent PATH [--cache-dir DIR] [--force]"; }
while [ $# -gt 0 ]; do
  case $1 in
    --cache-dir) [ $# -ge 2 ] || die "--cache-dir needs a directory"; cache_dir=$2; shift 2 ;;
    --cache-dir=*) cache_dir=${1#*=}; shift ;;
    --agent) [ $# -ge 2 ] || die "--agent needs the path of ephemera-agent"; agent=$2; shift 2 ;;
    --agent=*) agent=${1#*=}; shift ;;
    --force) force=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

# --- tools -----------------------------------------------------------------

missing_tools=()
need() { # TOOL DEBIAN-PACKAGE
  command -v "$1" >/dev/null 2>&1 || missing_tools+=("$1 (Debian package $2)")
}
need apt-get apt
need apt-cache apt
need dpkg-deb dpkg
need xz xz-utils
need lz4 lz4
need gzip gzip
need cpio cpio
need mke2fs e2fsprogs
need e2fsck e2fsprogs
need fakeroot fakeroot
need readelf binutils
need depmod kmod
need flock util-linux
need sha256sum coreutils
if [ ${#missing_tools[@]} -gt 0 ]; then
  die "missing tools: ${missing_tools[*]} (scripts/install-deps.sh installs them)"
fi

# The guest agent runs on the image's root filesystem and on imported ones,
# whatever their libc: it must be a static x86-64 executable.
[ -n "$agent" ] ||
  die "--agent PATH is required: the static ephemera-agent (cmake --build build --target ephemera-agent)"
if [ ! -f "$agent" ] || [ ! -x "$agent" ]; then die "--agent $agent is not an executable file"; fi
agent=$(cd "$(dirname "$agent")" && pwd)/$(basename "$agent")
agent_header=$(readelf -hW "$agent" 2>/dev/null) || die "--agent $agent is not an ELF file"
if ! grep -q 'Class:[[:space:]]*ELF64' <<<"$agent_header" ||
  ! grep -q 'Machine:.*X86-64' <<<"$agent_header"; then
  die "--agent $agent is not an x86-64 ELF executable"
fi
if readelf -lW "$agent" | grep -q 'Requesting program interpreter' ||
  readelf -dW "$agent" | grep -q '(NEEDED)'; then
  die "--agent $agent is dynamically linked (a sanitizer build?); build it with EPHEMERA_SANITIZE and EPHEMERA_FUZZ off"
fi
agent_sha256=$(sha256sum "$agent" | cut -d' ' -f1)

mkdir -p "$cache_dir" || die "cannot create cache directory $cache_dir"
cache_dir=$(cd "$cache_dir" && pwd)

# --- inputs and their hash --------------------------------------------------

# A private package cache: the stock Debian Docker config disables apt's,
# which makes every apt-cache call parse all package lists (~0.5 s). apt
# checks it against the lists and rebuilds it when they change. policy and
# showpkg read only that cache (show would decompress the lists): ~20 ms.
apt_opts=(
  -o "Dir::Cache::pkgcache=$cache_dir/.apt-pkgcache.bin"
  -o "Dir::Cache::srcpkgcache=$cache_dir/.apt-srcpkgcache.bin"
)

# Prints "NAME VERSION" for the candidate version of each package.
candidates() {
  apt-cache "${apt_opts[@]}" policy "$@" 2>/dev/null |
    awk '/^[^ ].*:$/ { p = substr($0, 1, length($0) - 1) }
         $1 == "Candidate:" && $2 != "(none)" { print p, $2 }'
}

mapfile -t packages < <(read_list "$here/packages.list")
# Debian's cloud kernel: built for virtual machines, with far fewer drivers
# to initialise than the generic one, and ext4 and crc32c built in. Under
# TCG it reaches the agent ~0.45 s sooner (2.2 against 2.7 s, 5 boots each).
kmeta=linux-image-cloud-amd64
records=$(candidates "$kmeta" "${packages[@]}")
for p in "$kmeta" "${packages[@]}"; do
  [[ $'\n'$records$'\n' == *$'\n'"$p "* ]] ||
    die "package $p has no installable version (apt-get update? see packages.list)"
done
# The metapackage pins its kernel exactly, "linux-image-6.1.0-N-amd64 (= V)";
# showpkg lists that as "<meta version> - linux-image-... (5 V)".
kmeta_version=$(awk -v m="$kmeta" '$1 == m { print $2 }' <<<"$records")
read -r kpkg kver_deb < <(apt-cache "${apt_opts[@]}" showpkg "$kmeta" | awk -v v="$kmeta_version" '
  /^Dependencies:/ { deps = 1; next }
  /^[A-Z][a-z ]*:/ { deps = 0 }
  deps && $1 == v && $2 == "-" {
    for (i = 3; i < NF; i++) if ($i ~ /^linux-image-/) { sub(/\)$/, "", $(i + 2)); print $i, $(i + 2); exit }
  }') || true
[ -n "${kpkg:-}" ] || die "cannot find the kernel package that $kmeta $kmeta_version depends on"
[ "$(candidates "$kpkg")" = "$kpkg $kver_deb" ] ||
  die "kernel package $kpkg $kver_deb (wanted by $kmeta $kmeta_version) is not available"
records=$(printf '%s\n%s %s\n' "$records" "$kpkg" "$kver_deb" | LC_ALL=C sort -u)

# Content and mode of every file here (modes matter: executables in rootfs/
# stay executable in the image), and every package's version and checksum.
inputs=$(
  echo "ephemera default image inputs"
  cd "$here"
  find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
  find . -type f -printf 'mode %m %p\n' | LC_ALL=C sort -k3
  echo "agent $agent_sha256"
  while read -r line; do echo "deb $line"; done <<<"$records"
)
inputs_hash=$(sha256sum <<<"$inputs" | cut -d' ' -f1)
name=default-${inputs_hash:0:12}
final=$cache_dir/$name

# Points DIR/default at the image atomically (rename over the old link).
link_current() {
  ln -sfn "$name" "$cache_dir/.default.link.$$"
  mv -T "$cache_dir/.default.link.$$" "$cache_dir/default"
}

if [ "$force" = 0 ] && [ -f "$final/manifest.json" ]; then
  [ "$(readlink "$cache_dir/default" 2>/dev/null)" = "$name" ] || link_current
  echo "image: cached at $final"
  exit 0
fi

# --- build -----------------------------------------------------------------

# One build per cache directory at a time; the loser re-checks the cache.
exec 9>"$cache_dir/.default.lock"
flock 9
if [ "$force" = 0 ] && [ -f "$final/manifest.json" ]; then
  link_current
  echo "image: cached at $final (built concurrently)"
  exit 0
fi

# Inside the cache directory, so that the final rename is atomic.
tmp=$(mktemp -d "$cache_dir/.build-XXXXXX")
cleanup() { rm -rf "$tmp" "$cache_dir/.default.link.$$"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP
out=$tmp/$name
mkdir -p "$out" "$tmp/debs"
fr_state=$tmp/fakeroot.state
: >"$fr_state"
fr() { fakeroot -i "$fr_state" -s "$fr_state" -- "$@"; }

total=7
step() { echo "[$1/$total] $2"; }

step 1 "fetching $(wc -l <<<"$records") packages (kernel $kpkg $kver_deb)"
# apt drops privileges to _apt for downloads; let it write there.
if [ "$(id -u)" = 0 ] && id _apt >/dev/null 2>&1; then
  chmod 0755 "$tmp"
  chown _apt "$tmp/debs"
fi
mapfile -t pins < <(awk '{ print $1 "=" $2 }' <<<"$records")
(cd "$tmp/debs" && apt-get "${apt_opts[@]}" -q=2 download "${pins[@]}") ||
  die "apt-get download failed"
[ "$(find "$tmp/debs" -name '*.deb' | wc -l)" = "${#pins[@]}" ] ||
  die "expected ${#pins[@]} .deb files, got $(find "$tmp/debs" -name '*.deb' | wc -l)"
mkdir -p "$tmp/kdeb"
mv "$tmp/debs/${kpkg}_"*.deb "$tmp/kdeb/"

step 2 "extracting the kernel"
dpkg-deb -x "$tmp"/kdeb/*.deb "$tmp/kernel"
kver=$(ls "$tmp/kernel/lib/modules")
if [ -z "$kver" ] || [ "$(wc -w <<<"$kver")" != 1 ]; then
  die "expected one module directory in $kpkg, found: $kver"
fi
cp "$tmp/kernel/boot/vmlinuz-$kver" "$out/vmlinuz"
# The package ships no modules.dep (its postinst runs depmod).
depmod -b "$tmp/kernel" "$kver" || die "depmod failed on $kpkg"

# The bzImage is a small decompressor plus a compressed stream holding the
# ELF vmlinux (xz for Debian's generic kernel, lz4 for the cloud one). Like
# the kernel's scripts/extract-vmlinux: try each offset at which a magic
# occurs, keep the first that decompresses to an ELF.
# Booted directly (PVH entry point), it skips the self-decompression that
# costs seconds under TCG.
extract_vmlinux() { # BZIMAGE OUTPUT
  local off magic
  for magic in '\xfd7zXZ\x00' '\x02\x21\x4c\x18'; do
    while read -r off; do
      tail -c "+$((off + 1))" "$1" >"$tmp/payload"
      # --single-stream: the bzImage goes on after the stream; ignore that.
      # lz4 decompresses the legacy frame, then fails on what follows it:
      # the ELF check below decides.
      case $magic in
        *XZ*) xz -dc --single-stream "$tmp/payload" >"$2" 2>/dev/null || continue ;;
        *) lz4 -dc "$tmp/payload" >"$2" 2>/dev/null || true ;;
      esac
      [ "$(head -c 4 "$2" | od -An -c | tr -d ' ')" = '177ELF' ] && return 0
    done < <(LC_ALL=C grep -aboP "$magic" "$1" | cut -d: -f1)
  done
  rm -f "$2" "$tmp/payload"
  return 1
}
extract_vmlinux "$out/vmlinuz" "$out/vmlinux" ||
  die "no xz- or lz4-compressed ELF kernel found in vmlinuz-$kver"
rm -f "$tmp/payload"
# QEMU boots an ELF kernel only through its PVH entry (Xen note type 18).
readelf -nW "$out/vmlinux" | grep -q 'Xen.*(0x00000012)' ||
  die "vmlinux-$kver has no PVH entry point note: QEMU cannot boot it directly"

step 3 "assembling the root filesystem"
fr "$here/lib/rootfs.sh" assemble "$tmp/root" "$tmp/debs" "$tmp/kernel" "$kver" "$here" "$agent"

step 4 "verifying shared libraries of the key programs"
fr "$here/lib/rootfs.sh" verify "$tmp/root"

step 5 "building the initrd"
fr "$here/lib/initrd.sh" "$tmp/root" "$kver" "$here" "$tmp/initrd" "$out/initrd.img" \
  "$out/initrd-live.img"

step 6 "creating rootfs.ext4 ($rootfs_size, sparse)"
# -d copies the tree with the owners and modes fakeroot recorded. Inode
# tables and journal are initialised now, not by the guest kernel at each
# first mount (lazy init would write into every sandbox's overlay).
fr mke2fs -q -F -t ext4 -L ephemera-root -m 0 \
  -E lazy_itable_init=0,lazy_journal_init=0 \
  -d "$tmp/root" "$out/rootfs.ext4" "$rootfs_size" >/dev/null ||
  die "mke2fs failed"
e2fsck -fn "$out/rootfs.ext4" >/dev/null 2>&1 || die "e2fsck finds errors in the new rootfs.ext4"

step 7 "writing the manifest"
# The recommended command line. console: the serial port that QEMU logs.
# panic=-1: a dead init resets the machine at once (with -no-reboot QEMU
# exits). tsc=reliable: under TCG the TSC is the host's, while the
# watchdog timers it would be checked against lose ticks on a busy host.
# quiet and the rest: less output and fewer probes to emulate. Launchers
# should append tsc_early_khz=<host TSC kHz> (see README.md).
cmdline="console=ttyS0 root=/dev/vda rw quiet panic=-1 tsc=reliable 8250.nr_uarts=1 i8042.noaux i8042.nokbd cryptomgr.notests random.trust_cpu=on"
printf '%s\n' "$inputs" >"$out/inputs.txt"
cat >"$out/manifest.json" <<JSON
{
  "name": "default",
  "version": 1,
  "format": "kernel",
  "kernel": "vmlinux",
  "kernel_compressed": "vmlinuz",
  "initrd": "initrd.img",
  "rootfs": "rootfs.ext4",
  "cmdline": "$cmdline",
  "kernel_version": "$kver",
  "kernel_package": "$kpkg $kver_deb",
  "agent": {"protocol": 3, "channel": "org.ephemera.agent.0"},
  "built_at": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "inputs_hash": "$inputs_hash"
}
JSON

# Into place: rename (atomic), then the link, then the old images.
if [ -e "$final" ]; then mv -T "$final" "$tmp/replaced"; fi
mv -T "$out" "$final"
link_current
for old in "$cache_dir"/default-*; do
  [ "$old" = "$final" ] || rm -rf "$old"
done

elapsed=$(awk -v s="$started" -v e="$EPOCHREALTIME" 'BEGIN { printf "%.1f", e - s }')
echo "image: built $final in ${elapsed}s"
for f in vmlinux vmlinuz initrd.img rootfs.ext4; do
  printf '  %-12s %7s apparent, %7s on disk\n' "$f" \
    "$(du -h --apparent-size "$final/$f" | cut -f1)" "$(du -h "$final/$f" | cut -f1)"
done
