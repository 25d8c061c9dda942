# Sourced by scripts that need a libvirtd of their own (benchmarks), in a
# mount namespace of the caller's (in_private_netns makes one): private
# runtime, state and log folders on tmpfs, a persistent capabilities cache,
# and a /dev/kvm node libvirt's QEMU user may open, as the e2e tests'
# tests/e2e/test_libvirtd.cc sets up.
#   start_private_libvirtd     libvirtd, virtlogd, virtlockd up; sets $libvirt_uri
#   stop_private_libvirtd      destroys what runs, stops the daemons

libvirt_uri=qemu:///system

start_private_libvirtd() {
  local dir
  for dir in /run/libvirt /var/lib/libvirt /var/log/libvirt; do
    mkdir -p "$dir"
    mount -t tmpfs -o mode=0755 tmpfs "$dir"
  done
  mkdir -p /var/cache/ephemera-test-libvirt /var/cache/libvirt
  mount --bind /var/cache/ephemera-test-libvirt /var/cache/libvirt
  mkdir -p /var/lib/libvirt/{qemu,dnsmasq,images} /var/log/libvirt/qemu
  # libvirt 9.0 re-probes QEMU on every call when its user cannot open /dev/kvm.
  if [ -c /dev/kvm ]; then
    local node=/run/libvirt/ephemera-dev-kvm
    mknod "$node" c "$((16#$(stat -c '%t' /dev/kvm)))" "$((16#$(stat -c '%T' /dev/kvm)))"
    chown root:kvm "$node" 2>/dev/null || true
    chmod 0660 "$node"
    mount --bind "$node" /dev/kvm
  fi
  virtlogd --daemon --pid-file /run/libvirt/virtlogd.pid
  virtlockd --daemon --pid-file /run/libvirt/virtlockd.pid
  libvirtd --daemon --pid-file /run/libvirt/libvirtd.pid
  # The first answer waits for libvirtd to probe QEMU (seconds, once per cache).
  for _ in $(seq 1200); do
    virsh -q -c "$libvirt_uri" version >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "libvirtd did not answer within 120 s" >&2
  return 1
}

stop_private_libvirtd() {
  local name pidfile
  for name in $(virsh -q -c "$libvirt_uri" list --name 2>/dev/null); do
    virsh -q -c "$libvirt_uri" destroy "$name" >/dev/null 2>&1 || true
  done
  for pidfile in /run/libvirt/{libvirtd,virtlogd,virtlockd}.pid; do
    [ -f "$pidfile" ] && kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
  done
  sleep 0.5
}
