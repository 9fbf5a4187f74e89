// Rounding fp32 values to bf16 for a frozen W stored in bf16 (docs/architecture.md, "Numerics").
//
// A merge W' = W + s·B·A is computed in fp32 and stored back in bf16. Round-to-nearest would
// silently drop every element of an update smaller than half a bf16 ulp (2^-9 relative, 0.2%):
// late in a run, or with short cycles, most of a merge. Stochastic rounding rounds up with
// probability (distance to the lower neighbour) / ulp, so the stored value is unbiased
// (E[round(v)] = v) and updates survive in expectation however small they are.
//
// The random bits are a pure function of (seed, flat element index): element i of a [R, C] weight
// gets the same bits whether one process rounds the whole W or a rank rounds only its rows
// (frozen-weight sharding), on any device and any thread count. So ranks stay bit-identical, a
// resumed run reproduces the uninterrupted one, and no generator state needs checkpointing.
#pragma once

#include <cstdint>

#include <torch/types.h>

namespace relora::model {

// fp32 `values` (any shape, any device) -> bf16 on the same device, stochastically rounded with
// the bits of (seed, first_index + i) for flat element i. NaN and infinities round to nearest.
torch::Tensor round_to_bf16_stochastic(const torch::Tensor& values, uint64_t seed, int64_t first_index);

}  // namespace relora::model
