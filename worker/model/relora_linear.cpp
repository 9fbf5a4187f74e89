#include "worker/model/relora_linear.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include <torch/nn/init.h>
#include <torch/utils.h>

#include "worker/model/torch_compat.h"

namespace relora::model {

ReloraLinearImpl::ReloraLinearImpl(int64_t in_features, int64_t out_features)
    : in_features_(in_features), out_features_(out_features) {
  if (in_features < 1 || out_features < 1) {
    throw std::invalid_argument("ReloraLinear: in_features and out_features must be >= 1");
  }
  reset();
}

void ReloraLinearImpl::reset() {
  // reset() also runs on the copy inside Cloneable::clone(), where the copied members still hold
  // the original's tensors: it must re-register exactly the parameters the original has (the
  // values are copied over afterwards), including the branch when it exists.
  const bool had_branch = lora_A.defined();
  const int64_t rank = had_branch ? lora_A.size(0) : 0;

  weight = register_parameter("weight", torch::empty({out_features_, in_features_}));  // [out, in]
  // nn.Linear's default init; LlamaImpl::init_weights overwrites it with a seeded one.
  torch::nn::init::kaiming_uniform_(weight, /*a=*/std::sqrt(5.0));

  if (had_branch) {
    weight.requires_grad_(false);
    lora_A = register_parameter("lora_A", torch::empty({rank, in_features_}));   // [r, in]
    lora_B = register_parameter("lora_B", torch::zeros({out_features_, rank}));  // [out, r]
  }
}

torch::Tensor ReloraLinearImpl::forward(const torch::Tensor& x) {
  auto y = torch::linear(x, weight);  // [..., out]
  if (!lora_enabled()) return y;
  // Dropout applies to the branch's input only; skip the copy when it would be the identity.
  const bool drop = dropout_ > 0.0 && is_training();
  const auto& xd = drop ? torch::dropout(x, dropout_, /*train=*/true) : x;    // [..., in]
  auto branch = torch::linear(torch::linear(xd, lora_A), lora_B);             // [..., out]
  return torch::add(y, branch, /*alpha=*/scale_);
}

void ReloraLinearImpl::enable_lora(const LoraOptions& options, uint64_t seed) {
  if (lora_enabled()) {
    throw std::logic_error("ReloraLinear::enable_lora: the low-rank branch already exists");
  }
  const int64_t max_rank = std::min(in_features_, out_features_);
  if (options.rank < 1 || options.rank > max_rank) {
    throw std::invalid_argument("ReloraLinear::enable_lora: rank " + std::to_string(options.rank) +
                                " outside [1, min(in, out) = " + std::to_string(max_rank) + "]");
  }
  if (!(options.dropout >= 0.0 && options.dropout < 1.0)) {
    throw std::invalid_argument("ReloraLinear::enable_lora: dropout must be in [0, 1)");
  }
  scale_ = options.alpha / static_cast<double>(options.rank);
  dropout_ = options.dropout;

  // Branch tensors follow W's dtype and device (the model may already sit on a GPU).
  const auto opts = weight.options().requires_grad(false);
  lora_A = register_parameter("lora_A", torch::empty({options.rank, in_features_}, opts));  // [r, in]
  lora_B = register_parameter("lora_B", torch::zeros({out_features_, options.rank}, opts));  // [out, r]
  draw_lora_A(seed);
  weight.requires_grad_(false);  // only the factors train from now on
}

void ReloraLinearImpl::merge_and_reinit(uint64_t seed) {
  if (!lora_enabled()) return;
  torch::NoGradGuard no_grad;
  // In place, so that optimizer and DDP references to W, A, B stay valid.
  weight.add_(lora_delta().to(weight.scalar_type()));
  draw_lora_A(seed);
  lora_B.zero_();
}

torch::Tensor ReloraLinearImpl::lora_delta() const {
  torch::NoGradGuard no_grad;
  if (!lora_enabled()) {
    return torch::zeros({out_features_, in_features_}, weight.options().dtype(torch::kFloat));
  }
  // fp32 even when the factors are bf16: the product is what gets folded into the master W.
  return torch::matmul(lora_B.to(torch::kFloat), lora_A.to(torch::kFloat)).mul_(scale_);  // [out, in]
}

torch::Tensor ReloraLinearImpl::merged_weight() const {
  torch::NoGradGuard no_grad;
  // Always a fresh fp32 tensor, never an alias of the live W.
  auto w = weight.to(torch::kFloat, /*non_blocking=*/false, /*copy=*/true);  // [out, in]
  if (lora_enabled()) w.add_(lora_delta());
  return w;
}

void ReloraLinearImpl::draw_lora_A(uint64_t seed) {
  torch::NoGradGuard no_grad;
  // kaiming_uniform(a = sqrt(5)) on A [r, in]: gain = sqrt(2 / (1 + 5)), bound = gain *
  // sqrt(3 / fan_in) = 1 / sqrt(in). Drawn in fp32 on the CPU from a private generator, then
  // copied, so every device and every rank given the same seed ends with bit-identical A.
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_features_));
  auto gen = compat::make_cpu_generator(seed);
  auto a = torch::empty(lora_A.sizes(), torch::kFloat).uniform_(-bound, bound, gen);  // [r, in]
  lora_A.copy_(a);
}

}  // namespace relora::model
