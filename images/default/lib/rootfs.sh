#!/usr/bin/env bash
# Root filesystem stages of build.sh; run under fakeroot (shared state
# file), so that ownership, setuid bits and device nodes are recorded
# without real root, and mke2fs -d later writes them into the image.
#
#   rootfs.sh assemble ROOT DEBDIR KERNELTREE KVER IMAGEDIR AGENT
#   rootfs.sh verify ROOT
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
. "$here/common.sh"

# --- assemble --------------------------------------------------------------

assemble() {
  local root=$1 debdir=$2 ktree=$3 kver=$4 imagedir=$5 agent=$6 deb d

  # Merged /usr, as Debian bookworm: the top-level dirs are symlinks, and
  # tar --keep-directory-symlink sends the packages' /bin, /lib... through
  # them instead of replacing them with directories.
  mkdir -p "$root"/usr/{bin,sbin,lib,lib64}
  ln -s usr/bin "$root/bin"
  ln -s usr/sbin "$root/sbin"
  ln -s usr/lib "$root/lib"
  ln -s usr/lib64 "$root/lib64"

  # Files only: maintainer scripts never run, so whatever they would do
  # (users, permissions, config files) is done below.
  for deb in "$debdir"/*.deb; do
    dpkg-deb --fsys-tarfile "$deb" | tar -x --keep-directory-symlink -C "$root" ||
      die "cannot unpack ${deb##*/}"
  done

  # Documentation and init-system glue are dead weight in a sandbox; the
  # licences stay.
  rm -rf "$root"/usr/share/{man,info,locale,lintian,bug,doc-base,bash-completion,menu}
  find "$root/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete
  find "$root/usr/share/doc" -depth -mindepth 1 -type d -empty -delete
  rm -rf "$root"/etc/{init.d,init,systemd,cron.d,cron.daily,logrotate.d,default,pam.d,ssh/sshd_config.d,ufw} \
    "$root"/usr/lib/systemd "$root"/usr/lib/tmpfiles.d "$root"/usr/lib/sysusers.d

  # busybox provides every command that no package above does (sh, init,
  # mount, ip, udhcpc, acpid, awk...). Relative links, so that they work
  # from the initrd's view of the disk too.
  local applet dir name
  while read -r applet; do
    dir=${applet%/*} name=${applet##*/}
    case $dir in
      bin | usr/bin) dir=usr/bin ;;
      sbin | usr/sbin) dir=usr/sbin ;;
      *) continue ;; # linuxrc
    esac
    [ -e "$root/$dir/$name" ] || [ -L "$root/$dir/$name" ] && continue
    if [ "$dir" = usr/bin ]; then
      ln -s busybox "$root/$dir/$name"
    else
      ln -s ../bin/busybox "$root/$dir/$name"
    fi
  done < <("$root/usr/bin/busybox" --list-full)

  # The image's own files. Git keeps only the executable bit, so modes are
  # set here: 0755 for executables and directories, 0644 for the rest, and
  # the exceptions below.
  (cd "$imagedir/rootfs" && find . -type d) | while read -r d; do
    mkdir -p "$root/$d"
    chmod 0755 "$root/$d"
  done
  (cd "$imagedir/rootfs" && find . -type f) | while read -r d; do
    rm -f "$root/$d"
    cp "$imagedir/rootfs/$d" "$root/$d"
    if [ -x "$imagedir/rootfs/$d" ]; then chmod 0755 "$root/$d"; else chmod 0644 "$root/$d"; fi
  done
  # The guest agent (docs/guest-agent.md); rcS starts it when the host
  # hands the machine a token.
  cp "$agent" "$root/usr/lib/ephemera/ephemera-agent"
  chmod 0755 "$root/usr/lib/ephemera/ephemera-agent"
  chown -R 0:0 "$root"
  # GID 42 is "shadow" in /etc/group, as on Debian.
  chgrp 42 "$root/etc/shadow" "$root/etc/gshadow"
  chmod 0640 "$root/etc/shadow" "$root/etc/gshadow"
  chmod 0440 "$root/etc/sudoers"
  mkdir -p "$root/etc/sudoers.d"
  chmod 0755 "$root/etc/sudoers.d"
  # unix_chkpwd lets pam_unix check passwords of non-root callers; its
  # mode is set by libpam-modules-bin's postinst, which did not run.
  chgrp 42 "$root/usr/sbin/unix_chkpwd"
  chmod 2755 "$root/usr/sbin/unix_chkpwd"

  # The directories no package ships: mount points, home directories,
  # sshd's privilege separation directory (/run/sshd is a tmpfs made by
  # rcS; /var/empty for anything that expects it).
  mkdir -p "$root"/{dev,proc,sys,run,tmp,mnt,root,home/endpoint,var/empty,var/log,var/lib,var/tmp,etc/ephemera}
  chmod 1777 "$root/tmp" "$root/var/tmp"
  chmod 0700 "$root/root"
  chmod 0555 "$root/var/empty"
  chown 1000:1000 "$root/home/endpoint"
  chmod 0750 "$root/home/endpoint"
  [ -L "$root/var/run" ] || rm -rf "$root/var/run"  # /run is a tmpfs
  ln -sfn /run "$root/var/run"
  # For the moment before devtmpfs is mounted (booting without initrd).
  mknod -m 0600 "$root/dev/console" c 5 1
  mknod -m 0666 "$root/dev/null" c 1 3

  install_modules "$root" "$ktree" "$kver" "$imagedir"
}

# Copies the kernel modules of modules.list (every target) with their
# dependencies to ROOT/usr/lib/modules/KVER, generates modules.dep there
# (busybox modprobe reads it), and writes ephemera.load: the modules rcS
# loads if they are not yet, dependencies first.
install_modules() {
  local root=$1 ktree=$2 kver=$3 imagedir=$4 list src dst mod all
  list=$imagedir/modules.list
  src=$ktree/lib/modules/$kver
  dst=$root/usr/lib/modules/$kver
  mkdir -p "$dst"
  # shellcheck disable=SC2046  # one argument per module name
  all=$(module_closure "$src" $(modules_for "$list" initrd) $(modules_for "$list" live) \
    $(modules_for "$list" rootfs)) ||
    die "modules.list names modules that $kver does not have"
  for mod in $all; do
    mkdir -p "$dst/${mod%/*}"
    cp "$src/$mod" "$dst/$mod"
    strip_module_signature "$dst/$mod"
  done
  cp "$src"/modules.{builtin,builtin.modinfo,order} "$dst/"
  depmod -b "$root" "$kver" || die "depmod failed for the rootfs modules"
  # shellcheck disable=SC2046  # one argument per module name
  # The initrd's too: rcS skips what is loaded, and loads them when the
  # kernel booted without the initrd.
  module_closure "$dst" $(modules_for "$list" initrd) $(modules_for "$list" rootfs) \
    >"$dst/ephemera.load"
}

# --- verify ----------------------------------------------------------------

# Prints the host path of guest PATH, resolving symlinks the way the guest
# would (absolute links point into ROOT, not to the host). Fails if the
# path does not exist in ROOT.
guest_path() {
  local root=$1 rest=${2#/} out="" comp link hops=0
  while [ -n "$rest" ]; do
    comp=${rest%%/*}
    if [[ $rest == */* ]]; then rest=${rest#*/}; else rest=""; fi
    case $comp in
      "" | .) continue ;;
      ..) out=${out%/*}; continue ;;
    esac
    if [ -L "$root$out/$comp" ]; then
      ((++hops <= 40)) || return 1
      link=$(readlink "$root$out/$comp")
      if [[ $link == /* ]]; then out=""; fi
      rest=${link#/}${rest:+/$rest}
    else
      out=$out/$comp
    fi
  done
  [ -e "$root$out" ] || return 1
  printf '%s\n' "$root$out"
}

# Checks that guest ELF file OBJ finds every DT_NEEDED library, recursively,
# the way ld.so will in the guest: RUNPATH/RPATH, then the default
# directories (the image has no ld.so.cache, so /etc/ld.so.conf is not
# used). Sets "missing" entries for whatever it cannot find.
declare -A seen_objs=()
missing=()
check_elf() {
  local root=$1 obj=$2 host dyn lib dir found origin interp
  [ -n "${seen_objs[$obj]:-}" ] && return 0
  seen_objs[$obj]=1
  host=$(guest_path "$root" "$obj") || { missing+=("$obj (file not found)"); return 0; }
  dyn=$(readelf -dW "$host") || { missing+=("$obj (not an ELF file)"); return 0; }
  interp=$(readelf -lW "$host" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
  if [ -n "$interp" ] && ! guest_path "$root" "$interp" >/dev/null; then
    missing+=("$interp (program interpreter of $obj)")
  fi
  origin=${obj%/*}
  local -a dirs=()
  for dir in $(sed -n 's/.*(\(RUNPATH\|RPATH\)).*\[\(.*\)\]/\2/p' <<<"$dyn" | tr ':' ' '); do
    dirs+=("${dir//\$ORIGIN/$origin}")
  done
  dirs+=(/lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu /lib /usr/lib)
  while read -r lib; do
    found=
    for dir in "${dirs[@]}"; do
      if guest_path "$root" "$dir/$lib" >/dev/null; then
        found=$dir/$lib
        break
      fi
    done
    if [ -z "$found" ]; then
      missing+=("$lib (needed by $obj)")
    else
      check_elf "$root" "$found"
    fi
  done < <(sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' <<<"$dyn")
}

verify() {
  local root=$1 obj cmd mode f
  local -a key=(
    /usr/sbin/sshd /usr/bin/ssh-keygen /usr/lib/openssh/sftp-server
    /usr/bin/sudo /usr/libexec/sudo/sudoers.so /usr/sbin/visudo
    /usr/bin/bash /usr/sbin/unix_chkpwd
  )
  # Every PAM module that a file in /etc/pam.d names.
  while read -r obj; do
    key+=("/$GUEST_LIBDIR/security/$obj")
  done < <(awk '$1 !~ /^[#@]/ && NF >= 3 { print $3 }' "$root"/etc/pam.d/* | sort -u)
  for obj in "${key[@]}"; do check_elf "$root" "$obj"; done
  if [ ${#missing[@]} -gt 0 ]; then
    printf 'build.sh: missing in the rootfs: %s\n' "${missing[@]}" >&2
    die "the rootfs lacks shared libraries or files; add the Debian packages that provide them to packages.list"
  fi

  # The commands rcS, rcK, udhcpc.script and the setup script call.
  for cmd in sh init mount hostname ip syslogd insmod modprobe acpid udhcpc \
    ssh-keygen sshd awk sed grep cut tr head cat chmod chown chgrp mv rm mkdir \
    sleep seq kill killall stat id date mkpasswd poweroff reboot sync nologin; do
    guest_path "$root" "/usr/bin/$cmd" >/dev/null || guest_path "$root" "/usr/sbin/$cmd" >/dev/null ||
      missing+=("command $cmd")
  done
  for f in /sbin/init /bin/sh /bin/bash /bin/anweddol_container_setup.sh /lib64/ld-linux-x86-64.so.2 \
    /usr/lib/ephemera/ephemera-agent; do
    guest_path "$root" "$f" >/dev/null || missing+=("$f")
  done
  # Modes that maintainer scripts or dpkg would otherwise have set.
  for f in usr/bin/sudo:4755:0:0 usr/sbin/unix_chkpwd:2755:0:42 etc/shadow:640:0:42 etc/sudoers:440:0:0; do
    IFS=: read -r obj mode uid gid <<<"$f"
    [ "$(stat -c '%a:%u:%g' "$root/$obj")" = "$mode:$uid:$gid" ] ||
      missing+=("/$obj with mode $mode owner $uid:$gid (is $(stat -c '%a %u:%g' "$root/$obj"))")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    printf 'build.sh: wrong in the rootfs: %s\n' "${missing[@]}" >&2
    die "the rootfs is incomplete"
  fi
  echo "      ${#seen_objs[@]} ELF objects checked, all libraries present"
}

case ${1:-} in
  assemble) shift; assemble "$@" ;;
  verify) shift; verify "$@" ;;
  *) die "usage: rootfs.sh assemble|verify ..." ;;
esac
