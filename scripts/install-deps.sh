#!/usr/bin/env bash
# Installs every build, test and runtime dependency of ephemera from Debian's
# packages. Idempotent; needs root (or sudo) and a reachable Debian mirror.
set -euo pipefail

packages=(
  # toolchain
  build-essential cmake ninja-build pkg-config clang-format git
  # a compiler cache shared by every clone (scripts/ccache-env.sh)
  ccache
  # libraries (one per concern, see DESIGN.md)
  libvirt-dev libssh-dev libsqlite3-dev libssl-dev nlohmann-json3-dev
  libyaml-cpp-dev libcli11-dev libboost-dev libboost-system-dev
  libspdlog-dev libfmt-dev libarchive-dev libnftables-dev libnl-3-dev
  libnl-route-3-dev libseccomp-dev libcap-dev libsystemd-dev
  # tests and benchmarks (curl: a real HTTPS client; clang + compiler-rt: libFuzzer)
  libgtest-dev libgmock-dev libbenchmark-dev curl clang libclang-rt-dev python3
  # wirt tests and benchmark: real users and groups (useradd, gpasswd), setpriv
  passwd util-linux
  # the systemd unit is checked with systemd-analyze verify
  systemd
  # programs the daemon drives
  qemu-system-x86 qemu-utils dnsmasq-base nftables iproute2 openssh-client
  # container sandboxes: the OCI runtime (runc: the alternative runtime)
  crun runc
  # the libvirt driver (virsh: tests and operators only)
  libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients
  # guest image build
  busybox-static cpio e2fsprogs xz-utils lz4 zstd kmod fakeroot
  # the live ISO image (isolinux boot)
  xorriso isolinux syslinux-common openssl
  # OCI registry tests: a real registry (TLS + htpasswd) and the field's image tools
  docker-registry skopeo umoci apache2-utils
  # a Debian root filesystem with systemd for the foreign-rootfs tests, and
  # the fresh root the Debian packages are installed in
  mmdebstrap
  # the Debian packages: their build (dpkg-buildpackage, dh) and check
  dpkg-dev debhelper lintian
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
# The registry package starts a system-wide registry on :5000 under
# systemd; tests run their own on 127.0.0.1 only.
if [ -d /run/systemd/system ] && systemctl is-enabled docker-registry >/dev/null 2>&1; then
  $SUDO systemctl disable --now docker-registry
fi
