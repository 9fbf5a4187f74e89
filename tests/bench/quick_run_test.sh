#!/usr/bin/env bash
# Smoke test of the benchmark: bench/run.sh --quick (tiny model, two timed steps, ours and, when
# python3-torch is installed, the eager reference), then a sanity check of results.json.
# Usage: quick_run_test.sh RELORA_BENCH_BINARY OUT_DIR
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
rm -rf "$2"
"$root/bench/run.sh" --quick --bench-bin "$1" --out "$2"
py=/usr/bin/python3
[[ -x $py ]] || py=python3
"$py" "$here/check_results.py" "$2/results.json"
