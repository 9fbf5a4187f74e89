// AdamW over named parameters, with the ReLoRA optimizer-state reset.
//
// Our own optimizer rather than torch::optim::AdamW because ReLoRA needs to reach into the state
// of specific parameters (prune the LoRA factors' moments at every merge, keep everyone else's),
// checkpoint it by parameter name for exact resume. The update is the same as torch.optim.AdamW
// (decoupled weight decay, bias correction by a per-parameter step).
//
// Single-rank code: it updates what it is given. The sharded optimizer of worker/distributed
// gives it this rank's pieces of the parameters (flat views) with their reduce-scattered
// gradients; the reset masks come from reset_mask(), which it applies to the whole parameter.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Generator.h>
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
  // Registers a piece of a parameter (a contiguous view) updated from `grad` (same shape) instead
  // of param.grad(); `decay` says whether the parameter it belongs to takes weight decay.
  void add_piece(const std::string& name, const torch::Tensor& piece, const torch::Tensor& grad, bool low_rank,
                 bool decay);
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
  // Its square: what ranks holding pieces of the gradients add up before the square root.
  double grad_sum_of_squares() const;
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
    torch::Tensor grad;        // the gradient of a piece (add_piece); undefined: param.grad()
    torch::Tensor exp_avg;     // same shape and dtype as param
    torch::Tensor exp_avg_sq;  // same shape and dtype as param
    int64_t step = 0;
    bool low_rank = false;
    bool decay = false;
    const torch::Tensor& gradient() const { return grad.defined() ? grad : param.grad(); }
  };
  const std::vector<Entry>& entries() const { return entries_; }
  std::vector<Entry>& mutable_entries() { return entries_; }
  std::vector<torch::Tensor> parameters() const;
  const AdamWOptions& options() const { return options_; }

 private:
  AdamWOptions options_;
  std::vector<Entry> entries_;
};

// The reset mask (true = zero the element) of one whole parameter's moments: see
// AdamW::reset_low_rank_states. kRandom draws from `gen` (numel draws, in flat order, whatever the
// shape), so optimizers that hold pieces of the parameter get the same mask by drawing it whole.
torch::Tensor reset_mask(ResetMode mode, double ratio, const torch::Tensor& exp_avg, at::Generator& gen);

}  // namespace relora::train
