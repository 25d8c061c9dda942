#!/bin/sh
# The per-sandbox secrets of the guest contract, at every boot, before sshd
# starts: the SSH host key and the endpoint account's credentials, both
# from QEMU's fw_cfg (opt/ephemera/...), never from the image. Run (sourced)
# by the default image's /etc/init.d/rcS, and by ephemera-guest.service in
# root filesystems imported from OCI images. POSIX sh: busybox ash or dash.
# It is on the path to sshd, and under emulation each program started costs
# ~0.1 s (a distro's dynamically linked coreutils more): files are copied
# with the shell's read and printf, and a program runs only to rename.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
umask 022
fw=/sys/firmware/qemu_fw_cfg/by_name/opt/ephemera

# copy_lines FROM TO: FROM's lines into TO (created with the umask).
copy_lines() {
  while IFS= read -r line || [ -n "$line" ]; do printf '%s\n' "$line"; done <"$1" >"$2"
}

# A fresh host key for every machine: the image ships none, and each
# sandbox boots from its own copy-on-write disk. The host hands one in
# through fw_cfg (it then knows the key to expect); otherwise it is
# generated here. Either way under another name and renamed, so that a
# machine killed meanwhile is not left with half a key.
key=/etc/ssh/ssh_host_ed25519_key
if [ ! -s "$key" ]; then
  first=
  if [ -e "$fw/ssh_host_ed25519_key/raw" ]; then
    (umask 077 && copy_lines "$fw/ssh_host_ed25519_key/raw" "$key.new") &&
      read -r first <"$key.new"
  fi
  if [ "$first" = "-----BEGIN OPENSSH PRIVATE KEY-----" ]; then
    mv -f "$key.new" "$key"
  else
    rm -f "$key" "$key.pub" "$key.new" "$key.new.pub"
    ssh-keygen -q -t ed25519 -N '' -C '' -f "$key.new" &&
      mv "$key.new.pub" "$key.pub" && mv "$key.new" "$key" ||
      echo "guest-credentials: ssh-keygen failed" >/dev/console
    if [ -s "$key.pub" ]; then
      read -r type pub _ <"$key.pub"
      echo "EPHEMERA_SSH_HOST_KEY $type $pub" >/dev/console
    fi
  fi
fi

# The endpoint's per-sandbox credentials come from QEMU's fw_cfg, never
# from the image. Once the setup script has handed the machine over, the
# endpoint stays locked, even across reboots.
if [ ! -e /etc/ephemera/endpoint-retired ]; then
  pwfield='!' # nothing injected: no password and no key can log in
  # (fw_cfg's sysfs files report size 0: test existence, then content.)
  keys=$fw/endpoint_authorized_keys/raw
  if [ -e "$keys" ]; then
    if [ ! -d /home/endpoint/.ssh ]; then # images make it; this is the fallback
      mkdir -p -m 0700 /home/endpoint/.ssh && chown endpoint:endpoint /home/endpoint/.ssh
    fi
    # Public keys: readable by the endpoint (sshd reads them as the user).
    copy_lines "$keys" /home/endpoint/.ssh/authorized_keys
    # '*' matches no password, but unlike '!' sshd (without PAM) does not
    # take it for a locked account, so the key works.
    [ -s /home/endpoint/.ssh/authorized_keys ] && pwfield='*'
  fi
  hashfile=$fw/endpoint_password_hash/raw
  # An image built for the endpoint password mode (Anweddol's ISOs, and
  # images/live-iso) carries its well-known hash; the default image has none.
  # The setup script retires the endpoint either way.
  [ -e "$hashfile" ] || hashfile=/etc/ephemera/endpoint_password_hash
  if [ -e "$hashfile" ]; then
    hash=
    read -r hash <"$hashfile" || [ -n "$hash" ]
    hash=${hash%"$(printf '\r')"}
    # crypt(3) hashes ("$id$salt$hash", yescrypt's "$y$j9T$...") use only
    # these characters; anything else could corrupt /etc/shadow.
    case $hash in
      *[!A-Za-z0-9./\$]*) hash= ;;
      '$'?*'$'?*) ;;
      *) hash= ;;
    esac
    if [ -n "$hash" ]; then
      pwfield=$hash
    else
      echo "guest-credentials: ignoring endpoint_password_hash: not a crypt(3) hash" >/dev/console
    fi
  fi
  # /etc/shadow is rewritten (a copy keeps its mode and owner, then a
  # rename) only when the endpoint's field is not what it must be.
  current=
  while IFS=: read -r name field _; do
    [ "$name" = endpoint ] && current=$field
  done </etc/shadow
  if [ "$current" != "$pwfield" ]; then
    cp -p /etc/shadow /etc/shadow.new &&
      while IFS= read -r line || [ -n "$line" ]; do
        case $line in
          endpoint:*)
            rest=${line#endpoint:}
            case $rest in *:*) rest=${rest#*:} ;; *) rest= ;; esac
            printf 'endpoint:%s:%s\n' "$pwfield" "$rest"
            ;;
          *) printf '%s\n' "$line" ;;
        esac
      done </etc/shadow >/etc/shadow.new &&
      mv -f /etc/shadow.new /etc/shadow ||
      echo "guest-credentials: cannot set the endpoint password" >/dev/console
  fi
fi
