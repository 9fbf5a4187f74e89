#!/usr/bin/env bash
# Installs the Debian packages relora needs (scripts/setup.sh) and builds it in ./build.
# Usage: scripts/build.sh [extra cmake configure args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Two compile jobs fit the 2-core, 24 GB build machine (a LibTorch translation unit needs ~1 GB).
jobs="${RELORA_BUILD_JOBS:-$(nproc)}"
cmake --preset release "$@" >/dev/null
echo "relora build: compiling with $jobs jobs (first build takes several minutes)"
cmake --build build -j "$jobs"
