#!/usr/bin/env bash
# Boot time of the default image under TCG, per machine type and TCG
# translation-cache size: `ephemerad check` N times each (launch -> guest
# init marker -> sshd marker -> ACPI power-off), median and max printed.
#   bench/boot.sh [-n RUNS] [-m "microvm q35"] [-t "64"] [-b "EPHEMERAD..."]
# -b compares several ephemerad binaries (e.g. an older build) in one run,
# their boots interleaved so that the machine's drift hits all alike.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=5
machines="microvm q35"
tb_sizes="64"
binaries=build/src/daemon/ephemerad
while getopts "n:m:t:b:" opt; do
  case $opt in
    n) runs=$OPTARG ;;
    m) machines=$OPTARG ;;
    t) tb_sizes=$OPTARG ;;
    b) binaries=$OPTARG ;;
    *) echo "usage: $0 [-n RUNS] [-m MACHINES] [-t TB_SIZES_MIB] [-b BINARIES]" >&2; exit 2 ;;
  esac
done

for bin in $binaries; do
  [ -x "$bin" ] || { echo "$bin: build first (cmake -S . -B build -G Ninja && cmake --build build)" >&2; exit 1; }
done
image_dir=${EPHEMERA_IMAGE_DIR:-/var/cache/ephemera/images}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# median and max of the numbers on stdin
stats() { sort -n | awk '{v[NR]=$1} END {m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; printf "median %6.0f  max %6.0f", m, v[NR]}'; }

printf "%-8s %6s  %-28s %-28s %-24s %-12s %s\n" machine tb_mib "launch->init (ms)" "launch->sshd (ms)" "qemu rss (MiB)" power-off binary
for machine in $machines; do
  for tb in $tb_sizes; do
    cat >"$work/config.yaml" <<YAML
state_dir: $work/state
image_dir: $image_dir
log: {level: warn}
vm: {accel: tcg, machine: $machine, tcg_tb_size_mib: $tb, powerdown_timeout_ms: 10000}
YAML
    i=0
    for bin in $binaries; do : >"$work/results.$i"; i=$((i + 1)); done
    for _ in $(seq "$runs"); do
      i=0
      for bin in $binaries; do
        "$bin" --config "$work/config.yaml" check --memory 256 | tee -a "$work/raw" >>"$work/results.$i"
        i=$((i + 1))
      done
    done
    i=0
    for bin in $binaries; do
      r=$work/results.$i
      init=$(sed -E 's/.*guest init ([0-9]+) ms.*/\1/' "$r" | stats)
      sshd=$(sed -E 's/.*sshd up ([0-9]+) ms.*/\1/' "$r" | stats)
      rss=$(sed -E 's/.*qemu rss ([0-9]+) KiB.*/\1/' "$r" | awk '{print $1/1024}' | stats)
      graceful=$(grep -c graceful "$r" || true)
      printf "%-8s %6s  %-28s %-28s %-24s %-12s %s\n" "$machine" "$tb" "$init" "$sshd" "$rss" \
        "$graceful/$runs" "$bin"
      i=$((i + 1))
    done
  done
done
