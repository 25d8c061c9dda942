#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) in build-fuzz and
# runs each for a bounded time (EPHEMERA_FUZZ_SECONDS, default 30) from the
# seed corpus in fuzz/corpus/<target>. A crash fails the run and leaves the
# input in build-fuzz/artifacts.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${EPHEMERA_FUZZ_SECONDS:-30}
targets=(json_request_fuzz anweddol_frame_fuzz)

CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DEPHEMERA_FUZZ=ON >/dev/null
cmake --build build-fuzz -j "$(nproc)" --target "${targets[@]}"

mkdir -p build-fuzz/artifacts
for target in "${targets[@]}"; do
  work=build-fuzz/corpus/$target
  mkdir -p "$work"
  echo "== fuzzing $target for ${seconds}s"
  # New inputs go to the working corpus; the committed seeds stay as they are.
  build-fuzz/fuzz/"$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix=build-fuzz/artifacts/"$target"- -print_final_stats=1 \
    "$work" "fuzz/corpus/$target" 2>&1 | grep -E "^(stat::number_of_executed_units|stat::peak_rss|==|SUMMARY|Done)" || true
  if ls build-fuzz/artifacts/"$target"-* >/dev/null 2>&1; then
    echo "fuzz: $target found a crashing input:" build-fuzz/artifacts/"$target"-* >&2
    exit 1
  fi
done
