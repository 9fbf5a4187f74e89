// Plain data parallelism: every rank holds every parameter and all of their moments, averages the
// gradients with bucketed all-reduces that start during the last micro-batch's backward
// (OverlappedGradientSync) and applies the same AdamW update. The step's loss and the ranks' stop
// votes follow in one small float64 all-reduce.
#pragma once

#include "worker/distributed/overlapped_gradient_sync.h"
#include "worker/distributed/stop_vote.h"
#include "worker/train/local_optimizer.h"

namespace relora::distributed {

class ReplicatedOptimizer final : public train::LocalOptimizer {
 public:
  ReplicatedOptimizer(DataParallelGroup& group, StopVote& vote, train::AdamWOptions options, int64_t bucket_bytes)
      : LocalOptimizer(options), group_(group), sync_(group, bucket_bytes), vote_(vote) {}

  void set_parameters(const std::vector<train::TrainableParameter>& params) override;
  void before_last_backward() override { sync_.arm(); }
  const OverlappedGradientSync& gradient_sync() const { return sync_; }

 private:
  double average(std::vector<torch::Tensor>& grads, double local_loss, double& seconds) override;

  DataParallelGroup& group_;
  OverlappedGradientSync sync_;
  StopVote& vote_;
};

}  // namespace relora::distributed
