// The optimizer as the training loop sees it, whatever the parallelism.
//
// The loop is single-rank code: it runs the forward and backward of its micro-batches and then
// calls step(). What happens there depends on the implementation: LocalOptimizer (one rank)
// updates with AdamW; worker/distributed's replicated optimizer first averages the gradients over
// the ranks (plain data parallelism), and its sharded one (ZeRO) reduce-scatters them, updates
// only this rank's shard and all-gathers the result. The loop cannot tell them apart, and the
// model never sees a rank.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "worker/train/adamw.h"
#include "worker/train/checkpoint.h"
#include "worker/train/safetensors.h"

namespace relora::train {

struct TrainableParameter {
  std::string name;
  torch::Tensor tensor;
  bool low_rank = false;  // a LoRA factor: the optimizer reset prunes its moments
};

struct OptimizerStepResult {
  double loss = 0;       // the step's loss, averaged over the ranks
  double grad_norm = 0;  // of the averaged gradient, before clipping
  double communication_seconds = 0;  // spent in collectives (0 on one rank)
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;

  // The trainable parameters, in the model's order (the same on every rank). Names already known
  // keep their moments and step counters, new ones start from zero state, and the state of names
  // no longer listed is dropped (W at the low-rank start).
  virtual void set_parameters(const std::vector<TrainableParameter>& params) = 0;

  // Called before the backward of the step's last micro-batch: an optimizer may start averaging
  // each gradient as soon as that backward completes it, overlapping communication with the rest
  // of the backward (the replicated optimizer does). Every rank calls it at the same point.
  virtual void before_last_backward() {}

  // After the backward of the step's micro-batches, with `local_loss` this rank's mean loss: the
  // gradients averaged over the ranks, clipped to `max_norm` (clip_grad_norm_'s rule, folded into
  // the update), one AdamW update at `lr`, and the gradients dropped. Collective.
  virtual OptimizerStepResult step(double local_loss, double lr, double max_norm) = 0;

  // ReLoRA's reset of the low-rank factors' moments (AdamW::reset_low_rank_states), the same
  // elements whatever the sharding. The statistics cover all ranks. Collective.
  virtual ResetStats reset_low_rank_states(ResetMode mode, double ratio, uint64_t seed) = 0;

  // Checkpoint state. `common`: what rank 0 writes into the checkpoint's state file (the step
  // counters; the moments, where every rank holds all of them). `own`: the moments only this rank
  // holds, written by this rank into its own shard file. Keys: see optimizer_state.h.
  virtual void save_state(NamedTensors& common, NamedTensors& own) const = 0;
  // Restores from a checkpoint written on any number of ranks, by any of the optimizers. Throws
  // naming the checkpoint and the parameter whose state is missing.
  virtual void load_state(const Checkpoint& ckpt) = 0;

  // Elements of the moments this rank holds (each of exp_avg and exp_avg_sq), and of the
  // parameters it optimizes: with ZeRO the first is about 1/world of the second.
  virtual int64_t moment_elements() const = 0;
  virtual int64_t parameter_elements() const = 0;
};

}  // namespace relora::train
