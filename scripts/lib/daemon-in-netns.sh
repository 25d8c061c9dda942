# Sourced by scripts that run a real ephemerad in a private network
# namespace (its TAPs, dnsmasq and guests touch no real network).
#   in_private_netns "$0" "$@"     re-executes the caller inside one
#   start_daemon WORK [YAML...]    config in WORK, ephemerad started, socket up;
#                                  sets $daemon and the function e (the CLI);
#                                  ephemerad runs under the command in the
#                                  array daemon_wrapper when it is set
#   stop_daemon                    SIGTERM and wait, ends what a dead daemon
#                                  left in the namespace; removes WORK

in_private_netns() {
  if [ "${EPHEMERA_IN_PRIVATE_NETNS:-}" != 1 ]; then
    EPHEMERA_IN_PRIVATE_NETNS=1 exec unshare --net --mount --propagation private "$@"
  fi
  # A sysfs of this namespace's own hides the cgroup mounts under
  # /sys/fs/cgroup, which the daemon needs: carry them over.
  local keep
  keep=$(mktemp -d /tmp/ephemera-netns-cgroup.XXXXXX)
  mount --rbind /sys/fs/cgroup "$keep"
  mount -t sysfs sysfs /sys
  mount --move "$keep" /sys/fs/cgroup
  rmdir "$keep"
  ip link set lo up
}

start_daemon() {
  daemon_work=$1
  shift
  daemon_bin=${EPHEMERA_BUILD_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/build}/src
  export XDG_CONFIG_HOME=$daemon_work/client
  {
    echo "state_dir: $daemon_work/state"
    echo "image_dir: ${EPHEMERA_IMAGE_DIR:-/var/cache/ephemera/images}"
    echo "socket: $daemon_work/ephemera.sock"
    echo "network: {forward_address: 127.0.0.1}"
    echo "destroy_on_exit: true"
    for line in "$@"; do echo "$line"; done
  } >"$daemon_work/config.yaml"
  ${daemon_wrapper[@]+"${daemon_wrapper[@]}"} "$daemon_bin/daemon/ephemerad" \
    --config "$daemon_work/config.yaml" 2>"$daemon_work/ephemerad.log" &
  daemon=$!
  for _ in $(seq 100); do e status >/dev/null 2>&1 && return 0; sleep 0.05; done
  echo "ephemerad did not start:" >&2
  cat "$daemon_work/ephemerad.log" >&2
  return 1
}

e() { "$daemon_bin/cli/ephemera" --socket "$daemon_work/ephemera.sock" "$@"; }

stop_daemon() {
  kill -TERM "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null || true
  end_namespace_orphans
  rm -rf "$daemon_work"
}

# A daemon that died without its teardown (a crash, a kill) leaves its
# dnsmasq and QEMU orphaned; with WORK removed, no reconcile finds them
# again. Orphans (parent 1) in this private namespace are this run's own.
end_namespace_orphans() {
  local ns pid
  ns=$(readlink /proc/self/ns/net)
  for pid in /proc/[0-9]*; do
    pid=${pid#/proc/}
    [ "$(readlink "/proc/$pid/ns/net" 2>/dev/null)" = "$ns" ] || continue
    [ "$(awk '{print $4}' "/proc/$pid/stat" 2>/dev/null)" = 1 ] || continue
    kill -KILL "$pid" 2>/dev/null || true
  done
}
