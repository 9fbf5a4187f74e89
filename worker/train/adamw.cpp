#include "worker/train/adamw.h"

#include <cmath>
#include <stdexcept>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

namespace relora::train {

ResetMode parse_reset_mode(const std::string& name) {
  if (name == "none" || name.empty()) return ResetMode::kNone;
  if (name == "magnitude") return ResetMode::kMagnitude;
  if (name == "random") return ResetMode::kRandom;
  if (name == "zero") return ResetMode::kZero;
  throw std::invalid_argument("unknown optimizer reset mode '" + name +
                              "' (expected magnitude, random, zero or none)");
}

const char* reset_mode_name(ResetMode mode) {
  switch (mode) {
    case ResetMode::kMagnitude: return "magnitude";
    case ResetMode::kRandom: return "random";
    case ResetMode::kZero: return "zero";
    case ResetMode::kNone: break;
  }
  return "none";
}

void AdamW::add_parameter(const std::string& name, const torch::Tensor& param, bool low_rank) {
  for (const auto& e : entries_)
    if (e.name == name) throw std::logic_error("AdamW: parameter registered twice: " + name);
  Entry e;
  e.name = name;
  e.param = param;
  // Moments in the master weights' dtype (fp32 in training; fp64 in the exactness tests).
  auto opts = param.options();
  e.exp_avg = torch::zeros(param.sizes(), opts);
  e.exp_avg_sq = torch::zeros(param.sizes(), opts);
  e.low_rank = low_rank;
  entries_.push_back(std::move(e));
}

void AdamW::remove_parameter(const std::string& name) {
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    if (it->name == name) {
      entries_.erase(it);
      return;
    }
  }
}

std::vector<torch::Tensor> AdamW::parameters() const {
  std::vector<torch::Tensor> out;
  out.reserve(entries_.size());
  for (const auto& e : entries_) out.push_back(e.param);
  return out;
}

void AdamW::zero_grad() {
  for (auto& e : entries_) {
    auto& g = e.param.mutable_grad();
    if (g.defined()) g.zero_();
  }
}

void AdamW::step(double lr) {
  torch::NoGradGuard no_grad;
  const double b1 = options_.beta1, b2 = options_.beta2;
  for (auto& e : entries_) {
    const auto& grad = e.param.grad();
    if (!grad.defined()) continue;
    e.step += 1;
    if (options_.weight_decay != 0.0 && e.param.dim() >= 2) e.param.mul_(1.0 - lr * options_.weight_decay);
    e.exp_avg.mul_(b1).add_(grad, 1.0 - b1);
    e.exp_avg_sq.mul_(b2).addcmul_(grad, grad, 1.0 - b2);
    const double bias1 = 1.0 - std::pow(b1, static_cast<double>(e.step));
    const double bias2 = 1.0 - std::pow(b2, static_cast<double>(e.step));
    auto denom = (e.exp_avg_sq.sqrt() / std::sqrt(bias2)).add_(options_.eps);
    e.param.addcdiv_(e.exp_avg, denom, -lr / bias1);
  }
}

namespace {

// Zeroes the elements of `t` whose magnitude is at or below its `ratio`-quantile; returns how many.
int64_t prune_by_magnitude(torch::Tensor& t, double ratio) {
  const int64_t n = t.numel();
  if (n == 0) return 0;
  if (ratio >= 1.0) {
    t.zero_();
    return n;
  }
  const int64_t k = static_cast<int64_t>(std::ceil(ratio * static_cast<double>(n)));
  if (k <= 0) return 0;
  auto magnitude = t.abs().flatten();
  const double threshold = std::get<0>(magnitude.kthvalue(k)).item<double>();
  auto mask = magnitude.le(threshold).view(t.sizes());
  t.masked_fill_(mask, 0.0);
  return mask.sum().item<int64_t>();
}

int64_t prune_at_random(torch::Tensor& t, double ratio, at::Generator& gen) {
  // Draw on the CPU from the shared seed so every rank prunes the same elements.
  auto keep = torch::empty(t.sizes(), torch::kFloat32).bernoulli_(1.0 - ratio, gen).to(t.device());
  const int64_t zeroed = t.numel() - keep.sum().item<int64_t>();
  t.mul_(keep.to(t.dtype()));
  return zeroed;
}

}  // namespace

ResetStats AdamW::reset_low_rank_states(ResetMode mode, double ratio, uint64_t seed) {
  ResetStats stats;
  if (mode == ResetMode::kNone) return stats;
  torch::NoGradGuard no_grad;
  auto gen = at::detail::createCPUGenerator(seed);
  for (auto& e : entries_) {
    if (!e.low_rank) continue;
    for (torch::Tensor* moment : {&e.exp_avg, &e.exp_avg_sq}) {
      stats.total += moment->numel();
      switch (mode) {
        case ResetMode::kZero:
          moment->zero_();
          stats.zeroed += moment->numel();
          break;
        case ResetMode::kMagnitude:
          stats.zeroed += prune_by_magnitude(*moment, ratio);
          break;
        case ResetMode::kRandom:
          stats.zeroed += prune_at_random(*moment, ratio, gen);
          break;
        case ResetMode::kNone:
          break;
      }
    }
  }
  return stats;
}

}  // namespace relora::train
