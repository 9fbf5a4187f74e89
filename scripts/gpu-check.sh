#!/usr/bin/env bash
# The GPU check, in one go, on a GPU machine without internet (docs/gpu.md): builds relora with
# -DRELORA_WITH_CUDA=ON against the machine's PyTorch LibTorch and the Debian libraries that
# scripts/gpu-prepare.sh extracted on the build machine into .gpu-deps (carried along), runs the
# GPU-labelled tests (ctest -L gpu) and the GPU benchmark (presets 350m and 1b3, seq 512, bf16,
# full vs relora rank 128), and prints a short table last. Time-boxed to about 8 minutes.
#
# Run from anywhere in the checkout: bash scripts/gpu-check.sh
# Logs: $OUT when set (the device tool's folder that comes back), else <build>/gpu-check-logs;
# at most 7 files: gpu-check.log (everything), env.log, configure.log, build.log, ctest.log,
# bench.log, summary.txt (the table).
#
# Environment:
#   RELORA_GPU_CHECK_BUDGET_S  whole-run budget in seconds (default 480); phases get what is left
#   RELORA_GPU_BUILD_DIR       build folder (default build-gpu, ignored by git)
#   RELORA_GPU_JOBS            compile jobs (default: nproc)
#   RELORA_GPU_SKIP_BENCH=1    tests only
#   RELORA_GPU_CHECK_DRY_RUN=1 on a CPU machine: the same steps against Debian's LibTorch without
#                              CUDA (tests skip, a tiny CPU benchmark), to check this script's wiring
#   CUDA_HOME                  CUDA toolkit (default: /usr/local/cuda, else from nvcc on PATH)
# Exit status: 0 when configure, build, tests and benchmark all succeeded; 1 otherwise; 2 when a
# prerequisite is missing (nothing was built).
set -uo pipefail  # no -e: every phase reports, and the table always comes last

cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
START=$SECONDS
BUDGET=${RELORA_GPU_CHECK_BUDGET_S:-480}
RESERVE=10  # seconds kept for the table at the end
BUILD=${RELORA_GPU_BUILD_DIR:-$ROOT/build-gpu}
case "$BUILD" in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
DRY=${RELORA_GPU_CHECK_DRY_RUN:-0}
JOBS=${RELORA_GPU_JOBS:-$(nproc)}
DEPS=$ROOT/.gpu-deps/root
DEPS_LIB=$DEPS/usr/lib/x86_64-linux-gnu
LOGS=${OUT:-$BUILD/gpu-check-logs}
mkdir -p "$LOGS" "$BUILD" || exit 2

# Everything printed also goes to gpu-check.log; the tee is waited for at the end.
exec > >(tee "$LOGS/gpu-check.log") 2>&1
TEE_PID=$!

# ---- bookkeeping -------------------------------------------------------------------------------
PHASES=() STATUSES=() SECS=() NOTES=() BENCH_ROWS=() EXTRA_NOTES=()
record() { PHASES+=("$1"); STATUSES+=("$2"); SECS+=("$3"); NOTES+=("$4"); }
left() { echo $((BUDGET - (SECONDS - START))); }
lines_of() { if [ -f "$1" ]; then wc -l <"$1"; else echo 0; fi; }
FAILED=0

# run_timed LABEL MAX_SECONDS LOG command...: runs with a timeout of min(MAX, time left - RESERVE),
# appending output to LOG, and prints the log's tail. Sets RT_STATUS (OK, FAIL, TIMEOUT or SKIP),
# RT_SECS and RT_NOTE; returns the command's exit status (124 when skipped or timed out).
run_timed() {
  local label=$1 max=$2 log=$3
  shift 3
  local t
  t=$(($(left) - RESERVE))
  # The caps fit the GPU machine (16 cores); a dry run on the build machine has only the budget.
  [ "$DRY" != 1 ] && ((t > max)) && t=$max
  if ((t < 15)); then
    RT_STATUS=SKIP RT_SECS=0 RT_NOTE="no time left in the ${BUDGET}s budget"
    echo "== $label: skipped, no time left"
    return 124
  fi
  echo "== $label (timeout ${t}s)"
  local t0=$SECONDS rc first
  first=$(($(lines_of "$log") + 1))
  echo "\$ $*" >>"$log"
  timeout -k 10 "$t" "$@" >>"$log" 2>&1
  rc=$?
  RT_SECS=$((SECONDS - t0))
  if ((rc == 0)); then
    RT_STATUS=OK RT_NOTE=""
    tail -n +"$first" "$log" | tail -n 8
  elif ((rc == 124 || rc == 137)); then
    RT_STATUS=TIMEOUT RT_NOTE="stopped after ${t}s"
    tail -n +"$first" "$log" | tail -n 40
  else
    RT_STATUS=FAIL RT_NOTE="exit $rc (see $(basename "$log"))"
    tail -n +"$first" "$log" | tail -n 60
  fi
  return "$rc"
}

# run_phase NAME MAX_SECONDS LOG command...: run_timed, then one row of the table.
run_phase() {
  local name=$1 rc
  run_timed "$@"
  rc=$?
  record "$name" "$RT_STATUS" "$RT_SECS" "$RT_NOTE"
  return "$rc"
}

print_table() {
  local elapsed=$((SECONDS - START)) i
  {
    echo
    echo "==== relora gpu-check: ${GPU_NAME:-no GPU}, torch ${TORCH_VERSION:-?}, ${elapsed}s of ${BUDGET}s ===="
    printf '%-20s %-7s %5s  %s\n' phase status secs note
    for i in "${!PHASES[@]}"; do
      printf '%-20s %-7s %5s  %s\n' "${PHASES[$i]}" "${STATUSES[$i]}" "${SECS[$i]}" "${NOTES[$i]}"
    done
    if [ "${#BENCH_ROWS[@]}" -gt 0 ]; then
      echo "---- GPU benchmark (gpu_bench, real Trainer, synthetic data): dtype ${BENCH_DTYPE:-bf16}, seq ${BENCH_SEQ:-512}, relora rank ${BENCH_RANK:-128};"
      echo "     MFU = executed matrix FLOPs/s over 989 TFLOP/s and over the bf16 8192^3 matmul peak measured in the same process"
      printf '%-6s %-7s %4s %10s %8s %8s %8s %8s %9s %10s %9s\n' \
        preset mode mb tokens/s step_s TFLOP/s MFU@989 MFU@peak peak_TF/s alloc_GiB rsrv_GiB
      for i in "${BENCH_ROWS[@]}"; do echo "$i"; done
    fi
    for i in "${EXTRA_NOTES[@]}"; do echo "note: $i"; done
  } | tee "$LOGS/summary.txt"
}

finish() {
  print_table
  exec >&- 2>&-
  wait "$TEE_PID" 2>/dev/null
  exit "$1"
}

# A value from a GPU_BENCH key=value line.
kv() { tr ' ' '\n' <<<"$2" | awk -F= -v k="$1" '$1 == k { print $2 }'; }

# ---- 0. environment and prerequisites ----------------------------------------------------------
echo "== environment"
ENV_LOG=$LOGS/env.log
{
  echo "date: $(date -u +%FT%TZ)"
  echo "host: $(uname -srm)"
  grep -E '^(PRETTY_NAME)=' /etc/os-release 2>/dev/null
  echo "glibc: $(ldd --version 2>/dev/null | head -1)"
  echo "c++: $(c++ --version 2>/dev/null | head -1)"
  echo "cmake: $(cmake --version 2>/dev/null | head -1)"
  echo "ninja: $(ninja --version 2>/dev/null)"
  echo "python3: $(python3 --version 2>&1) at $(command -v python3)"
  echo "cores: $(nproc), memory: $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
  if [ "$DRY" != 1 ]; then
    timeout 20 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
  fi
} >"$ENV_LOG" 2>&1
cat "$ENV_LOG"

prereq_fail() {
  echo "gpu-check: $1" >&2
  record environment FAIL $((SECONDS - START)) "$1"
  finish 2
}

for tool in cmake ninja python3 c++ timeout; do
  command -v "$tool" >/dev/null || prereq_fail "'$tool' is not on PATH"
done
[ -f "$DEPS_LIB/libgrpc++.so" ] ||
  prereq_fail "$DEPS is missing or incomplete: run scripts/gpu-prepare.sh on the Debian build machine and carry \".gpu-deps\""
# libssl.so / libcrypto.so in .gpu-deps point at the machine's own OpenSSL 3 (gpu-prepare.sh).
if [ ! -e /usr/lib/x86_64-linux-gnu/libssl.so.3 ] || [ ! -e /usr/lib/x86_64-linux-gnu/libcrypto.so.3 ]; then
  prereq_fail "this machine has no OpenSSL 3 in /usr/lib/x86_64-linux-gnu (libssl.so.3), which gRPC needs"
fi

TORCH_VERSION="" TORCH_CUDA="" TORCH_CUDA_AVAILABLE=0 TORCH_CXX11_ABI=1 TORCH_PREFIX="" TORCH_LIB=""
TORCH_INCLUDE="" NCCL_ROOT="" GPU_NAME=""
if [ "$DRY" = 1 ]; then
  TORCH_DIR=${RELORA_GPU_CHECK_TORCH_DIR:-/usr/lib/x86_64-linux-gnu/cmake/Torch}
  TORCH_LIB=/usr/lib/x86_64-linux-gnu
  TORCH_VERSION="Debian LibTorch (dry run, no CUDA)"
  WITH_CUDA=OFF
  echo "gpu-check: DRY RUN on the CPU: Torch from $TORCH_DIR, RELORA_WITH_CUDA=OFF"
else
  WITH_CUDA=ON
  # Ask python3 about its torch before LD_LIBRARY_PATH points anywhere else.
  torch_info=$(timeout 120 python3 - <<'EOF' 2>>"$ENV_LOG"
import os
import torch
d = os.path.dirname(torch.__file__)
print("TORCH_VERSION=" + torch.__version__)
print("TORCH_CUDA=" + str(torch.version.cuda))
print("TORCH_CUDA_AVAILABLE=%d" % int(torch.cuda.is_available()))
print("TORCH_CXX11_ABI=%d" % int(torch._C._GLIBCXX_USE_CXX11_ABI))
print("TORCH_PREFIX=" + torch.utils.cmake_prefix_path)
print("TORCH_LIB=" + os.path.join(d, "lib"))
print("TORCH_INCLUDE=" + os.path.join(d, "include"))
if torch.cuda.is_available():
    print("GPU_NAME=" + torch.cuda.get_device_name(0))
try:
    import nvidia.nccl
    print("NCCL_ROOT=" + list(nvidia.nccl.__path__)[0])
except Exception:
    pass
EOF
  )
  while IFS='=' read -r k v; do
    case "$k" in
      TORCH_VERSION | TORCH_CUDA | TORCH_CUDA_AVAILABLE | TORCH_CXX11_ABI | TORCH_PREFIX | TORCH_LIB | \
        TORCH_INCLUDE | GPU_NAME | NCCL_ROOT) printf -v "$k" '%s' "$v" ;;
    esac
  done <<<"$torch_info"
  echo "$torch_info" | tee -a "$ENV_LOG"
  [ -n "$TORCH_PREFIX" ] || prereq_fail "python3 cannot import torch (see env.log)"
  TORCH_DIR=$TORCH_PREFIX/Torch
  if [ "$TORCH_CXX11_ABI" != 1 ]; then
    prereq_fail "this PyTorch's LibTorch uses the pre-C++11 ABI (torch._C._GLIBCXX_USE_CXX11_ABI is False),
  but Debian's gRPC, protobuf, spdlog, yaml-cpp, ... in .gpu-deps use the C++11 ABI: std::string in
  their interfaces cannot link. Use a cxx11-ABI LibTorch (PyTorch >= 2.7 wheels, or the official
  'cxx11-abi' LibTorch download with CMAKE_PREFIX_PATH pointing at it)."
  fi
  [ "$TORCH_CUDA_AVAILABLE" = 1 ] || EXTRA_NOTES+=("torch.cuda.is_available() is False in python3: the GPU tests will skip")
fi
[ -f "$TORCH_DIR/TorchConfig.cmake" ] || prereq_fail "no TorchConfig.cmake in $TORCH_DIR"

CUDA_ARGS=()
NCCL_INC="" NCCL_LIB=""
if [ "$WITH_CUDA" = ON ]; then
  # A full toolkit (headers, libraries, nvcc) is wanted: /usr/local/cuda before an nvcc on PATH,
  # which may be a pip package's compiler alone.
  if [ -z "${CUDA_HOME:-}" ]; then
    if [ -x /usr/local/cuda/bin/nvcc ]; then
      CUDA_HOME=/usr/local/cuda
    elif command -v nvcc >/dev/null; then
      CUDA_HOME=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
    else
      CUDA_HOME=/usr/local/cuda
    fi
  fi
  [ -x "$CUDA_HOME/bin/nvcc" ] || prereq_fail "no nvcc in $CUDA_HOME/bin (set CUDA_HOME): LibTorch's CMake config needs the CUDA toolkit"
  export CUDA_HOME PATH="$CUDA_HOME/bin:$PATH" CUDACXX="$CUDA_HOME/bin/nvcc"
  # relora compiles no kernels; LibTorch's CMake wants an architecture list anyway (9.0: H100/H200).
  export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
  CUDA_ARGS=(-DCMAKE_CUDA_COMPILER="$CUDA_HOME/bin/nvcc" -DCUDAToolkit_ROOT="$CUDA_HOME"
    -DCUDA_TOOLKIT_ROOT_DIR="$CUDA_HOME" -DCMAKE_CUDA_ARCHITECTURES=90)
  echo "nvcc: $("$CUDA_HOME/bin/nvcc" --version | tail -1)" | tee -a "$ENV_LOG"
  # ProcessGroupNCCL.hpp includes <nccl.h>: the wheel's headers lack it; the nvidia-nccl package
  # (or the CUDA toolkit) has it.
  for d in ${NCCL_ROOT:+"$NCCL_ROOT"/include} "$CUDA_HOME/include" /usr/include; do
    [ -f "$d/nccl.h" ] && { NCCL_INC=$d; break; }
  done
  if [ -z "$NCCL_INC" ] && [ -n "$NCCL_ROOT" ]; then
    NCCL_INC=$(dirname "$(find "$NCCL_ROOT" -name nccl.h 2>/dev/null | head -1)")
  fi
  if [ -z "$NCCL_INC" ] || [ ! -f "$NCCL_INC/nccl.h" ]; then
    prereq_fail "nccl.h not found (python3 -c 'import nvidia.nccl' gave '${NCCL_ROOT}'); ProcessGroupNCCL needs it"
  fi
  [ -n "$NCCL_ROOT" ] && NCCL_LIB=$(dirname "$(find "$NCCL_ROOT" -name 'libnccl.so*' 2>/dev/null | head -1)")
  echo "nccl: include $NCCL_INC, lib ${NCCL_LIB:-?}" | tee -a "$ENV_LOG"
  # Risks worth seeing in the log: what LibTorch exports and ships that Debian's libraries also have.
  if command -v nm >/dev/null && [ -f "$TORCH_LIB/libtorch_cpu.so" ]; then
    {
      echo "libtorch_cpu.so dynamic symbols: protobuf $(nm -D --defined-only "$TORCH_LIB/libtorch_cpu.so" 2>/dev/null | grep -c '_ZN6google8protobuf'), gloo $(nm -D --defined-only "$TORCH_LIB/libtorch_cpu.so" 2>/dev/null | grep -c '_ZN4gloo'), fmt $(nm -D --defined-only "$TORCH_LIB/libtorch_cpu.so" 2>/dev/null | grep -c '_ZN3fmt')"
      printf 'torch/include holds:'
      for d in fmt google gloo spdlog nlohmann; do [ -d "$TORCH_INCLUDE/$d" ] && printf ' %s/' "$d"; done
      echo
    } | tee -a "$ENV_LOG"
  fi
fi
record environment OK $((SECONDS - START)) "${GPU_NAME:-no GPU (dry run)}; torch ${TORCH_VERSION}${TORCH_CUDA:+ cu$TORCH_CUDA}"

# ---- 1. configure ------------------------------------------------------------------------------
# Build tools from .gpu-deps run through wrappers that give them their libraries, so that nothing
# else (cmake, python3, the compiler) sees Debian's libraries on LD_LIBRARY_PATH.
TOOLS=$BUILD/gpu-tools
mkdir -p "$TOOLS"
wrap() {  # wrap NAME PROGRAM (rewritten only when it changes: protoc's outputs depend on it)
  # shellcheck disable=SC2016  # the $ expressions belong to the wrapper
  printf '#!/bin/sh\nLD_LIBRARY_PATH="%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "%s" "$@"\n' \
    "$DEPS_LIB" "$2" >"$TOOLS/$1.new"
  chmod +x "$TOOLS/$1.new"
  if cmp -s "$TOOLS/$1.new" "$TOOLS/$1"; then rm -f "$TOOLS/$1.new"; else mv "$TOOLS/$1.new" "$TOOLS/$1"; fi
}
wrap protoc "$DEPS/usr/bin/protoc"
wrap grpc_cpp_plugin "$DEPS/usr/bin/grpc_cpp_plugin"
if command -v pkg-config >/dev/null; then
  PKG_CONFIG_BIN=$(command -v pkg-config)
else
  wrap pkg-config "$DEPS/usr/bin/pkgconf"
  PKG_CONFIG_BIN=$TOOLS/pkg-config
fi
export PKG_CONFIG_PATH="$DEPS_LIB/pkgconfig:$DEPS/usr/share/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"

# Debian's headers first (-I beats the -isystem of imported targets, LibTorch's included): the
# generated protobuf code and spdlog must see the protobuf/fmt they link against, not copies a
# LibTorch may ship. <cstdint> first: abseil 20220623's headers miss it for GCC 13.
# (Debian keeps OpenSSL's configuration.h in the multiarch folder, which GCC searches only under /usr.)
CXX_FLAGS="-I$DEPS/usr/include -I$DEPS/usr/include/x86_64-linux-gnu -include cstdint${NCCL_INC:+ -isystem $NCCL_INC}"
# The linker resolves Debian's libraries' own dependencies there (no LD_LIBRARY_PATH at build time).
LINK_FLAGS="-Wl,-rpath-link,$DEPS_LIB -Wl,-rpath-link,$TORCH_LIB${NCCL_LIB:+ -Wl,-rpath-link,$NCCL_LIB}"
PREFIX_PATH="$DEPS/usr;$DEPS_LIB/cmake"
[ -n "$TORCH_PREFIX" ] && PREFIX_PATH="$TORCH_PREFIX;$PREFIX_PATH"

rm -f "$BUILD/CMakeCache.txt"
run_phase configure 180 "$LOGS/configure.log" \
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -Wno-dev \
  -DCMAKE_BUILD_TYPE=Release \
  -DRELORA_WITH_CUDA="$WITH_CUDA" -DRELORA_BUILD_TESTS=ON \
  -DCMAKE_PREFIX_PATH="$PREFIX_PATH" \
  -DTorch_DIR="$TORCH_DIR" \
  -DGloo_DIR="$DEPS/usr/share/cmake/Gloo" \
  -DCMAKE_CXX_FLAGS="$CXX_FLAGS" \
  -DCMAKE_EXE_LINKER_FLAGS="$LINK_FLAGS" -DCMAKE_SHARED_LINKER_FLAGS="$LINK_FLAGS" \
  -DCMAKE_MODULE_LINKER_FLAGS="$LINK_FLAGS" \
  -DProtobuf_PROTOC_EXECUTABLE="$TOOLS/protoc" -DGRPC_CPP_PLUGIN="$TOOLS/grpc_cpp_plugin" \
  -DPKG_CONFIG_EXECUTABLE="$PKG_CONFIG_BIN" \
  -DOPENSSL_ROOT_DIR="$DEPS/usr" -DZLIB_ROOT="$DEPS/usr" \
  -DPython3_EXECUTABLE="$(command -v python3)" \
  -DCMAKE_POLICY_VERSION_MINIMUM=3.5 \
  "${CUDA_ARGS[@]}"
CONFIGURE_RC=$?
if ((CONFIGURE_RC == 0)); then
  # Which copies CMake chose: everything but LibTorch must come from .gpu-deps.
  chosen=$(grep -E '^(Protobuf_LIBRARY_RELEASE|Protobuf_INCLUDE_DIR|gRPC_DIR|absl_DIR|spdlog_DIR|fmt_DIR|prometheus-cpp_DIR|yaml-cpp_DIR|GTest_DIR|CLI11_DIR|nlohmann_json_DIR|SQLite3_LIBRARY|ZLIB_LIBRARY_RELEASE|OPENSSL_SSL_LIBRARY|CURL_LIBRARY_RELEASE|civetweb_DIR|Gloo_DIR|Torch_DIR|pkgcfg_lib_SENTENCEPIECE_sentencepiece)[:=]' \
    "$BUILD/CMakeCache.txt")
  echo "$chosen" >>"$LOGS/configure.log"
  outside=$(echo "$chosen" | grep -v -e '^Torch_DIR' | grep -v -F "$DEPS" || true)
  if [ -n "$outside" ]; then
    echo "gpu-check: warning: found outside .gpu-deps:"
    while read -r l; do echo "  $l"; done <<<"$outside"
    EXTRA_NOTES+=("some dependencies were found outside .gpu-deps (configure.log)")
  fi
else
  FAILED=1
  finish 1
fi

# ---- 2. build ----------------------------------------------------------------------------------
TARGETS=(relora-worker relora-coordinator relora gpu_tests gpu_bench)
run_phase build 420 "$LOGS/build.log" ninja -C "$BUILD" -j "$JOBS" "${TARGETS[@]}" || {
  FAILED=1
  finish 1
}
NOTES[${#NOTES[@]} - 1]="${TARGETS[*]}"

# ---- 3. GPU tests ------------------------------------------------------------------------------
# The built programs load Debian's libraries from .gpu-deps, LibTorch's and NCCL's.
export LD_LIBRARY_PATH="$DEPS_LIB:$TORCH_LIB${NCCL_LIB:+:$NCCL_LIB}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
run_phase "tests: ctest -L gpu" 240 "$LOGS/ctest.log" \
  ctest --test-dir "$BUILD" -L gpu --output-on-failure --timeout 200 -j 1
TEST_RC=$?
passed=$(grep -cE 'Test +#[0-9]+: .* +Passed +[0-9.]+ sec' "$LOGS/ctest.log")
skipped=$(grep -cE 'Test +#[0-9]+: .*Skipped' "$LOGS/ctest.log")
failed=$(grep -cE 'Test +#[0-9]+: .*(\*\*\*Failed|\*\*\*Timeout|\*\*\*Exception|Not Run)' "$LOGS/ctest.log")
NOTES[${#NOTES[@]} - 1]="$passed passed, $skipped skipped, $failed failed ${NOTES[${#NOTES[@]} - 1]}"
if ((TEST_RC != 0)); then
  FAILED=1
elif [ "$DRY" != 1 ] && { ((passed == 0)) || ((skipped > 0)); }; then
  STATUSES[${#STATUSES[@]} - 1]=WARN
  EXTRA_NOTES+=("GPU tests skipped on the GPU machine: CUDA was not usable from LibTorch (ctest.log)")
  FAILED=1
fi

# ---- 4. benchmark ------------------------------------------------------------------------------
if [ "${RELORA_GPU_SKIP_BENCH:-0}" = 1 ]; then
  record benchmark SKIP 0 "RELORA_GPU_SKIP_BENCH=1"
else
  if [ "$DRY" = 1 ]; then
    BENCH_DEVICE=cpu BENCH_SEQ=64 BENCH_DTYPE=bf16 BENCH_RANK=16
    CONFIGS=("nano full 2" "nano relora 2")
    BENCH_FLAGS=(--steps 1 --warmup-steps 1 --threads 2)
  else
    BENCH_DEVICE=cuda:0 BENCH_SEQ=512 BENCH_DTYPE=bf16 BENCH_RANK=128
    # Micro-batches: 16 x 512 and 8 x 512 tokens per step fit either card with room to spare.
    CONFIGS=("350m full 16" "350m relora 16" "1b3 full 8" "1b3 relora 8")
    BENCH_FLAGS=(--steps 4 --warmup-steps 2 --threads 8)
  fi
  bench_t0=$SECONDS
  bench_ok=0 bench_bad=0
  for c in "${CONFIGS[@]}"; do
    read -r preset mode mb <<<"$c"
    before=$(lines_of "$LOGS/bench.log")
    run_timed "benchmark $preset $mode" 180 "$LOGS/bench.log" "$BUILD/tests/gpu/gpu_bench" --preset "$preset" --mode "$mode" \
      --dtype "$BENCH_DTYPE" --seq "$BENCH_SEQ" --micro-batch "$mb" --rank "$BENCH_RANK" --device "$BENCH_DEVICE" \
      "${BENCH_FLAGS[@]}"
    rc=$?
    line=$(tail -n +"$((before + 1))" "$LOGS/bench.log" | grep '^GPU_BENCH ' | tail -1)
    if ((rc == 0)) && [ -n "$line" ]; then
      bench_ok=$((bench_ok + 1))
      BENCH_ROWS+=("$(printf '%-6s %-7s %4s %10s %8s %8s %7.1f%% %7.1f%% %9s %10s %9s' \
        "$preset" "$mode" "$(kv micro_batch "$line")" "$(kv tokens_per_s "$line")" "$(kv step_s "$line")" \
        "$(kv tflops "$line")" "$(awk -v x="$(kv mfu_nominal "$line")" 'BEGIN{print 100*x}')" \
        "$(awk -v x="$(kv mfu_measured "$line")" 'BEGIN{print 100*x}')" "$(kv peak_tflops "$line")" \
        "$(kv peak_alloc_gib "$line")" "$(kv peak_reserved_gib "$line")")")
    else
      bench_bad=$((bench_bad + 1))
      BENCH_ROWS+=("$(printf '%-6s %-7s %4s  %s' "$preset" "$mode" "$mb" "$RT_STATUS ${RT_NOTE:-no GPU_BENCH line}")")
    fi
  done
  if ((bench_bad == 0)); then
    record benchmark OK $((SECONDS - bench_t0)) "${#CONFIGS[@]} configurations on $BENCH_DEVICE"
  else
    record benchmark FAIL $((SECONDS - bench_t0)) "$bench_bad of ${#CONFIGS[@]} configurations failed"
    FAILED=1
  fi

fi

# ---- 5. relora-bench, if time is left ------------------------------------------------------------
# bench/'s relora-bench (the CPU benchmark tool, written apart from this check): built last, so
# that neither its build time nor a failure of it costs the tests or the table; run once (350m
# relora) as a cross-check of gpu_bench if it can train on a GPU (--device).
if ninja -C "$BUILD" -t targets all 2>/dev/null | grep -q '^relora-bench:' && (($(left) > 100)); then
  if run_phase relora-bench-build 150 "$LOGS/build.log" ninja -C "$BUILD" -j "$JOBS" relora-bench; then
    if [ "$DRY" = 1 ]; then
      :
    elif "$BUILD/bench/relora-bench" --help 2>/dev/null | grep -q -- '--device'; then
      if run_phase relora-bench 120 "$LOGS/bench.log" "$BUILD/bench/relora-bench" --preset 350m --mode relora \
        --dtype bf16 --seq 512 --micro-batch 16 --steps 4 --warmup-steps 2 --device cuda:0; then
        EXTRA_NOTES+=("relora-bench 350m relora: $(grep -E ' tok/s' "$LOGS/bench.log" | tail -1)")
      fi
    else
      EXTRA_NOTES+=("relora-bench has no --device flag (CPU only): not run; the table is gpu_bench's")
    fi
  else
    EXTRA_NOTES+=("relora-bench did not build (build.log); not counted as a failure of this check")
    STATUSES[${#STATUSES[@]} - 1]=WARN
  fi
fi

finish "$FAILED"
