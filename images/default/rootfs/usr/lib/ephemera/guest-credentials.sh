#!/bin/sh
# The per-sandbox secrets of the guest contract, at every boot, before sshd
# starts: the SSH host key and the endpoint account's credentials, both
# from QEMU's fw_cfg (opt/ephemera/...), never from the image. Run (sourced)
# by the default image's /etc/init.d/rcS, and by ephemera-guest.service in
# root filesystems imported from OCI images. POSIX sh: busybox ash or dash.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
umask 022
# A fresh host key for every machine: the image ships none, and each
# sandbox boots from its own copy-on-write disk. The host may hand one in
# through fw_cfg (it then knows the key to expect, and the guest saves the
# ~0.3 s that ssh-keygen takes under TCG); otherwise it is generated here,
# under another name and renamed, so that a machine killed meanwhile is
# not left with half a key.
fw=/sys/firmware/qemu_fw_cfg/by_name/opt/ephemera
key=/etc/ssh/ssh_host_ed25519_key
if [ ! -s "$key" ]; then
  rm -f "$key" "$key.pub" "$key.new" "$key.new.pub"
  if [ -e "$fw/ssh_host_ed25519_key/raw" ] &&
    (umask 077 && cat "$fw/ssh_host_ed25519_key/raw" >"$key.new") &&
    grep -q '^-----BEGIN OPENSSH PRIVATE KEY-----' "$key.new"; then
    mv "$key.new" "$key"
  else
    rm -f "$key.new"
    ssh-keygen -q -t ed25519 -N '' -C '' -f "$key.new" &&
      mv "$key.new.pub" "$key.pub" && mv "$key.new" "$key" ||
      echo "guest-credentials: ssh-keygen failed" >/dev/console
    [ -s "$key.pub" ] && echo "EPHEMERA_SSH_HOST_KEY $(cut -d' ' -f1,2 "$key.pub")" >/dev/console
  fi
fi
# The endpoint's per-sandbox credentials come from QEMU's fw_cfg, never
# from the image. Once the setup script has handed the machine over, the
# endpoint stays locked, even across reboots.
if [ ! -e /etc/ephemera/endpoint-retired ]; then
  pwfield='!'   # nothing injected: no password and no key can log in
  # (fw_cfg's sysfs files report size 0: test existence, then content.)
  keys=$fw/endpoint_authorized_keys/raw
  if [ -e "$keys" ]; then
    mkdir -p /home/endpoint/.ssh
    cat "$keys" >/home/endpoint/.ssh/authorized_keys
    chmod 0700 /home/endpoint/.ssh
    chmod 0600 /home/endpoint/.ssh/authorized_keys
    chown -R endpoint:endpoint /home/endpoint/.ssh
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
    hash=$(head -n 1 "$hashfile" | tr -d '\r\n')
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
  # ENVIRON, not -v: awk -v would interpret backslashes.
  PWFIELD=$pwfield awk -F: -v OFS=: \
    '$1 == "endpoint" { $2 = ENVIRON["PWFIELD"] } { print }' \
    /etc/shadow >/etc/shadow.new &&
    chmod "$(stat -c %a /etc/shadow)" /etc/shadow.new &&
    chown "$(stat -c %u:%g /etc/shadow)" /etc/shadow.new &&
    mv /etc/shadow.new /etc/shadow ||
    echo "guest-credentials: cannot set the endpoint password" >/dev/console
fi

