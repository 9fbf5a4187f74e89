"""The collective-traffic runs of bench/run.py: which configurations run on several ranks (threads
of one relora-bench process, Gloo on loopback), plain data parallelism (DDP), ZeRO-1 and ZeRO-1
with frozen-weight sharding side by side, the lookups the targets use, and their section of
results.md."""

TRAFFIC_PLAN = {
    "quick": ((2, 4), ("ddp", "zero1", "fsdp")),
    "micro": ((2, 4), ("ddp", "zero1", "fsdp")),
    "60m": ((2, 4), ("ddp", "zero1", "fsdp")),
    "1b3-l8": ((2,), ("ddp",)),
}
# relora-bench's flags per data-parallel layout ("fsdp": relora mode only, full-rank has no frozen W).
LAYOUT_FLAGS = {"ddp": [], "zero1": ["--shard-optimizer"], "fsdp": ["--shard-optimizer", "--shard-frozen-weights"]}
TRAFFIC_CONFIGS = ("micro", "60m", "1b3-l8")  # the full run's (--traffic-configs); --quick: quick
COLLECTIVE_KINDS = ("all_reduce", "reduce_scatter", "all_gather")


def ok(record):
    return record is not None and "result" in record


def fmt(v, digits=2):
    return "n/a" if v is None else f"{v:.{digits}f}"


def traffic(runs, config, mode, optimizer, world=2):
    """The measured collective traffic run of a configuration on `world` ranks, or None."""
    for r in runs:
        if ok(r) and r.get("world", 1) == world and r["config"] == config and r["mode"] == mode \
                and r.get("optimizer") == optimizer:
            return r
    return None


def traffic_pairs(runs):
    """(ZeRO-1 run, DDP run) of the same configuration, mode and world size, both measured."""
    pairs = []
    for z in runs:
        if ok(z) and z.get("world", 1) > 1 and z.get("optimizer") == "zero1":
            d = traffic(runs, z["config"], z["mode"], "ddp", z["world"])
            if d:
                pairs.append((z, d))
    return pairs


def sent_total(record):
    """Bytes rank 0 sent per timed step, all kinds (None for runs from before the sent-bytes counters)."""
    return record["result"].get("collective_sent_bytes_per_step_total") if ok(record) else None


def share(record, per_rank_key, whole_key):
    """The largest rank's bytes of something sharded / (its unsharded total / world): 1.0 is a
    perfect 1/world share, `world` a full copy (None where the run lacks the figures)."""
    if not ok(record):
        return None
    per_rank, whole = record["result"].get(per_rank_key), record["result"].get(whole_key)
    if not per_rank or not whole:
        return None
    return max(per_rank) / (whole / record["world"])


def state_share(record):
    """share() of the optimizer state (AdamW moments)."""
    return share(record, "optimizer_state_bytes_per_rank", "optimizer_state_bytes_unsharded")


def frozen_share(record):
    """share() of the frozen weights (None for full-rank runs: no frozen W)."""
    return share(record, "frozen_weight_bytes_per_rank", "frozen_weight_bytes_unsharded")


def traffic_runs(r, configs, steps):
    """Collective traffic, measured: each configuration on the ranks and with the optimizers of
    TRAFFIC_PLAN (threads of one process on loopback Gloo), full and relora, fp32, one thread per
    rank (thread setting 1c: ranks with OpenBLAS pools of their own oversubscribe the cores). DDP
    and ZeRO-1 of one configuration, mode and world size run back to back, at equal settings."""
    for config in configs:
        worlds, optimizers = TRAFFIC_PLAN[config]
        for world in worlds:
            for mode in ("full", "relora"):
                for optimizer in optimizers:
                    if optimizer == "fsdp" and mode == "full":
                        continue
                    r.run("ours", config, mode, "fp32", "1c", steps(config), world=world, optimizer=optimizer)


def traffic_steps(config):
    """Steps of a traffic run: every step sends the same bytes, so few, but three timed ones (their
    median) for the ZeRO-1 / DDP tokens/s; for the 1.3B shapes (target 4 only: bytes) no warm-up
    step and two steps (a job needs 2 steps at least)."""
    return ["--warmup-steps", "0", "--steps", "2"] if config.startswith("1b3") else \
        ["--warmup-steps", "1", "--steps", "3"]


def traffic_markdown(s):
    """The results.md section of the multi-rank runs of summary `s` (lines; none without them)."""
    L = []
    wide = [x for x in s["runs"] if x.get("world", 1) > 1]
    if not wide:
        return L
    worlds = " and ".join(str(w) for w in sorted({x["world"] for x in wide}))
    L.append(f"\n## Collective traffic per optimizer step ({worlds} ranks, measured)\n")
    t = s.get("traffic_measured")
    if t:
        L.append(f"Measured {t['started']} to {t['finished']}, commit {t.get('commit', '?')}, apart from the "
                 f"speed runs above (`run.py --reaggregate ... --add-traffic`): byte counts do not depend on "
                 f"machine load.\n")
    L.append("`relora-bench --world N [--shard-optimizer]` trains the configuration on N data-parallel ranks, "
             "threads of one process joined by Gloo on loopback, one thread each (thread setting 1c). DDP = plain "
             "data parallelism: the fp32 gradients all-reduced (4 B x trainable parameters + 16 B for the loss "
             "and the stop vote). ZeRO-1 = `cluster.shard_optimizer`: the gradients reduce-scattered and the "
             "updated parameters all-gathered over flat, element-balanced buckets, plus one 24 B all-reduce "
             "(loss, squared gradient norm, stop vote); each rank keeps the AdamW moments of its own chunks. "
             "fsdp = ZeRO-1 plus `cluster.shard_frozen_weights` (relora only): each rank keeps 1/world of the rows "
             "of every frozen W and all-gathers a layer's whole W before its forward and again for its backward.\n")
    L.append("Counted in rank 0's process group per timed step, by kind. **Payload**: the all-reduce's tensors, "
             "the reduce-scatter's input, the all-gather's output. **Sent**: the bytes rank 0 sends to its "
             "peers. The sent bytes of all_reduce and all_gather follow the ring model, not the wire: 2 (w - 1) "
             "/ w and (w - 1) / w of the payload (w ranks), what the bandwidth-optimal ring the backends use for "
             "large tensors sends. The reduce-scatter's sent bytes are exact: its all-to-all sends w - 1 "
             "chunks. / DDP columns: against the DDP run of the same configuration, mode and world size.\n")
    L.append("Optimizer state: the AdamW moments (exp_avg + exp_avg_sq, fp32) the largest rank holds, and that "
             "over (the unsharded total / world): 1.00 is an exact 1/world share; DDP holds a full copy "
             "(= world). tokens/s: all ranks together (micro-batch x seq x world / the median timed step), every "
             f"rank on this machine's {s['machine'].get('nproc', '?')} cores (more ranks than cores "
             "oversubscribe them); DDP, ZeRO-1 and fsdp ran back to back at equal settings. Frozen W: the bytes "
             "of frozen weights the largest rank holds, and that over (the whole / world).\n")
    L.append("| config | mode | ranks | optimizer | trainable params | payload MB/step: all_reduce | "
             "reduce_scatter | all_gather | sent MB/step | sent / DDP | opt. state MB/rank (max) | "
             "/ (unsharded / world) | frozen W MB/rank (max) | / (whole / world) | tokens/s | tokens/s / DDP |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for x in wide:
        head = f"| {x['config']} | {x['mode']} | {x['world']} | {x.get('optimizer')} |"
        if not ok(x):
            L.append(head + " failed |" + " |" * 11)
            continue
        y = x["result"]
        payload = y["collective_bytes_per_step"]
        ddp = traffic(s["runs"], x["config"], x["mode"], "ddp", x["world"])
        sent = sent_total(x)
        sent_rel = sent / sent_total(ddp) if sent is not None and ddp and sent_total(ddp) else None
        states = y.get("optimizer_state_bytes_per_rank")
        frozen = y.get("frozen_weight_bytes_per_rank")
        tps_rel = y["tokens_per_second"] / ddp["result"]["tokens_per_second"] \
            if ddp and ddp["result"]["tokens_per_second"] else None
        L.append(head + f" {y['trainable_parameters'] / 1e6:.2f}M | " +
                 " | ".join(f"{payload.get(k, 0) / 1e6:.2f}" for k in COLLECTIVE_KINDS) +
                 f" | {fmt(sent / 1e6 if sent is not None else None)} | {fmt(sent_rel, 3)} | "
                 f"{fmt(max(states) / 1e6 if states else None)} | {fmt(state_share(x), 3)} | "
                 f"{fmt(max(frozen) / 1e6 if frozen and max(frozen) else None)} | {fmt(frozen_share(x), 3)} | "
                 f"{fmt(y['tokens_per_second'], 0 if y['tokens_per_second'] >= 100 else 1)} | {fmt(tps_rel)} |")
    return L
