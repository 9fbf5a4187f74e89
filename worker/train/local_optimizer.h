// The optimizer of one rank holding every parameter and all of their moments: AdamW over whole
// parameters. Single-process training uses it as is; replicated data parallelism
// (worker/distributed) derives from it and averages the gradients first.
#pragma once

#include <vector>

#include "worker/train/adamw.h"
#include "worker/train/optimizer.h"

namespace relora::train {

class LocalOptimizer : public Optimizer {
 public:
  explicit LocalOptimizer(AdamWOptions options) : adamw_(options) {}

  void set_parameters(const std::vector<TrainableParameter>& params) override;
  OptimizerStepResult step(double local_loss, double lr, double max_norm) override;
  ResetStats reset_low_rank_states(ResetMode mode, double ratio, uint64_t seed) override;
  void save_state(NamedTensors& common, NamedTensors& own) const override;
  void load_state(const Checkpoint& ckpt) override;
  int64_t moment_elements() const override;
  int64_t parameter_elements() const override;

  const AdamW& adamw() const { return adamw_; }

 protected:
  // The gradients (in place) and the loss averaged over the ranks; one rank: as they are.
  // Returns the loss; adds the time spent communicating to `seconds`.
  virtual double average(std::vector<torch::Tensor>& grads, double local_loss, double& seconds) {
    (void)grads;
    (void)seconds;
    return local_loss;
  }

 private:
  AdamW adamw_;
};

}  // namespace relora::train
