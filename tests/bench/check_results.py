#!/usr/bin/env python3
"""Sanity of a benchmark results.json (bench/run.py): every run produced figures that make sense.
Checks plausibility, not speed. Usage: check_results.py RESULTS_JSON"""
import json
import sys


KINDS = ("all_reduce", "reduce_scatter", "all_gather")
BUCKET_BYTES = 25 << 20  # the default gradient bucket (BucketedAllReduce::kDefaultBucketBytes)


def check_traffic(r, x, check):
    """A multi-rank run's measured collective bytes against what each optimizer must send; the same
    in every timed step. Plain data parallelism (DDP): every trainable fp32 gradient all-reduced
    once, plus the loss and the stop vote (fp64, 8 B each), nothing else. ZeRO-1: the gradients
    reduce-scattered and the updated parameters all-gathered over flat buckets (each padded to a
    multiple of world elements), plus one small all-reduce of loss, squared norm and stop vote
    (fp64, 24 B). Results from before the sent-bytes and optimizer-state counters (no such fields)
    get the checks that do not need them."""
    name, world = r["name"], r["world"]
    per_step = x["collective_bytes_each_step"][x["warmup_steps"]:]
    check(per_step and all(s == per_step[0] for s in per_step), f"{name}: traffic differs between timed steps")
    check(x["tokens_per_second"] > 0, f"{name}: tokens/s {x['tokens_per_second']}")
    trainable = x["trainable_parameters"]
    grads = 4 * trainable + 16
    payload = x["collective_bytes_per_step"]
    if r["optimizer"] == "ddp":
        check(payload["all_reduce"] == grads, f"{name}: all-reduce {payload['all_reduce']} B/step, expected {grads}")
    check(x["collective_bytes_per_step_total"] >= grads, f"{name}: less traffic than the gradients")
    if "collective_sent_bytes_per_step" not in x:
        return
    sent = x["collective_sent_bytes_per_step"]
    ar, rs, ag = (payload.get(k, 0) for k in KINDS)

    def ring(kind, num, den):  # ring model: num / den of the payload, rounded down per collective call
        got, want = sent.get(kind, 0), num * payload.get(kind, 0)
        check(want - den * (64 + want // (den * 10 ** 6)) <= got * den <= want,
              f"{name}: {kind} sent {got} B/step, ring model {want // den}")

    if r["optimizer"] == "ddp":
        check(rs == 0 and ag == 0, f"{name}: DDP reduce-scatter {rs} / all-gather {ag} B/step, expected none")
        ring("all_reduce", 2 * (world - 1), world)
    else:
        check(ar <= 64, f"{name}: ZeRO-1 all-reduce {ar} B/step, expected only the small control one (24 B)")
        buckets = max(64, -(-4 * trainable // BUCKET_BYTES) + 1)
        check(4 * trainable <= rs <= 4 * trainable + 4 * world * buckets,
              f"{name}: reduce-scatter {rs} B/step, expected 4 x {trainable} trainable plus at most the padding")
        if r["optimizer"] == "fsdp":
            # Beyond ZeRO-1's updated parameters: each layer's whole frozen W, gathered for every
            # micro-batch's forward and again for its backward.
            frozen = x.get("frozen_weight_bytes_unsharded", 0)
            per_rank = x.get("frozen_weight_bytes_per_rank", [])
            check(frozen > 0 and ag > rs and (ag - rs) % (2 * frozen) == 0,
                  f"{name}: all-gather {ag} B/step, expected the reduce-scatter's {rs} plus 2 x {frozen} "
                  f"frozen bytes per micro-batch")
            check(len(per_rank) == world and max(per_rank) <= 1.05 * frozen / world,
                  f"{name}: frozen W per rank {per_rank}, expected 1/{world} of {frozen}")
        else:
            check(ag == rs, f"{name}: all-gather {ag} B/step, expected the reduce-scatter's {rs}")
        check(sent.get("reduce_scatter", 0) * world == rs * (world - 1),
              f"{name}: reduce-scatter sent {sent.get('reduce_scatter', 0)} B/step, expected (w - 1) of w chunks")
        ring("all_gather", world - 1, world)
        ring("all_reduce", 2 * (world - 1), world)
    check(x["collective_sent_bytes_per_step_total"] == sum(sent.get(k, 0) for k in KINDS), f"{name}: sent total")
    states, unsharded = x["optimizer_state_bytes_per_rank"], x["optimizer_state_bytes_unsharded"]
    check(unsharded == 8 * trainable, f"{name}: unsharded optimizer state {unsharded} B, expected 8 x {trainable}")
    check(len(states) == world, f"{name}: optimizer state of {len(states)} ranks, expected {world}")
    if r["optimizer"] == "ddp":
        check(all(b == unsharded for b in states), f"{name}: DDP optimizer state {states}, expected {unsharded} each")
    elif states:
        check(sum(states) == unsharded, f"{name}: ZeRO-1 optimizer states {states} do not add up to {unsharded}")
        check(max(states) <= 1.05 * unsharded / world,
              f"{name}: ZeRO-1 optimizer state {max(states)} B on a rank, over 1.05 x {unsharded} / {world}")


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
    wide = {(r["config"], r["mode"], r["world"], r["optimizer"]): r["result"] for r in runs
            if r.get("world", 1) > 1 and "result" in r}
    if any("collective_sent_bytes_per_step" in x for x in wide.values()):
        # What bench/run.py measures (TRAFFIC_PLAN): DDP and ZeRO-1, full and relora, on 2 and 4
        # ranks, for quick (--quick) or micro and 60m (and the 1.3B layer shape: DDP on 2 ranks).
        configs = ("quick",) if s["quick"] else ("micro", "60m")
        need = [(c, m, w, o) for c in configs for w in (2, 4) for m in ("full", "relora") for o in ("ddp", "zero1")]
        missing = [" ".join(map(str, k)) for k in need if k not in wide]
        check(not missing, f"expected at least {len(need)} measured-traffic runs ({', '.join(configs)}: 2 and 4 "
                           f"ranks, DDP and ZeRO-1, full and relora), got {len(wide)}; missing: {', '.join(missing)}")
    else:  # results from before the sent-bytes counters: 2 ranks
        check(len(wide) >= 4, f"expected at least 4 measured-traffic runs (world 2), got {len(wide)}")
    for (config, mode, world, optimizer), x in wide.items():
        ddp = wide.get((config, mode, world, "ddp"))
        if optimizer == "zero1" and ddp and "collective_sent_bytes_per_step_total" in x \
                and "collective_sent_bytes_per_step_total" in ddp:
            # Reduce-scatter + all-gather send what one all-reduce sends: ZeRO-1 costs DDP's traffic.
            check(x["collective_sent_bytes_per_step_total"] <= 1.05 * ddp["collective_sent_bytes_per_step_total"],
                  f"{config} {mode} {world} ranks: ZeRO-1 sends {x['collective_sent_bytes_per_step_total']} B/step, "
                  f"over 1.05 x DDP's {ddp['collective_sent_bytes_per_step_total']}")
        full = wide.get((config, "full", world, optimizer))
        if mode == "relora" and full:
            check(x["collective_bytes_per_step_total"] < full["collective_bytes_per_step_total"],
                  f"{config} {optimizer} {world} ranks: relora traffic not below full-rank")
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
