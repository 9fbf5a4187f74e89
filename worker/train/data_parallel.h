// How the training loop reaches the other ranks of a data-parallel job. worker/distributed
// implements it over a c10d process group; the Trainer takes a nullptr for one rank.
//
// The loop itself stays single-rank code: it asks for its optimizer here (which owns gradient
// synchronisation and, with ZeRO, the sharding of the optimizer state) and sums a few small
// control tensors (evaluation sums, checkpoint records) through all_reduce_sum.
#pragma once

#include <memory>
#include <vector>

#include <torch/types.h>

#include "worker/model/frozen_weight_shards.h"
#include "worker/train/adamw.h"
#include "worker/train/optimizer.h"

namespace relora::train {

class DataParallel {
 public:
  virtual ~DataParallel() = default;
  virtual int rank() const = 0;
  virtual int world() const = 0;
  // This rank's optimizer: replicated (every rank updates every parameter from the averaged
  // gradients) or, with `shard_state`, ZeRO (each rank updates and keeps the moments of 1/world).
  virtual std::unique_ptr<Optimizer> make_optimizer(const AdamWOptions& options, bool shard_state) = 0;
  // Frozen-weight sharding: where every rank keeps its rows of the frozen W (the model gathers
  // the whole W per product through it).
  virtual std::shared_ptr<model::FrozenWeightShards> frozen_weight_shards() = 0;
  // Element-wise sums across the ranks, in place. Collective.
  virtual void all_reduce_sum(std::vector<torch::Tensor>& tensors) = 0;
};

}  // namespace relora::train
