#!/usr/bin/env bash
# relora-worker --dry-run's memory estimate (common/memory_estimate.h) against the peak RSS the real
# Trainer reaches, at two sizes: 60m full-rank fp32 (about 1.3 GiB) and the 1.3B layer shape in
# relora bf16 (8 layers, about 3.5 GiB). relora-bench runs each (one warm-up and one timed step, no
# matrix-product peak) and writes both figures; each estimate must be within 10% of its measurement.
# Usage: estimate_vs_measured_test.sh RELORA_BENCH_BINARY OUT_DIR
set -euo pipefail
bench="$1"
out="$2"
rm -rf "$out"
mkdir -p "$out"
status=0
for run in "60m full fp32" "1b3-l8 relora bf16"; do
  read -r config mode dtype <<<"$run"
  json="$out/$config-$mode-$dtype.json"
  OMP_WAIT_POLICY=PASSIVE "$bench" --config "$config" --mode "$mode" --dtype "$dtype" --threads 2 \
    --warmup-steps 1 --steps 1 --no-peak --json "$json" >/dev/null 2>"$out/$config-$mode-$dtype.log"
  /usr/bin/python3 - "$json" "$run" <<'PY' || status=1
import json, sys
r = json.load(open(sys.argv[1]))
measured, estimated = r["peak_rss_bytes"], r["estimate"]["peak_bytes"]
ratio = estimated / measured
print(f"{sys.argv[2]}: estimated {estimated / 2**30:.2f} GiB, measured peak RSS {measured / 2**30:.2f} GiB, "
      f"estimate / measured {ratio:.3f}")
sys.exit(0 if 0.9 <= ratio <= 1.1 else 1)
PY
done
exit $status
