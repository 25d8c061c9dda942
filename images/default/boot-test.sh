#!/usr/bin/env bash
# Boots the default image under TCG and measures it; optionally checks the
# guest contract over SSH and the ACPI power button. Nothing leaves the
# host: without --ssh the guest has no NIC, with it QEMU's user-mode
# network is restricted (restrict=on) and forwarded from 127.0.0.1 only.
#
# usage: images/default/boot-test.sh [--image DIR] [--machine microvm|q35]
#          [--kernel vmlinux|vmlinuz] [--tb-size MIB|default] [--runs N] [--ssh]
#          [--powerdown] [--log DIR] [--tsc-khz auto|none|KHZ]
#          [--host-key] [--endpoint-password]
#
# --ssh: log in as endpoint (key from fw_cfg), run the setup script, check
# the new user, sudo and the locked endpoint. --host-key: hand the guest
# its SSH host key through fw_cfg and insist on it. --endpoint-password:
# endpoint logs in with a password whose hash came through fw_cfg.
#
# Prints one line per run (seconds from QEMU start to EPHEMERA_GUEST_INIT
# and EPHEMERA_SSHD_READY; QEMU RSS, its anonymous part and its peak) and
# the medians.
# Exit status 0 only if every run reached EPHEMERA_SSHD_READY and every
# requested check passed.
set -euo pipefail

image=/var/cache/ephemera/images/default
machine=microvm
kernel=vmlinux
tb_size=64
runs=1
do_ssh=0
do_powerdown=0
host_key=0
endpoint_pw=0
logdir=
tsc_khz=auto
timeout_s=${BOOT_TEST_TIMEOUT:-60}
while [ $# -gt 0 ]; do
  case $1 in
    --image) image=$2; shift 2 ;;
    --machine) machine=$2; shift 2 ;;
    --kernel) kernel=$2; shift 2 ;;
    --tb-size) tb_size=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --ssh) do_ssh=1; shift ;;
    --powerdown) do_powerdown=1; shift ;;
    --host-key) host_key=1; shift ;;
    --endpoint-password) endpoint_pw=1; shift ;;
    --log) logdir=$2; shift 2 ;;
    --tsc-khz) tsc_khz=$2; shift 2 ;;
    -h | --help) sed -n '7,20p' "$0" | sed 's/^# //'; exit 0 ;;
    *) echo "boot-test.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -f "$image/manifest.json" ] || { echo "boot-test.sh: no image at $image (run build.sh)" >&2; exit 1; }
cmdline=$(sed -n 's/^ *"cmdline": "\(.*\)",$/\1/p' "$image/manifest.json")

# Under TCG the guest's TSC runs at the host's TSC rate. Telling the guest
# (tsc_early_khz) spares it calibrating against the PIT, which fails when
# the host is busy; on microvm (no HPET, no ACPI PM timer to fall back to)
# the kernel then hangs for good right after "Marking TSC unstable".
host_tsc_khz() {
  local mhz
  mhz=$(dmesg 2>/dev/null | sed -n 's/.*tsc: Refined TSC clocksource calibration: \([0-9.]*\) MHz.*/\1/p; s/.*tsc: Detected \([0-9.]*\) MHz processor.*/\1/p' | tail -n 1)
  # A guess from /proc/cpuinfo (exact when the host itself is a VM with a
  # known TSC frequency, off by the current clock scaling otherwise).
  [ -n "$mhz" ] || mhz=$(awk -F': ' '/^cpu MHz/ { print $2; exit }' /proc/cpuinfo)
  awk -v m="$mhz" 'BEGIN { if (m > 0) printf "%d", m * 1000 }'
}
case $tsc_khz in
  auto) tsc_khz=$(host_tsc_khz) ;;
  none) tsc_khz= ;;
esac
[ -n "$tsc_khz" ] && cmdline="$cmdline tsc_early_khz=$tsc_khz"

case $machine in
  microvm)
    # acpi=on: Debian's virtio_mmio cannot take its devices from the
    # command line, it finds them in the ACPI tables (as it does fw_cfg and
    # the power button).
    machine_args=(-M "microvm,acpi=on")
    blk=virtio-blk-device net=virtio-net-device
    ;;
  q35)
    machine_args=(-M q35)
    blk=virtio-blk-pci net=virtio-net-pci
    ;;
  *) echo "boot-test.sh: --machine microvm|q35" >&2; exit 2 ;;
esac

work=$(mktemp -d /tmp/ephemera-boot-test.XXXXXX)
qemu_pid=
cleanup() {
  if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
    kill "$qemu_pid" 2>/dev/null || true
    sleep 0.2
    kill -9 "$qemu_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

failures=0
fail() { echo "  FAIL: $*"; failures=$((failures + 1)); }
now_us() { echo "${EPOCHREALTIME/./}"; }
secs() { awk -v us="$1" 'BEGIN { printf "%.2f", us / 1e6 }'; }
rss_mib() { awk -v k="$2" '$1 == k":" { printf "%d", $2 / 1024 }' "/proc/$1/status" 2>/dev/null; }

# A loopback port nobody listens on (bash's /dev/tcp fails to connect).
free_port() {
  local p
  for p in $(shuf -i 20000-60000 -n 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
  return 1
}

# Sleeps without starting a process (a read that times out), so that the
# polling below does not steal CPU from the guest being measured.
exec {sleep_fd}<> <(:)
nap() { read -r -t "$1" -u "$sleep_fd" _ || true; }

# Waits until the serial reader has seen MARKER; prints its timestamp
# (microseconds since QEMU start).
wait_for() {
  local marker=$1 deadline=$((${EPOCHREALTIME/./} + timeout_s * 1000000)) t
  while [ "${EPOCHREALTIME/./}" -lt "$deadline" ]; do
    if [ -s "$work/$marker" ]; then
      read -r t <"$work/$marker"
      echo "$t"
      return 0
    fi
    kill -0 "$qemu_pid" 2>/dev/null || return 1
    nap 0.02
  done
  return 1
}

qmp() { # COMMAND...: one QMP session over loopback TCP
  local c
  exec 4<>"/dev/tcp/127.0.0.1/$qmp_port"
  read -r -t 5 _ <&4
  echo '{"execute":"qmp_capabilities"}' >&4
  read -r -t 5 _ <&4
  for c in "$@"; do echo "{\"execute\":\"$c\"}" >&4; read -r -t 5 _ <&4 || true; done
  exec 4>&-
}

# ssh with a password from an askpass helper: no sshpass needed.
ssh_opts=(-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR
  -o ConnectTimeout=10 -o "PreferredAuthentications=publickey,password")
endpoint_password="endpoint-$RANDOM-$RANDOM"
ssh_key() {
  if [ "$endpoint_pw" = 1 ] && [[ " $* " == *" endpoint@"* ]]; then
    ssh_pw "$endpoint_password" "$@"
  else
    ssh "${ssh_opts[@]}" -o BatchMode=yes -i "$work/key" "$@" </dev/null
  fi
}
ssh_pw() { # PASSWORD ssh-args...
  printf '#!/bin/sh\nprintf "%%s\\n" %q\n' "$1" >"$work/askpass"
  chmod 0700 "$work/askpass"
  shift
  SSH_ASKPASS=$work/askpass SSH_ASKPASS_REQUIRE=force DISPLAY=none \
    ssh "${ssh_opts[@]}" -o NumberOfPasswordPrompts=1 -o PubkeyAuthentication=no "$@" </dev/null
}

contract_test() {
  local user=user_12345 pw="pw-$RANDOM-$RANDOM x" port=2022 out
  # Bad arguments: exit 2, nothing changes.
  local args rc
  for args in "Bad pw 22" "$user '' 22" "$user pw 70000" "$user pw 0" "root pw 22" "$user pw"; do
    rc=0
    ssh_key -p "$ssh_port" endpoint@127.0.0.1 sudo /bin/anweddol_container_setup.sh "$args" 2>/dev/null || rc=$?
    [ "$rc" = 2 ] || fail "setup with arguments ($args) exited $rc, not 2"
  done
  # The real thing, moving sshd to another port (forwarded as $ssh_port2).
  out=$(ssh_key -p "$ssh_port" endpoint@127.0.0.1 sudo /bin/anweddol_container_setup.sh "$user" "$(printf %q "$pw")" "$port" 2>&1) ||
    { fail "setup script failed: $out"; return; }
  echo "  setup: $out"
  out=$(ssh_pw "$pw" -p "$ssh_port2" "$user@127.0.0.1" "id -un; printf '%s\n' $(printf %q "$pw") | sudo -S -p '' id -u" 2>&1) ||
    fail "$user cannot log in with the password / sudo: $out"
  if [ "$(tail -n 1 <<<"$out")" = 0 ] && [ "$(head -n 1 <<<"$out")" = "$user" ]; then
    echo "  $user logs in on port $port, sudo -S id -u = 0"
  else
    fail "unexpected: $out"
  fi
  ssh_pw "wrong" -p "$ssh_port2" "$user@127.0.0.1" true 2>/dev/null && fail "wrong password accepted"
  ssh_key -p "$ssh_port2" endpoint@127.0.0.1 true 2>/dev/null && fail "endpoint can still log in"
  ssh_key -p "$ssh_port" endpoint@127.0.0.1 true 2>/dev/null && fail "sshd still answers on port 22"
  echo "  endpoint locked out, port 22 closed, wrong password refused"
}

inits=() readys=() rsss=() anons=()
for run in $(seq "$runs"); do
  rm -f "$work/overlay.qcow2" "$work/serial.log"
  qemu-img create -q -f qcow2 -F raw -b "$image/rootfs.ext4" "$work/overlay.qcow2"
  qmp_port=$(free_port)
  extra=()
  if [ "$do_ssh" = 1 ]; then
    ssh_port=$(free_port) ssh_port2=$(free_port)
    [ -f "$work/key" ] || ssh-keygen -q -t ed25519 -N '' -C boot-test -f "$work/key"
    extra+=(-netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$ssh_port-:22,hostfwd=tcp:127.0.0.1:$ssh_port2-:2022"
      -device "$net,netdev=n0")
    if [ "$endpoint_pw" = 1 ]; then
      openssl passwd -6 "$endpoint_password" >"$work/endpoint.hash"
      extra+=(-fw_cfg "name=opt/ephemera/endpoint_password_hash,file=$work/endpoint.hash")
    else
      extra+=(-fw_cfg "name=opt/ephemera/endpoint_authorized_keys,file=$work/key.pub")
    fi
  fi
  if [ "$host_key" = 1 ]; then
    rm -f "$work/hostkey" "$work/hostkey.pub"
    ssh-keygen -q -t ed25519 -N '' -C '' -f "$work/hostkey"
    extra+=(-fw_cfg "name=opt/ephemera/ssh_host_ed25519_key,file=$work/hostkey")
    if [ "$do_ssh" = 1 ]; then
      printf '[127.0.0.1]:%s %s\n[127.0.0.1]:%s %s\n' "$ssh_port" "$(cut -d' ' -f1,2 "$work/hostkey.pub")" \
        "$ssh_port2" "$(cut -d' ' -f1,2 "$work/hostkey.pub")" >"$work/known_hosts"
      ssh_opts=(-o StrictHostKeyChecking=yes -o "UserKnownHostsFile=$work/known_hosts" -o LogLevel=ERROR
        -o ConnectTimeout=10 -o "PreferredAuthentications=publickey,password")
    fi
  fi
  : >"$work/serial.log"
  rm -f "$work/serial.fifo"
  mkfifo "$work/serial.fifo"
  start=$(now_us)
  # The serial console goes through a timestamping loop into serial.log.
  rm -f "$work"/EPHEMERA_*
  while IFS= read -r line; do
    t=$((${EPOCHREALTIME/./} - start))
    printf '%d %s\n' "$t" "$line"
    case $line in
      EPHEMERA_GUEST_INIT* | EPHEMERA_SSHD_READY*) echo "$t" >"$work/${line%%[!A-Z_]*}" ;;
    esac
  done <"$work/serial.fifo" >>"$work/serial.log" &
  reader=$!
  accel=tcg
  [ "$tb_size" = default ] || accel="tcg,tb-size=$tb_size"
  qemu-system-x86_64 "${machine_args[@]}" -accel "$accel" -cpu max \
    -m 256 -smp 1 -nodefaults -no-user-config -display none -serial stdio -no-reboot \
    -kernel "$image/$kernel" -initrd "$image/initrd.img" -append "$cmdline" \
    -drive "id=root,file=$work/overlay.qcow2,format=qcow2,if=none" -device "$blk,drive=root" \
    -qmp "tcp:127.0.0.1:$qmp_port,server=on,wait=off" "${extra[@]}" >"$work/serial.fifo" 2>&1 </dev/null &
  qemu_pid=$!

  t_init=$(wait_for EPHEMERA_GUEST_INIT) || t_init=
  t_ready=$(wait_for EPHEMERA_SSHD_READY) || t_ready=
  rss=$(rss_mib "$qemu_pid" VmRSS)
  # RssFile is mostly the mapped vmlinux and QEMU itself, shared between
  # all guests; RssAnon (guest RAM in use, translation cache) is per VM.
  anon=$(rss_mib "$qemu_pid" RssAnon)
  if [ -z "$t_ready" ]; then
    fail "run $run: no EPHEMERA_SSHD_READY within ${timeout_s}s"
  else
    inits+=("$t_init") readys+=("$t_ready") rsss+=("$rss") anons+=("$anon")
  fi
  [ "$do_ssh" = 1 ] && [ -n "$t_ready" ] && contract_test
  hwm=$(rss_mib "$qemu_pid" VmHWM)
  printf 'run %d: %s %s tb-size=%s: init %ss, sshd ready %ss, QEMU RSS %s MiB (anon %s, peak %s)\n' \
    "$run" "$machine" "$kernel" "$tb_size" "$(secs "${t_init:-0}")" "$(secs "${t_ready:-0}")" "$rss" "$anon" "$hwm"

  if [ "$do_powerdown" = 1 ] && [ -n "$t_ready" ]; then
    t0=$(now_us)
    qmp system_powerdown
    for _ in $(seq 300); do kill -0 "$qemu_pid" 2>/dev/null || break; nap 0.05; done
    if kill -0 "$qemu_pid" 2>/dev/null; then
      fail "system_powerdown: guest still running after 15 s"
    else
      echo "  system_powerdown: QEMU exited after $(secs $(($(now_us) - t0)))s"
    fi
  fi
  if kill -0 "$qemu_pid" 2>/dev/null; then qmp quit || kill "$qemu_pid"; fi
  wait "$qemu_pid" 2>/dev/null || true
  wait "$reader" 2>/dev/null || true
  qemu_pid=
  [ -n "$logdir" ] && mkdir -p "$logdir" && cp "$work/serial.log" "$logdir/serial-$machine-$kernel-tb$tb_size-$run.log"
  if grep -q 'initrd: \|rcS: \|rcK: \|Kernel panic' "$work/serial.log"; then
    grep 'initrd: \|rcS: \|rcK: \|Kernel panic' "$work/serial.log" | sed 's/^/  console: /'
    fail "run $run: errors on the console"
  fi
done

median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { if (NR) print a[int((NR + 1) / 2)] }'; }
if [ ${#readys[@]} -gt 0 ]; then
  printf 'median of %d: %s %s tb-size=%s: init %ss, sshd ready %ss, QEMU RSS %s MiB (anon %s)\n' \
    "${#readys[@]}" "$machine" "$kernel" "$tb_size" "$(secs "$(median "${inits[@]}")")" \
    "$(secs "$(median "${readys[@]}")")" "$(median "${rsss[@]}")" "$(median "${anons[@]}")"
fi
[ "$failures" = 0 ]
