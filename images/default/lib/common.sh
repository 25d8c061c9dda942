# shellcheck shell=bash
# Helpers shared by build.sh and the stages it runs under fakeroot.

die() {
  printf 'build.sh: error: %s\n' "$*" >&2
  exit 1
}

# Debian's multiarch library directory in the guest (amd64 only).
GUEST_LIBDIR=usr/lib/x86_64-linux-gnu
export GUEST_LIBDIR

# Reads a list file: drops comments and blank lines, one entry per line.
read_list() {
  sed -e 's/#.*//' -e 's/[[:space:]]*$//' -e '/^$/d' "$1"
}

# Kernel modules listed for one target ("initrd" or "rootfs") in
# modules.list, in file order.
modules_for() {
  read_list "$1" | awk -v t="$2" '$1 == t { print $2 }'
}

# Prints the modules.dep paths (relative to /lib/modules/VER) of NAMES and
# all their dependencies, each once, dependencies first. modules.dep lists
# a module's dependencies so that the last one must be loaded first. A
# module built into the kernel (modules.builtin) needs nothing.
module_closure() {
  local moddir=$1; shift
  awk -v want="$*" '
    FILENAME ~ /modules\.builtin$/ {
      name = $1; sub(/.*\//, "", name); sub(/\.ko$/, "", name); gsub(/-/, "_", name)
      done[name] = 1
      next
    }
    {
      path = $1; sub(/:$/, "", path)
      name = path; sub(/.*\//, "", name); sub(/\.ko(\.[a-z]+)?$/, "", name)
      gsub(/-/, "_", name)
      bypath[path] = name; file[name] = path
      deps[name] = ""
      for (i = NF; i >= 2; i--) deps[name] = deps[name] " " $i
    }
    function visit(n,   list, k, i, d) {
      if (n in done) return
      if (!(n in file)) { missing = missing " " n; return }
      done[n] = 1
      k = split(deps[n], list, " ")
      for (i = 1; i <= k; i++) { d = list[i]; visit(bypath[d]) }
      print file[n]
    }
    END {
      n = split(want, w, " ")
      for (i = 1; i <= n; i++) { m = w[i]; gsub(/-/, "_", m); visit(m) }
      if (missing != "") { print "missing modules:" missing > "/dev/stderr"; exit 1 }
    }' "$moddir/modules.builtin" "$moddir/modules.dep"
}

# Drops the signature appended to a kernel module (see the kernel's
# scripts/sign-file: signature, struct module_signature with the signature
# length big-endian in its last 4 bytes, then a fixed magic string).
# Why: the kernel checks a signature whenever one is there, even when it
# enforces nothing (Debian: MODULE_SIG without MODULE_SIG_FORCE); under
# TCG that hashing costs ~80 ms of every boot for the initrd alone. An
# unsigned module loads the same, and taints the kernel with "E".
strip_module_signature() {
  local ko=$1 magic='~Module signature appended~' size siglen
  [ "$(tail -c 28 "$ko" | head -c 27)" = "$magic" ] || return 0
  size=$(stat -c %s "$ko")
  siglen=$(tail -c 32 "$ko" | head -c 4 | od -An -tu1 |
    awk '{ print (($1 * 256 + $2) * 256 + $3) * 256 + $4 }')
  if [ "$siglen" -le 0 ] || [ "$siglen" -ge "$size" ]; then die "bad module signature in $ko"; fi
  truncate -s $((size - 40 - siglen)) "$ko"
}
