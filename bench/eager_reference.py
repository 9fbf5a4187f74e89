#!/usr/bin/env python3
"""Eager PyTorch baseline for relora-bench: the same training step, written the way the ReLoRA
reference implementation writes it.

Structure follows the reference (a copy of Hugging Face's LLaMA of early 2023 plus its
ReLoRaLinear, trained by a plain loop): separate q/k/v/o and gate/up/down projections, rotary
embeddings with rotate_half, attention as matmul -> scale -> add causal mask -> clamp ->
softmax(fp32) -> matmul, RMSNorm with the variance in fp32, an untied lm_head whose logits are
shifted with .contiguous() before CrossEntropyLoss, ReLoRaLinear as F.linear(x, W) +
lora_B(lora_A(dropout(x))) * scale with W frozen, torch.optim.AdamW with its defaults,
clip_grad_norm_(1.0), zero_grad(). bf16 runs use torch.autocast("cpu", bfloat16) with fp32
master weights, as our trainer does (the reference casts the whole model to bf16 instead).

Own code, written for this benchmark. Same command-line flags and JSON fields as relora-bench
(bench/relora_bench.cpp), so bench/run.py can put the two side by side.
"""
import argparse
import json
import math
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

CONFIGS = {  # hidden, layers, heads, intermediate, vocab, rank, seq, micro_batch, warmup, steps
    "quick": (64, 2, 4, 172, 512, 8, 32, 2, 1, 2),
    "micro": (256, 6, 4, 688, 8192, 32, 256, 8, 3, 10),
    "60m": (512, 8, 8, 1376, 32100, 128, 256, 4, 2, 6),
    "1b3-l8": (2048, 8, 32, 5461, 8192, 128, 256, 1, 2, 5),
    "1b3": (2048, 24, 32, 5461, 32100, 128, 256, 1, 1, 3),
}


class ReLoRaLinear(nn.Module):
    """W frozen, A and B trainable: y = x W^T + B(A(dropout(x))) * alpha / r."""

    def __init__(self, in_features, out_features, r, lora_alpha=32.0, lora_dropout=0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features), requires_grad=False)
        nn.init.normal_(self.weight, std=0.02)
        self.lora_dropout = nn.Dropout(p=lora_dropout) if lora_dropout > 0 else nn.Identity()
        self.lora_A = nn.Linear(in_features, r, bias=False)  # kaiming-uniform (a = sqrt(5))
        self.lora_B = nn.Linear(r, out_features, bias=False)
        nn.init.zeros_(self.lora_B.weight)
        self.scaling = lora_alpha / r

    def forward(self, x):
        result = F.linear(x, self.weight)
        result += self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling
        return result


def make_linear(in_features, out_features, rank):
    if rank > 0:
        return ReLoRaLinear(in_features, out_features, rank)
    linear = nn.Linear(in_features, out_features, bias=False)
    nn.init.normal_(linear.weight, std=0.02)
    return linear


class LlamaRMSNorm(nn.Module):
    def __init__(self, hidden_size, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        variance = hidden_states.to(torch.float32).pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            hidden_states = hidden_states.to(self.weight.dtype)
        return self.weight * hidden_states


class LlamaRotaryEmbedding(nn.Module):
    def __init__(self, dim, max_position_embeddings=2048, base=10000):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
        t = torch.arange(max_position_embeddings, dtype=inv_freq.dtype)
        freqs = torch.einsum("i,j->ij", t, inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos_cached", emb.cos()[None, None, :, :], persistent=False)
        self.register_buffer("sin_cached", emb.sin()[None, None, :, :], persistent=False)

    def forward(self, x, seq_len):
        return (self.cos_cached[:, :, :seq_len, ...].to(dtype=x.dtype),
                self.sin_cached[:, :, :seq_len, ...].to(dtype=x.dtype))


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(q, k, cos, sin):
    return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)


class LlamaAttention(nn.Module):
    def __init__(self, hidden, heads, rank, max_seq):
        super().__init__()
        self.hidden_size, self.num_heads, self.head_dim = hidden, heads, hidden // heads
        self.q_proj = make_linear(hidden, hidden, rank)
        self.k_proj = make_linear(hidden, hidden, rank)
        self.v_proj = make_linear(hidden, hidden, rank)
        self.o_proj = make_linear(hidden, hidden, rank)
        self.rotary_emb = LlamaRotaryEmbedding(self.head_dim, max_position_embeddings=max_seq)

    def forward(self, hidden_states, attention_mask):
        bsz, q_len, _ = hidden_states.size()
        shape = (bsz, q_len, self.num_heads, self.head_dim)
        query_states = self.q_proj(hidden_states).view(shape).transpose(1, 2)
        key_states = self.k_proj(hidden_states).view(shape).transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(shape).transpose(1, 2)
        cos, sin = self.rotary_emb(value_states, seq_len=q_len)
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)
        attn_weights = torch.matmul(query_states, key_states.transpose(2, 3)) / math.sqrt(self.head_dim)
        attn_weights = attn_weights + attention_mask
        attn_weights = torch.max(attn_weights, torch.tensor(torch.finfo(attn_weights.dtype).min))
        attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query_states.dtype)
        attn_output = torch.matmul(attn_weights, value_states)
        attn_output = attn_output.transpose(1, 2).reshape(bsz, q_len, self.hidden_size)
        return self.o_proj(attn_output)


class LlamaMLP(nn.Module):
    def __init__(self, hidden, intermediate, rank):
        super().__init__()
        self.gate_proj = make_linear(hidden, intermediate, rank)
        self.down_proj = make_linear(intermediate, hidden, rank)
        self.up_proj = make_linear(hidden, intermediate, rank)
        self.act_fn = nn.SiLU()

    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, hidden, heads, intermediate, rank, max_seq):
        super().__init__()
        self.self_attn = LlamaAttention(hidden, heads, rank, max_seq)
        self.mlp = LlamaMLP(hidden, intermediate, rank)
        self.input_layernorm = LlamaRMSNorm(hidden)
        self.post_attention_layernorm = LlamaRMSNorm(hidden)

    def forward(self, hidden_states, attention_mask):
        residual = hidden_states
        hidden_states = self.self_attn(self.input_layernorm(hidden_states), attention_mask)
        hidden_states = residual + hidden_states
        residual = hidden_states
        hidden_states = self.mlp(self.post_attention_layernorm(hidden_states))
        return residual + hidden_states


def make_causal_mask(bsz, tgt_len, dtype):
    mask = torch.full((tgt_len, tgt_len), torch.tensor(torch.finfo(dtype).min))
    mask_cond = torch.arange(mask.size(-1))
    mask.masked_fill_(mask_cond < (mask_cond + 1).view(mask.size(-1), 1), 0)
    mask = mask.to(dtype)
    return mask[None, None, :, :].expand(bsz, 1, tgt_len, tgt_len)


class LlamaForCausalLM(nn.Module):
    def __init__(self, hidden, layers, heads, intermediate, vocab, rank, max_seq):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, hidden)
        nn.init.normal_(self.embed_tokens.weight, std=0.02)
        self.layers = nn.ModuleList(
            [LlamaDecoderLayer(hidden, heads, intermediate, rank, max_seq) for _ in range(layers)])
        self.norm = LlamaRMSNorm(hidden)
        self.lm_head = nn.Linear(hidden, vocab, bias=False)
        nn.init.normal_(self.lm_head.weight, std=0.02)
        self.vocab_size = vocab

    def forward(self, input_ids, labels):
        bsz, seq_len = input_ids.shape
        hidden_states = self.embed_tokens(input_ids)
        attention_mask = make_causal_mask(bsz, seq_len, hidden_states.dtype)
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask)
        hidden_states = self.norm(hidden_states)
        logits = self.lm_head(hidden_states)
        shift_logits = logits[..., :-1, :].contiguous()
        shift_labels = labels[..., 1:].contiguous()
        return nn.CrossEntropyLoss()(shift_logits.view(-1, self.vocab_size), shift_labels.view(-1))


def flops_per_token(C, L, F_, V, T, r, low_rank):
    """Same accounting as relora-bench (bench/relora_bench.cpp: flops_per_token)."""
    layer_matrices = L * (4 * C * C + 3 * C * F_)
    layer_io = L * (4 * (C + C) + 2 * (C + F_) + (F_ + C))
    head = V * C
    attention = 12 * L * T * C
    model = 6 * (layer_matrices + head) + attention
    executed = model if not low_rank else 4 * layer_matrices + 6 * r * layer_io + 6 * head + attention
    return model, executed


def matmul_peak_gflops(dtype, n=2048, reps=6):
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    c = torch.empty(n, n, dtype=dtype)
    for _ in range(2):
        torch.mm(a, b, out=c)
    best = 1e30
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b, out=c)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best / 1e9


def load_average():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="micro", choices=sorted(CONFIGS))
    for name in ("hidden", "layers", "heads", "intermediate", "vocab"):
        p.add_argument("--" + name, type=int, default=0)
    for name in ("rank", "seq", "micro-batch", "warmup-steps", "steps"):
        p.add_argument("--" + name, type=int, default=-1)
    p.add_argument("--mode", default="relora", choices=["full", "relora"])
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default="")
    p.add_argument("--no-peak", action="store_true")
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    C, L, H, F_, V, r, T, B, warm, steps = CONFIGS[a.config]
    C, L, H, F_, V = (x or d for x, d in zip((a.hidden, a.layers, a.heads, a.intermediate, a.vocab),
                                             (C, L, H, F_, V)))
    r, T, B, warm, steps = (x if x >= 0 else d for x, d in zip(
        (a.rank, a.seq, a.micro_batch, a.warmup_steps, a.steps), (r, T, B, warm, steps)))
    low_rank = a.mode != "full"
    out = {"impl": "eager-pytorch", "torch_version": torch.__version__, "threads": torch.get_num_threads(),
           "blas_threads": int(os.environ.get("OPENBLAS_NUM_THREADS", "-1")),
           "load_average_start": load_average()}

    torch.manual_seed(1)
    model = LlamaForCausalLM(C, L, H, F_, V, r if low_rank else 0, T)
    model.train()
    trainable = [q for q in model.parameters() if q.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    gen = torch.Generator().manual_seed(1234)
    data = torch.randint(0, V, (max(32, B * (warm + steps) + 8), T), generator=gen)

    step_seconds, step_cpu, losses = [], [], []
    for step in range(warm + steps):
        c0 = time.process_time()
        t0 = time.perf_counter()
        batch = data[step * B:(step + 1) * B]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.dtype == "bf16"):
            loss = model(batch, labels=batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        step_seconds.append(time.perf_counter() - t0)
        step_cpu.append(time.process_time() - c0)
        print(f"  step {step + 1}/{warm + steps}  {step_seconds[-1]:.3f} s  loss {losses[-1]:.4f}",
              file=sys.stderr)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    timed = step_seconds[warm:]
    med = statistics.median(timed)
    tok_step = B * T
    tok_s = tok_step / med
    model_f, exec_f = flops_per_token(C, L, F_, V, T, r, low_rank)
    n_total = sum(q.numel() for n, q in model.named_parameters() if "lora_" not in n)
    n_train = sum(q.numel() for q in trainable)
    out.update({
        "config": a.config, "mode": a.mode, "dtype": a.dtype,
        "shape": {"hidden": C, "layers": L, "heads": H, "intermediate": F_, "vocab": V,
                  "rank": r if low_rank else 0, "seq": T, "micro_batch": B},
        "warmup_steps": warm, "timed_steps": len(timed), "step_seconds": step_seconds,
        "step_seconds_median": med, "step_cpu_seconds": step_cpu, "tokens_per_step": tok_step, "tokens_per_second": tok_s,
        "total_parameters": n_total, "trainable_parameters": n_train,
        "model_flops_per_token": model_f, "executed_flops_per_token": exec_f,
        "executed_flops_per_second": exec_f * tok_s, "peak_rss_bytes": rss,
        "first_loss": losses[0], "final_loss": losses[-1],
    })
    if not a.no_peak:
        with torch.no_grad():
            out["peak"] = {"fp32_gflops": matmul_peak_gflops(torch.float32),
                           "bf16_gflops": matmul_peak_gflops(torch.bfloat16), "size": 2048}
        out["utilisation"] = exec_f * tok_s / (out["peak"][a.dtype + "_gflops"] * 1e9)
    out["load_average_end"] = load_average()
    print(f"{a.config} {a.mode} {a.dtype} eager threads {out['threads']}: {tok_s:.0f} tok/s "
          f"(median step {med:.3f} s of {len(timed)}), {exec_f * tok_s / 1e9:.1f} GFLOP/s executed"
          + (f" ({100 * out['utilisation']:.0f}% of peak)" if "utilisation" in out else "")
          + f", peak RSS {rss / 1048576:.0f} MiB, {n_train} trainable")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
