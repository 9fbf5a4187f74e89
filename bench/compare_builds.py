#!/usr/bin/env python3
"""Tokens/s of two relora-bench builds side by side, at equal settings, interleaved.

For a change that must not cost speed (e.g. the data-parallel layer), build the old commit's
relora-bench in a worktree and run:

  python3 bench/compare_builds.py --before /path/to/old/build/bench/relora-bench \\
      --after build/bench/relora-bench --json bench/results/compare-builds.json

Each setting runs before/after/before/after... (--repeats pairs), so machine noise hits both
builds alike; the table gives each build's median tokens/s and the ratio. Multi-rank settings
run as `relora-bench --world N` (threads on loopback Gloo), one LibTorch thread per rank.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

# (config, mode, world, shard): the data-parallel settings of the sharded-training issue.
DEFAULT_SETTINGS = [(c, "relora", w, s) for c in ("micro", "60m") for w in (2, 4) for s in (False, True)]


def run(binary, config, mode, world, shard, steps, warmup):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "r.json")
        cmd = [binary, "--config", config, "--mode", mode, "--dtype", "fp32", "--threads", "1",
               "--warmup-steps", str(warmup), "--steps", str(steps), "--no-peak", "--json", out]
        if world > 1:
            cmd += ["--world", str(world)] + (["--shard-optimizer"] if shard else [])
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-2000:]}")
        with open(out) as f:
            return json.load(f)["tokens_per_second"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="relora-bench of the old build")
    ap.add_argument("--after", required=True, help="relora-bench of the new build")
    ap.add_argument("--repeats", type=int, default=2, help="before/after pairs per setting")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--only", help="comma-separated CONFIG:WORLD:OPTIMIZER settings (e.g. micro:4:ddp) instead of all")
    args = ap.parse_args()
    settings = DEFAULT_SETTINGS
    if args.only:
        wanted = set(args.only.split(","))
        settings = [s for s in DEFAULT_SETTINGS if f"{s[0]}:{s[2]}:{'zero1' if s[3] else 'ddp'}" in wanted]
        if len(settings) != len(wanted):
            ap.error(f"--only: not every setting of {sorted(wanted)} is one of the defaults")

    rows = []
    print("| config | mode | world | optimizer | before tok/s | after tok/s | after / before |")
    print("|---|---|---:|---|---:|---:|---:|")
    for config, mode, world, shard in settings:
        before, after = [], []
        for _ in range(args.repeats):
            before.append(run(args.before, config, mode, world, shard, args.steps, args.warmup))
            after.append(run(args.after, config, mode, world, shard, args.steps, args.warmup))
        b, a = statistics.median(before), statistics.median(after)
        row = {"config": config, "mode": mode, "world": world, "optimizer": "zero1" if shard else "ddp",
               "before": before, "after": after, "before_median": b, "after_median": a, "ratio": a / b}
        rows.append(row)
        print(f"| {config} | {mode} | {world} | {row['optimizer']} | {b:.0f} | {a:.0f} | {a / b:.3f} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"before": args.before, "after": args.after, "repeats": args.repeats, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
