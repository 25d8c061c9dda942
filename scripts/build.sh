#!/usr/bin/env bash
# Builds ephemera (release, in build/) and the default guest image (cached
# by the hash of its inputs, so a second run takes well under a second).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/ccache-env.sh
. scripts/ccache-env.sh
echo "== build (release, warnings are errors)"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DEPHEMERA_WERROR=ON "${ccache_args[@]}" >/dev/null
cmake --build build -j "$(nproc)"
echo "== default guest image"
bash images/default/build.sh --cache-dir "${EPHEMERA_IMAGE_DIR:-/var/cache/ephemera/images}" \
  --agent build/agent/ephemera-agent
echo "== live ISO (Anweddol mirror layout, from the default image)"
bash images/live-iso/build.sh --cache-dir "${EPHEMERA_IMAGE_DIR:-/var/cache/ephemera/images}"
echo "== Debian root filesystem for the OCI import tests (from Debian's packages, cached)"
bash tests/e2e/make_debian_rootfs.sh --fetch
