#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) in
# $EPHEMERA_FUZZ_BUILD (default build-fuzz) and runs each for a bounded time
# (EPHEMERA_FUZZ_SECONDS, default 30) from the seed corpus in
# fuzz/corpus/<target>. A crash fails the run and leaves the input in
# <build>/artifacts.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${EPHEMERA_FUZZ_SECONDS:-30}
targets=(json_request_fuzz anweddol_frame_fuzz oci_manifest_fuzz oci_layer_fuzz)
build=${EPHEMERA_FUZZ_BUILD:-build-fuzz}

if [ ! -f "$build/CMakeCache.txt" ]; then
  CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DEPHEMERA_FUZZ=ON -DEPHEMERA_INTEGRATION_TESTS=OFF >/dev/null
fi
cmake --build "$build" -j "$(nproc)" --target "${targets[@]}"

rm -rf "$build/artifacts"
mkdir -p "$build/artifacts"
for target in "${targets[@]}"; do
  work=$build/corpus/$target
  mkdir -p "$work"
  echo "== fuzzing $target for ${seconds}s"
  # New inputs go to the working corpus; the committed seeds stay as they are.
  "$build/fuzz/$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$build/artifacts/$target-" -print_final_stats=1 \
    "$work" "fuzz/corpus/$target" 2>&1 | grep -E "^(stat::number_of_executed_units|stat::peak_rss|==|SUMMARY|Done)" || true
  if ls "$build/artifacts/$target"-* >/dev/null 2>&1; then
    echo "fuzz: $target found a crashing input:" "$build/artifacts/$target"-* >&2
    exit 1
  fi
done
