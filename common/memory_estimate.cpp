#include "common/memory_estimate.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

namespace relora {
namespace {

// The process before it allocates a model: LibTorch, OpenBLAS's buffers, gRPC, the allocator's
// arenas. Measured: relora-worker's RSS right before the Trainer builds its model (CPU), and the
// CUDA context plus the caching allocator's slack (CUDA).
constexpr double kCpuRuntimeBytes = 330.0 * (1 << 20);
constexpr double kCudaRuntimeBytes = 1024.0 * (1 << 20);

struct Shape {
  double V, C, L, H, F, r, T;  // T: positions run per sample (seq_len - 1: the last predicts nothing)
  double W() const { return L * (4 * C * C + 3 * C * F); }                  // the seven projections
  double factors() const { return L * (4 * r * (C + C) + 3 * r * (C + F)); }  // A and B of all seven
  double others() const { return 2 * V * C + (2 * L + 1) * C; }              // embedding, head, norms
};

Shape shape_of(const relora::v1::JobSpec& spec) {
  const auto& m = spec.model();
  const bool low_rank = spec.relora().mode() != "full";
  return {double(m.vocab_size()), double(m.hidden_size()), double(m.num_layers()), double(m.num_heads()),
          double(m.intermediate_size()), low_rank ? double(spec.relora().rank()) : 0.0,
          double(std::max(1, spec.data().seq_len() - 1))};
}

struct Phase {
  double trainable, frozen, weights, gradients, optimizer, activations, autocast_cache;
};

// One phase of a job: low_rank true for the lora/relora phase, false for full-rank training.
Phase phase_of(const relora::v1::JobSpec& spec, const Shape& s, bool low_rank) {
  const bool bf16 = spec.training().dtype() == "bf16";
  const int world = std::max(1, spec.cluster().workers());
  const bool zero1 = spec.cluster().shard_optimizer() && world > 1;
  const bool shard_w = spec.cluster().shard_frozen_weights() && world > 1 && low_rank;
  const double tokens = double(spec.training().micro_batch_size()) * s.T;
  Phase p{};
  p.trainable = low_rank ? s.factors() + s.others() : s.W() + s.others();
  p.frozen = low_rank ? s.W() : 0.0;
  p.weights = 4 * p.trainable + (bf16 ? 2 : 4) * p.frozen / (shard_w ? world : 1);
  p.gradients = 4 * p.trainable;
  p.optimizer = 8 * p.trainable / (zero1 ? world : 1);
  relora::v1::JobSpec phase_spec = spec;
  if (!low_rank) phase_spec.mutable_relora()->set_mode("full");
  const double per_layer = tokens * activation_bytes_per_token_layer(phase_spec);
  const double final_norm = tokens * 8 * s.C;  // the last norm's input and output
  p.activations = spec.training().activation_checkpointing()
                      ? s.L * tokens * 4 * s.C + per_layer + final_norm  // layer inputs + one layer recomputed
                      : s.L * per_layer + final_norm;
  // bf16 autocast caches a bf16 copy of the trainable matrices it multiplies until the step ends:
  // W in full-rank training, or the factors of o_proj and down_proj (the other projections' fast
  // path casts its factors for each product; the fused loss casts the head for its call only).
  if (bf16) p.autocast_cache = 2 * (low_rank ? s.L * s.r * (3 * s.C + s.F) : s.W());
  return p;
}

// The activations are freed during the backward while the gradients are allocated, but the
// allocator keeps what it freed (the worker's malloc settings never hand heap pages back between
// steps, CUDA's caching allocator keeps its blocks), so the resident peak carries both.
double peak_of(const Phase& p, double runtime) {
  return p.weights + p.optimizer + p.autocast_cache + runtime + p.activations + p.gradients;
}

std::string gib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f GiB", bytes / double(1LL << 30));
  return buf;
}

std::string count(double n) {
  char buf[32];
  if (n >= 1e9) std::snprintf(buf, sizeof(buf), "%.3fB", n / 1e9);
  else std::snprintf(buf, sizeof(buf), "%.1fM", n / 1e6);
  return buf;
}

}  // namespace

// Per token and decoder layer, from the tensors the backward needs as this implementation saves
// them (worker/model: fused RMSNorm saves its input; the CPU fast path of the low-rank linear saves
// its input in the product dtype and x·Aᵀ (the factors themselves, cast again in the backward); attention saves rotated q, k, v, the fp32 softmax
// output and, in bf16, its bf16 copy; SwiGLU saves gate, up, silu(gate) and their product).
double activation_bytes_per_token_layer(const relora::v1::JobSpec& spec) {
  const Shape s = shape_of(spec);
  const bool bf16 = spec.training().dtype() == "bf16";
  const bool low_rank = spec.relora().mode() != "full";
  const double C = s.C, F = s.F, HT = s.H * s.T;
  double bytes = bf16 ? 26 * C + 8 * F + 6 * HT : 32 * C + 16 * F + 4 * HT;
  if (low_rank) bytes += 7 * s.r * (bf16 ? 2 : 4);  // x·Aᵀ of each projection
  if (low_rank && spec.relora().dropout() > 0)     // a mask and the masked input per projection
    bytes += bf16 ? 54 * C + 4 * F : 48 * C + 8 * F;
  return bytes;
}

MemoryEstimate estimate_memory(const relora::v1::JobSpec& spec, bool cuda) {
  const Shape s = shape_of(spec);
  const bool low_rank = spec.relora().mode() != "full";
  const double runtime = cuda ? kCudaRuntimeBytes : kCpuRuntimeBytes;
  MemoryEstimate e;
  e.world = std::max(1, spec.cluster().workers());
  const Phase p = phase_of(spec, s, low_rank);
  e.parameters = int64_t(s.W() + s.others());
  e.trainable_parameters = int64_t(p.trainable);
  e.frozen_parameters = int64_t(p.frozen);
  // Executed FLOPs per token: 2 per weight forward, 2 more for the input gradient, 2 more for the
  // weight gradient of what trains (a frozen W has none), plus attention's 12·L·T·C.
  const double attention = 12 * s.L * s.T * s.C;
  e.flops_per_token = low_rank ? 4 * s.W() + 6 * (s.factors() + s.V * s.C) + attention
                               : 6 * (s.W() + s.V * s.C) + attention;
  e.flops_per_step = e.flops_per_token * double(spec.training().micro_batch_size()) *
                     double(spec.training().grad_accum_steps()) * e.world * double(spec.data().seq_len());
  e.weight_bytes = int64_t(p.weights);
  e.gradient_bytes = int64_t(p.gradients);
  e.optimizer_bytes = int64_t(p.optimizer);
  e.activation_bytes = int64_t(p.activations + p.autocast_cache);
  e.runtime_bytes = int64_t(runtime);
  e.construction_bytes = int64_t(4 * (s.W() + s.others()) + runtime);
  double peak = std::max(peak_of(p, runtime), double(e.construction_bytes));
  const bool warm_start = low_rank && spec.relora().warm_start_steps() > 0;
  if (warm_start) {
    e.warm_start_peak_bytes = int64_t(peak_of(phase_of(spec, s, false), runtime));
    peak = std::max(peak, double(e.warm_start_peak_bytes));
  }
  e.peak_bytes = int64_t(peak);
  return e;
}

std::string describe_memory_estimate(const MemoryEstimate& e, int64_t device_bytes, const std::string& device) {
  std::ostringstream o;
  char buf[160];
  o << "parameters            " << count(double(e.parameters)) << " (frozen W " << count(double(e.frozen_parameters))
    << ")\n";
  o << "trainable parameters  " << count(double(e.trainable_parameters)) << "\n";
  std::snprintf(buf, sizeof(buf), "FLOPs per token       %.3g (forward + backward, executed)\nFLOPs per step        %.3g (all %d rank%s)\n",
                e.flops_per_token, e.flops_per_step, e.world, e.world == 1 ? "" : "s");
  o << buf;
  o << "per rank:\n";
  o << "  weights             " << gib(double(e.weight_bytes)) << "\n";
  o << "  gradients           " << gib(double(e.gradient_bytes)) << "\n";
  o << "  optimizer states    " << gib(double(e.optimizer_bytes)) << "\n";
  o << "  activations         " << gib(double(e.activation_bytes)) << " (one micro-batch, with autocast's casts)\n";
  o << "  runtime             " << gib(double(e.runtime_bytes)) << "\n";
  if (e.warm_start_peak_bytes > 0) o << "  full-rank warm start peak " << gib(double(e.warm_start_peak_bytes)) << "\n";
  o << "  peak estimate       " << gib(double(e.peak_bytes)) << "\n";
  if (device_bytes > 0) {
    const double spare = double(device_bytes) - double(e.peak_bytes);
    o << device << ": " << gib(double(device_bytes))
      << (spare >= 0 ? " - fits, " + gib(spare) + " to spare" : " - does NOT fit: short by " + gib(-spare)) << "\n";
  }
  return o.str();
}

}  // namespace relora
