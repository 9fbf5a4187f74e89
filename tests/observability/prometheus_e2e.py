"""Integration: the real Prometheus server scraping a running `relora local` job on two workers.

Covers the Observability issue's acceptance:
  * every metric of docs/observability.md appears in a scrape of the coordinator and of each
    worker, with the documented type, labels and units (base-unit name suffixes, and values that
    are plausible only in the documented unit); counters (and histogram series) only grow across
    a merge and a checkpoint;
  * Prometheus (Debian's `prometheus`, 2.42) scrapes the coordinator and both workers, and every
    query of every dashboard panel, template variable and annotation in dashboards/*.json returns
    at least one series through its HTTP API while the job runs;
  * after the job completed (`relora local --linger` keeps the processes up), every worker still
    serves its process series (idle) and the job's final values, equal to the run summary's, the
    coordinator the job's state (completed) and last progress, and the dashboards' *Final
    evaluation* query returns the summary's final eval loss through Prometheus.

The training text is the e2e tests' synthetic text (tests/e2e/synthetic_text.py), so the test
runs in every clone. Standard library only. Environment: RELORA_BUILD_DIR (the build tree),
RELORA_PROMETHEUS (the prometheus binary; default `prometheus` on PATH). Exits 77 (ctest: skipped)
when every test was skipped.
"""
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.parse

from prom_support import (read_contract, http_get, scrape, free_port_block, tail,
                         dashboard_queries, substitute, regex_alternation)

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.abspath(os.path.join(HERE, "../.."))
sys.path.insert(0, os.path.join(SOURCE, "tests/e2e"))  # one copy of the text generator
from synthetic_text import ensure_text  # noqa: E402

BUILD = os.environ.get("RELORA_BUILD_DIR", os.path.join(SOURCE, "build"))
PROMETHEUS = os.environ.get("RELORA_PROMETHEUS") or shutil.which("prometheus") or "/usr/bin/prometheus"
RELORA = os.path.join(BUILD, "client/relora")
TEXT = ensure_text(os.path.join(BUILD, "test-cache/e2e-synthetic.txt"))  # the e2e tests' file
DOCS = os.path.join(SOURCE, "docs/observability.md")
ALERTS = os.path.join(SOURCE, "deploy/prometheus/alerts.yml")
DASHBOARDS = [os.path.join(SOURCE, "dashboards", f)
              for f in sorted(os.listdir(os.path.join(SOURCE, "dashboards"))) if f.endswith(".json")]

# The job: a tiny model (fast steps) with a short warm start and short cycles, so that evals,
# merges and checkpoints come every few seconds, and enough steps that the job is still running
# when the dashboard queries are evaluated (some panels, like rates, need a live job).
STEPS = 1010
MICRO_BATCH, SEQ_LEN, GRAD_ACCUM = 8, 64, 1
TOKENS_PER_STEP_PER_RANK = MICRO_BATCH * SEQ_LEN * GRAD_ACCUM
WARM_START, CYCLE = 10, 25          # low-rank start at 10, merges at 35, 60, 85, ... (40 cycles)
EVAL_EVERY, CHECKPOINT_EVERY = 20, 50
LR = 0.003
# How long `relora local` keeps the cluster up after the job: the checks after completion take a
# few seconds, then the test ends the linger early with SIGINT (exit code still 0); the rest is
# margin for a slow machine.
LINGER_S = 120

# Grafana's built-in interval variables, as Grafana would fill them for a short time range with
# the 1 s scrape interval used here (rate windows must cover at least two scrapes).
GRAFANA_INTERVALS = {"__rate_interval": "10s", "__interval": "5s", "__range": "1m"}

# The device-memory gauges exist on GPU workers only (docs/observability.md); this test runs the
# workers on the CPU, so they are neither expected in the scrape nor from the "Device memory"
# panel's queries.
GPU_ONLY_METRICS = {"relora_worker_device_memory_allocated_bytes",
                    "relora_worker_device_memory_reserved_bytes",
                    "relora_worker_device_memory_peak_bytes"}


def job_yaml(ckpt_dir, cache_dir):
    return f"""
name: obs-e2e
model: {{hidden_size: 64, num_layers: 2, num_heads: 2, intermediate_size: 128, vocab_size: 512}}
data:
  train: ["{TEXT}"]
  tokenizer_vocab_size: 512
  seq_len: {SEQ_LEN}
  cache_dir: "{cache_dir}"
training: {{steps: {STEPS}, micro_batch_size: {MICRO_BATCH}, grad_accum_steps: {GRAD_ACCUM}, lr: {LR},
           warmup_steps: 2, seed: 11}}
relora: {{mode: relora, rank: 8, alpha: 16, dropout: 0.0, warm_start_steps: {WARM_START},
         cycle_steps: {CYCLE}, restart_warmup_steps: 1}}
eval: {{every_steps: {EVAL_EVERY}, max_tokens: 1024}}
checkpoint: {{dir: "{ckpt_dir}", every_steps: {CHECKPOINT_EVERY}, keep: 2}}
cluster: {{workers: 2}}
"""


# --------------------------------------------------------------------------- the test
class PrometheusEndToEnd(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="relora-obs-e2e-")
        self.root = self.tmp.name
        self.procs = []
        self.logs = {}
        self.contract = read_contract()
        self.assertGreater(len(self.contract), 30, "metric tables not found in docs/observability.md")

    def tearDown(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for f in self.logs.values():
            f.close()
        self.tmp.cleanup()

    # ----------------------------------------------------------------- processes
    def start(self, name, argv):
        path = os.path.join(self.root, name + ".log")
        self.logs[name] = open(path, "wb")
        p = subprocess.Popen(argv, stdout=self.logs[name], stderr=subprocess.STDOUT, cwd=self.root)
        self.procs.append(p)
        return p

    def diagnostics(self):
        out = []
        paths = [os.path.join(self.root, n + ".log") for n in ("relora-local", "prometheus")]
        state = os.path.join(self.root, "state")
        if os.path.isdir(state):
            paths += [os.path.join(state, f) for f in sorted(os.listdir(state)) if f.endswith(".log")]
        for path in paths:
            out.append(f"--- last lines of {path} ---\n{tail(path)}")
        return "\n".join(out)

    def start_prometheus(self, base, workers):
        self.prom_port = free_port_block(1)
        config = os.path.join(self.root, "prometheus.yml")
        worker_targets = "\n".join(f"          - 127.0.0.1:{base + 1 + i}" for i in range(workers))
        # The job names are the ones the dashboards and alerts.yml select on.
        with open(config, "w") as f:
            f.write(f"""global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - {ALERTS}
scrape_configs:
  - job_name: relora-coordinator
    metrics_path: /metrics
    static_configs:
      - targets:
          - 127.0.0.1:{base}
  - job_name: relora-worker
    metrics_path: /metrics
    static_configs:
      - targets:
{worker_targets}
""")
        self.prom = self.start("prometheus", [
            PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={os.path.join(self.root, 'tsdb')}",
            f"--web.listen-address=127.0.0.1:{self.prom_port}", "--log.level=warn"])
        deadline = time.time() + 60
        while True:
            try:
                http_get(f"http://127.0.0.1:{self.prom_port}/-/ready")
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                if self.prom.poll() is not None or time.time() > deadline:
                    self.fail("Prometheus did not become ready\n" + self.diagnostics())
                time.sleep(0.2)

    def local_running(self, context=""):
        if self.local.poll() is not None:
            self.fail(f"relora local exited ({self.local.returncode}) before the checks were done; "
                      f"the job is too short for this machine or failed\n{context}" + self.diagnostics())

    # ----------------------------------------------------------------- Prometheus API
    def api(self, path, **params):
        query = urllib.parse.urlencode(params, doseq=True)
        url = f"http://127.0.0.1:{self.prom_port}/api/v1/{path}?{query}"
        try:
            body = json.loads(http_get(url, timeout=30))
        except urllib.error.HTTPError as e:
            body = json.loads(e.read().decode("utf-8"))
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr):
        data = self.api("query", query=expr)
        if data["resultType"] in ("vector", "matrix"):
            return data["result"]
        return [data["result"]]  # scalar or string: one value

    def wait_for_query(self, expr, timeout, what):
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.local_running()
            if self.query(expr):
                return
            time.sleep(0.5)
        self.fail(f"timed out waiting for {what} ({expr}) in Prometheus\n" + self.diagnostics())

    # ----------------------------------------------------------------- scrapes
    def endpoints(self):
        """{process name: port}; worker names are the ports' order (base + 1 + i)."""
        ports = {"coordinator": self.base}
        for i in range(self.workers):
            ports[f"worker {i}"] = self.base + 1 + i
        return ports

    def expected(self, process):
        kind = "coordinator" if process == "coordinator" else "worker"
        return {n: c for n, c in self.contract.items() if c[0] == kind and n not in GPU_ONLY_METRICS}

    def contract_problems(self, process, s):
        """What of the contract a scrape of `process` lacks or gets wrong ([] when all is fine)."""
        problems = []
        for name, (_, kind, unit, labels) in sorted(self.expected(process).items()):
            got = s.types.get(name)
            if got is None:
                problems.append(f"{name}: missing")
                continue
            if got != kind:
                problems.append(f"{name}: TYPE {got}, documented {kind}")
            names = [name + x for x in ("_bucket", "_sum", "_count")] if kind == "histogram" else [name]
            for sample in names:
                series = s.series(sample)
                if not series:
                    problems.append(f"{sample}: no samples")
                for lbl, _ in series:
                    keys = set(lbl) - ({"le"} if sample.endswith("_bucket") else set())
                    if keys != labels:
                        problems.append(f"{sample}{lbl}: labels {sorted(keys)}, documented {sorted(labels)}")
                    if "job" in lbl:
                        problems.append(f"{sample}{lbl}: carries a 'job' label")
            # Units: the name says the base unit (docs: "values are in base units (seconds,
            # bytes, ratios 0-1), counters end in _total").
            stem = name[:-len("_total")] if name.endswith("_total") else name
            if kind == "counter" and not name.endswith("_total"):
                problems.append(f"{name}: a counter whose name does not end in _total")
            if kind != "counter" and name.endswith("_total"):
                problems.append(f"{name}: a {kind} whose name ends in _total")
            if unit.startswith("seconds") and not stem.endswith("_seconds"):
                problems.append(f"{name}: unit {unit} but the name does not end in _seconds")
            if unit == "bytes" and not stem.endswith("_bytes"):
                problems.append(f"{name}: unit bytes but the name does not end in _bytes")
            if "(Unix time)" in unit and not stem.endswith("_timestamp_seconds"):
                problems.append(f"{name}: a Unix time whose name does not end in _timestamp_seconds")
        kind = "coordinator" if process == "coordinator" else "worker"
        for family in sorted(s.types):
            if family.startswith("relora_") and self.contract.get(family, (None,))[0] != kind:
                problems.append(f"{family}: not in the {kind} metric table of docs/observability.md")
        problems += self.value_problems(process, s)
        return problems

    def value_problems(self, process, s):
        """Values that make sense only in the documented unit."""
        problems = []
        elapsed = s.when - self.job_started + 5
        for name, (_, kind, unit, _) in self.expected(process).items():
            if kind == "histogram":
                for lbl, count in s.series(name + "_count"):
                    buckets = sorted(((float(b["le"]), v) for b, v in s.series(name + "_bucket")
                                      if {k: w for k, w in b.items() if k != "le"} == lbl))
                    if not buckets or buckets[-1][0] != math.inf or buckets[-1][1] != count:
                        problems.append(f"{name}{lbl}: +Inf bucket != _count ({buckets[-1:]} vs {count})")
                    if any(b[1] > a[1] for b, a in zip(buckets, buckets[1:])):
                        problems.append(f"{name}{lbl}: buckets are not cumulative")
                    total = s.value(name + "_sum", **lbl)
                    # Durations in seconds: the per-rank sum of a per-step duration cannot exceed
                    # the job's wall time (it would, by 1000x, in milliseconds). RPC durations of
                    # concurrent calls add up, hence the factor for the coordinator.
                    limit = elapsed * (20 if name == "relora_coordinator_rpc_duration_seconds" else 1)
                    if unit == "seconds" and total is not None and not 0 <= total <= limit:
                        problems.append(f"{name}_sum{lbl} = {total}: not seconds within the {elapsed:.0f} s run")
                continue
            for lbl, v in s.series(name):
                where = f"{name}{lbl} = {v}"
                if not math.isfinite(v):
                    problems.append(f"{where}: not finite")
                    continue
                if kind == "counter" and v < 0:
                    problems.append(f"{where}: a negative counter")
                if "(Unix time)" in unit and not self.job_started - 120 <= v <= s.when + 5:
                    problems.append(f"{where}: not a Unix time in seconds during the run")
                elif unit.startswith("seconds") and kind == "counter" and v > elapsed:
                    problems.append(f"{where}: more seconds than the run has lasted ({elapsed:.0f} s)")
                if unit == "bytes" and v < 0:
                    problems.append(f"{where}: negative bytes")
                if unit == "1" and v != 1:
                    problems.append(f"{where}: an info metric must be 1")
        if process != "coordinator":
            step = s.value("relora_worker_step")
            tokens = s.value("relora_worker_tokens_total")
            if step is not None and tokens is not None:
                # Tokens, not samples or batches (the counter is bumped just before the gauge).
                if tokens not in (step * TOKENS_PER_STEP_PER_RANK, (step + 1) * TOKENS_PER_STEP_PER_RANK):
                    problems.append(f"relora_worker_tokens_total = {tokens} at step {step}: expected "
                                    f"{TOKENS_PER_STEP_PER_RANK} tokens per step per rank")
            if s.value("relora_worker_total_steps") not in (None, STEPS):
                problems.append(f"relora_worker_total_steps = {s.value('relora_worker_total_steps')}, job has {STEPS}")
            rss, limit = s.value("relora_worker_resident_memory_bytes"), s.value("relora_worker_memory_limit_bytes")
            peak = s.value("relora_worker_resident_memory_peak_bytes")
            if None not in (rss, peak, limit):
                # A LibTorch process is far above 16 MiB; in KiB it would read below.
                if not (16 << 20) < rss <= limit or not (16 << 20) < peak <= limit:
                    problems.append(f"memory: rss {rss:.0f}, peak {peak:.0f}, limit {limit:.0f}: not bytes "
                                    f"(16 MiB < rss, peak <= limit)")
                if peak < rss:
                    problems.append(f"relora_worker_resident_memory_peak_bytes {peak:.0f} < "
                                    f"relora_worker_resident_memory_bytes {rss:.0f}: the peak is below the "
                                    f"current resident set size")
            mfu = s.value("relora_worker_model_flops_utilization")
            if mfu is not None and not 0 <= mfu <= 1:
                problems.append(f"relora_worker_model_flops_utilization = {mfu}: not a ratio 0-1")
            lr = s.value("relora_worker_learning_rate")
            if lr is not None and not 0 <= lr <= LR * 1.0001:
                problems.append(f"relora_worker_learning_rate = {lr}: outside 0..{LR}")
            loss, ppl = s.value("relora_worker_eval_loss"), s.value("relora_worker_eval_perplexity")
            if loss is not None and ppl is not None and abs(math.exp(loss) - ppl) > 1e-6 * ppl:
                problems.append(f"relora_worker_eval_perplexity = {ppl} != exp(eval loss {loss})")
            trainable, params = s.value("relora_worker_trainable_parameters"), s.value("relora_worker_parameters")
            if trainable is not None and params is not None and not 0 < trainable <= params:
                problems.append(f"parameters: trainable {trainable} of {params}")
            ranks = {dict(fl)["rank"] for (n, fl) in s.samples if n.startswith("relora_worker_") and "rank" in dict(fl)}
            if len(ranks) > 1 or not ranks <= {str(r) for r in range(self.workers)}:
                problems.append(f"{process}: rank labels {sorted(ranks)} (one rank per worker, 0..{self.workers - 1})")
        return problems

    def scrape_all(self):
        return {proc: scrape(port) for proc, port in self.endpoints().items()}

    def wait_for_complete_scrapes(self, timeout, grace=5):
        """Scrapes every endpoint until each shows the whole contract. Returns (scrapes, problems):
        problems is [] unless every metric has been present for `grace` seconds and something
        else (a unit, a label) is still wrong, so that the rest of the test still runs and one
        run reports everything."""
        deadline = time.time() + timeout
        best = None          # the problems of the best scrape so far (fewest problems)
        all_present = None   # when every metric of the contract was first there
        while True:
            self.local_running("the best scrapes of every endpoint showed:\n  " + "\n  ".join(best or []) + "\n")
            try:
                scrapes = self.scrape_all()
            except (urllib.error.URLError, ConnectionError, OSError) as e:
                scrapes = None
                best = best or [f"scrape failed: {e}"]
            if scrapes:
                problems = [f"{proc}: {p}" for proc, s in scrapes.items() for p in self.contract_problems(proc, s)]
                if not problems:
                    return scrapes, []
                if best is None or len(problems) < len(best) or best[0].startswith("scrape failed"):
                    best = problems
                if not any(p.endswith((": missing", ": no samples")) for p in problems):
                    all_present = all_present or time.time()
                    if time.time() - all_present > grace:
                        return scrapes, problems
            if time.time() > deadline:
                self.fail("the scrapes never showed the whole contract; the best showed:\n  "
                          + "\n  ".join(best) + "\n" + self.diagnostics())
            time.sleep(0.5)

    @staticmethod
    def job_total(scrapes, name):
        return max((v for proc, s in scrapes.items() if proc != "coordinator" for _, v in s.series(name)),
                   default=0)

    # ----------------------------------------------------------------- the test
    def test_prometheus_scrapes_a_running_job_and_every_dashboard_query_has_series(self):
        self.assertTrue(os.access(PROMETHEUS, os.X_OK),
                        f"{PROMETHEUS}: not found; install the Debian package 'prometheus' (scripts/setup.sh)")
        self.workers = 2
        self.base = free_port_block(1 + self.workers)
        self.start_prometheus(self.base, self.workers)

        job = os.path.join(self.root, "obs-e2e.yaml")
        with open(job, "w") as f:
            f.write(job_yaml(os.path.join(self.root, "runs/obs-e2e"), os.path.join(self.root, "cache")))
        summary_path = os.path.join(self.root, "summary.json")
        self.job_started = time.time()
        self.local = self.start("relora-local", [
            RELORA, "local", job, "--workers", str(self.workers), "--metrics-port-base", str(self.base),
            "--state-dir", os.path.join(self.root, "state"), "--summary-json", summary_path,
            "--linger", f"{LINGER_S}s"])

        # 1. Direct scrapes: the whole contract on each process once the job has evaluated and
        #    merged once (eval loss and effective rank exist from then on) ...
        first, failures = self.wait_for_complete_scrapes(timeout=240)
        merges0 = self.job_total(first, "relora_worker_merges_total")
        checkpoints0 = self.job_total(first, "relora_worker_checkpoints_total")
        # ... and again after at least one more merge and one more checkpoint.
        deadline = time.time() + 240
        while True:
            self.local_running()
            second = self.scrape_all()
            if (self.job_total(second, "relora_worker_merges_total") > merges0
                    and self.job_total(second, "relora_worker_checkpoints_total") > checkpoints0):
                break
            if time.time() > deadline:
                self.fail(f"no merge and checkpoint after merges={merges0} checkpoints={checkpoints0}\n"
                          + self.diagnostics())
            time.sleep(0.5)
        def shape(problem):  # the same problem with other numbers is reported once
            return re.sub(r"[0-9.e+-]+", "#", problem)
        seen = {shape(p) for p in failures}
        problems = [f"{proc}: {p}" for proc, s in second.items() for p in self.contract_problems(proc, s)
                    if shape(f"{proc}: {p}") not in seen]
        # Counters (and the cumulative series of histograms) never decrease, and no series that
        # was there disappears while the job runs.
        for proc, s1 in first.items():
            s2 = second[proc]
            for (name, labels), v1 in s1.samples.items():
                family = s1.family_of(name)
                if s1.types.get(family) not in ("counter", "histogram"):
                    continue
                v2 = s2.samples.get((name, labels))
                if v2 is None:
                    problems.append(f"{proc}: {name}{dict(labels)} vanished between the scrapes")
                elif v2 < v1:
                    problems.append(f"{proc}: {name}{dict(labels)} decreased {v1} -> {v2} across a merge "
                                    f"and a checkpoint")
        failures += problems

        # 2. Prometheus: wait until it has scraped two merges, an evaluation and a checkpoint.
        self.wait_for_query("max(relora_worker_merges_total) >= 2", 180, "two merges")
        self.wait_for_query("count(relora_worker_eval_loss) >= 2", 60, "an evaluation on both ranks")
        self.wait_for_query("max(relora_worker_checkpoints_total) >= 1", 60, "a checkpoint")
        time.sleep(2)  # a couple more scrapes, so that every rate window holds two samples
        self.local_running()
        up = {r["metric"]["instance"]: r["value"][1] for r in self.query('up{job=~"relora-.*"}')}
        if sorted(up.values()) != ["1"] * (1 + self.workers) or len(up) != 1 + self.workers:
            failures.append(f"scrape targets: {up} (expected {1 + self.workers} targets up)")
        for name, (_, kind, _, _) in sorted(self.contract.items()):
            if kind in ("counter", "histogram"):
                series = name + ("_count" if kind == "histogram" else "")
                resets = self.query(f"resets({series}[10m]) > 0")
                if resets:
                    failures.append(f"{series} was reset during the run: {[r['metric'] for r in resets]}")

        devices = {r["metric"].get("device") for r in self.query("relora_worker_info")}
        cpu_only = devices == {"cpu"}
        ran = 0
        for path in DASHBOARDS:
            title, variables, queries = dashboard_queries(path)
            # Template variables, in order (the worker variable's query uses $job_id).
            values = dict(GRAFANA_INTERVALS)
            for name, q in variables:
                m = re.fullmatch(r'\s*label_values\(\s*(?:(.*),\s*)?([a-zA-Z_]\w*)\s*\)\s*', q or "")
                if not m:
                    failures.append(f"{title} / variable ${name}: not a label_values() query: {q}")
                    continue
                selector, label = m.group(1), m.group(2)
                params = {"start": time.time() - 60, "end": time.time()}
                if selector:
                    params["match[]"] = substitute(selector, values)
                found = sorted(self.api(f"label/{label}/values", **params))
                ran += 1
                if not found:
                    failures.append(f"{title} / variable ${name}: {q} returned no values")
                    values[name] = ".*"
                else:
                    values[name] = regex_alternation(found)
                if name == "worker" and len(found) != self.workers:
                    failures.append(f"{title} / variable $worker: {found}, expected {self.workers} workers")
            for where, expr in queries:
                if cpu_only and any(m in expr for m in GPU_ONLY_METRICS):
                    continue  # GPU-only gauges: empty on CPU workers by design (see above)
                q = substitute(expr, values)
                try:
                    result = self.query(q)
                except AssertionError as e:
                    failures.append(f"{where}: {e}")
                    continue
                ran += 1
                if not result:
                    failures.append(f"{where}: no series for {q}")
        self.local_running()  # the worker series were there for the whole check
        step = self.query("max(relora_worker_step)")
        print(f"\n{ran} queries evaluated by step {step[0]['value'][1] if step else '?'} of {STEPS}, "
              f"{time.time() - self.job_started:.0f} s after the start", flush=True)
        self.assertGreater(ran, 60)

        # 3. The job completes; `relora local` writes the summary, then lingers with every process up.
        deadline = self.job_started + 540
        while not os.path.exists(summary_path) or os.path.getsize(summary_path) == 0:
            if self.local.poll() is not None:
                self.fail(f"relora local exited ({self.local.returncode}) without a summary\n" + self.diagnostics())
            if time.time() > deadline:
                self.fail("the job did not complete in time\n" + self.diagnostics())
            time.sleep(0.5)
        time.sleep(0.5)  # the summary is written in one go, but let the writer finish
        summary = json.load(open(summary_path))
        self.assertTrue(summary.get("completed"), summary)
        failures += self.finished_job_problems(summary, first)
        self.local_running("the cluster must still be up (--linger) after the checks of the finished job\n")

        # 4. Ctrl-C ends the linger; the job completed, so relora local still exits 0.
        self.local.send_signal(signal.SIGINT)
        try:
            rc = self.local.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.fail("relora local did not finish\n" + self.diagnostics())
        if failures:
            self.fail(f"{len(failures)} problems ({ran} dashboard queries run):\n" + "\n".join(failures))
        self.assertEqual(rc, 0, self.diagnostics())
        self.assertEqual(summary["workers"], self.workers)
        self.assertEqual(summary["steps"], STEPS)

    def finished_job_problems(self, summary, running_scrapes):
        """What the endpoints lack after the job completed: on every worker the contract's process
        series (idle) and the job's series with its final values (the summary's), on the
        coordinator the job's state and last progress; through Prometheus, the Final evaluation
        panel's value."""
        job_ids = {lbl["job_id"] for proc, s in running_scrapes.items() if proc != "coordinator"
                   for lbl, _ in s.series("relora_worker_step")}
        if len(job_ids) != 1:
            return [f"job ids of the running job's series: {sorted(job_ids)} (expected one)"]
        job_id = job_ids.pop()
        loss = summary["eval_loss"]
        close = lambda v: v is not None and abs(v - loss) <= 1e-9 * max(1.0, abs(loss))  # noqa: E731
        # The coordinator completes the job on rank 0's report; the other ranks report a moment
        # later, so their scrapes get a few seconds to settle.
        deadline = time.time() + 15
        while True:
            problems = []
            for proc, s in sorted(self.scrape_all().items()):
                # The whole contract, as while the job ran (types, labels, units, values) ...
                problems += [f"after the job, {proc}: {p}" for p in self.contract_problems(proc, s)]
                # ... and the finished job's values.
                if proc == "coordinator":
                    want = {("relora_coordinator_job_state", (("job_id", job_id), ("state", "completed"))): 1}
                    progress = s.value("relora_coordinator_job_last_progress_timestamp_seconds", job_id=job_id)
                    if progress is None or not self.job_started <= progress <= s.when + 1:
                        problems.append(f"after the job, coordinator: last progress of {job_id} = {progress}")
                else:
                    j = (("job_id", job_id),)
                    want = {("relora_worker_state", (("state", "idle"),)): 1,
                            ("relora_worker_state", (("state", "training"),)): 0,
                            ("relora_worker_jobs_total", (("outcome", "completed"),)): 1,
                            ("relora_worker_jobs_total", (("outcome", "failed"),)): 0,
                            ("relora_worker_step", j): STEPS,
                            ("relora_worker_total_steps", j): STEPS,
                            ("relora_worker_step_duration_seconds_count", j): STEPS,
                            ("relora_worker_tokens_total", j): STEPS * TOKENS_PER_STEP_PER_RANK,
                            ("relora_worker_merges_total", j): summary["merges"],
                            ("relora_worker_optimizer_resets_total", j): summary["optimizer_resets"],
                            ("relora_worker_eval_perplexity", j): summary["eval_perplexity"]}
                    # The final evaluation is the job's last one: the summary's, on every rank.
                    if not close(s.value("relora_worker_eval_loss", job_id=job_id)):
                        problems.append(f"after the job, {proc}: relora_worker_eval_loss = "
                                        f"{s.value('relora_worker_eval_loss', job_id=job_id)}, the summary's is {loss}")
                for (name, labels), expected in want.items():
                    got = s.value(name, **dict(labels))
                    if got is None or abs(got - expected) > 1e-9 * max(1.0, abs(expected)):
                        problems.append(f"after the job, {proc}: {name}{dict(labels)} = {got}, expected {expected}")
            if not problems or time.time() > deadline:
                break
            time.sleep(0.5)
        # Through Prometheus: the dashboards' Final evaluation query, once it has scraped the end.
        finals = [e for path in DASHBOARDS for w, e in dashboard_queries(path)[2] if "'Final evaluation' A" in w]
        if not finals:
            return problems + ["no dashboard has a 'Final evaluation' panel"]
        expr = substitute(finals[0], dict(GRAFANA_INTERVALS, job_id=regex_alternation([job_id]), worker=".*"))
        deadline = time.time() + 15
        while not close(next((float(r["value"][1]) for r in self.query(expr)), None)):
            if time.time() > deadline:
                problems.append(f"Final evaluation panel: {expr} = {self.query(expr)}, "
                                f"the summary's eval loss is {loss}")
                break
            time.sleep(0.5)
        return problems


def main():
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[__name__])
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    if not result.wasSuccessful():
        return 1
    return 77 if result.skipped and result.testsRun == len(result.skipped) else 0


if __name__ == "__main__":
    sys.exit(main())
