// The few places where LibTorch 1.13 (Debian, CI) and LibTorch 2.x (GPU checks) differ.
// Everything else in worker/model uses APIs present in both.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>
#include <torch/types.h>
#include <torch/version.h>

namespace relora::model::compat {

// A private CPU generator seeded with `seed`, independent of the global one. Same call in 1.13 and
// 2.x (at::detail::createCPUGenerator), kept here so a future rename is a one-line change.
inline at::Generator make_cpu_generator(uint64_t seed) {
  return at::detail::createCPUGenerator(seed);
}

// Causal scaled dot-product attention.
// q, k, v [B, H, T, D] -> [B, H, T, D]; scores scaled by 1/sqrt(D), position t attends to <= t.
inline torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k,
                                      const torch::Tensor& v) {
#if TORCH_VERSION_MAJOR >= 2
  // Fused kernels (flash / memory-efficient on CUDA); they accumulate the softmax in fp32.
  // Note: this branch is compiled only against LibTorch 2.x (the GPU machine), never in CI.
  return at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0,
                                          /*is_causal=*/true);
#else
  // 1.13 has no fused attention: materialise the [B, H, T, T] scores.
  const int64_t T = q.size(2);
  const double inv_sqrt_d = 1.0 / std::sqrt(static_cast<double>(q.size(3)));
  // Softmax in fp32 for bf16/fp16 inputs (keeps fp64 for gradient checks).
  const bool reduced = q.scalar_type() == torch::kBFloat16 || q.scalar_type() == torch::kHalf;
  const auto acc = reduced ? torch::kFloat : q.scalar_type();
  auto scores = torch::matmul(q, k.transpose(-2, -1)).to(acc) * inv_sqrt_d;  // [B, H, T, T]
  // Upper triangle (key position > query position) is the future: excluded with -inf.
  auto future = torch::ones({T, T}, q.options().dtype(torch::kBool)).triu(/*diagonal=*/1);
  scores = scores.masked_fill(future, -std::numeric_limits<double>::infinity());
  auto probs = torch::softmax(scores, /*dim=*/-1).to(q.scalar_type());  // [B, H, T, T]
  return torch::matmul(probs, v);                                       // [B, H, T, D]
#endif
}

}  // namespace relora::model::compat
