#!/usr/bin/env bash
# Installs everything relora needs to build, test and run on Debian 12, from Debian's archive only.
# Idempotent: packages already present are skipped by apt-get; re-running is cheap.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  # Training core: LibTorch 1.13 (CPU) with c10d/Gloo, and a real BLAS (without it, matrix products
  # fall back to the reference BLAS, about 30x slower; see docs/performance notes).
  libtorch-dev libgloo-dev libopenblas0-pthread libopenblas-pthread-dev
  # Control plane and tooling.
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev
  prometheus-cpp-dev libspdlog-dev libfmt-dev libgtest-dev libgmock-dev
  libsentencepiece-dev sentencepiece libyaml-cpp-dev nlohmann-json3-dev libcli11-dev
  libsqlite3-dev zlib1g-dev libzstd-dev libssl-dev
  # Real English text for the demo job's default corpus (/usr/share/games/fortunes).
  fortunes
  # Test-time tools.
  python3 python3-numpy python3-yaml prometheus yamllint shellcheck
  # Plots of the quality experiment (bench/quality/report.py, docs/results.md).
  python3-matplotlib
  # The fuzz targets of the test suite (scripts/fuzz-build.sh): clang with libFuzzer and the
  # sanitizer runtimes.
  clang-14 libclang-rt-14-dev llvm-14
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "relora setup: installing ${#missing[@]} Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "relora setup: all Debian packages present"
fi
