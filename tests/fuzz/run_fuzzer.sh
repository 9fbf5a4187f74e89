#!/usr/bin/env bash
# One bounded fuzzing run, as the test suite does it (tests/fuzz/CMakeLists.txt):
#   run_fuzzer.sh BINARY SEED_CORPUS WORK_DIR SECONDS [extra libFuzzer flags...]
# The committed seed corpus (which includes every crash input found so far, so each run replays
# them first) is only read; new inputs go to WORK_DIR/corpus, crash inputs to WORK_DIR/artifacts.
set -euo pipefail
binary=$1 seeds=$2 work=$3 seconds=$4
shift 4
mkdir -p "$work/corpus" "$work/artifacts"
# detect_leaks: LeakSanitizer runs at exit and after each input that grew memory.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=0:abort_on_error=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
if command -v llvm-symbolizer-14 >/dev/null 2>&1; then
  export ASAN_SYMBOLIZER_PATH=${ASAN_SYMBOLIZER_PATH:-$(command -v llvm-symbolizer-14)}
fi
echo "fuzz: $(basename "$binary") for ${seconds}s, seeds $seeds"
# -rss_limit_mb: LibTorch plus ASan's shadow memory start near 1 GB; 2.5 GB leaves room.
exec "$binary" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2560 -print_final_stats=1 \
  -artifact_prefix="$work/artifacts/" "$@" "$work/corpus" "$seeds"
