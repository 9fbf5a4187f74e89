#!/usr/bin/env bash
# The main job: installs, builds, and trains a small ReLoRA model (examples/demo.yaml) on real
# English text that the setup installs (Debian's fortunes package), then prints the summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
job="${1:-examples/demo.yaml}"
mkdir -p runs
echo "relora demo: training $job (progress below; the summary is written to runs/demo-summary.json)"
./build/worker/relora-worker --standalone "$job" --summary-json runs/demo-summary.json
