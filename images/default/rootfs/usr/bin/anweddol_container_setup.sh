#!/bin/bash
# anweddol_container_setup.sh USER PASSWORD PORT
#
# The guest contract (DESIGN.md, "The guest contract"): run as root by
# the endpoint account through sudo, it hands the sandbox over to its
# client. It creates USER with PASSWORD and full sudo, makes sshd listen on
# PORT for USER only, and locks the endpoint account for good.
# Exit status: 0 on success, 2 for bad arguments, 1 for any other failure.
#
# It runs once per sandbox, on the path to the client's credentials, and
# under emulation every program started costs ~0.1 s (a distro's dynamically
# linked coreutils more): files are read and written with bash builtins,
# and programs run only where a builtin cannot do the job (about ten runs).
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
# the failing command itself exits 2.
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
((EUID == 0)) || fail "must run as root (sudo)"

# One run at a time: the lock is created exclusively (noclobber).
lock=/run/anweddol_container_setup.lock
if ! (set -C && : >"$lock") 2>/dev/null; then fail "another setup is running ($lock)"; fi
sudoers=/etc/sudoers.d/$user
cfg=/etc/ssh/sshd_config
work=/etc/.anweddol_container_setup.$$
trap 'rm -rf "$lock" "$work" "$cfg.new" "$sudoers.new"' EXIT

# The account files, read once. Existing accounts may only be "re-set up"
# if they are ordinary users, so that a retried setup works but root,
# endpoint & co. can never be taken.
existing='' existing_gid='' max_uid=999 max_gid=999 group_taken='' gid_taken=()
while IFS=: read -r name _ uid gid _; do
  if [ "$name" = "$user" ]; then existing=$uid existing_gid=$gid; fi
  if [[ $uid =~ ^[0-9]+$ ]] && ((uid > max_uid && uid < 60000)); then max_uid=$uid; fi
done </etc/passwd
while IFS=: read -r name _ gid _; do
  if [ "$name" = "$user" ]; then group_taken=1; fi
  if [[ $gid =~ ^[0-9]+$ ]]; then
    gid_taken[gid]=1
    if ((gid > max_gid && gid < 60000)); then max_gid=$gid; fi
  fi
done </etc/group
if [ -n "$existing" ]; then
  if ! [[ $existing =~ ^[0-9]+$ ]] || ((existing < 1000 || existing >= 60000)) ||
    [ "$user" = endpoint ]; then
    usage "USER $user is a reserved account"
  fi
fi
if [ -n "$group_taken" ] && [ -z "$existing" ]; then usage "USER $user clashes with an existing group"; fi

# sha512-crypt with what the system has: mkpasswd (the default image,
# Debian's whois), else openssl, else perl (Essential on Debian/Ubuntu),
# for root filesystems imported from OCI images.
salt() {
  local alphabet=./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz s='' i
  if [ -n "${SRANDOM:-}" ]; then # bash >= 5.1: getrandom(2)
    for ((i = 0; i < 16; i++)); do s+=${alphabet:SRANDOM % 64:1}; done
  else
    s=$(head -c 12 /dev/urandom | base64 | tr -dc 'A-Za-z0-9./' | head -c 16)
  fi
  printf '%s' "$s"
}
sha512_crypt() {
  if command -v mkpasswd >/dev/null; then
    printf '%s\n' "$1" | mkpasswd -m sha512
  elif command -v openssl >/dev/null; then
    printf '%s\n' "$1" | openssl passwd -6 -stdin
  elif command -v perl >/dev/null; then
    P="$1" S="$(salt)" perl -e 'print crypt($ENV{P}, "\$6\$" . $ENV{S} . "\$"), "\n"'
  else
    return 1
  fi
}
hash=$(sha512_crypt "$password") || fail "cannot hash the password"
[[ $hash == '$6$'* ]] || fail "the password hash is not sha512-crypt"

if [ -z "$existing" ]; then
  uid=$((max_uid + 1)) gid=$((max_uid + 1))
  if [ -n "${gid_taken[gid]:-}" ]; then gid=$((max_gid + 1)); fi
else
  uid=$existing gid=$existing_gid
fi
printf -v days '%(%s)T' -1
days=$((days / 86400))

# The new account files are written beside the old ones (copies keep each
# file's mode and owner; '>' keeps them) and renamed over them. The
# endpoint is locked in the same writes: no password, no shell.
files=(/etc/group /etc/passwd /etc/shadow)
if [ -e /etc/gshadow ]; then files+=(/etc/gshadow); fi
mkdir "$work"
cp -p "${files[@]}" "$work/"
# Copies FILE's lines to $work/FILE through the function EDIT (which
# prints each line as it should be), then appends the lines that follow.
rewrite() {
  local file=$1 edit=$2 line
  shift 2
  {
    while IFS= read -r line || [ -n "$line" ]; do "$edit" "$line"; done <"/etc/$file"
    [ $# -eq 0 ] || printf '%s\n' "$@"
  } >"$work/$file"
}
keep() { printf '%s\n' "$1"; }
passwd_line() {
  case $1 in
    endpoint:*) printf '%s:/usr/sbin/nologin\n' "${1%:*}" ;;
    *) printf '%s\n' "$1" ;;
  esac
}
shadow_line() { # the endpoint locked, an existing USER's password replaced
  local name=${1%%:*} rest=${1#*:}
  case $name in
    endpoint) printf 'endpoint:!:%s\n' "${rest#*:}" ;;
    "$user") printf '%s:%s:%s\n' "$user" "$hash" "${rest#*:}" ;;
    *) printf '%s\n' "$1" ;;
  esac
}
if [ -z "$existing" ]; then
  rewrite group keep "$user:x:$gid:"
  if [ -e /etc/gshadow ]; then rewrite gshadow keep "$user:!::"; fi
  rewrite passwd passwd_line "$user:x:$uid:$gid::/home/$user:/bin/bash"
  rewrite shadow shadow_line "$user:$hash:$days:0:99999:7:::"
else
  rewrite passwd passwd_line
  rewrite shadow shadow_line
fi
mv -f "${files[@]/#\/etc/$work}" /etc/
if command -v install >/dev/null; then # one program for three (coreutils)
  install -d -m 0750 -o "$uid" -g "$gid" "/home/$user"
else
  mkdir -p "/home/$user" && chown "$uid:$gid" "/home/$user" && chmod 0750 "/home/$user"
fi

# Full sudo, with the user's own password. A bad file in sudoers.d would
# break sudo for everyone: this line is valid for any USER the pattern
# above lets through, so visudo need not check it.
umask 0337
printf '%s ALL=(ALL:ALL) ALL\n' "$user" >"$sudoers.new"
umask 077
mv -f "$sudoers.new" "$sudoers"

# sshd: the new port, the new user only. Only the Port and AllowUsers
# lines change, to values checked above; should sshd refuse the result
# all the same, the wait below sees it exit and says so.
umask 022
{
  seen_port='' seen_allow=''
  while IFS= read -r line || [ -n "$line" ]; do
    if [[ $line =~ ^[[:space:]]*Port[[:space:]] ]]; then
      [ -n "$seen_port" ] || echo "Port $port"
      seen_port=1
    elif [[ $line =~ ^[[:space:]]*AllowUsers[[:space:]] ]]; then
      [ -n "$seen_allow" ] || echo "AllowUsers $user"
      seen_allow=1
    else
      printf '%s\n' "$line"
    fi
  done <"$cfg"
  [ -n "$seen_port" ] || echo "Port $port"
  [ -n "$seen_allow" ] || echo "AllowUsers $user"
} >"$cfg.new"
umask 077
mv -f "$cfg.new" "$cfg"

# No key for the endpoint either (rm: the endpoint owns ~/.ssh, and a link
# there must not be followed); and tell the boot not to restore its
# credentials from fw_cfg on a later boot.
rm -f /home/endpoint/.ssh/authorized_keys
[ -d /etc/ephemera ] || mkdir -p /etc/ephemera
: >/etc/ephemera/endpoint-retired

# Listening TCP sockets by inode, from /proc/net/tcp{,6} (state 0A); with
# PORT, only those on that port.
listening() {
  local want='' file _sl local_address _remote state _1 _2 _3 _4 _5 inode _rest
  [ -z "${1:-}" ] || printf -v want ':%04X' "$1"
  for file in /proc/net/tcp /proc/net/tcp6; do
    [ -r "$file" ] || continue
    while read -r _sl local_address _remote state _1 _2 _3 _4 _5 inode _rest; do
      [ "$state" = 0A ] || continue
      [ -z "$want" ] || [ "${local_address: -5}" = "$want" ] || continue
      printf '%s\n' "$inode"
    done <"$file"
  done
}

# SIGHUP makes the sshd listener re-exec itself with the new configuration
# (same pid); sessions already open, like the one running this script,
# carry on. Done means: a new listening socket (not one of those open
# before the signal, even if PORT is unchanged) on PORT.
pid=''
if [ -r /run/sshd.pid ]; then read -r pid </run/sshd.pid || true; fi
# Under systemd (imported root filesystems) the service manager knows it.
if [ -z "$pid" ] && command -v systemctl >/dev/null; then
  for unit in ssh.service sshd.service; do
    pid=$(systemctl show -p MainPID --value "$unit" 2>/dev/null) || pid=
    if [ "${pid:-0}" != 0 ]; then break; fi
    pid=
  done
fi
[ -n "$pid" ] || fail "sshd is not running (no /run/sshd.pid)"
before=$(listening)
before=" ${before//$'\n'/ } "
kill -HUP "$pid" || fail "cannot signal sshd (pid $pid)"
# read -t on a pipe nobody writes to: a sleep without starting a program
# (where /dev/fd lets bash open one).
pause=''
if [ -e /dev/fd/0 ]; then exec {pause}<> <(:); fi
# Every 10 ms for the first half second (a container's sshd is back in
# tens of ms), then every 50 ms (a VM's under emulation takes longer).
for i in {1..250}; do
  delay=0.05
  if ((i <= 50)); then delay=0.01; fi
  if [ -n "$pause" ]; then read -rt "$delay" -u "$pause" _ || true; else sleep "$delay"; fi
  kill -0 "$pid" 2>/dev/null || fail "sshd exited after reload"
  for inode in $(listening "$port"); do
    if [[ $before != *" $inode "* ]]; then
      echo "anweddol_container_setup: $user ready on port $port"
      exit 0
    fi
  done
done
fail "sshd does not listen on port $port 10 s after reload"
