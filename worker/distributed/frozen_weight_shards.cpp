#include "worker/distributed/frozen_weight_shards.h"

#include <stdexcept>
#include <string>

#include <torch/torch.h>

namespace relora::distributed {

model::RowRange GroupFrozenWeightShards::rows_of(int rank, int64_t rows) const {
  const int64_t w = group_.world();
  return {rank * rows / w, (rank + 1) * rows / w};
}

torch::Tensor GroupFrozenWeightShards::gather(const torch::Tensor& local, int64_t rows) {
  // A bf16 W (training.dtype bf16) travels as its bits, viewed as fp16 (same width): a gather only
  // copies, and LibTorch 1.13's Gloo has neither bf16 nor int16 collectives ("Invalid scalar type").
  if (local.scalar_type() == torch::kBFloat16) return gather(local.view(torch::kHalf), rows).view(torch::kBFloat16);
  const int w = group_.world();
  const auto mine = rows_kept(rows);
  if (local.dim() != 2 || local.size(0) != mine.size())
    throw std::invalid_argument("frozen-weight gather: rank " + std::to_string(group_.rank()) + " holds " +
                                std::to_string(local.dim() == 2 ? local.size(0) : -1) + " rows of a " +
                                std::to_string(rows) + "-row weight, expected " + std::to_string(mine.size()));
  const int64_t cols = local.size(1);
  if (rows % w == 0) {  // equal blocks: gathered straight into the whole weight
    auto whole = torch::empty({rows, cols}, local.options());  // [R, C]
    group_.all_gather(local.contiguous().view({-1}), whole);  // flat chunks, as Gloo wants
    return whole;
  }
  // Unequal blocks: every rank sends a block of the largest size (its own rows, then padding).
  const int64_t block = (rows + w - 1) / w;
  auto send = torch::zeros({block, cols}, local.options());  // [ceil(R/w), C]
  send.slice(0, 0, mine.size()).copy_(local);
  auto blocks = torch::empty({w * block, cols}, local.options());  // [w·ceil(R/w), C]
  group_.all_gather(send.view({-1}), blocks);
  auto whole = torch::empty({rows, cols}, local.options());  // [R, C]
  for (int r = 0; r < w; ++r) {
    const auto theirs = rows_of(r, rows);
    whole.slice(0, theirs.begin, theirs.end).copy_(blocks.slice(0, r * block, r * block + theirs.size()));
  }
  return whole;
}

}  // namespace relora::distributed
