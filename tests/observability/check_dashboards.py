#!/usr/bin/env python3
"""Lint the relora Grafana dashboards and alert rules against the metric contract.

Standard library only. Checks, for every dashboard JSON given:
  * the file is valid JSON with a schemaVersion, a title and a uid;
  * the template variables: `datasource` (type datasource, query prometheus), and `job_id` and
    `worker` query variables that use it;
  * unique panel ids, non-overlapping gridPos in the 24-column grid, `${datasource}` everywhere;
  * every expression references only metrics of the contract below (histograms only through
    their _bucket/_sum/_count series) and `up`, uses only labels those metrics carry, known
    values of enumerated labels, and only defined template variables;
  * every worker-metric selector filters on `$job_id` when the metric has a job_id (process
    series do not) and, in a dashboard with a worker variable, on `$worker`.
Across all inputs: every metric of the contract is used by at least one panel or alert, the metric
table of the reference doc (--docs) lists exactly the contract, and (--promtool) every dashboard
expression parses as PromQL (promtool check rules on a generated file).

  check_dashboards.py [--alerts alerts.yml] [--docs docs/observability.md] [--promtool PATH] dash.json...
  check_dashboards.py --self-test   # proves that each check rejects a broken input
"""
import argparse
import copy
import json
import os
import re
import subprocess
import sys
import tempfile

# --------------------------------------------------------------------------- the contract
WORKER_LABELS = ("job_id", "rank", "worker")   # a job's series on a worker
PROCESS_LABELS = ("worker",)                   # the worker process's own series (no job)
COORDINATOR_LABELS = ()

# name -> (type, labels beyond the scrape's `instance` and `job`)
METRICS = {
    "relora_worker_tokens_total": ("counter", WORKER_LABELS),
    "relora_worker_step_duration_seconds": ("histogram", WORKER_LABELS),
    "relora_worker_step": ("gauge", WORKER_LABELS),
    "relora_worker_total_steps": ("gauge", WORKER_LABELS),
    "relora_worker_last_step_timestamp_seconds": ("gauge", WORKER_LABELS),
    "relora_worker_train_loss": ("gauge", WORKER_LABELS),
    "relora_worker_eval_loss": ("gauge", WORKER_LABELS),
    "relora_worker_eval_perplexity": ("gauge", WORKER_LABELS),
    "relora_worker_learning_rate": ("gauge", WORKER_LABELS),
    "relora_worker_cycle": ("gauge", WORKER_LABELS),
    "relora_worker_merges_total": ("counter", WORKER_LABELS),
    "relora_worker_optimizer_resets_total": ("counter", WORKER_LABELS),
    "relora_worker_trainable_parameters": ("gauge", WORKER_LABELS),
    "relora_worker_parameters": ("gauge", WORKER_LABELS),
    "relora_worker_resident_memory_bytes": ("gauge", PROCESS_LABELS),
    "relora_worker_resident_memory_peak_bytes": ("gauge", PROCESS_LABELS),
    "relora_worker_memory_limit_bytes": ("gauge", PROCESS_LABELS),
    "relora_worker_device_memory_allocated_bytes": ("gauge", WORKER_LABELS),
    "relora_worker_device_memory_reserved_bytes": ("gauge", WORKER_LABELS),
    "relora_worker_device_memory_peak_bytes": ("gauge", WORKER_LABELS),
    "relora_worker_model_flops_utilization": ("gauge", WORKER_LABELS),
    "relora_worker_allreduce_duration_seconds": ("histogram", WORKER_LABELS),
    "relora_worker_collective_bytes_total": ("counter", WORKER_LABELS + ("kind",)),
    "relora_worker_collective_sent_bytes_total": ("counter", WORKER_LABELS + ("kind",)),
    "relora_worker_checkpoint_save_duration_seconds": ("histogram", WORKER_LABELS),
    "relora_worker_checkpoints_total": ("counter", WORKER_LABELS),
    "relora_worker_data_wait_seconds_total": ("counter", WORKER_LABELS),
    "relora_worker_data_source_tokens": ("gauge", WORKER_LABELS + ("source",)),
    "relora_worker_update_effective_rank": ("gauge", WORKER_LABELS + ("layer",)),
    "relora_worker_info": ("gauge", PROCESS_LABELS + ("device", "version")),
    "relora_worker_state": ("gauge", PROCESS_LABELS + ("state",)),
    "relora_worker_jobs_total": ("counter", PROCESS_LABELS + ("outcome",)),
    "relora_coordinator_jobs": ("gauge", ("state",)),
    "relora_coordinator_workers": ("gauge", ("state",)),
    "relora_coordinator_commands_total": ("counter", ("kind",)),
    "relora_coordinator_command_round_trip_seconds": ("histogram", COORDINATOR_LABELS),
    "relora_coordinator_heartbeat_misses_total": ("counter", COORDINATOR_LABELS),
    "relora_coordinator_rpcs_total": ("counter", ("method", "code")),
    "relora_coordinator_rpc_duration_seconds": ("histogram", ("method",)),
    "relora_coordinator_job_restarts_total": ("counter", COORDINATOR_LABELS),
    "relora_coordinator_runs_reattached_total": ("counter", COORDINATOR_LABELS),
    "relora_coordinator_job_regroups_total": ("counter", COORDINATOR_LABELS),
    "relora_coordinator_job_last_progress_timestamp_seconds": ("gauge", ("job_id",)),
    "relora_coordinator_job_state": ("gauge", ("job_id", "state")),
}

# Values an equality matcher may compare an enumerated label with.
LABEL_VALUES = {
    ("relora_coordinator_jobs", "state"): {"queued", "running", "completed", "failed", "cancelled"},
    ("relora_coordinator_workers", "state"): {"idle", "busy", "lost"},
    ("relora_coordinator_job_state", "state"): {"queued", "running", "completed", "failed", "cancelled"},
    ("relora_worker_state", "state"): {"idle", "training"},
    ("relora_worker_jobs_total", "outcome"): {"completed", "failed", "stopped"},
    ("relora_coordinator_commands_total", "kind"): {"low_rank_start", "cycle_end", "job_end"},
    ("relora_coordinator_rpcs_total", "code"): {
        "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
        "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
        "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
        "UNAUTHENTICATED"},
}

SCRAPE_LABELS = ("instance", "job")
OTHER_METRICS = {"up": ("gauge", ())}          # Prometheus' own, per target
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
DATASOURCE_REF = "${datasource}"
GRAFANA_BUILTIN_VARS = {"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s",
                        "__range_ms", "__dashboard", "__from", "__to", "__org", "__user"}
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
                   "or", "unless", "offset", "inf", "nan", "atan2"}


def series_names():
    """Every series name the contract produces -> its base metric."""
    out = {}
    for name, (kind, _) in list(METRICS.items()) + list(OTHER_METRICS.items()):
        if kind == "histogram":
            for suffix in HISTOGRAM_SUFFIXES:
                out[name + suffix] = name
        else:
            out[name] = name
    return out


SERIES = series_names()


# --------------------------------------------------------------------------- expressions
STRING_RE = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
SELECTOR_RE = re.compile(r'(?<![\w:.])([a-zA-Z_:][\w:]*)\s*\{([^{}]*)\}')
MATCHER_RE = re.compile(r'([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
VAR_RE = re.compile(r'\$(?:\{([A-Za-z_]\w*)(?::\w+)?\}|([A-Za-z_]\w*))')
IDENT_RE = re.compile(r'(?<![\w:.$])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()')
GROUPING_RE = re.compile(r'\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)')


def metric_tokens(expr):
    """Names used as metrics in a PromQL expression (string literals, label matchers, grouping
    lists, ranges and function names excluded)."""
    s = STRING_RE.sub('""', expr)
    s = re.sub(r'\{[^{}]*\}', ' ', s)
    s = re.sub(r'\[[^\[\]]*\]', ' ', s)
    s = GROUPING_RE.sub(' ', s)
    names = []
    for m in IDENT_RE.finditer(s):
        tok = m.group(1)
        if tok.lower() in PROMQL_KEYWORDS:
            continue
        names.append(tok)
    # relora_ tokens anywhere outside strings count too (belt and braces for the parser above).
    names += re.findall(r'(?<![\w:])relora_[a-z0-9_]+', STRING_RE.sub('""', expr))
    return names


def check_expr(expr, where, variables, worker_var):
    """Returns (errors, base metrics used)."""
    errors, used = [], set()
    if not expr or not expr.strip():
        return [f"{where}: empty expression"], used
    for tok in sorted(set(metric_tokens(expr))):
        if tok not in SERIES:
            hint = ""
            if tok in METRICS and METRICS[tok][0] == "histogram":
                hint = " (a histogram: use its _bucket, _sum or _count series)"
            errors.append(f"{where}: unknown metric '{tok}'{hint}")
            continue
        if tok in METRICS or SERIES[tok] in METRICS:
            used.add(SERIES[tok])
    for m in SELECTOR_RE.finditer(expr):
        name, body = m.group(1), m.group(2)
        if name not in SERIES:
            continue  # reported above
        base = SERIES[name]
        kind, labels = (METRICS.get(base) or OTHER_METRICS[base])
        allowed = set(labels) | set(SCRAPE_LABELS) | {"__name__"}
        if kind == "histogram" and name.endswith("_bucket"):
            allowed.add("le")
        matched = {}
        for mm in MATCHER_RE.finditer(body):
            label, op, value = mm.groups()
            matched[label] = (op, value)
            if label not in allowed:
                errors.append(f"{where}: metric '{name}' has no label '{label}' "
                              f"(labels: {', '.join(sorted(allowed - {'__name__'}))})")
            values = LABEL_VALUES.get((base, label))
            if values and op in ("=", "!=") and value not in values:
                errors.append(f"{where}: '{name}{{{label}{op}\"{value}\"}}': '{value}' is not one of "
                              f"{', '.join(sorted(values))}")
        if base.startswith("relora_worker_"):  # process series (no job_id) filter on the worker only
            need = (["job_id"] if "job_id" in labels else []) + (["worker"] if worker_var else [])
            for label in need:
                if matched.get(label) != ("=~", f"${label}"):
                    errors.append(f"{where}: selector '{name}{{{body}}}' must filter "
                                  f"{label}=~\"${label}\"")
    for m in VAR_RE.finditer(expr):
        var = m.group(1) or m.group(2)
        if var not in variables and var not in GRAFANA_BUILTIN_VARS:
            errors.append(f"{where}: undefined template variable '${var}'")
    return errors, used


# --------------------------------------------------------------------------- dashboards
def is_datasource_var(ds):
    if isinstance(ds, dict):
        return ds.get("uid") == DATASOURCE_REF
    return ds == DATASOURCE_REF


def all_panels(panels):
    for p in panels:
        yield p
        # Collapsed rows keep their panels inside.
        yield from all_panels(p.get("panels") or [])


def check_dashboard(d, name):
    """Returns (errors, used metrics, [(where, substituted expr)] for the PromQL check)."""
    errors, used, exprs = [], set(), []
    if not isinstance(d, dict):
        return [f"{name}: not a JSON object"], used, exprs
    if not isinstance(d.get("schemaVersion"), int):
        errors.append(f"{name}: schemaVersion missing or not an integer")
    for key in ("title", "uid"):
        if not d.get(key):
            errors.append(f"{name}: '{key}' missing")

    # Template variables.
    tvars = {v.get("name"): v for v in (d.get("templating") or {}).get("list") or []}
    ds_var = tvars.get("datasource")
    if not ds_var or ds_var.get("type") != "datasource" or ds_var.get("query") != "prometheus":
        errors.append(f"{name}: needs a template variable 'datasource' of type datasource, "
                      f"query prometheus")
    for var in ("job_id", "worker"):
        v = tvars.get(var)
        if not v or v.get("type") != "query":
            errors.append(f"{name}: needs a query template variable '{var}'")
    worker_var = "worker" in tvars
    for vname, v in tvars.items():
        if v.get("type") != "query":
            continue
        where = f"{name}: variable '{vname}'"
        if not is_datasource_var(v.get("datasource")):
            errors.append(f"{where}: datasource must be {DATASOURCE_REF}")
        query = v.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        m = re.fullmatch(r'\s*label_values\((.*),\s*(\w+)\)\s*', query or "", re.S)
        if not m:
            errors.append(f"{where}: query must be label_values(<selector>, <label>)")
            continue
        inner = m.group(1)
        for tok in metric_tokens(inner):
            if tok not in SERIES:
                errors.append(f"{where}: unknown metric '{tok}'")
        base = SERIES.get(metric_tokens(inner)[0] if metric_tokens(inner) else "")
        if base in METRICS and m.group(2) not in METRICS[base][1] + SCRAPE_LABELS:
            errors.append(f"{where}: metric '{base}' has no label '{m.group(2)}'")
        for mm in VAR_RE.finditer(inner):
            ref = mm.group(1) or mm.group(2)
            if ref not in tvars:
                errors.append(f"{where}: undefined template variable '${ref}'")

    # Panels.
    panels = list(all_panels(d.get("panels") or []))
    if not panels:
        errors.append(f"{name}: no panels")
    ids, boxes = {}, []
    for p in panels:
        pid, title = p.get("id"), p.get("title", "?")
        where = f"{name}: panel {pid} '{title}'"
        if not isinstance(pid, int):
            errors.append(f"{where}: id missing or not an integer")
        elif pid in ids:
            errors.append(f"{where}: duplicate panel id (also '{ids[pid]}')")
        else:
            ids[pid] = title
        gp = p.get("gridPos")
        if not isinstance(gp, dict) or not all(isinstance(gp.get(k), int) for k in "hwxy"):
            errors.append(f"{where}: gridPos with integer h, w, x, y missing")
        else:
            if gp["w"] < 1 or gp["h"] < 1 or gp["x"] < 0 or gp["y"] < 0 or gp["x"] + gp["w"] > 24:
                errors.append(f"{where}: gridPos {gp} outside the 24-column grid")
            for other_title, o in boxes:
                if (gp["x"] < o["x"] + o["w"] and o["x"] < gp["x"] + gp["w"]
                        and gp["y"] < o["y"] + o["h"] and o["y"] < gp["y"] + gp["h"]):
                    errors.append(f"{where}: gridPos overlaps panel '{other_title}'")
            boxes.append((title, gp))
        if p.get("type") == "row":
            continue
        if p.get("type") not in ("timeseries", "stat"):
            errors.append(f"{where}: type '{p.get('type')}' (use timeseries or stat)")
        if not is_datasource_var(p.get("datasource")):
            errors.append(f"{where}: datasource must be the variable {DATASOURCE_REF}, "
                          f"is {json.dumps(p.get('datasource'))}")
        targets = p.get("targets") or []
        if not targets:
            errors.append(f"{where}: no targets")
        ref_ids = set()
        for t in targets:
            ref = t.get("refId")
            if not ref or ref in ref_ids:
                errors.append(f"{where}: target refId '{ref}' missing or duplicate")
            ref_ids.add(ref)
            if "datasource" in t and not is_datasource_var(t["datasource"]):
                errors.append(f"{where}, target {ref}: datasource must be {DATASOURCE_REF}")
            e, u = check_expr(t.get("expr", ""), f"{where}, target {ref}", tvars, worker_var)
            errors += e
            used |= u
            exprs.append((f"{name} / {title} / {ref}", t.get("expr", "")))

    # Annotations (the built-in "Annotations & Alerts" one reads Grafana's own store).
    for a in (d.get("annotations") or {}).get("list") or []:
        if a.get("builtIn"):
            continue
        where = f"{name}: annotation '{a.get('name')}'"
        if not is_datasource_var(a.get("datasource")):
            errors.append(f"{where}: datasource must be {DATASOURCE_REF}")
        e, u = check_expr(a.get("expr", ""), where, tvars, worker_var)
        errors += e
        used |= u
        exprs.append((where, a.get("expr", "")))
    return errors, used, exprs


# --------------------------------------------------------------------------- alerts, docs
def alert_exprs(text):
    """(alert name, expr) pairs of a Prometheus rules file, without a YAML library: handles
    `expr: <one line>`, quoted, and block scalars (`expr: |` / `>`), which is what alerts.yml uses."""
    out, name = [], None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r'^\s*-?\s*(alert|record):\s*(\S+)', line)
        if m:
            name = m.group(2)
        m = re.match(r'^(\s*)-?\s*expr:\s*(.*)$', line)
        if m:
            indent, rest = len(m.group(1)), m.group(2).strip()
            if rest[:1] in ("|", ">"):
                block = []
                i += 1
                while i < len(lines) and (not lines[i].strip()
                                          or len(lines[i]) - len(lines[i].lstrip()) > indent):
                    block.append(lines[i].strip())
                    i += 1
                out.append((name, " ".join(b for b in block if b)))
                continue
            if rest[:1] in ("'", '"'):
                rest = rest[1:-1]
            out.append((name, rest))
        i += 1
    return out


def check_alerts(text, name):
    errors, used = [], set()
    exprs = alert_exprs(text)
    if not exprs:
        errors.append(f"{name}: no alert expressions found")
    for alert, expr in exprs:
        e, u = check_expr(expr, f"{name}: alert {alert}", {}, worker_var=False)
        # Alerts look at every job: the $job_id/$worker filter rule is for dashboards only.
        errors += [x for x in e if "must filter" not in x]
        used |= u
    return errors, used


def check_docs(text, name):
    """The reference doc's metric table rows look like: | `relora_...` | type | ..."""
    errors, listed = [], {}
    for m in re.finditer(r'^\|\s*`(relora_[a-z0-9_]+)`\s*\|\s*([a-z]+)\s*\|', text, re.M):
        listed[m.group(1)] = m.group(2)
    for metric, (kind, _) in METRICS.items():
        if metric not in listed:
            errors.append(f"{name}: metric table lacks {metric}")
        elif listed[metric] != kind:
            errors.append(f"{name}: {metric} is listed as {listed[metric]}, the contract says {kind}")
    for metric in listed:
        if metric not in METRICS:
            errors.append(f"{name}: metric table lists {metric}, which is not in the contract")
    return errors


def check_coverage(used):
    return [f"metric {m} is used by no dashboard panel and no alert"
            for m in sorted(set(METRICS) - used)]


def promql_substitute(expr):
    s = expr.replace("$__rate_interval", "1m").replace("${__rate_interval}", "1m")
    s = re.sub(r'\$\{?__interval\}?', "1m", s)
    s = re.sub(r'\$\{?__range\}?', "1h", s)
    return VAR_RE.sub(".*", s)


def check_promql(promtool, exprs):
    """Every expression must parse: write them as recording rules and run promtool check rules."""
    groups = [{"name": where, "rules": [{"record": f"relora_dashboard_check:expr{i}",
                                         "expr": promql_substitute(expr)}]}
              for i, (where, expr) in enumerate(exprs) if expr.strip()]
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        json.dump({"groups": groups}, f, indent=1)  # JSON is YAML
        path = f.name
    try:
        r = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True)
    finally:
        os.unlink(path)
    if r.returncode != 0:
        return [f"promtool rejects a dashboard expression:\n{r.stdout}{r.stderr}"]
    return []


# --------------------------------------------------------------------------- driver
def run(dashboards, alerts=None, docs=None, promtool=None):
    errors, used, exprs = [], set(), []
    for path in dashboards:
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except (OSError, ValueError) as e:
            errors.append(f"{path}: not valid JSON: {e}")
            continue
        e, u, x = check_dashboard(d, os.path.basename(path))
        errors += e
        used |= u
        exprs += x
    if alerts:
        with open(alerts, encoding="utf-8") as f:
            e, u = check_alerts(f.read(), os.path.basename(alerts))
        errors += e
        used |= u
    errors += check_coverage(used)
    if docs:
        with open(docs, encoding="utf-8") as f:
            errors += check_docs(f.read(), docs)
    if promtool and exprs:
        errors += check_promql(promtool, exprs)
    return errors


def self_test(dashboards, alerts, docs, promtool):
    """Break valid inputs in known ways; every break must be reported."""
    base = {p: json.load(open(p, encoding="utf-8")) for p in dashboards}
    alerts_text = open(alerts, encoding="utf-8").read() if alerts else ""
    docs_text = open(docs, encoding="utf-8").read() if docs else ""

    def first_panel(d, metric=None):
        for p in all_panels(d["panels"]):
            if p.get("type") != "row" and (metric is None or any(
                    metric in t.get("expr", "") for t in p.get("targets", []))):
                return p
        raise AssertionError(f"no panel uses {metric}")

    def mutate_target(fn, metric=None):
        def m(d):
            p = first_panel(d, metric)
            t = next(t for t in p["targets"] if metric is None or metric in t["expr"])
            t["expr"] = fn(t["expr"])
        return m

    def dup_id(d):
        ps = [p for p in all_panels(d["panels"])]
        ps[2]["id"] = ps[1]["id"]

    def hard_ds(d):
        first_panel(d)["datasource"] = {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}

    def overlap(d):
        ps = [p for p in all_panels(d["panels"]) if p["type"] != "row"]
        ps[1]["gridPos"] = dict(ps[0]["gridPos"])

    def drop_schema(d):
        del d["schemaVersion"]

    def drop_var(d):
        d["templating"]["list"] = [v for v in d["templating"]["list"] if v["name"] != "worker"]

    def drop_metric(metric):
        def m(d):
            for p in list(all_panels(d["panels"])):
                p["targets"] = [t for t in p.get("targets", []) if metric not in t["expr"]]
        return m

    cases = [
        ("duplicate panel id", dup_id, "duplicate panel id"),
        ("hard-coded datasource", hard_ds, "datasource must be"),
        ("overlapping panels", overlap, "overlaps"),
        ("no schemaVersion", drop_schema, "schemaVersion"),
        ("no worker variable", drop_var, "query template variable 'worker'"),
        ("unknown relora metric",
         mutate_target(lambda e: e.replace("relora_worker_tokens_total", "relora_worker_tokens"),
                       "relora_worker_tokens_total"), "unknown metric 'relora_worker_tokens'"),
        ("foreign metric",
         mutate_target(lambda e: e + " + process_resident_memory_bytes"), "unknown metric"),
        ("bare histogram",
         mutate_target(lambda e: e.replace("relora_worker_step_duration_seconds_bucket",
                                           "relora_worker_step_duration_seconds"),
                       "relora_worker_step_duration_seconds_bucket"), "a histogram"),
        ("unknown label", mutate_target(lambda e: e.replace('worker=~"$worker"', 'node=~"$worker"', 1),
                                        "relora_worker_tokens_total"), "has no label 'node'"),
        ("undefined variable", mutate_target(lambda e: e.replace('"$job_id"', '"$jobid"', 1),
                                             "relora_worker_tokens_total"), "undefined template variable"),
        ("missing job filter", mutate_target(lambda e: e.replace('job_id=~"$job_id", ', "", 1),
                                             "relora_worker_tokens_total"), "must filter job_id"),
        ("process series filtered by job", mutate_target(lambda e: e.replace(
            'bytes{worker=~', 'bytes{job_id=~"$job_id", worker=~', 1), "relora_worker_resident_memory_bytes"),
         "'relora_worker_resident_memory_bytes' has no label 'job_id'"),
        ("metric used nowhere", drop_metric("relora_worker_update_effective_rank"),
         "relora_worker_update_effective_rank is used by no"),
    ]
    failures = []
    clean = run_on(base, alerts_text, docs_text, None)
    if clean:
        failures.append("unmodified inputs fail:\n  " + "\n  ".join(clean))
    for label, fn, expect in cases:
        broken = copy.deepcopy(base)
        for d in broken.values():
            try:
                fn(d)
            except (AssertionError, StopIteration, IndexError, KeyError):
                pass  # this dashboard lacks what the mutation needs; another one has it
        errs = run_on(broken, alerts_text, docs_text, None)
        if not any(expect in e for e in errs):
            failures.append(f"{label}: expected an error containing '{expect}', got {errs}")
    # Alerts: a metric mentioned only in a comment is not used.
    if alerts_text:
        stripped = re.sub(r"(?m)^(\s*)expr: relora_worker_resident_memory_bytes / "
                          r"relora_worker_memory_limit_bytes > 0.9$",
                          r"\1# relora_worker_memory_limit_bytes\n\1expr: vector(0) > 1",
                          alerts_text)
        _, used_before = check_alerts(alerts_text, "alerts.yml")
        _, used_after = check_alerts(stripped, "alerts.yml")
        if stripped == alerts_text or "relora_worker_memory_limit_bytes" not in used_before:
            failures.append("self-test could not find the memory alert to break")
        elif "relora_worker_memory_limit_bytes" in used_after:
            failures.append("alert parsing: a metric named only in a comment counted as used")
        renamed = alerts_text.replace("relora_worker_train_loss", "relora_worker_training_loss")
        errs = run_on(base, renamed, docs_text, None)
        if not any("unknown metric 'relora_worker_training_loss'" in e for e in errs):
            failures.append(f"alert with an unknown metric not reported: {errs}")
    if docs_text:
        errs = run_on(base, alerts_text, docs_text.replace("`relora_worker_cycle`", "`relora_worker_cycles`"), None)
        if not any("lacks relora_worker_cycle" in e for e in errs):
            failures.append(f"doc table drift not reported: {errs}")
    if promtool:
        broken = copy.deepcopy(base)
        d = next(iter(broken.values()))
        first_panel(d)["targets"][0]["expr"] += " +"
        errs = run_on(broken, alerts_text, docs_text, promtool)
        if not any("promtool rejects" in e for e in errs):
            failures.append(f"PromQL syntax error not reported: {errs}")
    return failures, len(cases)


def run_on(dash_objs, alerts_text, docs_text, promtool):
    """run() on in-memory inputs."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for p, d in dash_objs.items():
            path = os.path.join(tmp, os.path.basename(p))
            with open(path, "w", encoding="utf-8") as f:
                json.dump(d, f)
            paths.append(path)
        alerts = docs = None
        if alerts_text:
            alerts = os.path.join(tmp, "alerts.yml")
            with open(alerts, "w", encoding="utf-8") as f:
                f.write(alerts_text)
        if docs_text:
            docs = os.path.join(tmp, "observability.md")
            with open(docs, "w", encoding="utf-8") as f:
                f.write(docs_text)
        return [e.replace(tmp + os.sep, "") for e in run(paths, alerts, docs, promtool)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dashboards", nargs="+")
    ap.add_argument("--alerts", help="Prometheus rules file whose expressions count as uses")
    ap.add_argument("--docs", help="markdown file whose metric table must match the contract")
    ap.add_argument("--promtool", help="promtool binary: also check that every expression parses")
    ap.add_argument("--self-test", action="store_true",
                    help="check that broken copies of the inputs are rejected")
    args = ap.parse_args()
    if args.self_test:
        failures, n = self_test(args.dashboards, args.alerts, args.docs, args.promtool)
        for f in failures:
            print(f"SELF-TEST FAILED: {f}", file=sys.stderr)
        if failures:
            return 1
        print(f"check_dashboards self-test: {n} dashboard mutations and the alert/doc/PromQL "
              f"mutations are all rejected")
        return 0
    errors = run(args.dashboards, args.alerts, args.docs, args.promtool)
    for e in errors:
        print(f"ERROR: {e}", file=sys.stderr)
    if errors:
        print(f"{len(errors)} error(s)", file=sys.stderr)
        return 1
    print(f"OK: {len(args.dashboards)} dashboard(s), {len(METRICS)} contract metrics all used")
    return 0


if __name__ == "__main__":
    sys.exit(main())
