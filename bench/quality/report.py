#!/usr/bin/python3
"""Plots and tables of the quality experiment, from the compact results that bench/quality/run.py
writes (committed as bench/quality/results/<profile>.json), so they can be recomputed without
rerunning anything:

  /usr/bin/python3 bench/quality/report.py [--results bench/quality/results/tpp80.json]
                                           [--img-dir docs/results] [--prefix tpp80_] [--tables PATH]

Writes loss_curves.png, lr_schedule.png and update_spectrum.png (each name after --prefix; default
"<profile>_", none for the `full` profile) to --img-dir and the markdown tables (docs/results.md
quotes them) to --tables (default: the results file with .md for .json) and stdout. A run.py
results.json (bench/quality/out/<profile>/results.json, per-step curves) is read too: it is compacted
first, with run.py's own code. Needs numpy and matplotlib: Debian's python3-numpy and
python3-matplotlib (scripts/setup.sh installs them), so run it with /usr/bin/python3.
"""
import argparse
import json
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
COMPACT_FORMAT = "relora-quality-compact/1"  # run.py's

# Perplexity on C4 validation at 130M, from ../shared/docs/relora-spec.md (the paper's later
# version; Table 6 for the ablation rows). None: the spec gives no 130M number for that row.
PAPER_130M = {
    "full": "23.65",
    "control": None,
    "lora": "34.17",
    "lora_warm": "25.46",
    "relora": "25.04",
    "abl_restarts": "34.25",
    "abl_restarts_reset": "diverged",
    "abl_restarts_jagged": "29.77",
    "lora_lr2e-3": "34.17",
    "lora_lr1e-3": "34.17",
    "relora_lr2e-3": "25.04",
    "relora_lr1e-3": "25.04",
    "lora_lr5e-4": "34.17",
    "relora_lr5e-4": "25.04",
    "full_lr4e-3": "23.65",
    "full_lr1e-3": "23.65",
}
# The same method at three peak rates of the low-rank phase (run.py's LR_SWEEP); each compares
# with its best run.
LORA_FROM_SCRATCH = ["lora", "lora_lr2e-3", "lora_lr1e-3", "lora_lr5e-4"]
RELORA = ["relora", "relora_lr2e-3", "relora_lr1e-3", "relora_lr5e-4"]
FULL = ["full", "full_lr4e-3", "full_lr1e-3"]

STYLE = {
    "full": ("black", "-"),
    "control": ("gray", "--"),
    "lora": ("tab:red", "-"),
    "lora_warm": ("tab:orange", "-"),
    "relora": ("tab:blue", "-"),
    "abl_restarts": ("tab:purple", ":"),
    "abl_restarts_reset": ("tab:brown", ":"),
    "abl_restarts_jagged": ("tab:green", ":"),
    "lora_lr2e-3": ("tab:pink", "-."),
    "lora_lr1e-3": ("tab:olive", "-."),
    "relora_lr2e-3": ("tab:cyan", "-."),
    "relora_lr1e-3": ("navy", "-."),
    "lora_lr5e-4": ("darkred", "-."),
    "relora_lr5e-4": ("teal", "-."),
    "full_lr4e-3": ("dimgray", "-."),
    "full_lr1e-3": ("silver", "-."),
}


# Other "<method>_lr<rate>" runs (run.py's sweep names, e.g. the tpp20 profile's) join their method's
# group, get a colour of their own and the method's paper number.
SWEEP_PREFIXES = (("full_lr", FULL), ("lora_warm_lr", None), ("lora_lr", LORA_FROM_SCRATCH), ("relora_lr", RELORA))
_EXTRA_COLORS = ["tab:pink", "tab:olive", "tab:cyan", "navy", "darkred", "teal", "dimgray", "gold", "lime"]


def register_sweep_runs(names):
    """Adds the sweep runs of a results file that the tables above do not list."""
    for name in names:
        if name in STYLE:
            continue
        for prefix, group in SWEEP_PREFIXES:
            if name.startswith(prefix):
                base = prefix[:-3]
                if group is not None:
                    group.append(name)
                PAPER_130M[name] = PAPER_130M.get(base)
                STYLE[name] = (_EXTRA_COLORS[len(STYLE) % len(_EXTRA_COLORS)], "-.")
                break
        else:
            STYLE[name] = (_EXTRA_COLORS[len(STYLE) % len(_EXTRA_COLORS)], "--")


def smooth(values, window):
    """Moving mean over `window` consecutive values (as many values as there are full windows)."""
    if len(values) < window:
        return np.asarray(values, dtype=float)
    kernel = np.ones(window) / window
    return np.convolve(np.asarray(values, dtype=float), kernel, mode="valid")


def train_curve(r, window, bin_steps):
    """(steps, training loss) as a `window`-step mean: the compact file holds means over bins of
    `bin_steps` steps, so this is a moving mean of window / bin_steps of them, at each bin's end."""
    t = r.get("train_loss") or {}
    steps, loss = t.get("step") or [], t.get("loss") or []
    k = max(1, round(window / bin_steps))
    if len(loss) < k:
        return np.asarray(steps), np.asarray(loss, dtype=float)
    return np.asarray(steps[k - 1:]), smooth(loss, k)


def best_of(runs, names):
    """The run among `names` with the lowest validation perplexity (None if none finished)."""
    done = [runs[n] for n in names if n in runs and ppl(runs[n]) is not None]
    return min(done, key=ppl) if done else None


def ppl(r):
    v = r["summary"].get("eval_perplexity")
    return v if r["status"] == "ok" and isinstance(v, (int, float)) and math.isfinite(v) else None


def rank(r, layer, key):
    layers = (r.get("spectrum") or {}).get("layers") or []
    for l in layers:
        if l["name"].endswith(layer) and key in l:
            return l[key]["rank_above_threshold"]
    return None


def plot_losses(runs, path, window, bin_steps):
    best = [r["run"] for r in (best_of(runs, FULL), best_of(runs, LORA_FROM_SCRATCH), best_of(runs, RELORA)) if r]
    groups = [("Main runs (each method at its best learning rate)", ["control", "lora_warm"] + best),
              ("Learning-rate sweep (peak rates)", FULL + LORA_FROM_SCRATCH + RELORA)]
    if any(n.startswith("abl_") for n in runs):  # profiles without the ablations get two panels
        groups.append(("Ablations (from scratch, paper Table 6)",
                       ["lora", "abl_restarts", "abl_restarts_reset", "abl_restarts_jagged", "relora"]))
    fig, axes = plt.subplots(1, len(groups), figsize=(5.7 * len(groups), 4.8), sharey=True)
    lows = []
    for ax, (title, names) in zip(axes, groups):
        for name in names:
            r = runs.get(name)
            if not r:
                continue
            color, ls = STYLE[name]
            x, y = train_curve(r, window, bin_steps)
            if len(y):
                lows.append(float(y.min()))
                ax.plot(x, y, color=color, ls=ls, lw=1.2,
                        label=r["label"] + ("" if r["status"] == "ok" else f" ({r['status']})"))
            if r["eval"]["step"]:
                lows.append(min(r["eval"]["loss"]))
                ax.plot(r["eval"]["step"], r["eval"]["loss"], "o", color=color, ms=3)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel(f"training loss ({max(1, round(window / bin_steps)) * bin_steps}-step mean); "
                       "dots: validation loss")
    lo = min(lows, default=3.0)
    axes[0].set_ylim(lo - 0.1, lo + 2.7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_lr(runs, path):
    fig, ax = plt.subplots(figsize=(9, 3.5))
    for name in ["full", "lora", "lora_warm", "relora", "abl_restarts_reset", "abl_restarts_jagged"]:
        r = runs.get(name)
        if not r or not r["lr"]["step"]:
            continue
        color, ls = STYLE[name]
        # The schedule as run.py simplified it: linear between the kept steps, within 0.1% of the peak.
        ax.plot(r["lr"]["step"], r["lr"]["lr"], color=color, ls=ls, lw=1.2, label=r["label"])
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.set_title("Learning-rate schedules (jagged cosine for ReLoRA; re-warm off in the no-jagged ablations)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_spectra(runs, path, threshold, lora_rank):
    lora = (best_of(runs, LORA_FROM_SCRATCH) or {"run": "lora"})["run"]
    relora = (best_of(runs, RELORA) or {"run": "relora"})["run"]
    def lr(name):
        return f" (lr {runs[name]['relora']['lr']:g})" if name in runs and "lr" in runs[name]["relora"] else ""

    full = (best_of(runs, FULL) or {"run": "full"})["run"]
    curves = [(full, "since_init", "Full-rank: W_final - W_init"),
              (lora, "since_init", f"LoRA from scratch{lr(lora)}: W_final - W_init"),
              (relora, "since_init", f"ReLoRA{lr(relora)}: W_final - W_init (incl. warm start)"),
              (relora, "since_low_rank_start", f"ReLoRA{lr(relora)}: low-rank phase only"),
              ("lora_warm", "since_low_rank_start", "LoRA + warm start: low-rank phase only")]
    layers = []
    for r in runs.values():
        for l in (r.get("spectrum") or {}).get("layers") or []:
            if l["name"] not in layers:
                layers.append(l["name"])
    layers.sort(key=lambda n: 0 if "self_attn" in n else 1)  # attention first
    fig, axes = plt.subplots(1, len(layers), figsize=(6 * len(layers), 4.5))
    axes = np.atleast_1d(axes)
    for ax, layer in zip(axes, layers):
        for name, key, label in curves:
            r = runs.get(name)
            spec = next((l for l in (r or {}).get("spectrum", {}).get("layers", []) if l["name"] == layer), None) \
                if r and r.get("spectrum") else None
            if not spec or key not in spec:
                continue
            if any(v is None for v in spec[key]["singular_values"]):  # not finite (a diverged run)
                continue
            sv = np.array(spec[key]["singular_values"], dtype=float)
            if sv.size == 0 or sv[0] <= 0:
                continue
            color, _ = STYLE[name]
            ls = "--" if key == "since_low_rank_start" and name in RELORA else "-"
            ax.semilogy(np.arange(1, sv.size + 1), np.maximum(sv / sv[0], 1e-9), color=color, ls=ls, lw=1.3,
                        label=f"{label} ({spec[key]['rank_above_threshold']} above)")
        ax.axhline(threshold, color="k", lw=0.8, ls=":")
        ax.axvline(lora_rank, color="tab:red", lw=0.8, ls=":")
        ax.text(lora_rank + 1, 2e-9, f"r = {lora_rank}", color="tab:red", fontsize=8)
        ax.set_ylim(1e-9, 5)
        ax.set_title(layer)
        ax.set_xlabel("singular value index")
        ax.set_ylabel(f"sigma_i / sigma_max (dotted: threshold {threshold:g})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def fmt_int(v):
    return f"{v:,}" if isinstance(v, int) else "-"


def tables(doc, source_name):
    runs = {r["run"]: r for r in doc["runs"]}
    best_full = best_of(runs, FULL)
    full = ppl(best_full) if best_full else None
    src = doc.get("source") or {}
    made = [f"profile `{doc['profile']}`"]
    if src.get("commit"):
        dirty = " with uncommitted changes" if src.get("uncommitted_changes") else ""
        made.append(f"checkout {src['commit']}{dirty}")
    if doc.get("started"):
        made.append(f"run.py {doc['started']} to {doc.get('finished')}")
    lines = [f"Generated by `bench/quality/report.py` from `{source_name}` ({', '.join(made)}).", "",
             f"Gaps are to the best full-rank run ({best_full['label'] if best_full else '-'}).", "",
             "| run | trainable params | val. perplexity | gap to full-rank | paper 130M | merges | train time |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in doc["runs"]:
        p = ppl(r)
        s = r["summary"]
        gap = f"{p - full:+.2f}" if p is not None and full is not None else "-"
        secs = s.get("train_seconds")
        lines.append(f"| {r['label']} | {fmt_int(s.get('trainable_parameters'))} | "
                     f"{f'{p:.2f}' if p is not None else r['status']} | {gap} | "
                     f"{PAPER_130M.get(r['run']) or '-'} | {s.get('merges', '-')} | "
                     f"{f'{secs:.0f} s' if isinstance(secs, (int, float)) else '-'} |")
    out = ["\n".join(lines), ""]
    layers = sorted({l["name"] for r in doc["runs"] for l in (r.get("spectrum") or {}).get("layers", [])},
                    key=lambda n: 0 if "self_attn" in n else 1)
    head = "| run | " + " | ".join(f"{n.split('model.')[-1]}: since init | low-rank phase" for n in layers) + " |"
    lines = [head, "|---|" + "---:|---:|" * len(layers)]
    for r in doc["runs"]:
        cells = []
        for n in layers:
            short = n.split("model.")[-1]
            for key in ("since_init", "since_low_rank_start"):
                v = rank(r, short, key)
                cells.append("-" if v is None else str(v))
        lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    out += ["\n".join(lines), ""]
    # The validation curve and the final losses (the overfitting check of docs/results.md).
    steps = sorted({s for r in doc["runs"] for s in r["eval"]["step"]})
    lines = ["Validation perplexity at each evaluation; final training loss (last step) and validation loss.", "",
             "| run | " + " | ".join(f"step {s}" for s in steps) + " | final train loss | val. loss | difference |",
             "|---|" + "---:|" * (len(steps) + 3)]
    for r in doc["runs"]:
        at = dict(zip(r["eval"]["step"], r["eval"]["perplexity"]))
        s = r["summary"]
        tl, vl = s.get("final_train_loss"), s.get("eval_loss")
        ok = all(isinstance(v, (int, float)) and math.isfinite(v) for v in (tl, vl))
        lines.append(f"| {r['label']} | " + " | ".join(f"{at[x]:.2f}" if x in at else "-" for x in steps) +
                     (f" | {tl:.2f} | {vl:.2f} | {vl - tl:.2f} |" if ok else " | - | - | - |"))
    out += ["\n".join(lines), ""]
    lora, relora = best_of(runs, LORA_FROM_SCRATCH), best_of(runs, RELORA)
    if lora and relora and full is not None:
        g_lora = ppl(lora) - full
        g_relora = ppl(relora) - full
        out.append(f"Best of each method's learning rates: ReLoRA gap {g_relora:+.2f} ({relora['label']}), "
                   f"LoRA-from-scratch gap {g_lora:+.2f} ({lora['label']}): ratio {g_relora / g_lora:.3f} "
                   f"(acceptance: <= 0.5)")
        paper_rate = runs.get("relora")  # ReLoRA at low_rank_lr, the paper's 2x
        if paper_rate is not None and ppl(paper_rate) is not None and paper_rate is not relora:
            g = ppl(paper_rate) - full
            out.append(f"\nReLoRA at the paper's 2x rate ({paper_rate['label']}): gap {g:+.2f}, ratio {g / g_lora:.3f}")
        out.append(switch_figures(doc, runs, best_full, lora, relora))
    return "\n".join(out) + "\n"


def eval_at(r, step):
    at = dict(zip(r["eval"]["step"], r["eval"]["loss"]))
    return at.get(step)


def switch_figures(doc, runs, best_full, lora, relora):
    """The figures of docs/results.md's token-budget table for this profile: validation perplexity
    where the warm start ends (the warm-started ReLoRA run is full-rank at the profile's lr up to
    there), and how much full-rank and ReLoRA gain after it (validation loss, nats)."""
    switch = doc["params"].get("warm_start")
    warm = runs.get("relora")
    at_switch = eval_at(warm, switch) if warm else None
    lora_at = eval_at(lora, switch)
    if at_switch is None or lora_at is None:
        return ""
    full_gain = at_switch - best_full["summary"]["eval_loss"]
    relora_gain = at_switch - relora["summary"]["eval_loss"]
    return (f"\nAt the switch (step {switch}): validation perplexity {math.exp(at_switch):.2f} (the warm start, "
            f"full-rank at lr {doc['params']['lr']:g}) against {math.exp(lora_at):.2f} ({lora['label']}). Gain after "
            f"it: full-rank {full_gain:.3f} nats ({best_full['label']}), ReLoRA {relora_gain:.3f} "
            f"({relora['label']}): ReLoRA recovers {relora_gain / full_gain:.0%} of it, misses "
            f"{full_gain - relora_gain:.3f}.")


def load(path):
    """The compact results at `path`; a run.py results.json is compacted first (run.py's code)."""
    with open(path) as f:
        doc = json.load(f)
    if doc.get("format") == COMPACT_FORMAT:
        return doc
    if "format" in doc:
        sys.exit(f"{path}: format {doc['format']!r}, this report reads {COMPACT_FORMAT!r}")
    sys.path.insert(0, HERE)
    import compact  # noqa: E402  (bench/quality/compact.py: standard library only)
    return compact.compact(doc)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default=os.path.join(HERE, "results", "tpp80.json"),
                    help="compact results from run.py (or a run.py results.json)")
    ap.add_argument("--img-dir", default=os.path.join(ROOT, "docs", "results"))
    ap.add_argument("--smooth", type=int, default=25,
                    help="training-loss mean window (steps; a multiple of the file's train_loss_bin, 25)")
    ap.add_argument("--prefix", help="prefix of the plot file names (default <profile>_; none for `full`)")
    ap.add_argument("--tables", help="markdown tables output (default: --results with .md for .json)")
    ap.add_argument("--no-plots", action="store_true",
                    help="only the tables (e.g. for a file of a few runs, such as a seed repeat)")
    args = ap.parse_args()
    doc = load(args.results)
    runs = {r["run"]: r for r in doc["runs"]}
    register_sweep_runs(runs)
    bin_steps = doc["train_loss_bin"]
    if args.smooth % bin_steps:
        print(f"note: --smooth {args.smooth} rounded to {max(1, round(args.smooth / bin_steps)) * bin_steps} steps "
              f"(the file holds {bin_steps}-step means)", file=sys.stderr)
    prefix = args.prefix if args.prefix is not None else ("" if doc["profile"] == "full" else doc["profile"] + "_")
    if not args.no_plots:
        os.makedirs(args.img_dir, exist_ok=True)
        threshold = next((r["spectrum"]["relative_threshold"] for r in doc["runs"] if r.get("spectrum")), 0.01)
        plot_losses(runs, os.path.join(args.img_dir, prefix + "loss_curves.png"), args.smooth, bin_steps)
        plot_lr(runs, os.path.join(args.img_dir, prefix + "lr_schedule.png"))
        plot_spectra(runs, os.path.join(args.img_dir, prefix + "update_spectrum.png"), threshold,
                     doc["params"]["rank"])
    try:
        source_name = os.path.relpath(os.path.abspath(args.results), ROOT)
    except ValueError:
        source_name = args.results
    text = tables(doc, source_name if not source_name.startswith("..") else args.results)
    tables_path = args.tables or (os.path.splitext(args.results)[0] + ".md")
    with open(tables_path, "w") as f:
        f.write(text)
    print(text)
    print(f"tables in {tables_path}" + ("" if args.no_plots else f"; plots in {args.img_dir} ({prefix}*.png)"))


if __name__ == "__main__":
    main()
