#!/usr/bin/env bash
# Builds ephemera with each compiler and build type given (default: every
# standard build type with GCC and Clang), warnings as errors, and runs the
# unit tests of each build:
#   scripts/build-matrix.sh [COMPILER:TYPE ...]   e.g. gcc:Debug clang:MinSizeRel
# CI builds gcc:Release (scripts/build.sh) and clang:Debug with sanitizers
# (scripts/test.sh); this is for the others, which take a full build each.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/ccache-env.sh
. scripts/ccache-env.sh
combos=("$@")
if [ ${#combos[@]} -eq 0 ]; then
  for compiler in gcc clang; do
    for type in Debug Release RelWithDebInfo MinSizeRel; do combos+=("$compiler:$type"); done
  done
fi
for combo in "${combos[@]}"; do
  compiler=${combo%%:*}
  type=${combo#*:}
  case $compiler in
    gcc) cc=gcc cxx=g++ ;;
    clang) cc=clang cxx=clang++ ;;
    *) echo "unknown compiler in '$combo' (gcc or clang)" >&2; exit 2 ;;
  esac
  case $type in
    Debug | Release | RelWithDebInfo | MinSizeRel) ;;
    *) echo "unknown build type in '$combo'" >&2; exit 2 ;;
  esac
  dir=build-matrix/$compiler-$type
  echo "== $compiler $type ($dir)"
  start=$(date +%s)
  CC=$cc CXX=$cxx cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE="$type" -DEPHEMERA_WERROR=ON \
    -DEPHEMERA_INTEGRATION_TESTS=OFF "${ccache_args[@]}" >/dev/null
  cmake --build "$dir" -j "$(nproc)" >"$dir.log" 2>&1 || {
    tail -n 40 "$dir.log" >&2
    echo "$compiler $type: build failed ($dir.log)" >&2
    exit 1
  }
  ctest --test-dir "$dir" --output-on-failure -j "$(nproc)" -L unit >"$dir.test.log" 2>&1 || {
    tail -n 40 "$dir.test.log" >&2
    echo "$compiler $type: unit tests failed ($dir.test.log)" >&2
    exit 1
  }
  echo "$compiler $type: built and $(grep -o '[0-9]* tests passed\|tests passed, 0 tests failed out of [0-9]*' "$dir.test.log" | tail -1) in $(($(date +%s) - start)) s"
done
