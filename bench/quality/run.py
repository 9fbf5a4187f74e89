#!/usr/bin/env python3
"""The paper's quality experiment (ReLoRA, Lialin et al., Tables 2 and 6 and the update-spectrum
figure), shrunk to a 2-core CPU: every run is one `relora-worker --standalone` job on the C4
sample in ../shared/data, with the same model family, token budget, seed and data order.

  bench/quality/run.py [--profile full|tpp20|tpp80|quick] [--out DIR] [--jobs N] [--only a,b] [--check]
  bench/quality/run.py --profile tpp80 --compact-only     (no training: recompacts <out>/<profile>/)

Writes <out>/<profile>/<run>/{job.yaml,worker.log,summary.json,ckpt/metrics.jsonl,
ckpt/update_spectrum.json} and <out>/<profile>/results.json (everything, per-step curves included;
git-ignored), and the compact results (--compact; committed as bench/quality/results/<profile>.json
for the documented profiles): per run its label, settings, status, summary, eval curve, 25-step
means of the training loss, the learning-rate schedule (simplified, exact to 0.1% of its peak) and
the update spectra, which is all bench/quality/report.py needs for the tables and plots.
Standard library only, so the test suite can run the `quick` profile with any python3 (`--check`
asserts the mechanics: merges happened, ReLoRA's update rank exceeds r, LoRA's does not).

Each worker gets one LibTorch thread and one OpenBLAS thread (OPENBLAS_NUM_THREADS=1), so two
concurrent runs use the machine's two cores without oversubscription (docs/architecture.md, Threads).
"""
import argparse
import concurrent.futures
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time

from compact import source_info, write_compact  # bench/quality/compact.py

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# --- the experiment ------------------------------------------------------------------------------
# `full`: the nano preset (hidden 128, 4 layers, 4 heads, intermediate 352, vocab 4096) with LoRA
# rank 8, so r/hidden = 8/128 = 1/16, the paper's 1.3B ratio (128/2048). 1200 steps of 8 x 128
# tokens (1.23M tokens, about 2.1 passes over the 580k training tokens of the sample). ReLoRA: a
# full-rank warm start of 300 steps (25%, as the paper's 5k of 20k), then 6 cycles of 150 steps.
# The ablations (the paper's Table 6) start from scratch like the paper's: 8 cycles of 150 steps.
# The control is a full-rank model (hidden 96, 3 layers, intermediate 256) whose parameter count
# (1.119M) matches ReLoRA's trainable count (1.129M: embeddings, head, norms and the factors).
#
# `quick`: the same pipeline on a tiny model and 240 steps, for the test suite.

PROFILES = {
    "full": {
        "model": {"preset": "nano"},
        "vocab": 4096,
        "seq_len": 128,
        "micro_batch": 8,
        "steps": 1200,
        "warmup": 40,
        "lr": 0.002,          # full-rank peak learning rate
        "low_rank_lr": 0.004,  # the paper's ~2x for the low-rank phase (all LoRA/ReLoRA runs)
        "rank": 8,
        "alpha": 32,
        "warm_start": 300,
        "cycle": 150,
        "restart_warmup": 15,
        "eval_every": 150,
        "control_model": {"hidden_size": 96, "num_layers": 3, "num_heads": 3, "intermediate_size": 256,
                          "vocab_size": 4096},
        "runs": ["full", "control", "lora", "lora_warm", "relora", "abl_restarts", "abl_restarts_reset",
                 "abl_restarts_jagged", "lora_lr2e-3", "lora_lr1e-3", "lora_lr5e-4", "relora_lr2e-3", "relora_lr1e-3",
                 "relora_lr5e-4", "full_lr4e-3", "full_lr1e-3"],
    },
    # `tpp20`: the regime test (docs/results.md, "About 20 tokens per parameter"). A 512-piece
    # tokenizer and a 160k-parameter model (hidden 48, 4 layers; embedding + head 31%) so that 1600
    # steps of 16 x 128 tokens (3.6 passes over the sample's training split) are 20.5 tokens per
    # parameter. r = 3: r/hidden = 1/16. ReLoRA: warm start 400 (25%), 6 cycles of 200 steps. Each
    # method at several peak rates ("<method>_lr<rate>" runs); the gaps use each one's best.
    "tpp20": {
        "model": {"hidden_size": 48, "num_layers": 4, "num_heads": 3, "intermediate_size": 128, "vocab_size": 512},
        "vocab": 512,
        "seq_len": 128,
        "micro_batch": 16,
        "steps": 1600,
        "warmup": 50,
        "lr": 0.004,
        "low_rank_lr": 0.008,
        "rank": 3,
        "alpha": 12,
        "warm_start": 400,
        "cycle": 200,
        "restart_warmup": 20,
        "eval_every": 200,
        "control_model": {"hidden_size": 40, "num_layers": 1, "num_heads": 2, "intermediate_size": 108,
                          "vocab_size": 512},
        "runs": ["full", "relora", "lora", "lora_lr4e-3", "lora_lr2e-3", "relora_lr4e-3", "lora_warm",
                 "full_lr2e-3", "lora_lr1e-3", "control", "relora_lr1.6e-2", "full_lr1e-3"],
    },
    "quick": {
        "model": {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "intermediate_size": 128, "vocab_size": 512},
        "vocab": 512,
        "seq_len": 64,
        "micro_batch": 8,
        "steps": 240,
        "warmup": 10,
        "lr": 0.003,
        "low_rank_lr": 0.006,
        "rank": 4,
        "alpha": 16,
        "warm_start": 40,
        "cycle": 50,
        "restart_warmup": 5,
        "eval_every": 0,
        "control_model": None,
        "runs": ["full", "lora", "relora"],
    },
}

# `tpp80` (the default): the `tpp20` model, data, rank and rates trained four times as long, 6400
# steps of 16 x 128 tokens (13.1M tokens, 14 passes over the training split) = 82 tokens per
# parameter, so that the 25% warm start (1600 steps) ends late in full-rank's learning curve, as in
# the paper (docs/results.md, "The token budget decides the ordering"). Then 6 cycles of 800 steps;
# the ablations from scratch, 8 cycles of 800.
PROFILES["tpp80"] = dict(
    PROFILES["tpp20"], steps=6400, warm_start=1600, cycle=800, restart_warmup=80, eval_every=800,
    seed=1,  # init and data order; --set seed=2 repeats the profile on another draw
    runs=["full_lr2e-3", "lora_lr4e-3", "relora", "lora", "full", "relora_lr4e-3", "lora_warm", "lora_lr2e-3",
          "control", "abl_restarts", "abl_restarts_reset", "abl_restarts_jagged", "full_lr1e-3", "relora_lr2e-3",
          "relora_lr1e-3"])

# name -> (label, relora section builder). Labels follow the paper's table rows.
# LoRA from scratch and ReLoRA also at lower peak rates than low_rank_lr (the paper's 2x): at
# low_rank_lr LoRA's update grew to 10x the norm of the full-rank update (docs/results.md), so both
# methods get the same small sweep and the comparison uses each one's best run.
# run name -> (method, peak learning rate of the low-rank phase)
# Any "<method>_lr<rate>" run name (lora, relora, lora_warm; e.g. "lora_lr1e-3") is that method at
# that rate, so a profile can list the rates it sweeps.
SWEEP_RE = re.compile(r"^(lora|relora|lora_warm|full)_lr([0-9.]+(?:e-?[0-9]+)?)$")


class _Sweep(dict):
    """run name -> (method, rate) for the "<method>_lr<rate>" names of the low-rank methods."""

    def __init__(self, methods):
        super().__init__()
        self.methods = methods

    def _parse(self, run):
        m = SWEEP_RE.match(run) if isinstance(run, str) else None
        return (m.group(1), float(m.group(2))) if m and m.group(1) in self.methods else None

    def __contains__(self, run):
        return self._parse(run) is not None

    def __getitem__(self, run):
        parsed = self._parse(run)
        if parsed is None:
            raise KeyError(run)
        return parsed

    def get(self, run, default=None):
        return self[run] if run in self else default


LR_SWEEP = _Sweep(("lora", "relora", "lora_warm"))


class _FullSweep(_Sweep):
    def __getitem__(self, run):
        return super().__getitem__(run)[1]


# Full-rank at other peak rates (training.lr, "full_lr<rate>"), so that the gaps are measured from
# its best run too.
FULL_SWEEP = _FullSweep(("full",))


def relora_section(run, p):
    low = {"rank": p["rank"], "alpha": p["alpha"], "dropout": 0.0,
           "lr": LR_SWEEP[run][1] if run in LR_SWEEP else p["low_rank_lr"]}
    run = LR_SWEEP[run][0] if run in LR_SWEEP else run
    restarts = {"cycle_steps": p["cycle"]}
    if run in ("full", "control") or run in FULL_SWEEP:
        return {"mode": "full"}
    if run == "lora":
        return {"mode": "lora", **low}
    if run == "lora_warm":
        return {"mode": "lora", **low, "warm_start_steps": p["warm_start"]}
    if run == "relora":
        return {"mode": "relora", **low, "warm_start_steps": p["warm_start"], **restarts,
                "restart_warmup_steps": p["restart_warmup"], "optimizer_reset": "magnitude", "prune_ratio": 0.99}
    if run == "abl_restarts":  # merges only: no optimizer reset, no re-warm
        return {"mode": "relora", **low, **restarts, "restart_warmup_steps": 0, "optimizer_reset": "none"}
    if run == "abl_restarts_reset":  # merges + reset, the learning rate continues on the cosine
        return {"mode": "relora", **low, **restarts, "restart_warmup_steps": 0, "optimizer_reset": "magnitude",
                "prune_ratio": 0.99}
    if run == "abl_restarts_jagged":  # merges + jagged schedule, optimizer state kept
        return {"mode": "relora", **low, **restarts, "restart_warmup_steps": p["restart_warmup"],
                "optimizer_reset": "none"}
    raise ValueError(run)


LABELS = {
    "full": "Full-rank",
    "control": "Control (full-rank, ReLoRA's trainable count)",
    "lora": "LoRA from scratch",
    "lora_warm": "LoRA + warm start",
    "relora": "ReLoRA (warm start + restarts + reset + jagged)",
    "abl_restarts": "LoRA + restarts",
    "abl_restarts_reset": "LoRA + restarts + optimizer reset",
    "abl_restarts_jagged": "LoRA + restarts + jagged schedule",
    "lora_lr2e-3": "LoRA from scratch, lr 2e-3",
    "lora_lr1e-3": "LoRA from scratch, lr 1e-3",
    "lora_lr5e-4": "LoRA from scratch, lr 5e-4",
    "relora_lr2e-3": "ReLoRA, lr 2e-3",
    "relora_lr1e-3": "ReLoRA, lr 1e-3",
    "relora_lr5e-4": "ReLoRA, lr 5e-4",
    "full_lr4e-3": "Full-rank, lr 4e-3",
    "full_lr1e-3": "Full-rank, lr 1e-3",
}


def label_of(run):
    if run in LABELS:
        return LABELS[run]
    method, rate = (LR_SWEEP[run] if run in LR_SWEEP else ("full", FULL_SWEEP[run]))
    short = {"full": "Full-rank", "lora": "LoRA from scratch", "relora": "ReLoRA", "lora_warm": "LoRA + warm start"}
    return f"{short[method]}, lr {rate:g}"


def default_data():
    shared = os.environ.get("RELORA_SHARED_DATA") or os.path.join(os.path.dirname(ROOT), "shared", "data")
    return os.path.join(shared, "c4-sample", "c4-train.00000-of-01024.first1000.json")


def yaml_value(v):
    # JSON is valid YAML flow syntax, which the job spec parser reads.
    return json.dumps(v)


def job_yaml(name, run, p, data, run_dir, cache_dir):
    model = p["control_model"] if run == "control" else p["model"]
    spec = {
        "name": f"quality-{name}",
        "model": model,
        "data": {"train": [data], "validation_fraction": 0.05, "tokenizer_vocab_size": p["vocab"],
                 # the published results (docs/results.md) were measured with unigram tokenizers
                 "tokenizer_model_type": "unigram",
                 "seq_len": p["seq_len"], "cache_dir": cache_dir},
        "training": {"steps": p["steps"], "micro_batch_size": p["micro_batch"], "grad_accum_steps": 1,
                     "lr": FULL_SWEEP.get(run, p["lr"]), "warmup_steps": p["warmup"], "seed": p.get("seed", 1),
                     "dtype": "fp32", "log_every_steps": 50},
        "relora": relora_section(run, p),
        "eval": {"every_steps": p["eval_every"], "max_tokens": 10_000_000},  # the whole held-out 5%
        "checkpoint": {"dir": os.path.join(run_dir, "ckpt"), "every_steps": 0, "keep": 1},
    }
    return "\n".join(f"{k}: {yaml_value(v)}" for k, v in spec.items()) + "\n"


EVAL_RE = re.compile(r"eval\s+step (\d+) \| loss ([0-9.]+) \| perplexity ([0-9.]+)")


def run_one(name, run, p, data, out, cache_dir, worker):
    run_dir = os.path.join(out, run)
    shutil.rmtree(run_dir, ignore_errors=True)  # a rerun starts fresh (no resume)
    os.makedirs(run_dir)
    job = os.path.join(run_dir, "job.yaml")
    with open(job, "w") as f:
        f.write(job_yaml(f"{name}-{run}", run, p, data, run_dir, cache_dir))
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    t0 = time.time()
    with open(os.path.join(run_dir, "worker.log"), "w") as log:
        rc = subprocess.call([worker, "--standalone", job, "--threads", "1", "--no-resume",
                              "--summary-json", os.path.join(run_dir, "summary.json")],
                             stdout=log, stderr=subprocess.STDOUT, env=env, cwd=run_dir)
    wall = time.time() - t0
    print(f"  {run}: rc {rc}, {wall:.0f} s", flush=True)
    return rc, wall


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def collect(run, p, out, rc, wall):
    run_dir = os.path.join(out, run)
    log = open(os.path.join(run_dir, "worker.log"), errors="replace").read()
    steps = []
    try:
        with open(os.path.join(run_dir, "ckpt", "metrics.jsonl")) as f:
            steps = [json.loads(line) for line in f if line.strip()]
    except OSError:
        pass
    summary = read_json(os.path.join(run_dir, "summary.json")) or {}
    spectrum = read_json(os.path.join(run_dir, "ckpt", "update_spectrum.json"))
    status = "ok" if rc == 0 else ("diverged" if "not finite" in log else "failed")
    return {
        "run": run,
        "label": label_of(run) + (f", lr {p['low_rank_lr']:g}" if run in ("lora", "relora") else
                                f", lr {p['lr']:g}" if run == "full" else ""),
        "status": status,
        "wall_seconds": wall,
        "model": p["control_model"] if run == "control" else p["model"],
        "training_lr": FULL_SWEEP.get(run, p["lr"]),
        "relora": relora_section(run, p),
        "eval": [{"step": int(m[0]), "loss": float(m[1]), "perplexity": float(m[2])} for m in EVAL_RE.findall(log)],
        "train": [{"step": s["step"], "loss": s["loss"], "lr": s["lr"]} for s in steps],
        "summary": summary,
        "spectrum": spectrum,
    }


def layer_rank(result, layer_index, key):
    spec = result.get("spectrum") or {}
    layers = spec.get("layers") or []
    if layer_index >= len(layers) or key not in layers[layer_index]:
        return None
    return layers[layer_index][key]["rank_above_threshold"]


def check(results, p):
    """The mechanics the test suite asserts on the quick profile (and the full one reports)."""
    by = {r["run"]: r for r in results}
    r = p["rank"]
    errors = []
    for run in ("full", "lora", "relora"):
        if run not in by:
            errors.append(f"{run}: not run")
        elif by[run]["status"] != "ok":
            errors.append(f"{run}: {by[run]['status']} (see its worker.log)")
    if errors:
        return errors
    relora = by["relora"]
    cycles = (p["steps"] - p["warm_start"]) // p["cycle"]
    if relora["summary"].get("merges") != cycles - 1:
        errors.append(f"relora: {relora['summary'].get('merges')} merges, expected {cycles - 1}")
    if by["lora"]["summary"].get("merges") != 0:
        errors.append("lora: merged")
    for i in range(2):
        name = (relora["spectrum"] or {}).get("layers", [{}] * 2)[i].get("name", f"layer {i}")
        rl = layer_rank(relora, i, "since_low_rank_start")
        lo = layer_rank(by["lora"], i, "since_low_rank_start")
        fu = layer_rank(by["full"], i, "since_init")
        if rl is None or rl <= r:
            errors.append(f"relora: update rank of {name} in the low-rank phase is {rl}, not above r = {r}")
        if lo is None or lo > r:
            errors.append(f"lora: update rank of {name} is {lo}, above r = {r}")
        if fu is None or fu <= r:
            errors.append(f"full: update rank of {name} is {fu}, not above r = {r}")
    return errors


def earlier_runs(p, out, exclude=(), walls=None):
    """run -> (rc, wall seconds) for the runs of the profile already in `out` (an earlier invocation;
    --only reruns a subset): rc 0 when the worker's summary says the job completed."""
    found = {}
    for r in p["runs"]:
        if r in exclude or not os.path.exists(os.path.join(out, r, "worker.log")):
            continue
        summary = read_json(os.path.join(out, r, "summary.json"))
        found[r] = (0 if summary and summary.get("completed", True) else 1, (walls or {}).get(r))
    return found


def compact_existing(args, p, out, compact_path):
    """--compact-only: the compact results of <out>/<profile>/ as the last run.py left it."""
    previous = read_json(os.path.join(out, "results.json")) or {}
    walls = {r["run"]: r.get("wall_seconds") for r in previous.get("runs", [])}
    done = earlier_runs(p, out, walls=walls)
    if not done:
        sys.exit(f"{out}: no runs of profile {args.profile} there")
    doc = {"profile": args.profile, "params": p, "data": previous.get("data", args.data),
           "command": previous.get("command"), "source": previous.get("source"),
           "started": previous.get("started"), "finished": previous.get("finished"),
           "runs": [collect(r, p, out, *done[r]) for r in p["runs"] if r in done]}
    if previous.get("params") not in (None, p):
        print(f"warning: {out}/results.json was written with other parameters than profile {args.profile}"
              + (" and these --set values" if args.set else ""), file=sys.stderr)
    write_compact(doc, compact_path)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=sorted(PROFILES), default="tpp80")
    ap.add_argument("--out", default=os.path.join(HERE, "out"), help="output root (default bench/quality/out)")
    ap.add_argument("--build-dir", default=os.environ.get("RELORA_BUILD_DIR", os.path.join(ROOT, "build")))
    ap.add_argument("--data", default=default_data(), help="the C4 sample (JSON lines)")
    ap.add_argument("--cache-dir", help="tokenizer and token cache (default <out>/cache)")
    ap.add_argument("--jobs", type=int, default=2, help="runs at once (one core each)")
    ap.add_argument("--only", help="comma-separated subset of the profile's runs")
    ap.add_argument("--check", action="store_true", help="exit 1 unless the mechanics hold (merges, ranks)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                    help="override a profile parameter, e.g. --set lr=0.003 (for probes; not the documented run)")
    ap.add_argument("--compact", metavar="PATH",
                    help="where to write the compact results (default: bench/quality/results/<profile>.json "
                         "when --out is the default and there is no --set, else <out>/<profile>/compact.json)")
    ap.add_argument("--compact-only", action="store_true",
                    help="train nothing: write the compact results of the runs already in <out>/<profile>/")
    args = ap.parse_args()

    p = dict(PROFILES[args.profile])
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in p:
            sys.exit(f"--set {key}: not a parameter of profile {args.profile} ({', '.join(sorted(p))})")
        p[key] = json.loads(value)
    out = os.path.abspath(os.path.join(args.out, args.profile))
    default_out = os.path.abspath(args.out) == os.path.abspath(os.path.join(HERE, "out"))
    committed = os.path.join(HERE, "results", f"{args.profile}.json")
    compact_path = args.compact or (committed if default_out and not args.set else os.path.join(out, "compact.json"))
    if args.compact_only:
        return compact_existing(args, p, out, compact_path)
    worker = os.path.abspath(os.path.join(args.build_dir, "worker", "relora-worker"))
    if not os.path.exists(worker):
        sys.exit(f"{worker}: not built (cmake --build {args.build_dir} --target relora-worker)")
    if not os.access(args.data, os.R_OK):
        # A skip only where the shared data folder is absent (a fresh clone); where it exists, a
        # missing or unreadable sample is a failure: CI has the data and must not pass by skipping.
        shared = os.path.dirname(os.path.dirname(args.data))
        if os.path.isdir(shared):
            print(f"{args.data}: missing or unreadable, though {shared} exists", file=sys.stderr)
            return 1
        print(f"skipped: {args.data}: the C4 sample is missing (set RELORA_SHARED_DATA or --data)")
        return 77  # ctest's SKIP_RETURN_CODE in tests/quality
    cache_dir = os.path.abspath(args.cache_dir or os.path.join(args.out, "cache"))
    args.data = os.path.abspath(args.data)
    os.makedirs(out, exist_ok=True)
    runs = args.only.split(",") if args.only else p["runs"]

    # A one-step job trains and caches the tokenizer and the token file first (a few seconds; nothing
    # when cached), so the concurrent runs only read the cache.
    print(f"quality/{args.profile}: {len(runs)} runs, {args.jobs} at a time, output in {out}", flush=True)
    prepare = dict(p, steps=1, warmup=0, eval_every=0)
    print("  tokenizer and token cache:", cache_dir, flush=True)
    rc, _ = run_one(args.profile, "full", prepare, args.data, os.path.join(out, "prepare"), cache_dir, worker)
    if rc != 0:
        sys.exit(f"preparing the data failed: see {os.path.join(out, 'prepare', 'full', 'worker.log')}")
    shutil.rmtree(os.path.join(out, "prepare"), ignore_errors=True)
    done = {}
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    source = source_info(worker)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(run_one, args.profile, r, p, args.data, out, cache_dir, worker): r for r in runs}
        for fut in concurrent.futures.as_completed(futures):
            done[futures[fut]] = fut.result()
    # Runs of the profile done by an earlier invocation (--only reruns a subset) stay in the results.
    previous = read_json(os.path.join(out, "results.json")) or {}
    done.update(earlier_runs(p, out, exclude=done,
                             walls={r["run"]: r.get("wall_seconds") for r in previous.get("runs", [])}))
    results = [collect(r, p, out, *done[r]) for r in p["runs"] if r in done]

    doc = {"profile": args.profile, "params": p, "data": args.data,
           "command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
           "source": source, "started": started,
           "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "runs": results}
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(doc, f)
    write_compact(doc, compact_path)
    for r in results:
        ppl = r["summary"].get("eval_perplexity")
        ppl_text = f"{ppl:8.2f}" if isinstance(ppl, (int, float)) and math.isfinite(ppl) else "       -"
        print(f"{r['run']:22s} {r['status']:8s} ppl {ppl_text}  ranks(since init / low-rank start): "
              f"{layer_rank(r, 0, 'since_init')}/{layer_rank(r, 0, 'since_low_rank_start')}, "
              f"{layer_rank(r, 1, 'since_init')}/{layer_rank(r, 1, 'since_low_rank_start')}  "
              f"{r['wall_seconds'] or 0:.0f} s")
    if args.check:
        errors = check(results, p)
        for e in errors:
            print("CHECK FAILED:", e)
        if errors:
            return 1
        print("CHECK OK: merges happened; ReLoRA's update rank exceeds r, LoRA's does not")
    return 0


if __name__ == "__main__":
    sys.exit(main())
