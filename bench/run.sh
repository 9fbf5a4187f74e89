#!/usr/bin/env bash
# The benchmark in one command (docs/benchmarks.md):
#   bench/run.sh            all configurations, ours and eager PyTorch: bench/results/results.{json,md}
#   bench/run.sh --quick    a tiny configuration, a couple of steps (the smoke test)
#   bench/run.sh --memory-target [--with-fp32]   only the CPU memory target: 1b3 relora bf16 peak
#                           RSS against 7.0 GiB (bench/memory_target.py; a few minutes)
#   bench/run.sh --data     only issue 20's data targets: `relora tokenize` rates, a job over a
#                           generated 20 GB token index (bench/data/data_bench.py; other options go to it)
# Builds relora-bench in build/ (scripts/build.sh's tree; RELORA_BENCH_BUILD_DIR overrides) unless
# --bench-bin is given; a missing tree is set up first (scripts/setup.sh, Release).
# Other options go to bench/run.py (--out DIR, --no-eager, --python PATH, --timeout S).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ "${1:-}" == --data ]]; then
  shift
  build="${RELORA_BENCH_BUILD_DIR:-$root/build}"
  cmake --build "$build" --target relora relora-worker
  exec /usr/bin/python3 "$root/bench/data/data_bench.py" --build "$build" "$@"
fi
quick=0
have_bin=0
memory=0
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    --memory-target) memory=1 ;;
    --bench-bin|--bench-bin=*) have_bin=1 ;;
  esac
done

args=()
for arg in "$@"; do [[ $arg != --memory-target ]] && args+=("$arg"); done
if [[ $have_bin == 0 ]]; then
  build="${RELORA_BENCH_BUILD_DIR:-$root/build}"
  if [[ ! -f "$build/CMakeCache.txt" ]]; then
    bash "$root/scripts/setup.sh"
    generator=()
    command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
    cmake -S "$root" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release
  fi
  cmake --build "$build" --target relora-bench
  args+=(--bench-bin "$build/bench/relora-bench")
fi

if [[ $memory == 1 ]]; then
  exec /usr/bin/python3 "$root/bench/memory_target.py" "${args[@]}"
fi

# The eager baseline runs on Debian's PyTorch (python3-torch, the same LibTorch 1.13 build), which
# scripts/setup.sh does not install: install it here once if we can. The quick run never installs.
py=/usr/bin/python3
if [[ $quick == 0 ]] && ! "$py" -c 'import torch' >/dev/null 2>&1; then
  sudo=()
  [[ $(id -u) != 0 ]] && command -v sudo >/dev/null 2>&1 && sudo=(sudo -n)
  if [[ $(id -u) == 0 || ${#sudo[@]} -gt 0 ]]; then
    echo "installing python3-torch for the eager PyTorch baseline" >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-torch >&2 ||
      { "${sudo[@]}" apt-get update -q >&2 &&
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-torch >&2; } ||
      echo "could not install python3-torch: the eager baseline is skipped" >&2
  else
    echo "python3-torch is not installed (and no root): the eager baseline is skipped" >&2
  fi
fi

exec "$py" "$root/bench/run.py" --python "$py" "${args[@]}"
