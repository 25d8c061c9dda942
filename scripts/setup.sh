#!/usr/bin/env bash
# From a fresh Debian bookworm machine to a booted sandbox VM: installs the
# dependencies (Debian packages), builds ephemera, builds the default guest
# image (cached), then has ephemerad boot one VM from it and remove it again.
set -euo pipefail
cd "$(dirname "$0")/.."

image_dir=${EPHEMERA_IMAGE_DIR:-/var/cache/ephemera/images}

echo "== dependencies"
bash scripts/install-deps.sh
EPHEMERA_IMAGE_DIR=$image_dir bash scripts/build.sh
echo "== boot a sandbox VM"
state_dir=$(mktemp -d /tmp/ephemera-setup.XXXXXX)
trap 'rm -rf "$state_dir"' EXIT
build/src/daemon/ephemerad --state-dir "$state_dir" --image-dir "$image_dir" check
echo "== a sandbox from create to destroy"
EPHEMERA_IMAGE_DIR=$image_dir bash scripts/demo.sh
