#!/usr/bin/env bash
# Runs the whole test suite: unit, integration and end-to-end tests (real QEMU guests,
# dnsmasq and nftables, in private network namespaces) on a release build, then the unit tests again under
# AddressSanitizer + UBSan, then each libFuzzer target for a bounded time, then builds the
# Debian packages, checks them with lintian and installs them in a fresh Debian root. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

jobs=$(nproc)
image_dir=${EPHEMERA_IMAGE_DIR:-/var/cache/ephemera/images}
export EPHEMERA_IMAGE_DIR=$image_dir

echo "== formatting"
bash scripts/format.sh --check

bash scripts/build.sh

echo "== unit, integration and end-to-end tests"
ctest --test-dir build --output-on-failure -j "$jobs" -L unit
ctest --test-dir build --output-on-failure -j 1 -L "integration|e2e"

# shellcheck source=scripts/ccache-env.sh
. scripts/ccache-env.sh
echo "== unit tests under AddressSanitizer + UBSan, then the fuzz targets (one clang build)"
CC=clang CXX=clang++ cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug \
  -DEPHEMERA_SANITIZE=ON -DEPHEMERA_FUZZ=ON -DEPHEMERA_INTEGRATION_TESTS=OFF -DEPHEMERA_WERROR=ON \
  "${ccache_args[@]}" >/dev/null
cmake --build build-asan -j "$jobs"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-asan --output-on-failure -j "$jobs" -L unit

echo "== fuzzing (libFuzzer, ${EPHEMERA_FUZZ_SECONDS:-30} s per target)"
EPHEMERA_FUZZ_BUILD=build-asan bash scripts/fuzz.sh

echo "== Debian packages: dpkg-buildpackage, lintian, install in a fresh Debian root"
bash scripts/package.sh build-package
debs=(build-package/ephemera_*.deb build-package/ephemera-client_*.deb)
# The root with the packages' dependencies comes from the mirror once (cached).
bash tests/package/chroot_install.sh --prepare "${debs[@]}"
bash tests/package/chroot_install.sh "${debs[@]}"
