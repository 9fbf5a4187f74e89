// Frozen-weight sharding (FSDP-style) over a data-parallel group: rank r keeps rows
// [r·R/w, (r+1)·R/w) of every frozen [R, C] weight, and a layer's whole W is all-gathered just
// before each product that needs it (the forward, and again the backward's dx = dy W).
//
// A frozen W has no gradient and no optimizer state, so sharding it costs only the gathers: per
// step, (w - 1)/w of the frozen weights' bytes received twice per micro-batch (counted as
// all-gather traffic). It saves (w - 1)/w of the largest tensors a low-rank run holds. Merges
// need no traffic at all: every rank adds s·B·A to its own rows (A and B are replicated).
#pragma once

#include <cstdint>

#include "worker/distributed/process_group.h"
#include "worker/model/frozen_weight_shards.h"

namespace relora::distributed {

class GroupFrozenWeightShards final : public model::FrozenWeightShards {
 public:
  explicit GroupFrozenWeightShards(DataParallelGroup& group) : group_(group) {}

  model::RowRange rows_kept(int64_t rows) const override { return rows_of(group_.rank(), rows); }
  torch::Tensor gather(const torch::Tensor& local, int64_t rows) override;

  // Rank r's rows of a weight of `rows` rows: balanced, the first and last rank differ by one row
  // at most.
  model::RowRange rows_of(int rank, int64_t rows) const;

 private:
  DataParallelGroup& group_;
};

}  // namespace relora::distributed
