"""The compact results of the quality experiment (bench/quality/results/<profile>.json): what
run.py keeps of each run (settings, summary, evaluation curve, binned training loss, simplified
learning-rate schedule, update spectra) so that report.py can redraw every table and plot from a
small committed file. Standard library only. Format: bench/quality/results/README.md."""
import hashlib
import json
import math
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

COMPACT_FORMAT = "relora-quality-compact/1"
TRAIN_BIN = 25       # steps per mean of the training loss (report.py's default smoothing window)
LR_TOLERANCE = 1e-3  # the simplified lr schedule is within this fraction of its peak at every step
SUMMARY_KEYS = ("mode", "completed", "steps", "merges", "optimizer_resets", "initial_train_loss",
                "final_train_loss", "eval_loss", "eval_perplexity", "tokens_per_second", "peak_rss_bytes",
                "trainable_parameters", "total_parameters", "train_seconds")


def sig(x, digits=6):
    """x rounded to `digits` significant digits; a non-finite float becomes None (JSON has no NaN)."""
    if isinstance(x, float):
        return float(f"{x:.{digits}g}") if math.isfinite(x) else None
    return x


def bin_means(train, width):
    """Mean training loss over consecutive `width`-step bins (steps 1..width, width+1..2 width, ...),
    each at its last step: the `width`-step moving mean sampled every `width` steps."""
    steps, means = [], []
    bins = {}
    for t in train:
        if isinstance(t["loss"], (int, float)) and math.isfinite(t["loss"]):
            bins.setdefault((t["step"] - 1) // width, []).append(t)
    for k in sorted(bins):
        ts = bins[k]
        steps.append(ts[-1]["step"])
        means.append(round(sum(t["loss"] for t in ts) / len(ts), 4))
    return {"step": steps, "loss": means}


def simplify(points, tolerance):
    """The points (step, value) that linear interpolation needs to stay within `tolerance` of every
    dropped value (Ramer-Douglas-Peucker on the vertical distance; first and last kept)."""
    if len(points) < 3:
        return list(range(len(points)))
    keep = {0, len(points) - 1}
    stack = [(0, len(points) - 1)]
    while stack:
        a, b = stack.pop()
        (xa, ya), (xb, yb) = points[a], points[b]
        worst, at = -1.0, None
        for i in range(a + 1, b):
            x, y = points[i]
            d = abs(y - (ya + (yb - ya) * (x - xa) / (xb - xa)))
            if d > worst:
                worst, at = d, i
        if at is not None and worst > tolerance:
            keep.add(at)
            stack += [(a, at), (at, b)]
    return sorted(keep)


def compact_run(r):
    train = r.get("train") or []
    lr_points = [(t["step"], t["lr"]) for t in train if isinstance(t.get("lr"), (int, float))]
    peak = max((abs(v) for _, v in lr_points), default=0.0)
    kept = [lr_points[i] for i in simplify(lr_points, LR_TOLERANCE * peak)]
    spectrum = r.get("spectrum")
    if spectrum:
        spectrum = dict(spectrum, layers=[
            {k: ({**v, "singular_values": [sig(x) for x in v["singular_values"]]}
                 if isinstance(v, dict) and "singular_values" in v else v) for k, v in layer.items()}
            for layer in spectrum.get("layers", [])])
    summary = r.get("summary") or {}
    return {
        "run": r["run"],
        "label": r["label"],
        "status": r["status"],
        "wall_seconds": None if r.get("wall_seconds") is None else round(r["wall_seconds"], 1),
        "model": r.get("model"),
        "training_lr": r.get("training_lr"),
        "relora": r["relora"],
        "summary": {k: summary[k] for k in SUMMARY_KEYS if k in summary},
        "eval": {"step": [e["step"] for e in r["eval"]], "loss": [e["loss"] for e in r["eval"]],
                 "perplexity": [e["perplexity"] for e in r["eval"]]},
        "train_loss": dict(bin_means(train, TRAIN_BIN), bin=TRAIN_BIN),
        "lr": {"step": [s for s, _ in kept], "lr": [sig(v) for _, v in kept]},
        "spectrum": spectrum,
    }


def compact(doc):
    """The compact results of a run.py results document (see the module docstring)."""
    out = {"format": COMPACT_FORMAT,
           "profile": doc["profile"],
           "params": doc["params"],
           "command": doc.get("command"),
           "data": os.path.basename(doc.get("data") or ""),
           "source": doc.get("source"),
           "started": doc.get("started"),    # of the last run.py invocation (--only: of its runs)
           "finished": doc.get("finished"),
           "train_loss_bin": TRAIN_BIN,
           "lr_tolerance": LR_TOLERANCE,
           "runs": [compact_run(r) for r in doc["runs"]]}
    return out


def dumps_compact(doc):
    """JSON with one key per line and every list of numbers on one line (small, and diffs readably)."""
    def enc(v, indent):
        pad = " " * indent
        if isinstance(v, dict) and v:
            return "{\n" + ",\n".join(f"{pad} {json.dumps(k)}: {enc(x, indent + 1)}" for k, x in v.items()) + \
                "\n" + pad + "}"
        if isinstance(v, list) and any(isinstance(x, (dict, list)) for x in v):
            return "[\n" + ",\n".join(f"{pad} {enc(x, indent + 1)}" for x in v) + "\n" + pad + "]"
        return json.dumps(v, separators=(",", ":"), allow_nan=False)
    return enc(doc, 0) + "\n"


def write_compact(doc, path):
    text = dumps_compact(compact(doc))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    print(f"compact results: {path} ({len(text) / 1024:.0f} kB)", flush=True)


def source_info(worker):
    """The commit of the checkout when the runs start (and whether it had uncommitted changes) and
    the worker binary used (its hash: a copied binary's file time says nothing)."""
    def git(*a):
        try:
            return subprocess.run(["git", "-C", ROOT, *a], capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    info = {"commit": git("rev-parse", "--short", "HEAD") or None,
            "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no"))}
    if worker:
        info["worker"] = worker
        try:
            with open(worker, "rb") as f:
                info["worker_sha256"] = hashlib.sha256(f.read()).hexdigest()
        except OSError:
            pass
    return info
