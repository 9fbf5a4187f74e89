"""Helpers of prometheus_e2e.py: the metric contract read from docs/observability.md, a parser
for Prometheus' text exposition format, scraping, free ports, and the queries of the Grafana
dashboards with their template variables substituted. Standard library only.
"""
import json
import os
import re
import socket
import time
import urllib.request

DOCS = os.path.join(os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "../..")),
                    "docs/observability.md")


def read_contract(path=DOCS):
    """{metric: (process, type, unit, labels)} from the metric tables of the reference doc.
    A worker's job series (section "Worker job series") carry job_id, rank and worker besides
    the table's extra labels, its process series (section "Worker process series") worker."""
    contract = {}
    section = None
    implied = {"worker job series": ("worker", {"job_id", "rank", "worker"}),
               "worker process series": ("worker", {"worker"}),
               "coordinator": ("coordinator", set())}
    for line in open(path, encoding="utf-8"):
        if line.startswith("#"):  # any heading ends a metric table's section
            section = line.lstrip("#").strip().lower()
        m = re.match(r"\|\s*`(relora_[a-z0-9_]+)`\s*\|([^|]*)\|([^|]*)\|([^|]*)\|", line)
        if not m or section not in implied:
            continue
        name, kind, unit, labels = (g.strip() for g in m.groups())
        process, always = implied[section]
        contract[name] = (process, kind, unit, set(re.findall(r"`([a-z_]+)`", labels)) | always)
    return contract


# --------------------------------------------------------------------------- text format
SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+-?\d+)?$')
LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def parse_labels(text):
    labels, pos = {}, 0
    text = text or ""
    while pos < len(text.rstrip()):
        m = LABEL_RE.match(text, pos)
        if not m:
            raise ValueError(f"bad label set {{{text}}}")
        labels[m.group(1)] = re.sub(r'\\(.)', lambda e: {"n": "\n"}.get(e.group(1), e.group(1)), m.group(2))
        pos = m.end()
    return labels


class Scrape:
    """One scrape of a /metrics endpoint in the Prometheus text format 0.0.4."""

    def __init__(self, text, when):
        self.when = when
        self.types = {}      # family -> type
        self.samples = {}    # (sample name, frozenset(labels)) -> value
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, family, kind = line.split(None, 3)
                self.types[family] = kind.strip()
            elif line.startswith("#") or not line.strip():
                continue
            else:
                m = SAMPLE_RE.match(line.strip())
                if not m:
                    raise ValueError(f"unparsable sample line: {line!r}")
                labels = frozenset(parse_labels(m.group(3)).items())
                self.samples[(m.group(1), labels)] = float(m.group(4))

    def series(self, name):
        """[(labels dict, value)] of one sample name."""
        return [(dict(lbl), v) for (n, lbl), v in self.samples.items() if n == name]

    def value(self, name, **match):
        vals = [v for lbl, v in self.series(name) if all(lbl.get(k) == w for k, w in match.items())]
        return vals[0] if len(vals) == 1 else None

    def family_of(self, sample_name):
        for suffix in ("_bucket", "_sum", "_count", ""):
            if sample_name.endswith(suffix):
                base = sample_name[:len(sample_name) - len(suffix)] if suffix else sample_name
                if base in self.types:
                    return base
        return None


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode("utf-8")


def scrape(port):
    return Scrape(http_get(f"http://127.0.0.1:{port}/metrics"), time.time())


def free_port_block(count):
    """A base port such that base .. base + count - 1 are free now (bound to port 0 for a free
    one, then checked upwards)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + count > 65535:
            continue
        ok = True
        for port in range(base, base + count):
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("0.0.0.0", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no block of free ports")


def tail(path, lines=40):
    try:
        with open(path, "rb") as f:
            return b"\n".join(f.read().splitlines()[-lines:]).decode("utf-8", "replace")
    except OSError as e:
        return f"({e})"


# --------------------------------------------------------------------------- dashboards
def panels(items):
    for p in items or []:
        yield p
        yield from panels(p.get("panels"))


def dashboard_queries(path):
    """(variables [(name, query)], queries [(where, expr)]) of one dashboard."""
    d = json.load(open(path, encoding="utf-8"))
    title = d.get("title", os.path.basename(path))
    variables = []
    for v in (d.get("templating") or {}).get("list") or []:
        if v.get("type") != "query":
            continue  # the data source variable: nothing to query
        q = v.get("query")
        variables.append((v["name"], q.get("query") if isinstance(q, dict) else q))
    queries = []
    for a in (d.get("annotations") or {}).get("list") or []:
        if a.get("expr"):
            queries.append((f"{title} / annotation '{a.get('name')}'", a["expr"]))
    for p in panels(d.get("panels")):
        for t in p.get("targets") or []:
            if t.get("expr"):
                queries.append((f"{title} / panel '{p.get('title')}' {t.get('refId', '')}", t["expr"]))
    return title, variables, queries


VAR_RE = re.compile(r'\$(?:\{([A-Za-z_]\w*)(?::\w+)?\}|([A-Za-z_]\w*))')


def substitute(expr, values):
    def one(m):
        name = m.group(1) or m.group(2)
        if name not in values:
            raise KeyError(f"no value for ${name} in {expr}")
        return values[name]
    return VAR_RE.sub(one, expr)


def regex_alternation(values):
    """A multi-value template variable as Grafana formats it for a Prometheus regex matcher,
    written inside a double-quoted PromQL string (backslashes doubled)."""
    escaped = [re.sub(r'([\\^$.|?*+()\[\]{}])', r'\\\1', v) for v in values]
    text = escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
    return text.replace("\\", "\\\\")
