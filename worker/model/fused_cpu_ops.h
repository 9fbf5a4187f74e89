// Fused CPU kernels for the elementwise parts of a LLaMA block (LibTorch's CPU path). Each
// replaces a chain of ATen ops, and their backward nodes, by one pass over the data with the same
// arithmetic: values in float for bf16/fp16 (at::opmath_type), in the tensor's own type otherwise.
// tests/bench/model_equivalence_test.cpp checks them against the plain formulation in fp64.
#pragma once

#include <cstdint>

#include <torch/types.h>

namespace relora::model {

// The CPU fast paths: the kernels below, the low-rank layer's fused autograd node (LibTorch 1.13),
// the 1.13 attention that folds the mask into its score product, and AdamW's fused update and
// gradient norm. Everything else, the generic path, is what a GPU runs. Switched off
// process-wide (RELORA_CPU_FAST_PATHS=0 in the environment, or set_cpu_fast_paths(false)), the
// CPU runs the generic path too: the CPU suite's way to test the GPU's code without a GPU.
bool cpu_fast_paths();
void set_cpu_fast_paths(bool enabled);

// Sets the CPU fast paths for its lifetime (tests), then restores what they were.
class CpuFastPathsGuard {
 public:
  explicit CpuFastPathsGuard(bool on) : was_(cpu_fast_paths()) { set_cpu_fast_paths(on); }
  ~CpuFastPathsGuard() { set_cpu_fast_paths(was_); }
  CpuFastPathsGuard(const CpuFastPathsGuard&) = delete;
  CpuFastPathsGuard& operator=(const CpuFastPathsGuard&) = delete;

 private:
  bool was_;
};

// True where the kernels below apply: a CPU tensor of a floating type they handle, with the CPU
// fast paths on.
bool fused_cpu_kernels_apply(const torch::Tensor& x);

// RMSNorm over the last dimension with gain w [C]: w * (x * inv), inv = 1 / sqrt(mean(x^2) + eps)
// per row; the normalised value is cast back to x's type before the gain (as Hugging Face does).
torch::Tensor fused_rms_norm(const torch::Tensor& x, const torch::Tensor& w, double eps);

// Rotary embedding fused with the split into heads: x [B, T, H*D] -> [B, H, T, D] contiguous,
// y = x * cos + rotate_half(x) * sin with rotate_half(x) = [-x2, x1] on the halves of D;
// cos, sin [T, D].
torch::Tensor rotary_into_heads(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                                int64_t heads);

}  // namespace relora::model
