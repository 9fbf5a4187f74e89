#!/usr/bin/env bash
# The main job: installs, builds, and trains a small ReLoRA model (examples/demo.yaml) on real
# English text that the setup installs (Debian's fortunes package), with `relora local`: a
# coordinator and two data-parallel workers on this machine. Prints progress and the summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
job="${1:-examples/demo.yaml}"
workers="${RELORA_DEMO_WORKERS:-2}"
mkdir -p runs
# Two workers on two cores: one BLAS thread each, or their thread pools fight over the cores.
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-$(( $(nproc) / workers > 0 ? $(nproc) / workers : 1 ))}"
echo "relora demo: training $job on $workers workers (summary: runs/demo-summary.json)"
exec ./build/client/relora local "$job" --workers "$workers" --summary-json runs/demo-summary.json
