#!/bin/bash
# anweddol_container_setup.sh USER PASSWORD PORT
#
# The guest contract (DESIGN.md, "The guest contract"): run as root by
# the endpoint account through sudo, it hands the sandbox over to its
# client. It creates USER with PASSWORD and full sudo, makes sshd listen on
# PORT for USER only, and locks the endpoint account for good.
# Exit status: 0 on success, 2 for bad arguments, 1 for any other failure.
# shellcheck disable=SC2016  # '$1' & co. below are awk's, not the shell's
set -Eeuo pipefail
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
umask 077

usage() {
  echo "usage: $0 USER PASSWORD PORT" >&2
  echo "error: $*" >&2
  exit 2
}
fail() {
  echo "anweddol_container_setup: $*" >&2
  exit 1
}
# Whatever else fails is a failure (1), never "bad arguments" (2), even if
# the failing command itself exits 2 (awk and grep do).
trap 'fail "command failed (line $LINENO)"' ERR

[ $# -eq 3 ] || usage "expected 3 arguments, got $#"
user=$1 password=$2 port=$3
[[ $user =~ ^[a-z_][a-z0-9_-]{0,31}$ ]] ||
  usage "USER must match ^[a-z_][a-z0-9_-]{0,31}\$"
[ -n "$password" ] || usage "PASSWORD must not be empty"
[[ $password != *$'\n'* ]] || usage "PASSWORD must not contain a newline"
if ! [[ $port =~ ^[0-9]{1,5}$ ]] || ((10#$port < 1 || 10#$port > 65535)); then
  usage "PORT must be an integer from 1 to 65535"
fi
port=$((10#$port))
[ "$(id -u)" -eq 0 ] || fail "must run as root (sudo)"

# One run at a time (busybox has no flock; mkdir is atomic).
lock=/run/anweddol_container_setup.lock
mkdir "$lock" 2>/dev/null || fail "another setup is running ($lock)"
sudoers=/etc/sudoers.d/$user
cfg=/etc/ssh/sshd_config
trap 'rm -rf "$lock" /etc/passwd.new /etc/group.new /etc/shadow.new /etc/gshadow.new "$cfg.new" "$sudoers.new"' EXIT

# Existing accounts may only be "re-set up" if they are ordinary users, so
# that a retried setup works but root, endpoint & co. can never be taken.
if existing=$(awk -F: -v u="$user" '$1 == u { print $3 }' /etc/passwd) && [ -n "$existing" ]; then
  if [ "$existing" -lt 1000 ] || [ "$existing" -ge 60000 ] || [ "$user" = endpoint ]; then
    usage "USER $user is a reserved account"
  fi
fi
awk -F: -v u="$user" '$1 == u { found = 1 } END { exit !found }' /etc/group &&
  [ -z "$existing" ] && usage "USER $user clashes with an existing group"

# Rewrites FILE through AWK-PROGRAM atomically, keeping mode and owner.
# Values reach the program through the environment (ENVIRON): awk -v
# would interpret backslashes.
rewrite() {
  local file=$1 prog=$2
  awk -F: -v OFS=: "$prog" "$file" >"$file.new"
  chmod "$(stat -c %a "$file")" "$file.new"
  chown "$(stat -c %u:%g "$file")" "$file.new"
  mv "$file.new" "$file"
}

# sha512-crypt with what the system has: mkpasswd (the default image,
# Debian's whois), else openssl, else perl (Essential on Debian/Ubuntu),
# for root filesystems imported from OCI images.
sha512_crypt() {
  if command -v mkpasswd >/dev/null; then
    printf '%s\n' "$1" | mkpasswd -m sha512
  elif command -v openssl >/dev/null; then
    printf '%s\n' "$1" | openssl passwd -6 -stdin
  elif command -v perl >/dev/null; then
    local salt
    salt=$(head -c 12 /dev/urandom | base64 | tr -dc 'A-Za-z0-9./' | head -c 16)
    P="$1" S="$salt" perl -e 'print crypt($ENV{P}, "\$6\$" . $ENV{S} . "\$"), "\n"'
  else
    return 1
  fi
}
hash=$(sha512_crypt "$password") || fail "cannot hash the password"
[[ $hash == '$6$'* ]] || fail "the password hash is not sha512-crypt"
export U="$user" H="$hash"

if [ -z "$existing" ]; then
  uid=$(awk -F: 'BEGIN { m = 999 } $3 > m && $3 < 60000 { m = $3 } END { print m + 1 }' /etc/passwd)
  gid=$uid
  if awk -F: -v g="$gid" '$3 == g { f = 1 } END { exit !f }' /etc/group; then
    gid=$(awk -F: 'BEGIN { m = 999 } $3 > m && $3 < 60000 { m = $3 } END { print m + 1 }' /etc/group)
  fi
  export NEW_UID="$uid" NEW_GID="$gid" DAYS=$(($(date +%s) / 86400))
  rewrite /etc/group '{ print } END { print ENVIRON["U"], "x", ENVIRON["NEW_GID"], "" }'
  rewrite /etc/gshadow '{ print } END { print ENVIRON["U"], "!", "", "" }'
  rewrite /etc/passwd '{ print } END { print ENVIRON["U"], "x", ENVIRON["NEW_UID"], ENVIRON["NEW_GID"], "", "/home/" ENVIRON["U"], "/bin/bash" }'
  rewrite /etc/shadow '{ print } END { print ENVIRON["U"], ENVIRON["H"], ENVIRON["DAYS"], 0, 99999, 7, "", "", "" }'
else
  uid=$existing
  gid=$(awk -F: -v u="$user" '$1 == u { print $4 }' /etc/passwd)
  rewrite /etc/shadow '$1 == ENVIRON["U"] { $2 = ENVIRON["H"] } { print }'
fi
home=/home/$user
mkdir -p "$home"
chown "$uid:$gid" "$home"
chmod 0750 "$home"

# Full sudo, with the user's own password. visudo checks the syntax: a bad
# file in sudoers.d would break sudo for everyone.
printf '%s ALL=(ALL:ALL) ALL\n' "$user" >"$sudoers.new"
chmod 0440 "$sudoers.new"
visudo -cq -f "$sudoers.new" || { rm -f "$sudoers.new"; fail "visudo rejected $sudoers"; }
mv "$sudoers.new" "$sudoers"

# sshd: the new port, the new user only. sshd -t validates before it is
# put in place, so a reload cannot take sshd down.
awk -v port="$port" -v user="$user" '
  /^[[:space:]]*Port[[:space:]]/ { if (!p++) print "Port " port; next }
  /^[[:space:]]*AllowUsers[[:space:]]/ { if (!a++) print "AllowUsers " user; next }
  { print }
  END { if (!p) print "Port " port; if (!a) print "AllowUsers " user }' "$cfg" >"$cfg.new"
chmod 0644 "$cfg.new"
sshd -t -f "$cfg.new" || fail "sshd rejected the new configuration"
mv "$cfg.new" "$cfg"

# Lock the endpoint: no password, no key, no shell; and tell rcS not to
# restore its credentials from fw_cfg on a later boot.
rewrite /etc/shadow '$1 == "endpoint" { $2 = "!" } { print }'
rewrite /etc/passwd '$1 == "endpoint" { $7 = "/usr/sbin/nologin" } { print }'
rm -f /home/endpoint/.ssh/authorized_keys
mkdir -p /etc/ephemera
: >/etc/ephemera/endpoint-retired

# Listening TCP sockets by inode, from /proc/net/tcp{,6} (state 0A); with
# PORT, only those on that port.
listening() {
  awk -v p="${1:+$(printf ':%04X' "$1")}" '
    $4 == "0A" && (p == "" || substr($2, length($2) - 4) == p) { print $10 }' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# SIGHUP makes the sshd listener re-exec itself with the new configuration
# (same pid); sessions already open, like the one running this script,
# carry on. Done means: a new listening socket (not one of those open
# before the signal, even if PORT is unchanged) on PORT.
pid=$(cat /run/sshd.pid 2>/dev/null) || pid=
# Under systemd (imported root filesystems) the service manager knows it.
if [ -z "$pid" ] && command -v systemctl >/dev/null; then
  for unit in ssh.service sshd.service; do
    pid=$(systemctl show -p MainPID --value "$unit" 2>/dev/null) || pid=
    [ "${pid:-0}" != 0 ] && break
    pid=
  done
fi
[ -n "$pid" ] || fail "sshd is not running (no /run/sshd.pid)"
before=" $(listening | tr '\n' ' ') "
kill -HUP "$pid" || fail "cannot signal sshd (pid $pid)"
for _ in $(seq 100); do
  sleep 0.1
  kill -0 "$pid" 2>/dev/null || fail "sshd exited after reload"
  for inode in $(listening "$port"); do
    if [[ $before != *" $inode "* ]]; then
      echo "anweddol_container_setup: $user ready on port $port"
      exit 0
    fi
  done
done
fail "sshd does not listen on port $port 10 s after reload"
