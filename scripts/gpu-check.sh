#!/usr/bin/env bash
# The GPU check, in one go, on a GPU machine without internet (docs/gpu.md): builds relora with
# -DRELORA_WITH_CUDA=ON against the machine's PyTorch LibTorch and the Debian libraries that
# scripts/gpu-prepare.sh extracted on the build machine into .gpu-deps (carried along), runs the
# GPU-labelled tests (ctest -L gpu) and the GPU benchmark (presets 350m and 1b3, seq 512, bf16,
# full vs relora rank 128), and prints a short table last. Time-boxed to about 8 minutes.
# A failing phase does not stop the later ones: the build keeps going past a failing target
# (ninja -k 0) and the tests and benchmark rows whose programs did build still run; each benchmark
# configuration is its own row. A test or benchmark process that crashes (killed by a signal:
# SIGSEGV, SIGABRT, ...) is run once more under gdb (.gpu-deps/bin/gdb, from gpu-prepare.sh), and
# its backtraces go to backtraces.log, the crashing frame to the table.
#
# Run from anywhere in the checkout: bash scripts/gpu-check.sh
# Logs: $OUT when set (the device tool's folder that comes back), else <build>/gpu-check-logs;
# at most 8 files (the device tool brings back 8, of 16 MiB each at most; larger logs are cut in
# the middle): gpu-check.log (everything), env.log, configure.log, build.log, ctest.log, bench.log,
# backtraces.log (only when something crashed), summary.txt (the table).
#
# Environment:
#   RELORA_GPU_CHECK_BUDGET_S  whole-run budget in seconds (default 480); phases get what is left
#   RELORA_GPU_BUILD_DIR       build folder (default build-gpu, ignored by git)
#   RELORA_GPU_JOBS            compile jobs (default: nproc)
#   RELORA_GPU_SKIP_BENCH=1    tests only
#   RELORA_GPU_BACKTRACE_MAX   crashed processes re-run under gdb, at most (default 4)
#   RELORA_GPU_BACKTRACE_TIMEOUT_S  each such re-run's timeout (default 150; the budget still rules)
#   RELORA_GPU_LINE_INFO=1     compile with -g1, so that backtraces name source lines (slower build)
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
BT_LOG=$LOGS/backtraces.log
GDB=$ROOT/.gpu-deps/bin/gdb
# Where the wrapper unpacks gdb: the build folder, as /tmp may be mounted noexec.
export RELORA_GDB_DIR=${RELORA_GDB_DIR:-$BUILD/gdb}
GDB_STATE="not checked"  # empty once gdb has printed a backtrace here; else why there is none
BT_MAX=${RELORA_GPU_BACKTRACE_MAX:-4}
BT_TIMEOUT=${RELORA_GPU_BACKTRACE_TIMEOUT_S:-150}
BT_COUNT=0
mkdir -p "$LOGS" "$BUILD" || exit 2
# This run's logs only (phases append to them; a local rerun would otherwise add to the last one's).
rm -f "$LOGS"/{gpu-check,env,configure,build,ctest,bench,backtraces}.log "$LOGS/summary.txt"

# Everything printed also goes to gpu-check.log; the tee is waited for at the end.
exec > >(tee "$LOGS/gpu-check.log") 2>&1
TEE_PID=$!

# ---- bookkeeping -------------------------------------------------------------------------------
PHASES=() STATUSES=() SECS=() NOTES=() BENCH_ROWS=() EXTRA_NOTES=()
record() { PHASES+=("$1"); STATUSES+=("$2"); SECS+=("$3"); NOTES+=("$4"); }
left() { echo $((BUDGET - (SECONDS - START))); }
lines_of() { if [ -f "$1" ]; then wc -l <"$1"; else echo 0; fi; }
FAILED=0

# " (SIGSEGV)" for an exit status of 128 + a signal's number, else nothing.
signal_of() {
  local name
  if (($1 > 128 && $1 < 160)) && name=$(kill -l $(($1 - 128)) 2>/dev/null); then echo " (SIG$name)"; fi
}
# Whether an exit status says the process crashed: SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE,
# SIGSEGV or SIGSYS (not SIGKILL: timeout -k and the OOM killer send it; not SIGTERM/SIGINT).
crashed() { case "$1" in 132 | 133 | 134 | 135 | 136 | 139 | 159) return 0 ;; *) return 1 ;; esac; }

# run_timed LABEL MAX_SECONDS LOG command...: runs with a timeout of min(MAX, time left - RESERVE),
# appending output to LOG, and prints the log's tail. Sets RT_STATUS (OK, FAIL, TIMEOUT or SKIP),
# RT_SECS and RT_NOTE; returns the command's exit status (124 when skipped or timed out).
run_timed() {
  local label=$1 max=$2 log=$3
  shift 3
  local t
  t=$(($(left) - RESERVE))
  # The caps fit the GPU machine (16 cores); a dry run on the build machine has only the budget,
  # unless the caller sets RT_CAP_ALWAYS=1 (gdb re-runs).
  { [ "$DRY" != 1 ] || [ "${RT_CAP_ALWAYS:-0}" = 1 ]; } && ((t > max)) && t=$max
  if ((t < 15)); then
    RT_STATUS=SKIP RT_SECS=0 RT_NOTE="no time left in the ${BUDGET}s budget"
    echo "== $label: skipped, no time left"
    return 124
  fi
  echo "== $label (timeout ${t}s)"
  local t0=$SECONDS rc first
  first=$(($(lines_of "$log") + 1))
  { printf '$'; printf ' %q' "$@"; echo; } >>"$log"  # quoted: the exact call, to repeat it
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
    RT_STATUS=FAIL RT_NOTE="exit $rc$(signal_of "$rc") (see $(basename "$log"))"
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

# The device tool brings back no file over 16 MiB: a larger log keeps its first 4 and last 10 MiB.
cap_logs() {
  local f size
  for f in "$LOGS"/*; do
    [ -f "$f" ] || continue
    size=$(stat -c %s "$f" 2>/dev/null) || continue
    ((size > 15 * 1024 * 1024)) || continue
    {
      head -c 4M "$f"
      printf '\n[... gpu-check.sh cut %s bytes here: the device tool brings back 16 MiB per file ...]\n' \
        $((size - 14 * 1024 * 1024))
      tail -c 10M "$f"
    } >"$f.cut" && mv "$f.cut" "$f"
  done
}

finish() {
  print_table
  exec >&- 2>&-
  wait "$TEE_PID" 2>/dev/null
  cap_logs
  exit "$1"
}

# ---- backtraces of crashed processes: scripts/gpu-check-backtraces.sh ---------------------------
# shellcheck source=scripts/gpu-check-backtraces.sh
source "$ROOT/scripts/gpu-check-backtraces.sh"

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
# The debugger for crashed processes: missing or unusable is a note, not a failure.
check_gdb >>"$ENV_LOG" 2>&1
grep '^gdb: ' "$ENV_LOG" | tail -n 1
[ -z "$GDB_STATE" ] || EXTRA_NOTES+=("$GDB_STATE: a crashed process gets no backtrace")

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
# Line tables only (-g1): file:line in backtraces for a modest cost in compile time and size.
[ "${RELORA_GPU_LINE_INFO:-0}" = 1 ] && CXX_FLAGS="$CXX_FLAGS -g1"
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
# -k 0: a target that fails to compile or link does not stop the others; the tests and benchmark
# rows whose programs did build still run below.
TARGETS=(relora-worker relora-coordinator relora gpu_tests gpu_bench)
build_first=$(($(lines_of "$LOGS/build.log") + 1))
run_phase build 420 "$LOGS/build.log" ninja -C "$BUILD" -j "$JOBS" -k 0 "${TARGETS[@]}"
BUILD_RC=$?
# built TARGET: whether TARGET is up to date (after a failed build; ninja -n builds nothing).
built() { ((BUILD_RC == 0)) || ninja -C "$BUILD" -n "$1" 2>/dev/null | grep -q 'no work to do'; }
if ((BUILD_RC == 0)); then
  NOTES[${#NOTES[@]} - 1]="${TARGETS[*]}"
else
  FAILED=1
  not_built=()
  for t in "${TARGETS[@]}"; do built "$t" || not_built+=("$t"); done
  build_out=$(tail -n +"$build_first" "$LOGS/build.log")
  first_error=$({ grep -m 1 -E 'error:|Error at|undefined reference' <<<"$build_out" ||
    grep -m 1 'FAILED:' <<<"$build_out"; } | sed -E 's#^/[^ :]*/##' | cut -c1-160)
  NOTES[${#NOTES[@]} - 1]="${NOTES[${#NOTES[@]} - 1]}; not built: ${not_built[*]:-none}${first_error:+; first error: $first_error}"
fi

# ---- 3. GPU tests ------------------------------------------------------------------------------
# The built programs load Debian's libraries from .gpu-deps, LibTorch's and NCCL's.
export LD_LIBRARY_PATH="$DEPS_LIB:$TORCH_LIB${NCCL_LIB:+:$NCCL_LIB}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
# LibTorch 2.x records a C++ stack with its errors only when asked; the worker logs it at debug
# level (GpuLocal runs the worker with --log-level debug), so a failing call is named in the logs.
export TORCH_SHOW_CPP_STACKTRACES=${TORCH_SHOW_CPP_STACKTRACES:-1}

# test_commands NAME...: for each test ctest knows by that name, NUL-separated: the name, its
# working directory, the count and NAME=VALUE entries of its ENVIRONMENT, the count and words of
# its command (ctest --show-only=json-v1).
test_commands() {
  timeout 90 python3 - "$BUILD" "$@" <<'EOF'
import json, subprocess, sys
build, names = sys.argv[1], sys.argv[2:]
out = subprocess.run(["ctest", "--test-dir", build, "--show-only=json-v1"],
                     capture_output=True, text=True).stdout
try:
    tests = {t["name"]: t for t in json.loads(out).get("tests", [])}
except ValueError:
    sys.exit("gpu-check: ctest --show-only=json-v1 gave no test list")
for name in names:
    t = tests.get(name)
    if not t or not t.get("command"):
        continue
    props = {p["name"]: p["value"] for p in t.get("properties", [])}
    env = props.get("ENVIRONMENT") or []
    rec = [name, props.get("WORKING_DIRECTORY") or build, str(len(env))] + env
    rec += [str(len(t["command"]))] + t["command"]
    sys.stdout.write("\0".join(rec) + "\0")
EOF
}

TEST_RC=1
if built gpu_tests; then
  ctest_first=$(($(lines_of "$LOGS/ctest.log") + 1))
  run_phase "tests: ctest -L gpu" 240 "$LOGS/ctest.log" \
    ctest --test-dir "$BUILD" -L gpu --output-on-failure --timeout 200 -j 1
  TEST_RC=$?
  ctest_out=$(tail -n +"$ctest_first" "$LOGS/ctest.log")
  passed=$(grep -cE 'Test +#[0-9]+: .* +Passed +[0-9.]+ sec' <<<"$ctest_out")
  skipped=$(grep -cE 'Test +#[0-9]+: .*Skipped' <<<"$ctest_out")
  failed=$(grep -cE 'Test +#[0-9]+: .*(\*\*\*Failed|\*\*\*Timeout|\*\*\*Exception|Not Run)' <<<"$ctest_out")
  NOTES[${#NOTES[@]} - 1]="$passed passed, $skipped skipped, $failed failed ${NOTES[${#NOTES[@]} - 1]}"
  if ((TEST_RC != 0)); then
    FAILED=1
  elif [ "$DRY" != 1 ] && { ((passed == 0)) || ((skipped > 0)); }; then
    STATUSES[${#STATUSES[@]} - 1]=WARN
    EXTRA_NOTES+=("GPU tests skipped on the GPU machine: CUDA was not usable from LibTorch (ctest.log)")
    FAILED=1
  fi

  # Crashed test processes, each run again under gdb: tests that ctest reports as "***Exception"
  # (SegFault, "Subprocess aborted", ...), and gpu_tests itself when it crashed while ctest listed
  # its tests (gtest_discover_tests runs it with --gtest_list_tests first: "Error running test
  # executable", "Result: Segmentation fault").
  bt_t0=$SECONDS bt_crashes=0 bt_ok=0
  mapfile -t crashed_tests < <(grep -E 'Test +#[0-9]+: [^ ]+ .*\*\*\*Exception' <<<"$ctest_out" |
    sed -E 's/.*Test +#[0-9]+: ([^ ]+) .*/\1/' | awk '!seen[$0]++')
  discovery=$(awk -v q="'" '
    /Error running test executable/ { e = 1; path = ""; next }
    e && /^ *Path: / { path = $0; sub(/^ *Path: /, "", path); gsub(q, "", path) }
    e && /^ *Result: / { r = $0; sub(/^ *Result: /, "", r)
      if (r !~ /timeout/ && (r !~ /^[0-9]+$/ || r + 0 >= 128)) print path; e = 0 }' <<<"$ctest_out" | head -n 1)
  if [ -n "$discovery" ] && [ -x "$discovery" ]; then
    bt_crashes=$((bt_crashes + 1))
    BT_ENV=()
    backtrace "test listing: $(basename "$discovery") --gtest_list_tests" "$(dirname "$discovery")" \
      "$discovery" --gtest_list_tests
    bt_ok=$((bt_ok + BT_OK))
    EXTRA_NOTES+=("crash: $(basename "$discovery") --gtest_list_tests (ctest's test discovery): $BT_NOTE")
  fi
  if [ "${#crashed_tests[@]}" -gt 0 ]; then
    mapfile -d '' -t recs < <(test_commands "${crashed_tests[@]}")
    declare -A bt_done=()
    i=0
    while ((i + 2 < ${#recs[@]})); do
      name=${recs[i]} dir=${recs[i + 1]} nenv=${recs[i + 2]}
      BT_ENV=("${recs[@]:i+3:nenv}")
      ncmd=${recs[i + 3 + nenv]}
      cmd=("${recs[@]:i+4+nenv:ncmd}")
      i=$((i + 4 + nenv + ncmd))
      bt_done[$name]=1
      bt_crashes=$((bt_crashes + 1))
      backtrace "test $name" "$dir" "${cmd[@]}"
      bt_ok=$((bt_ok + BT_OK))
      EXTRA_NOTES+=("crash: test $name: $BT_NOTE")
    done
    BT_ENV=()
    for name in "${crashed_tests[@]}"; do
      [ -n "${bt_done[$name]:-}" ] && continue
      bt_crashes=$((bt_crashes + 1))
      EXTRA_NOTES+=("crash: test $name: no backtrace: ctest --show-only=json-v1 does not give its command")
    done
  fi
  if ((bt_crashes > 0)); then
    bt_status=OK
    ((bt_ok < bt_crashes)) && bt_status=WARN
    record "tests: backtraces" "$bt_status" $((SECONDS - bt_t0)) \
      "$bt_ok of $bt_crashes crashed test processes caught under gdb (notes below; backtraces.log)"
  fi
else
  record "tests: ctest -L gpu" FAIL 0 "gpu_tests was not built (build.log)"
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
  bench_built=1
  built gpu_bench || bench_built=0
  # Each configuration is its own process and row: a failed one (its error's last line in the
  # table, a backtrace when it crashed) does not stop the next.
  for c in "${CONFIGS[@]}"; do
    read -r preset mode mb <<<"$c"
    if ((bench_built == 0)); then
      bench_bad=$((bench_bad + 1))
      BENCH_ROWS+=("$(printf '%-6s %-7s %4s  %s' "$preset" "$mode" "$mb" "FAIL gpu_bench was not built (build.log)")")
      continue
    fi
    bench_cmd=("$BUILD/tests/gpu/gpu_bench" --preset "$preset" --mode "$mode" --dtype "$BENCH_DTYPE"
      --seq "$BENCH_SEQ" --micro-batch "$mb" --rank "$BENCH_RANK" --device "$BENCH_DEVICE" "${BENCH_FLAGS[@]}")
    before=$(lines_of "$LOGS/bench.log")
    run_timed "benchmark $preset $mode" 180 "$LOGS/bench.log" "${bench_cmd[@]}"
    rc=$?
    # This row's output, without run_timed's "$ command" line.
    row_out=$(tail -n +"$((before + 2))" "$LOGS/bench.log")
    line=$(grep '^GPU_BENCH ' <<<"$row_out" | tail -1)
    if ((rc == 0)) && [ -n "$line" ]; then
      bench_ok=$((bench_ok + 1))
      BENCH_ROWS+=("$(printf '%-6s %-7s %4s %10s %8s %8s %7.1f%% %7.1f%% %9s %10s %9s' \
        "$preset" "$mode" "$(kv micro_batch "$line")" "$(kv tokens_per_s "$line")" "$(kv step_s "$line")" \
        "$(kv tflops "$line")" "$(awk -v x="$(kv mfu_nominal "$line")" 'BEGIN{print 100*x}')" \
        "$(awk -v x="$(kv mfu_measured "$line")" 'BEGIN{print 100*x}')" "$(kv peak_tflops "$line")" \
        "$(kv peak_alloc_gib "$line")" "$(kv peak_reserved_gib "$line")")")
    else
      bench_bad=$((bench_bad + 1))
      row_note="$RT_STATUS ${RT_NOTE:-no GPU_BENCH line}"
      last=$(grep -v -e '^[[:space:]]*$' <<<"$row_out" | tail -n 1 | cut -c1-160)
      [ -n "$last" ] && row_note="$row_note: $last"
      if crashed "$rc"; then
        BT_ENV=()
        backtrace "gpu_bench $preset $mode" "$BUILD" "${bench_cmd[@]}"
        row_note="$row_note; $BT_NOTE"
      fi
      BENCH_ROWS+=("$(printf '%-6s %-7s %4s  %s' "$preset" "$mode" "$mb" "$row_note")")
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
    elif timeout 30 "$BUILD/bench/relora-bench" --help 2>/dev/null | grep -q -- '--device'; then
      rb_cmd=("$BUILD/bench/relora-bench" --preset 350m --mode relora --dtype bf16 --seq 512
        --micro-batch 16 --steps 4 --warmup-steps 2 --device cuda:0)
      run_phase relora-bench 120 "$LOGS/bench.log" "${rb_cmd[@]}"
      rc=$?
      if ((rc == 0)); then
        EXTRA_NOTES+=("relora-bench 350m relora: $(grep -E ' tok/s' "$LOGS/bench.log" | tail -1)")
      elif crashed "$rc"; then
        BT_ENV=()
        backtrace "relora-bench 350m relora" "$BUILD" "${rb_cmd[@]}"
        NOTES[${#NOTES[@]} - 1]="${NOTES[${#NOTES[@]} - 1]}; $BT_NOTE"
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
