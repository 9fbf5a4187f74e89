// Plain data parallelism: every rank holds every parameter and all of their moments, averages the
// gradients with bucketed all-reduces and applies the same AdamW update. The step's loss and the
// ranks' stop votes travel in the same all-reduce as the gradients (one float64 bucket).
#pragma once

#include "worker/distributed/bucketed_all_reduce.h"
#include "worker/distributed/stop_vote.h"
#include "worker/train/local_optimizer.h"

namespace relora::distributed {

class ReplicatedOptimizer final : public train::LocalOptimizer {
 public:
  ReplicatedOptimizer(DataParallelGroup& group, StopVote& vote, train::AdamWOptions options, int64_t bucket_bytes)
      : LocalOptimizer(options), all_reduce_(group, bucket_bytes), vote_(vote) {}

 private:
  double average(std::vector<torch::Tensor>& grads, double local_loss, double& seconds) override;

  BucketedAllReduce all_reduce_;
  StopVote& vote_;
};

}  // namespace relora::distributed
