// The Trainer's DataParallel over a c10d process group: replicated or ZeRO-sharded optimizers,
// the stop vote they carry, frozen-weight sharding, and small control all-reduces.
#pragma once

#include <cstdint>
#include <memory>

#include "worker/distributed/bucketed_all_reduce.h"
#include "worker/distributed/process_group.h"
#include "worker/distributed/stop_vote.h"
#include "worker/train/data_parallel.h"

namespace relora::distributed {

class GroupDataParallel final : public train::DataParallel {
 public:
  // `bucket_bytes`: the size of one gradient all-reduce (replicated) or of one reduce-scatter /
  // all-gather bucket (sharded).
  explicit GroupDataParallel(DataParallelGroup& group,
                             int64_t bucket_bytes = BucketedAllReduce::kDefaultBucketBytes);

  int rank() const override { return group_.rank(); }
  int world() const override { return group_.world(); }
  std::unique_ptr<train::Optimizer> make_optimizer(const train::AdamWOptions& options, bool shard_state) override;
  std::shared_ptr<model::FrozenWeightShards> frozen_weight_shards() override;
  void all_reduce_sum(std::vector<torch::Tensor>& tensors) override { group_.all_reduce_sum(tensors); }

  // Every optimizer step carries this rank's stop vote; agreed() flips on all ranks at once.
  StopVote& stop_vote() { return vote_; }
  DataParallelGroup& group() { return group_; }

 private:
  DataParallelGroup& group_;
  const int64_t bucket_bytes_;
  StopVote vote_;
};

}  // namespace relora::distributed
