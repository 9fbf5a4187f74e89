#!/usr/bin/env python3
"""Sanity of a benchmark results.json (bench/run.py): every run produced figures that make sense.
Checks plausibility, not speed. Usage: check_results.py RESULTS_JSON"""
import json
import sys


def check_traffic(r, x, check):
    """A world-2 run's measured collective bytes against what plain data parallelism sends: every
    trainable fp32 gradient once, plus the loss and the stop vote (fp64, 8 B each); the same in
    every timed step."""
    name = r["name"]
    per_step = x["collective_bytes_each_step"][x["warmup_steps"]:]
    check(per_step and all(s == per_step[0] for s in per_step), f"{name}: traffic differs between timed steps")
    grads = 4 * x["trainable_parameters"] + 16
    if r["optimizer"] == "ddp":
        check(x["collective_bytes_per_step"]["all_reduce"] == grads,
              f"{name}: all-reduce {x['collective_bytes_per_step']['all_reduce']} B/step, expected {grads}")
    check(x["collective_bytes_per_step_total"] >= grads, f"{name}: less traffic than the gradients")


def main(path):
    s = json.load(open(path))
    errors = []

    def check(cond, what):
        if not cond:
            errors.append(what)

    runs = s["runs"]
    check(len(runs) >= 4, f"expected at least 4 runs, got {len(runs)}")
    check(s["peak_used"]["fp32"] > 0 and s["peak_used"]["bf16"] > 0, "matrix-product peaks missing")
    by = {}
    for r in runs:
        if r.get("world", 1) > 1:  # measured traffic: checked below, not a speed configuration
            if "result" in r:
                check_traffic(r, r["result"], check)
            else:
                check(False, f"{r['name']}: failed: {r.get('error', '')[-300:]}")
            continue
        name = r["name"]
        check("result" in r, f"{name}: failed: {r.get('error', '')[-300:]}")
        if "result" not in r:
            continue
        x = r["result"]
        by[(r["impl"], r["config"], r["mode"], r["dtype"])] = x
        check(x["tokens_per_second"] > 0, f"{name}: tokens/s {x['tokens_per_second']}")
        check(x["timed_steps"] >= 1 and len(x["step_seconds"]) == x["warmup_steps"] + x["timed_steps"],
              f"{name}: step count")
        check(all(t > 0 for t in x["step_seconds"]), f"{name}: non-positive step time")
        check(x["peak_rss_bytes"] > 0, f"{name}: peak RSS {x['peak_rss_bytes']}")
        check(0 < x["trainable_parameters"] <= x["total_parameters"] + 10 ** 9, f"{name}: parameter counts")
        check(x["executed_flops_per_token"] > 0 and x["model_flops_per_token"] > 0, f"{name}: FLOP counts")
        check(0 < x.get("utilisation_vs_run_peak", 0) < 1.5, f"{name}: utilisation {x.get('utilisation_vs_run_peak')}")
        check(x["first_loss"] > 0 and x["final_loss"] > 0, f"{name}: losses")
    wide = {(r["config"], r["mode"], r["optimizer"]): r["result"] for r in runs
             if r.get("world", 1) > 1 and "result" in r}
    check(len(wide) >= 4, f"expected at least 4 measured-traffic runs (world 2), got {len(wide)}")
    for (config, mode, optimizer), x in wide.items():
        ddp = wide.get((config, mode, "ddp"))
        if optimizer == "zero1" and ddp:
            # ZeRO-1 today: the gradients' all-reduce, then every updated parameter all-reduced
            # from its owner (the others contribute zeros): 4 B more per trainable parameter.
            check(x["collective_bytes_per_step_total"] == ddp["collective_bytes_per_step_total"] +
                  4 * x["trainable_parameters"], f"{config} {mode}: ZeRO-1 traffic is not DDP's + 4 x trainable")
        full = wide.get((config, "full", optimizer))
        if mode == "relora" and full:
            check(x["collective_bytes_per_step_total"] < full["collective_bytes_per_step_total"],
                  f"{config} {optimizer}: relora traffic not below full-rank")
    for impl in ("ours", "eager"):
        for (i, config, mode, dtype), x in by.items():
            if i != impl or mode != "relora":
                continue
            full = by.get((impl, config, "full", dtype))
            if full:
                check(x["total_parameters"] == full["total_parameters"], f"{impl} {config}: model sizes differ")
                check(x["executed_flops_per_token"] != full["executed_flops_per_token"], f"{impl} {config}: FLOPs")
    ours = {k[1:]: v for k, v in by.items() if k[0] == "ours"}
    eager = {k[1:]: v for k, v in by.items() if k[0] == "eager"}
    for k, e in eager.items():  # same model on both sides
        if k in ours:
            check(ours[k]["trainable_parameters"] == e["trainable_parameters"], f"{k}: trainable counts differ")
            check(ours[k]["executed_flops_per_token"] == e["executed_flops_per_token"], f"{k}: FLOP counts differ")
    check(any(t["verdict"] in ("PASS", "SHORT") for t in s["targets"]), "no target evaluated")
    check(open(path[:-len("results.json")] + "results.md").read().startswith("# relora benchmark results"),
          "results.md missing")
    for e in errors:
        print("FAIL: " + e)
    print(f"{len(runs)} runs checked, {len(errors)} problems")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
