#!/usr/bin/env bash
# Runs authgate's fuzz targets: fuzz/scripts/run.sh SECONDS [TARGET...] (default: every target).
# Installs what it needs on first use: a nightly toolchain (rustup, profile minimal) and
# cargo-fuzz (into the repo's .tools/, like the Makefile's other tools). Builds every target
# once, then runs them FUZZ_JOBS at a time (default 2) for SECONDS each. libFuzzer reads the
# committed seeds in fuzz/corpus/<target>/ and grows its working corpus in fuzz/work/<target>/;
# a crash lands in fuzz/artifacts/<target>/. Exits 1 if any target crashed.
set -euo pipefail

cd "$(dirname "$0")/../.."
root=$PWD
seconds=${1:?usage: fuzz/scripts/run.sh SECONDS [TARGET...]}
shift
jobs=${FUZZ_JOBS:-2}
export PATH="$root/.tools/bin:$PATH"

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --quiet --locked --root "$root/.tools" cargo-fuzz
fi

cargo +nightly fuzz build
host=$(rustc +nightly -vV | awk '/^host:/ {print $2}')
bin_dir=fuzz/target/$host/release

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

mkdir -p fuzz/work
run_one() {
  local target=$1
  mkdir -p "fuzz/work/$target" "fuzz/corpus/$target" "fuzz/artifacts/$target"
  local log="fuzz/work/$target.log"
  local status=0
  "$bin_dir/$target" "fuzz/work/$target" "fuzz/corpus/$target" \
    -max_total_time="$seconds" -timeout=25 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="fuzz/artifacts/$target/" >"$log" 2>&1 || status=$?
  local runs
  runs=$(awk '/stat::number_of_executed_units/ {print $NF}' "$log")
  if [ "$status" -eq 0 ]; then
    echo "fuzz $target: ok, ${runs:-?} executions in ${seconds}s"
  else
    echo "fuzz $target: FAILED (exit $status), see $log and fuzz/artifacts/$target/"
    grep -m1 -E "panicked at|ERROR: libFuzzer" -A2 "$log" | sed 's/^/    /' || true
  fi
  return "$status"
}

failed=0
running=0
for target in "${targets[@]}"; do
  if [ "$running" -ge "$jobs" ]; then
    wait -n || failed=1
    running=$((running - 1))
  fi
  run_one "$target" &
  running=$((running + 1))
done
while [ "$running" -gt 0 ]; do
  wait -n || failed=1
  running=$((running - 1))
done
if [ "$failed" -ne 0 ]; then
  echo "fuzz: at least one target crashed"
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${seconds}s each, no crash"
