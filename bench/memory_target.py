#!/usr/bin/env python3
"""The CPU memory target (issue 21): the 1b3 preset in ReLoRA mode (rank 128, micro-batch 1,
seq 256) trains within 7.0 GiB of peak RSS with training.dtype bf16, where the frozen W is stored
in bf16 and the factors, their gradients and AdamW moments stay fp32 (docs/architecture.md).

Runs relora-bench (the real Trainer, one process per run) and prints each run's peak RSS (VmHWM
after training) against the target. bench/run.sh --memory-target runs this; the full bench/run.sh
measures the same run among the others (target 7 there).
Standard library only.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

TARGET_GIB = 7.0
# (dtype, activation checkpointing, whether it is held to the target): bf16 with and without
# checkpointing; fp32 is measured beside them for reference with --with-fp32.
RUNS = (("bf16", False, True), ("bf16", True, True), ("fp32", False, False))


def measure(bench_bin, dtype, checkpointing, steps, warmup, timeout):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "run.json")
        cmd = [bench_bin, "--config", "1b3", "--mode", "relora", "--dtype", dtype, "--threads", "2",
               "--warmup-steps", str(warmup), "--steps", str(steps), "--no-peak", "--json", out]
        if checkpointing:
            cmd.append("--activation-checkpointing")
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
        print("$ " + " ".join(cmd), flush=True)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0 or not os.path.exists(out):
            raise RuntimeError(f"relora-bench failed (exit {proc.returncode}): {(proc.stderr or proc.stdout)[-1500:]}")
        with open(out) as f:
            return json.load(f)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench-bin", required=True)
    ap.add_argument("--steps", type=int, default=2, help="timed optimizer steps (default %(default)s)")
    ap.add_argument("--warmup-steps", type=int, default=1)
    ap.add_argument("--with-fp32", action="store_true", help="also measure fp32 (about 10 GiB) for comparison")
    ap.add_argument("--timeout", type=int, default=1800)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    results, failed = [], False
    for dtype, checkpointing, is_target in RUNS:
        if not is_target and not args.with_fp32:
            continue
        r = measure(args.bench_bin, dtype, checkpointing, args.steps, args.warmup_steps, args.timeout)
        gib = r["peak_rss_bytes"] / 2**30
        row = {"dtype": dtype, "activation_checkpointing": checkpointing, "peak_rss_bytes": r["peak_rss_bytes"], "peak_rss_gib": round(gib, 3),
               "optimizer_steps": len(r.get("step_seconds", [])), "tokens_per_second": r.get("tokens_per_second"),
               "trainable_parameters": r.get("trainable_parameters"), "total_parameters": r.get("total_parameters")}
        if is_target:
            row["target_gib"] = TARGET_GIB
            row["verdict"] = "PASS" if gib <= TARGET_GIB else "FAIL"
            failed |= gib > TARGET_GIB
        results.append(row)
        verdict = f" (target <= {TARGET_GIB:.1f} GiB: {row['verdict']})" if is_target else ""
        label = dtype + (", activation checkpointing" if checkpointing else "")
        est = r.get("estimate", {}).get("peak_bytes")
        print(f"1b3 relora {label}: peak RSS {gib:.2f} GiB after {row['optimizer_steps']} optimizer steps"
              + (f" (dry-run estimate {est / 2**30:.2f} GiB)" if est else "") + verdict, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
            f.write("\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
