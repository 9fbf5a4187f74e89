#!/usr/bin/python3
"""Plots and tables of a bench/quality run (reads <out>/<profile>/results.json from run.py).

  /usr/bin/python3 bench/quality/report.py [--results bench/quality/out/full/results.json]
                                           [--img-dir docs/results] [--prefix tpp20_]

Writes loss_curves.png, lr_schedule.png and update_spectrum.png (each name after --prefix) to
--img-dir and the markdown tables to results.md beside results.json (docs/results.md quotes them). Needs numpy and
matplotlib: Debian's python3-numpy and python3-matplotlib (scripts/setup.sh installs them), so run
it with /usr/bin/python3.
"""
import argparse
import json
import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

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
    if len(values) < window:
        return np.asarray(values)
    kernel = np.ones(window) / window
    return np.convolve(values, kernel, mode="valid")


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


def plot_losses(runs, path, window):
    best = [r["run"] for r in (best_of(runs, FULL), best_of(runs, LORA_FROM_SCRATCH), best_of(runs, RELORA)) if r]
    groups = [("Main runs (each method at its best learning rate)", ["control", "lora_warm"] + best),
              ("Learning-rate sweep (peak rates)", FULL + LORA_FROM_SCRATCH + RELORA)]
    if any(n.startswith("abl_") for n in runs):  # profiles without the ablations get two panels
        groups.append(("Ablations (from scratch, paper Table 6)",
                       ["lora", "abl_restarts", "abl_restarts_reset", "abl_restarts_jagged", "relora"]))
    fig, axes = plt.subplots(1, len(groups), figsize=(5.7 * len(groups), 4.8), sharey=True)
    for ax, (title, names) in zip(axes, groups):
        for name in names:
            r = runs.get(name)
            if not r or not r["train"]:
                continue
            color, ls = STYLE[name]
            steps = np.array([t["step"] for t in r["train"]])
            loss = np.array([t["loss"] for t in r["train"]])
            y = smooth(loss, window)
            ax.plot(steps[window - 1:] if len(loss) >= window else steps, y, color=color, ls=ls, lw=1.2,
                    label=r["label"] + ("" if r["status"] == "ok" else f" ({r['status']})"))
            if r["eval"]:
                ax.plot([e["step"] for e in r["eval"]], [e["loss"] for e in r["eval"]], "o", color=color, ms=3)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel(f"training loss ({window}-step mean); dots: validation loss")
    lows = [min(e["loss"] for e in r["eval"]) for r in runs.values() if r["eval"]]
    lows += [float(smooth([t["loss"] for t in r["train"]], window).min()) for r in runs.values() if r["train"]]
    lo = min(lows, default=3.0)
    axes[0].set_ylim(lo - 0.1, lo + 2.7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_lr(runs, path):
    fig, ax = plt.subplots(figsize=(9, 3.5))
    for name in ["full", "lora", "lora_warm", "relora", "abl_restarts_reset", "abl_restarts_jagged"]:
        r = runs.get(name)
        if not r or not r["train"]:
            continue
        color, ls = STYLE[name]
        ax.plot([t["step"] for t in r["train"]], [t["lr"] for t in r["train"]], color=color, ls=ls, lw=1.2,
                label=r["label"])
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
            sv = np.array(spec[key]["singular_values"])
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


def tables(doc):
    runs = {r["run"]: r for r in doc["runs"]}
    best_full = best_of(runs, FULL)
    full = ppl(best_full) if best_full else None
    lines = [f"Gaps are to the best full-rank run ({best_full['label'] if best_full else '-'}).", "",
             "| run | trainable params | val. perplexity | gap to full-rank | paper 130M | merges | train time |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in doc["runs"]:
        p = ppl(r)
        s = r["summary"]
        gap = f"{p - full:+.2f}" if p is not None and full is not None else "-"
        lines.append(f"| {r['label']} | {s.get('trainable_parameters', '-'):,} | "
                     f"{f'{p:.2f}' if p is not None else r['status']} | {gap} | "
                     f"{PAPER_130M.get(r['run']) or '-'} | {s.get('merges', '-')} | "
                     f"{s.get('train_seconds', 0):.0f} s |")
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
    lora, relora = best_of(runs, LORA_FROM_SCRATCH), best_of(runs, RELORA)
    if lora and relora and full is not None:
        g_lora = ppl(lora) - full
        g_relora = ppl(relora) - full
        out.append(f"Best of each method's learning rates: ReLoRA gap {g_relora:+.2f} ({relora['label']}), "
                   f"LoRA-from-scratch gap {g_lora:+.2f} ({lora['label']}): ratio {g_relora / g_lora:.3f} "
                   f"(acceptance: <= 0.5)")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default=os.path.join(HERE, "out", "full", "results.json"))
    ap.add_argument("--img-dir", default=os.path.join(ROOT, "docs", "results"))
    ap.add_argument("--smooth", type=int, default=25, help="training-loss moving-average window (steps)")
    ap.add_argument("--prefix", default="", help="prefix of the plot file names (e.g. tpp20_)")
    args = ap.parse_args()
    with open(args.results) as f:
        doc = json.load(f)
    runs = {r["run"]: r for r in doc["runs"]}
    register_sweep_runs(runs)
    os.makedirs(args.img_dir, exist_ok=True)
    threshold = next((r["spectrum"]["relative_threshold"] for r in doc["runs"] if r.get("spectrum")), 0.01)
    plot_losses(runs, os.path.join(args.img_dir, args.prefix + "loss_curves.png"), args.smooth)
    plot_lr(runs, os.path.join(args.img_dir, args.prefix + "lr_schedule.png"))
    plot_spectra(runs, os.path.join(args.img_dir, args.prefix + "update_spectrum.png"), threshold, doc["params"]["rank"])
    text = tables(doc)
    with open(os.path.join(os.path.dirname(args.results), "results.md"), "w") as f:
        f.write(text)
    print(text)
    print(f"plots in {args.img_dir}")


if __name__ == "__main__":
    main()
