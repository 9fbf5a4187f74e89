#!/usr/bin/env python3
"""Issue #20's data targets (docs/benchmarks.md, "Tokenize and streaming").

  tokenize   `relora tokenize` text rate with 1 and 2 threads (target: 2 threads >= 1.8x one),
             against SentencePiece's own `spm_encode` on the same paragraphs (target: one
             relora thread within 20% of it: the per-core rate).
  stream     a tiny job over a generated 20 GB token index (sparse shards: nothing is written but
             headers, and removed afterwards) against the same job over a 20 MB one: seconds
             until the first step (target < 5 s) and peak RSS (target: within 10%).

  bench/data/data_bench.py [--build build] [--tokenizer MODEL] [--text FILE...] [--corpus-mb 24]
                           [--stream-gb 20] [--only tokenize|stream] [--out bench/results/data.json]
The default text is the real English of ../shared/data when present (TinyStories, WikiText-2,
C4), else Debian's fortunes; the default tokenizer ../shared/data/t5-spiece/spiece.model.
"""
import argparse
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")


def default_texts():
    shared = [os.path.join(SHARED, p) for p in ("tinystories/tinystories_train_first2MiB.txt",
                                                "wikitext-2/test.txt", "wikitext-2/valid.txt",
                                                "c4-sample/c4-train.00000-of-01024.first1000.json")]
    found = [p for p in shared if os.path.exists(p)]
    return found or ["/usr/share/games/fortunes/fortunes"]


def paragraphs(paths):
    out = []
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if path.endswith(".json"):
                    out += [p for p in json.loads(line)["text"].split("\n") if p.strip()]
                elif line.strip() and line.strip() not in ("%", "<|endoftext|>"):
                    out.append(line.strip())
    return out


def timed(cmd, **kw):
    start = time.monotonic()
    subprocess.run(cmd, check=True, **kw)
    return time.monotonic() - start


def bench_tokenize(args, work):
    paras = paragraphs(args.text)
    lines, corpus, size = [], [], 0
    while size < args.corpus_mb * 1e6:  # repeat the text up to the size asked
        for p in paras:
            lines.append(p)
            corpus.append(json.dumps({"text": p}))
            size += len(p.encode())
    text_bytes = size
    with open(os.path.join(work, "lines.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    os.makedirs(os.path.join(work, "corpus"))
    with open(os.path.join(work, "corpus", "corpus.jsonl"), "w") as f:
        f.write("\n".join(corpus) + "\n")
    with open(os.path.join(work, "lines.txt")) as inp:
        spm_s = timed(["spm_encode", "--model", args.tokenizer, "--output_format=id"], stdin=inp,
                      stdout=subprocess.DEVNULL)
    result = {"text_mb": text_bytes / 1e6, "spm_encode_mb_s": text_bytes / 1e6 / spm_s, "relora": {}}
    for threads in (1, 2):
        out = os.path.join(work, f"tokens-{threads}")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        run = subprocess.run([args.relora, "-o", "json", "tokenize", os.path.join(work, "corpus"), "--tokenizer",
                              args.tokenizer, "--out", out, "--threads", str(threads)],
                             check=True, capture_output=True, text=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        r = json.loads(run.stdout)
        # CPU seconds tell what a loaded machine's wall clock cannot: work per byte does not grow
        # with threads, so on idle cores the rate scales with them.
        result["relora"][threads] = {"seconds": r["seconds"], "mb_s": r["text_bytes"] / 1e6 / r["seconds"],
                                     "cpu_seconds": cpu, "mb_per_cpu_s": r["text_bytes"] / 1e6 / cpu,
                                     "tokens": r["tokens"]}
        shutil.rmtree(out)
    one, two = result["relora"][1]["mb_s"], result["relora"][2]["mb_s"]
    result["speedup_2_threads"] = two / one
    result["per_core_vs_spm"] = one / result["spm_encode_mb_s"]
    return result


def write_sparse_index(dir, total_tokens, shard_tokens, vocab):
    """Shards whose headers are real and whose ids are holes (zeros, a valid id): no disk used."""
    os.makedirs(dir)
    shards, left, k = [], total_tokens, 0
    while left > 0:
        n = min(shard_tokens, left)
        name = f"shard-{k:05d}.tok"
        header = b"RLRATOK1" + struct.pack("<IIQQI", 1, vocab, n, n // 1000, 0)
        with open(os.path.join(dir, name), "wb") as f:
            f.write(header.ljust(64, b"\0"))
            f.truncate(64 + 4 * n)
        shards.append({"file": name, "documents": n // 1000, "tokens": n, "crc32": 0,
                       "next": {"input": 0, "document": 0}})
        left, k = left - n, k + 1
    index = {"format": "relora-token-index", "version": 1, "complete": True, "vocab_size": vocab, "eos_id": 1,
             "tokenizer": {"model": "", "fingerprint": ""}, "run_key": "", "shard_tokens": shard_tokens,
             "documents": sum(s["documents"] for s in shards), "tokens": total_tokens, "shards": shards,
             "inputs": []}
    with open(os.path.join(dir, "index.json"), "w") as f:
        json.dump(index, f, indent=2)


def run_job(args, work, name, index_dir):
    job = os.path.join(work, name + ".yaml")
    with open(job, "w") as f:
        f.write(f"""name: {name}
model: {{hidden_size: 64, num_layers: 2, num_heads: 2, intermediate_size: 128, vocab_size: 512}}
data: {{train: ["{index_dir}"], seq_len: 256}}
training: {{steps: 40, micro_batch_size: 8, lr: 0.001, warmup_steps: 4, seed: 1}}
relora: {{mode: full}}
eval: {{every_steps: 0, max_tokens: 4096}}
checkpoint: {{dir: "{os.path.join(work, name + '-run')}", every_steps: 1000, keep: 1}}
""")
    summary = os.path.join(work, name + "-summary.json")
    start = time.monotonic()
    proc = subprocess.Popen([args.worker, "--standalone", job, "--summary-json", summary],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first_step = None
    for line in proc.stdout:
        if first_step is None and "step 1/" in line:
            first_step = time.monotonic() - start
    if proc.wait() != 0:
        raise SystemExit(f"{name}: relora-worker failed")
    with open(summary) as f:
        s = json.load(f)
    return {"seconds_to_first_step": first_step, "peak_rss_mb": s["peak_rss_bytes"] / 2**20,
            "wall_seconds": time.monotonic() - start}


def bench_stream(args, work):
    small, big = os.path.join(work, "small-index"), os.path.join(work, "big-index")
    write_sparse_index(small, 5 * 2**20, 2**20, 512)                         # 20 MB
    write_sparse_index(big, int(args.stream_gb * 2**30) // 4, 2**25, 512)    # 20 GB in 128 MB shards
    try:
        return {"small_20mb": run_job(args, work, "small", small), "big": run_job(args, work, "big", big),
                "big_gb": args.stream_gb}
    finally:
        shutil.rmtree(big, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--tokenizer", default=os.path.join(SHARED, "t5-spiece", "spiece.model"))
    p.add_argument("--text", nargs="+", default=None)
    p.add_argument("--corpus-mb", type=float, default=24)
    p.add_argument("--stream-gb", type=float, default=20)
    p.add_argument("--only", choices=("tokenize", "stream"))
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "data.json"))
    args = p.parse_args()
    args.text = args.text or default_texts()
    args.relora = os.path.join(args.build, "client", "relora")
    args.worker = os.path.join(args.build, "worker", "relora-worker")
    result = {"machine": {"cpus": os.cpu_count(), "loadavg": os.getloadavg()}}
    with tempfile.TemporaryDirectory(prefix="relora-data-bench-") as work:
        if args.only in (None, "tokenize"):
            result["tokenize"] = bench_tokenize(args, work)
        if args.only in (None, "stream"):
            result["stream"] = bench_stream(args, work)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.exit(main())
