// The few places where LibTorch 1.13 (Debian, CI) and LibTorch 2.x (GPU checks) differ.
// Everything else in worker/model uses APIs present in both.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/Generator.h>
#include <torch/types.h>
#include <torch/version.h>
#ifdef RELORA_WITH_CUDA
#include <ATen/cuda/CUDAGeneratorImpl.h>
#endif

namespace relora::model::compat {

// A private CPU generator seeded with `seed`, independent of the global one. Same call in 1.13 and
// 2.x (at::detail::createCPUGenerator), kept here so a future rename is a one-line change.
inline at::Generator make_cpu_generator(uint64_t seed) {
  return at::detail::createCPUGenerator(seed);
}

// A private generator for random draws on `device` (dropout masks), seeded with `seed`. CUDA
// tensors need a CUDA (Philox) generator; the CPU one is make_cpu_generator's. Its state
// (get_state / set_state, a uint8 tensor on the host) is what a checkpoint keeps.
inline at::Generator make_device_generator(const c10::Device& device, uint64_t seed) {
#ifdef RELORA_WITH_CUDA
  if (device.is_cuda()) {
    auto gen = at::cuda::detail::createCUDAGenerator(device.index());
    gen.set_current_seed(seed);
    return gen;
  }
#endif
  if (!device.is_cpu()) throw std::invalid_argument("no random generator for device " + device.str());
  return make_cpu_generator(seed);
}

// Switches bf16 autocast on or off for CPU or CUDA tensors. The switches were renamed in LibTorch
// 2.x (set_autocast_enabled / set_autocast_dtype taking a device type).
inline void set_bf16_autocast(bool cuda, bool enabled) {
#if TORCH_VERSION_MAJOR >= 2
  const auto type = cuda ? at::kCUDA : at::kCPU;
  if (enabled) at::autocast::set_autocast_dtype(type, at::kBFloat16);
  at::autocast::set_autocast_enabled(type, enabled);
#else
  if (cuda) {
    if (enabled) at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
    at::autocast::set_enabled(enabled);
  } else {
    if (enabled) at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
    at::autocast::set_cpu_enabled(enabled);
  }
#endif
  if (!enabled) at::autocast::clear_cache();
}

// Whether autocast is on for tensors of `device`'s type (the switches were renamed in 2.x).
inline bool autocast_enabled(const c10::Device& device) {
#if TORCH_VERSION_MAJOR >= 2
  return at::autocast::is_autocast_enabled(device.type());
#else
  return device.is_cuda() ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
#endif
}

// While alive, autocast caches no casts (the switch exists in 1.13 and 2.x). Autocast keeps the
// bf16 cast of a trainable leaf (A, B) until it is switched off, for reuse; a cast made without
// grad (a checkpointed forward) carries no gradient back to its master and must not be kept.
class AutocastCacheOff {
 public:
  AutocastCacheOff() : was_(at::autocast::is_autocast_cache_enabled()) { at::autocast::set_autocast_cache_enabled(false); }
  ~AutocastCacheOff() { at::autocast::set_autocast_cache_enabled(was_); }
  AutocastCacheOff(const AutocastCacheOff&) = delete;
  AutocastCacheOff& operator=(const AutocastCacheOff&) = delete;

 private:
  bool was_;
};

// Singular values of a matrix, descending. ATen's function, present in 1.13 and 2.x: LibTorch
// 2.11's wheel does not put torch/linalg.h (torch::linalg::svdvals) on its include path.
inline torch::Tensor singular_values(const torch::Tensor& m) { return at::linalg_svdvals(m); }

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
