#include "worker/train/local_optimizer.h"

#include <algorithm>
#include <set>

#include "worker/train/optimizer_state.h"

namespace relora::train {

void LocalOptimizer::set_parameters(const std::vector<TrainableParameter>& params) {
  std::set<std::string> wanted;
  for (const auto& p : params) wanted.insert(p.name);
  std::vector<std::string> stale;
  for (const auto& e : adamw_.entries())
    if (!wanted.count(e.name)) stale.push_back(e.name);
  for (const auto& name : stale) adamw_.remove_parameter(name);
  for (const auto& p : params) {
    const auto& entries = adamw_.entries();
    const bool known = std::any_of(entries.begin(), entries.end(), [&](const auto& e) { return e.name == p.name; });
    if (!known) adamw_.add_parameter(p.name, p.tensor, p.low_rank);
  }
}

OptimizerStepResult LocalOptimizer::step(double local_loss, double lr, double max_norm) {
  std::vector<torch::Tensor> grads;
  grads.reserve(adamw_.entries().size());
  for (const auto& e : adamw_.entries())
    if (e.param.grad().defined()) grads.push_back(e.param.grad());
  OptimizerStepResult result;
  result.loss = average(grads, local_loss, result.communication_seconds);
  result.grad_norm = adamw_.clip_and_step(lr, max_norm);
  adamw_.zero_grad();
  return result;
}

ResetStats LocalOptimizer::reset_low_rank_states(ResetMode mode, double ratio, uint64_t seed) {
  return adamw_.reset_low_rank_states(mode, ratio, seed);
}

void LocalOptimizer::save_state(NamedTensors& common, NamedTensors& own) const {
  (void)own;  // every rank holds everything: rank 0's copy is the checkpoint's
  for (const auto& e : adamw_.entries()) {
    common.emplace_back(moment_key(e.name, kExpAvg), e.exp_avg);
    common.emplace_back(moment_key(e.name, kExpAvgSq), e.exp_avg_sq);
    common.emplace_back(step_key(e.name), torch::tensor({e.step}, torch::kInt64));
  }
}

void LocalOptimizer::load_state(const Checkpoint& ckpt) {
  std::vector<MomentRange> ranges;
  for (auto& e : adamw_.mutable_entries()) {
    e.step = load_step_counter(ckpt, e.name);
    ranges.push_back({e.name, 0, e.exp_avg.view({-1}), e.exp_avg_sq.view({-1})});
  }
  load_moment_ranges(ckpt, ranges);
}

int64_t LocalOptimizer::moment_elements() const {
  int64_t n = 0;
  for (const auto& e : adamw_.entries()) n += e.exp_avg.numel();
  return n;
}

int64_t LocalOptimizer::parameter_elements() const {
  int64_t n = 0;
  for (const auto& e : adamw_.entries()) n += e.param.numel();
  return n;
}

}  // namespace relora::train
