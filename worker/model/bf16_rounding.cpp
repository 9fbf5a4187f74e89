#include "worker/model/bf16_rounding.h"

#include <cstring>

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <torch/torch.h>

namespace relora::model {
namespace {

// splitmix64 finaliser: a counter-based generator, element i's bits need no draws before it.
inline uint64_t mix(uint64_t z) {
  z += 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// bf16 keeps the top 16 bits of an fp32. Adding a uniform 16-bit value to the low 16 bits before
// truncating carries into the kept bits with probability (low bits) / 2^16: stochastic rounding
// of the magnitude (the sign bit is untouched, so it is symmetric for negative values; a carry
// out of the significand correctly bumps the exponent).
inline uint16_t round_one(float v, uint16_t noise) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  if ((bits & 0x7F800000u) == 0x7F800000u) return c10::BFloat16(v).x;  // NaN, inf: to nearest
  return static_cast<uint16_t>((bits + noise) >> 16);
}

}  // namespace

torch::Tensor round_to_bf16_stochastic(const torch::Tensor& values, uint64_t seed, int64_t first_index) {
  TORCH_CHECK(values.scalar_type() == torch::kFloat, "round_to_bf16_stochastic: fp32 input expected");
  // The kernel runs on the host: a merge is rare (once per cycle) next to the steps, and one code
  // path keeps the bits identical on every device. A device W makes one round trip per layer.
  const auto src = values.to(torch::kCPU).contiguous();
  auto out = torch::empty(src.sizes(), src.options().dtype(torch::kBFloat16));
  const float* in = src.data_ptr<float>();
  auto* dst = reinterpret_cast<uint16_t*>(out.data_ptr<at::BFloat16>());
  const uint64_t key = mix(seed);
  at::parallel_for(0, src.numel(), /*grain_size=*/1 << 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      // One 64-bit hash gives four elements' 16-bit noise; which quarter depends on the global
      // index only, so any split into rows or threads draws the same bits.
      const uint64_t g = static_cast<uint64_t>(first_index + i);
      const uint64_t h = mix(key ^ (g >> 2));
      dst[i] = round_one(in[i], static_cast<uint16_t>(h >> (16 * (g & 3))));
    }
  });
  return values.device().is_cpu() ? out : out.to(values.device());
}

}  // namespace relora::model
