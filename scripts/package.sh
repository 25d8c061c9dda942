#!/usr/bin/env bash
# Builds the Debian packages as a packager does (dpkg-buildpackage -us -uc -b
# with Debian's flags, debian/), checks them with lintian (no errors
# allowed), and leaves them in OUT (default build-package/).
#   scripts/package.sh [--with-tests] [OUT]
# --with-tests also builds and runs the unit tests in the package build;
# without it the build has DEB_BUILD_OPTIONS=nocheck (CI has run them).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
with_tests=0
if [ "${1:-}" = --with-tests ]; then
  with_tests=1
  shift
fi
out=$(realpath -m "${1:-build-package}")
version=$(dpkg-parsechangelog -l debian/changelog -S Version)

# The source tree is copied to a fixed place: Debian's flags name the build
# path (-ffile-prefix-map), so the compiler cache hits from any clone. It
# is under /var/cache (only root writes there), and one build at a time
# uses it.
work=/var/cache/ephemera-package-build
src=$work/ephemera-$version
install -d -m 0700 "$work"
exec 9>"$work.lock"
flock 9
find "$work" -mindepth 1 -delete
mkdir -p "$src"
git ls-files -z --cached --others --exclude-standard |
  tar -C "$repo" --null -T - -cf - | tar -C "$src" -xf -

# shellcheck source=scripts/ccache-env.sh
. scripts/ccache-env.sh
if [ ${#ccache_args[@]} -gt 0 ]; then
  export CMAKE_C_COMPILER_LAUNCHER=ccache CMAKE_CXX_COMPILER_LAUNCHER=ccache CCACHE_BASEDIR=$src
fi
options="parallel=$(nproc)"
if [ $with_tests = 0 ]; then
  options="$options nocheck"
  export DEB_BUILD_PROFILES=nocheck
fi
echo "== dpkg-buildpackage -us -uc -b (DEB_BUILD_OPTIONS=$options)"
(cd "$src" && DEB_BUILD_OPTIONS=$options dpkg-buildpackage -us -uc -b >"$work/build.log" 2>&1) || {
  tail -n 60 "$work/build.log" >&2
  echo "package build failed: $work/build.log" >&2
  exit 1
}
# Debian's flags (_FORTIFY_SOURCE, -Wformat-security, ...) warn where the
# project's own do not: a compiler warning fails this build as -Werror does CI's.
if grep -E '^[^ ]+:[0-9]+:[0-9]+: warning:' "$work/build.log" >&2; then
  echo "the package build has compiler warnings (above; $work/build.log)" >&2
  exit 1
fi
changes=$work/ephemera_${version}_$(dpkg --print-architecture).changes

echo "== lintian"
lintian --fail-on error --display-info --tag-display-limit 0 "$changes"

mkdir -p "$out"
rm -f "$out"/*.deb "$out"/*.changes
# The packages, without their debug symbols' (dbgsym).
find "$work" -maxdepth 1 -name '*.deb' ! -name '*-dbgsym_*' -exec cp {} "$out"/ \;
ls -l "$out"/*.deb
