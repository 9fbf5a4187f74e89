#!/usr/bin/env python3
"""Runs the throughput/memory benchmark: every configuration in its own process, ours
(relora-bench, the real Trainer) and the eager PyTorch reference (bench/eager_reference.py) side by
side, then writes <out>/results.json and <out>/results.md with the target ratios.

Use bench/run.sh, which builds relora-bench first. See docs/benchmarks.md for what is measured.
Standard library only (runs under any python3); the eager runs need Debian's python3-torch.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# Thread settings, the same for both implementations ("each side at its best"):
#   1: LibTorch/PyTorch intra-op threads 1; OpenBLAS keeps its own pool (one thread per core).
#   2: intra-op threads 2 with OMP_WAIT_POLICY=PASSIVE, so that idle OpenMP workers sleep
#      instead of spinning against OpenBLAS's threads (without it, 2 threads ran ~5x slower here).
#   1c: one thread for everything (intra-op 1, OPENBLAS_NUM_THREADS=1). On a busy machine this is
#      often the fastest (a 2-thread GEMM stalls whenever one of its threads is preempted), and its
#      CPU seconds per step measure the work itself, which other processes competing for the cores
#      cannot inflate the way they inflate wall-clock step times (see tokens per CPU-second).
THREAD_SETTINGS = {
    "1": {"threads": 1, "env": {}},
    "2": {"threads": 2, "env": {"OMP_WAIT_POLICY": "PASSIVE"}},
    "1c": {"threads": 1, "env": {"OPENBLAS_NUM_THREADS": "1"}},
}
SPEED_SETTINGS = ("1", "2", "1c")  # the thread settings that compete for "best"
# Steps per configuration (warm-up, timed) in the full run: tens of seconds each on 2 cores.
STEPS = {"micro": (2, 6), "60m": (2, 4), "1b3-l8": (1, 4), "1b3": (1, 3)}
# Collective traffic runs (relora-bench --world N): per configuration, the world sizes and the
# optimizers measured, each in full and relora mode ("ddp": plain data parallelism, replicated
# optimizer; "zero1": cluster.shard_optimizer; "fsdp": ZeRO-1 plus cluster.shard_frozen_weights,
# relora mode only). micro and 60m compare ZeRO-1 with DDP at 2 and 4 ranks (targets 6a-6c) and
# measure the frozen-weight share of fsdp (6d); the 1.3B layer shape only gives target 4 (ReLoRA / full-rank bytes), which
# does not depend on the optimizer: DDP on 2 ranks.


from traffic import (LAYOUT_FLAGS, TRAFFIC_CONFIGS, TRAFFIC_PLAN, fmt, frozen_share, ok, sent_total,  # noqa: E402
                     state_share,
                     traffic, traffic_markdown, traffic_pairs, traffic_runs, traffic_steps)


def now():
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def load_average():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def machine_info():
    info = {"nproc": os.cpu_count(), "platform": platform.platform()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    info["mem_total_bytes"] = int(line.split()[1]) * 1024
                if line.startswith("MemAvailable"):
                    info["mem_available_bytes"] = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "worker", "bench", "common"],
                               capture_output=True, text=True).stdout.strip()
        info["commit"] = commit + ("+local changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


class Runner:
    def __init__(self, args):
        self.args = args
        self.out = args.out
        self.raw = os.path.join(self.out, "raw")
        os.makedirs(self.raw, exist_ok=True)
        self.runs = []
        self.eager_bf16 = True  # cleared if eager bf16 autocast fails once
        self.base_env = dict(os.environ)
        self.base_env.setdefault("OPENBLAS_NUM_THREADS", str(os.cpu_count() or 1))
        self.base_env.pop("OMP_WAIT_POLICY", None)
        self.base_env.pop("OMP_NUM_THREADS", None)

    def run(self, impl, config, mode, dtype, setting, extra=(), label=None, world=1, optimizer="ddp"):
        ts = THREAD_SETTINGS[setting]
        name = label or f"{impl}-{config}-{mode}-{dtype}-t{setting}"
        if world > 1:
            name += f"-w{world}-{optimizer}"
            extra = list(extra) + ["--world", str(world), "--no-peak"] + LAYOUT_FLAGS[optimizer]
        out_json = os.path.join(self.raw, name + ".json")
        if os.path.exists(out_json):
            os.remove(out_json)
        if impl == "ours":
            cmd = [self.args.bench_bin]
        else:
            cmd = [self.args.python, os.path.join(HERE, "eager_reference.py")]
        cmd += ["--config", config, "--mode", mode, "--dtype", dtype, "--threads", str(ts["threads"]),
                "--json", out_json] + list(extra)
        env = dict(self.base_env, **ts["env"])
        print(f"[{now()}] {name}: {' '.join(cmd)}", flush=True)
        t0 = time.time()
        record = {"name": name, "impl": impl, "config": config, "mode": mode, "dtype": dtype,
                  "thread_setting": setting, "env": ts["env"], "command": " ".join(cmd), "world": world,
                  "optimizer": optimizer if world > 1 else None}
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=self.args.timeout)
            record["wall_seconds"] = round(time.time() - t0, 1)
            if proc.returncode != 0 or not os.path.exists(out_json):
                record["error"] = (proc.stderr or proc.stdout)[-2000:]
                print(f"  FAILED (exit {proc.returncode}): {record['error'][-400:]}", flush=True)
            else:
                with open(out_json) as f:
                    record["result"] = derive(json.load(f))
                print("  " + proc.stdout.strip().splitlines()[-1], flush=True)
        except subprocess.TimeoutExpired:
            record["error"] = f"timed out after {self.args.timeout} s"
            print("  " + record["error"], flush=True)
        self.runs.append(record)
        return record

    def peaks(self, tag):
        found = []
        for setting in SPEED_SETTINGS if not self.args.quick else ["1"]:
            ts = THREAD_SETTINGS[setting]
            out_json = os.path.join(self.raw, f"peak-{tag}-t{setting}.json")
            cmd = [self.args.bench_bin, "--peak-only", "--threads", str(ts["threads"]), "--json", out_json]
            proc = subprocess.run(cmd, env=dict(self.base_env, **ts["env"]), capture_output=True, text=True)
            if proc.returncode == 0:
                with open(out_json) as f:
                    p = json.load(f)["peak"]
                p.update({"thread_setting": setting, "when": tag})
                found.append(p)
                print(f"[{now()}] matmul peak ({tag}, threads {setting}): fp32 {p['fp32_gflops']:.0f} GFLOP/s, "
                      f"bf16 {p['bf16_gflops']:.0f} GFLOP/s", flush=True)
        return found


def derive(x):
    """Adds load-robust figures: tokens/s of the fastest timed step, and tokens per CPU-second
    (median CPU time of the timed steps, all threads of the process)."""
    w = x["warmup_steps"]
    timed = x["step_seconds"][w:]
    if timed:
        x["tokens_per_second_best_step"] = x["tokens_per_step"] / min(timed)
    cpu = x.get("step_cpu_seconds", [])[w:]
    if cpu and statistics.median(cpu) > 0:
        x["step_cpu_seconds_median"] = statistics.median(cpu)
        x["tokens_per_cpu_second"] = x["tokens_per_step"] / statistics.median(cpu)
    return x


def best(runs, impl, config, mode, dtype, settings=SPEED_SETTINGS, key="tokens_per_second"):
    """The single-process run with the highest `key` among the thread settings tried."""
    cands = [r for r in runs if ok(r) and r["impl"] == impl and r["config"] == config and r["mode"] == mode
             and r["dtype"] == dtype and r["thread_setting"] in settings and key in r["result"]
             and r.get("world", 1) == 1]
    return max(cands, key=lambda r: r["result"][key]) if cands else None


def verdict(value, target, higher_is_better):
    if value is None:
        return "MISSING"
    return "PASS" if (value >= target if higher_is_better else value <= target) else "SHORT"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench-bin", help="the relora-bench executable (required unless --reaggregate)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--quick", action="store_true", help="tiny configuration, a couple of steps (smoke test)")
    ap.add_argument("--python", default="/usr/bin/python3", help="interpreter with PyTorch for the eager runs")
    ap.add_argument("--no-eager", action="store_true")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per process")
    ap.add_argument("--rounds", type=int, default=1, help="repetitions of the fp32 micro/60m matrix")
    ap.add_argument("--reaggregate", metavar="RESULTS_JSON",
                    help="run nothing: recompute figures, targets and markdown from an earlier results.json")
    ap.add_argument("--add-traffic", action="store_true",
                    help="with --reaggregate and --bench-bin: (re)measure only the collective traffic runs "
                         "(2 and 4 ranks, DDP and ZeRO-1; byte counts do not depend on machine load) and put "
                         "them in place of that run's")
    ap.add_argument("--traffic-configs", default=",".join(TRAFFIC_CONFIGS),
                    help="configurations of the traffic runs, comma-separated (default %(default)s; without "
                         "1b3-l8 target 4 is not measured); --quick always measures quick")
    args = ap.parse_args()
    args.out = os.path.abspath(args.out)
    if not args.bench_bin and not args.reaggregate:
        ap.error("--bench-bin is required")
    if args.add_traffic and not (args.reaggregate and args.bench_bin):
        ap.error("--add-traffic needs --reaggregate RESULTS_JSON and --bench-bin")
    traffic_configs = [c for c in args.traffic_configs.split(",") if c]
    unknown = [c for c in traffic_configs if c not in TRAFFIC_PLAN or c == "quick"]
    if unknown:
        ap.error(f"--traffic-configs: unknown {', '.join(unknown)} (choose from "
                 f"{', '.join(c for c in TRAFFIC_PLAN if c != 'quick')})")

    eager = (not args.no_eager and not args.reaggregate and
             subprocess.run([args.python, "-c", "import torch"], capture_output=True).returncode == 0)
    if not args.no_eager and not args.reaggregate and not eager:
        print(f"eager reference skipped: {args.python} cannot import torch (install python3-torch)", flush=True)

    r = Runner(args)
    machine_start = machine_info()
    traffic_measured = None  # when the traffic runs were measured apart from the rest (--add-traffic)
    if args.reaggregate:
        # Recompute the figures, targets and markdown from an earlier run's results.json.
        with open(args.reaggregate) as f:
            old = json.load(f)
        r.runs = [x for x in old["runs"] if not (args.add_traffic and x.get("world", 1) > 1)]
        for x in r.runs:
            if ok(x):
                derive(x["result"])
        peaks = old["peaks"]
        started, finished = old["started"], old["finished"]
        load_start, load_end = old["load_average_start"], old["load_average_end"]
        args.quick = old["quick"]
        machine_start = old["machine"]
        acceptance = ({"ratio_config": "quick", "shape_config": "quick", "big": None} if args.quick else
                      {"ratio_config": "1b3-l8", "shape_config": "1b3-l8", "big": "1b3"})
        if args.add_traffic:
            traffic_started = now()
            traffic_runs(r, ["quick"] if args.quick else traffic_configs,
                         (lambda config: ["--steps", "2", "--warmup-steps", "1"]) if args.quick else traffic_steps)
            traffic_measured = {"started": traffic_started, "finished": now(),
                                "commit": machine_info().get("commit"), "load_average_end": load_average()}
        else:
            traffic_measured = old.get("traffic_measured")
    else:
        started, load_start = now(), load_average()
        peaks = r.peaks("start")

        if args.quick:
            steps = ["--steps", "2", "--warmup-steps", "1"]
            for mode in ("full", "relora"):
                for setting in ("1", "1c"):
                    r.run("ours", "quick", mode, "fp32", setting, steps)
                    if eager:
                        r.run("eager", "quick", mode, "fp32", setting, steps + ["--no-peak"])
            for mode in ("full", "relora"):
                r.run("ours", "quick", mode, "bf16", "1", steps)
            traffic_runs(r, ["quick"], lambda config: steps)
            acceptance = {"ratio_config": "quick", "shape_config": "quick", "big": None}
        else:
            def steps(config):
                return ["--warmup-steps", str(STEPS[config][0]), "--steps", str(STEPS[config][1])]

            # micro and 60m in fp32 (the targets): every thread setting, ours and eager interleaved so
            # that both see similar machine load; --rounds repeats the matrix (the best counts: a
            # shared machine only ever makes a run slower).
            for rnd in range(1, args.rounds + 1):
                settings = list(THREAD_SETTINGS) if rnd % 2 else list(reversed(list(THREAD_SETTINGS)))
                tag = f"-r{rnd}" if args.rounds > 1 else ""
                for config in ("micro", "60m"):
                    for mode in ("full", "relora"):
                        for setting in settings:
                            r.run("ours", config, mode, "fp32", setting, steps(config),
                                  label=f"ours-{config}-{mode}-fp32-t{setting}{tag}")
                            if eager:
                                r.run("eager", config, mode, "fp32", setting, steps(config) + ["--no-peak"],
                                      label=f"eager-{config}-{mode}-fp32-t{setting}{tag}")
            # bf16 autocast (information): oneDNN's bf16 products run on the intra-op threads, so at
            # thread setting 2; eager too where its autocast works.
            for config in ("micro", "60m"):
                for mode in ("full", "relora"):
                    r.run("ours", config, mode, "bf16", "2", steps(config))
                    if eager and r.eager_bf16:
                        rec = r.run("eager", config, mode, "bf16", "2", steps(config) + ["--no-peak"])
                        if not ok(rec):
                            r.eager_bf16 = False  # autocast does not work there: do not retry
            # The 1.3B layer shape: fp32 at every thread setting, bf16 at setting 2.
            for mode in ("full", "relora"):
                for setting in THREAD_SETTINGS:
                    r.run("ours", "1b3-l8", mode, "fp32", setting, steps("1b3-l8"))
                r.run("ours", "1b3-l8", mode, "bf16", "2", steps("1b3-l8"))
            # Collective traffic on 2 and 4 ranks, measured in the process group: micro and 60m with
            # DDP and ZeRO-1, the 1.3B layer shape with DDP on 2 ranks (target 4); few steps (every
            # step sends the same bytes).
            traffic_runs(r, traffic_configs, traffic_steps)
            # The 1b3 preset (the paper's 1.3B) in relora mode: does it train here?
            b = best(r.runs, "ours", "1b3-l8", "relora", "fp32")
            r.run("ours", "1b3", "relora", "fp32", b["thread_setting"] if b else "1", steps("1b3"))
            # The CPU memory target (target 7): the same with the frozen W stored in bf16.
            r.run("ours", "1b3", "relora", "bf16", "2", steps("1b3"))
            acceptance = {"ratio_config": "1b3-l8", "shape_config": "1b3-l8", "big": "1b3"}
        peaks += r.peaks("end")
        finished, load_end = now(), load_average()

    # Utilisation against the best matrix-product peak seen anywhere in this run (dedicated peak
    # processes and the one each configuration measures after training), per dtype.
    peak = {d: max([p[d + "_gflops"] for p in peaks] +
                   [x["result"]["peak"][d + "_gflops"] for x in r.runs if ok(x) and "peak" in x["result"]] + [0])
            for d in ("fp32", "bf16")}
    for x in r.runs:
        if ok(x) and peak[x["dtype"]] > 0:
            x["result"]["utilisation_vs_run_peak"] = x["result"]["executed_flops_per_second"] / (peak[x["dtype"]] * 1e9)

    targets = []
    shape = acceptance["shape_config"]
    full = best(r.runs, "ours", shape, "full", "fp32")
    rel = best(r.runs, "ours", shape, "relora", "fp32")

    def res(x, key):
        return x["result"][key] if ok(x) else None

    def ratio(a, b):
        return a / b if a is not None and b else None

    def speed_ratios(num, den, config, mode_num, mode_den, dtype="fp32"):
        """(spec: median step, best thread setting each), (fastest step), (CPU time on one core)."""
        a, b = best(r.runs, num, config, mode_num, dtype), best(r.runs, den, config, mode_den, dtype)
        a1, b1 = (best(r.runs, num, config, mode_num, dtype, key="tokens_per_second_best_step"),
                  best(r.runs, den, config, mode_den, dtype, key="tokens_per_second_best_step"))
        ac, bc = (best(r.runs, num, config, mode_num, dtype, ("1c",), "tokens_per_cpu_second"),
                  best(r.runs, den, config, mode_den, dtype, ("1c",), "tokens_per_cpu_second"))
        return (ratio(res(a, "tokens_per_second"), res(b, "tokens_per_second")),
                ratio(res(a1, "tokens_per_second_best_step"), res(b1, "tokens_per_second_best_step")),
                ratio(res(ac, "tokens_per_cpu_second"), res(bc, "tokens_per_cpu_second")), a, b)

    def add_speed(tid, what, vals, goal):
        spec, fastest, cpu = vals[:3]
        targets.append({"id": tid, "what": what, "value": spec, "target": f">= {goal}",
                        "verdict": verdict(spec, goal, True)})
        targets.append({"id": tid, "what": "  same, fastest timed step of each (less exposed to load)",
                        "value": fastest, "target": f">= {goal}", "verdict": verdict(fastest, goal, True)})
        targets.append({"id": tid, "what": "  same, tokens per CPU-second on one core (load-robust)",
                        "value": cpu, "target": f">= {goal}", "verdict": verdict(cpu, goal, True)})

    add_speed("1a", f"ReLoRA / full-rank tokens/s at {shape} (fp32)",
              speed_ratios("ours", "ours", shape, "relora", "full"), 1.4)
    mem = ratio(res(rel, "peak_rss_bytes"), res(full, "peak_rss_bytes"))
    targets.append({"id": "1b", "what": f"ReLoRA / full-rank peak RSS at {shape} (fp32)", "value": mem,
                    "target": "<= 0.6", "verdict": verdict(mem, 0.6, False)})
    fb, rb = best(r.runs, "ours", shape, "full", "bf16"), best(r.runs, "ours", shape, "relora", "bf16")
    v = ratio(res(rb, "tokens_per_second"), res(fb, "tokens_per_second"))
    m = ratio(res(rb, "peak_rss_bytes"), res(fb, "peak_rss_bytes"))
    targets.append({"id": "1a'", "what": "ReLoRA / full-rank tokens/s, bf16 autocast (information)", "value": v,
                    "target": ">= 1.4", "verdict": verdict(v, 1.4, True)})
    targets.append({"id": "1b'", "what": "ReLoRA / full-rank peak RSS, bf16 autocast (information)", "value": m,
                    "target": "<= 0.6", "verdict": verdict(m, 0.6, False)})
    ratio_configs = ("quick",) if args.quick else ("micro", "60m")
    for config in ratio_configs:
        for mode, goal in (("relora", 1.3), ("full", 1.1)):
            vals = speed_ratios("ours", "eager", config, mode, mode)
            add_speed("2", f"ours / eager tokens/s, {config} {mode} fp32 (best thread setting each)", vals, goal)
            o, e = vals[3], vals[4]
            m = ratio(res(o, "peak_rss_bytes"), res(e, "peak_rss_bytes"))
            targets.append({"id": "2", "what": f"ours / eager peak RSS, {config} {mode} fp32", "value": m,
                            "target": "<= 0.8", "verdict": verdict(m, 0.8, False)})
    u = res(full, "utilisation_vs_run_peak")
    targets.append({"id": "3", "what": f"full-rank utilisation of the fp32 matmul peak at {shape}", "value": u,
                    "target": ">= 0.5", "verdict": verdict(u, 0.5, True)})
    f1 = best(r.runs, "ours", shape, "full", "fp32", key="tokens_per_second_best_step")
    u1 = (res(f1, "executed_flops_per_token") * res(f1, "tokens_per_second_best_step") / (peak["fp32"] * 1e9)
          if ok(f1) and peak["fp32"] else None)
    targets.append({"id": "3", "what": "  same, fastest timed step", "value": u1, "target": ">= 0.5",
                    "verdict": verdict(u1, 0.5, True)})
    # 4: bytes sent by rank 0 where both runs count them; payload in results from before the
    # sent-bytes counters (on 2 ranks the ring all-reduce sends its payload: the same ratio).
    tr, tf = traffic(r.runs, shape, "relora", "ddp"), traffic(r.runs, shape, "full", "ddp")
    sent = sent_total(tr) is not None and sent_total(tf) is not None
    key = "collective_sent_bytes_per_step_total" if sent else "collective_bytes_per_step_total"
    g = ratio(res(tr, key), res(tf, key))
    targets.append({"id": "4", "what": f"ReLoRA / full-rank collective bytes {'sent' if sent else '(payload)'} per "
                                       f"step at {shape}, 2 ranks (measured)",
                    "value": g, "target": "<= 0.25", "verdict": verdict(g, 0.25, False)})

    # 6: ZeRO-1 (cluster.shard_optimizer) against plain data parallelism, same configuration, mode
    # and world size: the worst case over every pair measured.
    pairs = traffic_pairs(r.runs)

    def worst(values, pick):
        """(value, where) of the worst (pick: max or min) of (value, zero run) pairs, ignoring None."""
        found = [(v, z) for v, z in values if v is not None]
        if not found:
            return None, ""
        v, z = pick(found, key=lambda f: f[0])
        return v, f" (worst: {z['config']} {z['mode']}, {z['world']} ranks)"

    scope = ", ".join(dict.fromkeys(z["config"] for z, _ in pairs)) or "micro, 60m"
    ranks = " and ".join(str(w) for w in sorted({z["world"] for z, _ in pairs})) or "2 and 4"
    v, where = worst([(ratio(sent_total(z), sent_total(d)), z) for z, d in pairs], max)
    targets.append({"id": "6a", "what": f"ZeRO-1 / DDP collective bytes sent per step, {scope} on {ranks} ranks "
                                        f"(measured){where}",
                    "value": v, "target": "<= 1.05", "verdict": verdict(v, 1.05, False)})
    v, where = worst([(state_share(z), z) for z, _ in pairs], max)
    targets.append({"id": "6b", "what": f"ZeRO-1 optimizer state, largest rank / (unsharded / world), {scope} on "
                                        f"{ranks} ranks{where}",
                    "value": v, "target": "<= 1.05", "verdict": verdict(v, 1.05, False)})
    for key, what in (("tokens_per_second", f"ZeRO-1 / DDP tokens/s, {scope} on {ranks} ranks (median step)"),
                      ("tokens_per_second_best_step", "  same, fastest timed step of each (less exposed to load)"),
                      ("tokens_per_cpu_second", "  same, tokens per CPU-second of the process (load-robust)")):
        v, where = worst([(ratio(z["result"][key], d["result"][key]), z) for z, d in pairs
                          if key in z["result"] and key in d["result"]], min)
        targets.append({"id": "6c", "what": what + where, "value": v, "target": ">= 0.9",
                        "verdict": verdict(v, 0.9, True)})
    # 6d: frozen-weight sharding (fsdp runs): the largest rank's frozen W against an exact 1/world.
    fsdp = [x for x in r.runs if ok(x) and x.get("optimizer") == "fsdp"]
    v, where = worst([(frozen_share(x), x) for x in fsdp], max)
    scope_f = ", ".join(dict.fromkeys(x["config"] for x in fsdp)) or "micro, 60m"
    ranks_f = " and ".join(str(w) for w in sorted({x["world"] for x in fsdp})) or "2 and 4"
    targets.append({"id": "6d", "what": f"frozen-weight sharding: frozen W bytes, largest rank / (whole / world), "
                                        f"{scope_f} relora on {ranks_f} ranks{where}",
                    "value": v, "target": "<= 1.05", "verdict": verdict(v, 1.05, False)})

    big = None
    if acceptance["big"]:
        rec = best(r.runs, "ours", acceptance["big"], "relora", "fp32")
        mem_total = machine_info().get("mem_total_bytes")
        mem_available = machine_start.get("mem_available_bytes")
        big = {"config": acceptance["big"], "trained": ok(rec)}
        if ok(rec):
            x = rec["result"]
            P, trainable = x["total_parameters"], x["trainable_parameters"]
            static_relora = 4 * P + 12 * trainable  # weights + (grads, 2 moments) of the trainable
            other = max(0, x["peak_rss_bytes"] - static_relora)  # activations, runtime, temporaries
            full_states = 16 * P  # fp32 weights, grads and two Adam moments for every parameter
            big.update({"steps_timed": x["timed_steps"], "optimizer_steps": len(x["step_seconds"]),
                        "tokens_per_second": x["tokens_per_second"],
                        "peak_rss_bytes": x["peak_rss_bytes"], "total_parameters": P,
                        "trainable_parameters": trainable, "full_rank_state_bytes": full_states,
                        "full_rank_estimate_bytes": full_states + other, "mem_total_bytes": mem_total,
                        "mem_available_bytes": mem_available,
                        "full_rank_fits": (full_states + other) < mem_available if mem_available else None})
        targets.append({"id": "5", "what": "1b3 preset trains in relora mode (>= 3 optimizer steps, mb 1, seq 256)",
                        "value": big.get("optimizer_steps"), "target": ">= 3 steps",
                        "verdict": verdict(big.get("optimizer_steps"), 3, True)})
        rss = res(best(r.runs, "ours", acceptance["big"], "relora", "bf16"), "peak_rss_bytes")
        gib = rss / 2**30 if rss else None
        targets.append({"id": "7", "what": "1b3 preset, relora bf16 (frozen W in bf16): peak RSS GiB, mb 1, seq 256",
                        "value": gib, "target": "<= 7.0", "verdict": verdict(gib, 7.0, False)})

    summary = {"started": started, "finished": finished, "load_average_start": load_start,
               "load_average_end": load_end, "machine": machine_start, "quick": args.quick,
               "thread_settings": THREAD_SETTINGS, "openblas_threads": r.base_env["OPENBLAS_NUM_THREADS"],
               "peaks": peaks, "peak_used": peak, "targets": targets, "big_model": big, "runs": r.runs}
    if traffic_measured:
        summary["traffic_measured"] = traffic_measured
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    md = markdown(summary)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(md)
    print(md)
    failed = [x["name"] for x in r.runs if not ok(x)]
    if failed:
        print("failed runs: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


def markdown(s):
    L = []
    m = s["machine"]
    L.append("# relora benchmark results\n")
    L.append(f"- run: {s['started']} to {s['finished']}, commit {m.get('commit', '?')}")
    L.append(f"- machine: {m.get('cpu', '?')}, {m.get('nproc')} cores, "
             f"{(m.get('mem_total_bytes') or 0) / 2**30:.1f} GiB; load average {s['load_average_start']} "
             f"(start), {s['load_average_end']} (end)")
    L.append(f"- OpenBLAS threads {s['openblas_threads']}; thread setting 1 = intra-op threads 1, "
             f"2 = intra-op threads 2 with OMP_WAIT_POLICY=PASSIVE")
    L.append(f"- matrix-product peak used for utilisation (best in this run, 2048^3): "
             f"fp32 {s['peak_used']['fp32']:.0f} GFLOP/s, bf16 {s['peak_used']['bf16']:.0f} GFLOP/s\n")
    L.append("## Best thread setting per configuration\n")
    L.append("tokens/s from the median timed step; in brackets from the fastest timed step. Utilisation = "
             "executed FLOP/s (median) / the fp32 or bf16 peak above.\n")
    L.append("| config | mode | dtype | impl | threads | tokens/s | step s (median) | exec GFLOP/s | "
             "util. | peak RSS MiB | trainable params |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|")
    seen = []
    for x in s["runs"]:
        if x.get("world", 1) > 1:
            continue
        key = (x["config"], x["mode"], x["dtype"], x["impl"])
        if key in seen:
            continue
        seen.append(key)
        b = best(s["runs"], key[3], key[0], key[1], key[2])
        if b is None:
            L.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | | failed | | | | | |")
            continue
        y = b["result"]
        L.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {b['thread_setting']} | "
                 f"{y['tokens_per_second']:.0f} ({y.get('tokens_per_second_best_step', 0):.0f}) | "
                 f"{y['step_seconds_median']:.3f} | "
                 f"{y['executed_flops_per_second'] / 1e9:.1f} | {100 * y.get('utilisation_vs_run_peak', 0):.0f}% | "
                 f"{y['peak_rss_bytes'] / 2**20:.0f} | {y['trainable_parameters'] / 1e6:.2f}M |")
    L.extend(traffic_markdown(s))
    one_core = [x for x in s["runs"] if ok(x) and x["thread_setting"] == "1c" and x.get("world", 1) == 1]
    if one_core:
        L.append("\n## One core (thread setting 1c): the work itself, robust to machine load\n")
        L.append("| config | mode | dtype | impl | CPU s/step (median) | tokens per CPU-second | wall s/step (median) |")
        L.append("|---|---|---|---|---|---|---|")
        for x in one_core:
            y = x["result"]
            L.append(f"| {x['config']} | {x['mode']} | {x['dtype']} | {x['impl']} | "
                     f"{y.get('step_cpu_seconds_median', 0):.3f} | {y.get('tokens_per_cpu_second', 0):.0f} | "
                     f"{y['step_seconds_median']:.3f} |")
    L.append("\n## Targets\n")
    L.append("| # | measure | value | target | verdict |")
    L.append("|---|---|---|---|---|")
    for t in s["targets"]:
        v = t["value"]
        L.append(f"| {t['id']} | {t['what']} | {fmt(v) if not isinstance(v, int) else v} | {t['target']} | "
                 f"{t['verdict']} |")
    b = s.get("big_model")
    if b:
        L.append("\n## 1b3 preset (24 layers, hidden 2048, vocab 32100)\n")
        if b.get("trained"):
            L.append(f"- ReLoRA (rank 128) trained {b['optimizer_steps']} optimizer steps ({b['steps_timed']} timed "
                     f"after warm-up) at "
                     f"{b['tokens_per_second']:.1f} tokens/s, peak RSS {b['peak_rss_bytes'] / 2**30:.2f} GiB; "
                     f"{b['total_parameters'] / 1e9:.3f}B parameters, {b['trainable_parameters'] / 1e6:.1f}M trainable.")
            L.append(f"- Full-rank would need {b['full_rank_state_bytes'] / 2**30:.1f} GiB for fp32 weights, grads "
                     f"and two Adam moments (16 B/param) plus about "
                     f"{(b['full_rank_estimate_bytes'] - b['full_rank_state_bytes']) / 2**30:.1f} GiB of activations "
                     f"and runtime (measured in the ReLoRA run) = {b['full_rank_estimate_bytes'] / 2**30:.1f} GiB; "
                     f"this machine has {(b['mem_total_bytes'] or 0) / 2**30:.1f} GiB, of which "
                     f"{(b.get('mem_available_bytes') or 0) / 2**30:.1f} GiB were available when the run started: "
                     f"{'it would fit' if b['full_rank_fits'] else 'it does not fit'} (not run, to keep other "
                     f"users of the machine clear of the out-of-memory killer).")
        else:
            L.append("- the ReLoRA run failed (see results.json)")
    L.append("\n## All runs\n")
    L.append("| run | tokens/s | step s (median) | steps (s) | peak RSS MiB | util. |")
    L.append("|---|---|---|---|---|---|")
    for x in s["runs"]:
        if not ok(x):
            L.append(f"| {x['name']} | failed | | | | |")
            continue
        y = x["result"]
        steps = " ".join(f"{t:.2f}" for t in y["step_seconds"])
        L.append(f"| {x['name']} | {y['tokens_per_second']:.0f} | {y['step_seconds_median']:.3f} | {steps} | "
                 f"{y['peak_rss_bytes'] / 2**20:.0f} | {100 * y.get('utilisation_vs_run_peak', 0):.0f}% |")
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    sys.exit(main())
