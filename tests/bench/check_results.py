#!/usr/bin/env python3
"""Sanity of a benchmark results.json (bench/run.py): every run produced figures that make sense.
Checks plausibility, not speed. Usage: check_results.py RESULTS_JSON"""
import json
import sys


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
        check(x["grad_bytes_per_step"] == 4 * x["trainable_parameters"], f"{name}: grad bytes != 4 x trainable")
        check(x["executed_flops_per_token"] > 0 and x["model_flops_per_token"] > 0, f"{name}: FLOP counts")
        check(0 < x.get("utilisation_vs_run_peak", 0) < 1.5, f"{name}: utilisation {x.get('utilisation_vs_run_peak')}")
        check(x["first_loss"] > 0 and x["final_loss"] > 0, f"{name}: losses")
    for impl in ("ours", "eager"):
        for (i, config, mode, dtype), x in by.items():
            if i != impl or mode != "relora":
                continue
            full = by.get((impl, config, "full", dtype))
            if full:
                check(x["grad_bytes_per_step"] < full["grad_bytes_per_step"],
                      f"{impl} {config} {dtype}: relora grad bytes not below full-rank")
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
