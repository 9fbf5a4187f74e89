// AdamW over named parameters, with the ReLoRA optimizer-state reset.
//
// Our own optimizer rather than torch::optim::AdamW because ReLoRA needs to reach into the state
// of specific parameters (prune the LoRA factors' moments at every merge, keep everyone else's),
// checkpoint it by parameter name for exact resume, and later shard it across ranks. The update is
// the same as torch.optim.AdamW (decoupled weight decay, bias correction by a per-parameter step).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

namespace relora::train {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
};

enum class ResetMode { kNone, kMagnitude, kRandom, kZero };
ResetMode parse_reset_mode(const std::string& name);  // throws std::invalid_argument
const char* reset_mode_name(ResetMode mode);

struct ResetStats {
  int64_t zeroed = 0;  // moment elements set to zero
  int64_t total = 0;   // moment elements of the parameters reset
  double fraction() const { return total ? static_cast<double>(zeroed) / total : 0.0; }
};

class AdamW {
 public:
  explicit AdamW(AdamWOptions options) : options_(options) {}

  // Registers a parameter. `low_rank` marks LoRA factors (the only ones the reset touches).
  // Weight decay applies to matrices only (dim >= 2), not to norm gains.
  void add_parameter(const std::string& name, const torch::Tensor& param, bool low_rank);
  // Drops a parameter and its state (a W frozen when the low-rank phase starts).
  void remove_parameter(const std::string& name);

  // One update with learning rate `lr` from the parameters' .grad() (undefined grads are skipped),
  // each gradient multiplied by `grad_scale` first (clipping folded into the update, so the
  // gradients are not rewritten in a pass of their own). Contiguous fp32/fp64 CPU parameters are
  // updated in one fused pass over (param, grad, exp_avg, exp_avg_sq); others by tensor ops.
  void step(double lr, double grad_scale = 1.0);
  // Drops the gradients (leaves them undefined): the next backward writes fresh ones instead of
  // adding into zeroed buffers, which saves a zeroing pass and an addition pass per gradient.
  void zero_grad();

  // L2 norm of all defined gradients together (what clip_grad_norm_ computes), summed in fp64.
  double grad_norm() const;
  // clip_grad_norm_ folded into the update: the norm, then step() with the gradients scaled by
  // min(1, max_norm / (norm + 1e-6)). Returns the norm before clipping.
  double clip_and_step(double lr, double max_norm);

  // ReLoRA reset of the low-rank factors' exp_avg and exp_avg_sq. Per parameter, one mask for
  // both moments (an element never keeps exp_avg without its exp_avg_sq; see adamw.cpp):
  //  magnitude: zero elements with |exp_avg| <= the `ratio`-quantile of |exp_avg|;
  //  random: zero each element with probability `ratio`, drawn from `seed` (same on all ranks);
  //  zero: everything. Step counters are kept (bias correction continues).
  ResetStats reset_low_rank_states(ResetMode mode, double ratio, uint64_t seed);

  struct Entry {
    std::string name;
    torch::Tensor param;
    torch::Tensor exp_avg;     // same shape and dtype as param; undefined when another rank owns it
    torch::Tensor exp_avg_sq;  // same shape and dtype as param; undefined when another rank owns it
    int64_t step = 0;
    bool low_rank = false;
    int owner = 0;  // the rank that updates it, when sharded
  };
  const std::vector<Entry>& entries() const { return entries_; }
  std::vector<Entry>& mutable_entries() { return entries_; }
  std::vector<torch::Tensor> parameters() const;
  const AdamWOptions& options() const { return options_; }

  // Sharding across `world` data-parallel ranks (cluster.shard_optimizer): this rank keeps the
  // moments of, and updates, only the parameters it owns; the trainer then shares the updated
  // values (share_owned_parameters in trainer.cpp). Each parameter gets its owner once, when it is
  // registered: the rank owning the fewest elements so far (ties: the lowest). Registration order
  // is the same on every rank, so every rank computes the same owners. Call before or after
  // registering; the moments of parameters owned elsewhere are released.
  void shard(int rank, int world);
  int shard_world() const { return world_; }
  bool owns(const Entry& e) const;

 private:
  void assign_owner(Entry& e);

  AdamWOptions options_;
  std::vector<Entry> entries_;
  int rank_ = 0;
  int world_ = 1;
  std::vector<int64_t> owned_elements_;  // by rank, when sharded
};

}  // namespace relora::train
