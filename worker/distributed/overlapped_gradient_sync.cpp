#include "worker/distributed/overlapped_gradient_sync.h"

#include <stdexcept>

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/torch.h>

#include "worker/distributed/bucketed_all_reduce.h"

namespace relora::distributed {

struct OverlappedGradientSync::ReadyHook final : torch::autograd::FunctionPostHook {
  ReadyHook(OverlappedGradientSync* sync, size_t param) : sync_(sync), param_(param) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list& /*inputs*/) override {
    sync_->gradient_ready(param_);
    return outputs;
  }

 private:
  OverlappedGradientSync* sync_;
  size_t param_;
};

OverlappedGradientSync::OverlappedGradientSync(DataParallelGroup& group, int64_t bucket_bytes)
    : group_(group), bucket_bytes_(bucket_bytes) {
  if (bucket_bytes_ <= 0) throw std::invalid_argument("gradient sync: bucket size must be positive");
}

OverlappedGradientSync::~OverlappedGradientSync() { remove_hooks(); }

void OverlappedGradientSync::remove_hooks() {
  for (size_t i = 0; i < accumulators_.size(); ++i) accumulators_[i]->del_post_hook(hook_keys_[i]);
  accumulators_.clear();
  hook_keys_.clear();
}

void OverlappedGradientSync::set_parameters(const std::vector<torch::Tensor>& params) {
  remove_hooks();
  params_ = params;
  // Buckets over the parameters last to first: the backward completes the last layers first.
  std::vector<torch::Tensor> reversed(params_.rbegin(), params_.rend());
  buckets_.clear();
  bucket_of_.assign(params_.size(), 0);
  for (const auto& indices : plan_buckets(reversed, bucket_bytes_)) {
    Bucket bucket;
    for (size_t r : indices) {
      const size_t i = params_.size() - 1 - r;
      bucket.members.push_back(i);
      bucket_of_[i] = buckets_.size();
    }
    buckets_.push_back(std::move(bucket));
  }
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!params_[i].requires_grad() || !params_[i].is_leaf())
      throw std::invalid_argument("gradient sync: parameter " + std::to_string(i) + " is not a leaf that requires grad");
    auto accumulator = torch::autograd::impl::grad_accumulator(params_[i]);
    hook_keys_.push_back(accumulator->add_post_hook(std::make_unique<ReadyHook>(this, i)));
    accumulators_.push_back(std::move(accumulator));
  }
}

void OverlappedGradientSync::arm() {
  armed_ = true;
  started_in_backward_ = 0;
  for (auto& b : buckets_) {
    b.waiting = b.members.size();
    b.started = false;
  }
}

void OverlappedGradientSync::gradient_ready(size_t param) {
  if (!armed_) return;  // an earlier micro-batch: its gradients only accumulate
  Bucket& bucket = buckets_[bucket_of_[param]];
  if (bucket.started || bucket.waiting == 0) return;
  if (--bucket.waiting == 0) {
    start(bucket);
    ++started_in_backward_;
  }
}

void OverlappedGradientSync::start(Bucket& bucket) {
  torch::NoGradGuard no_grad;
  bucket.grads.clear();
  for (size_t i : bucket.members) {
    auto& p = params_[i];
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
    bucket.grads.push_back(p.grad());
  }
  bucket.flat = pack_bucket(bucket.grads);
  bucket.sum = group_.start_all_reduce_sum(bucket.flat);
  bucket.started = true;
}

void OverlappedGradientSync::start_remaining() {
  armed_ = false;
  for (auto& b : buckets_)
    if (!b.started) start(b);
}

void OverlappedGradientSync::finish() {
  start_remaining();
  const double world = static_cast<double>(group_.world());
  for (auto& b : buckets_) {
    b.sum.wait();
    unpack_bucket(b.flat, b.grads, world);
    b.flat = torch::Tensor();
    b.grads.clear();
    b.started = false;
  }
}

}  // namespace relora::distributed
