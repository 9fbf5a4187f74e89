#include "worker/distributed/replicated_optimizer.h"

#include <chrono>

#include <torch/torch.h>

namespace relora::distributed {

void ReplicatedOptimizer::set_parameters(const std::vector<train::TrainableParameter>& params) {
  LocalOptimizer::set_parameters(params);
  std::vector<torch::Tensor> tensors;
  for (const auto& e : adamw().entries()) tensors.push_back(e.param);
  sync_.set_parameters(tensors);
}

double ReplicatedOptimizer::average(std::vector<torch::Tensor>& grads, double local_loss, double& seconds) {
  const auto start = std::chrono::steady_clock::now();
  // The gradients' device (NCCL reduces no CPU tensors).
  const auto device = grads.empty() ? torch::Device(torch::kCPU) : grads.front().device();
  const int world = group_.world();
  // The loss and votes travel beside the gradient buckets: started after every bucket (the same
  // order on every rank), waited for after them, so the step pays one round trip, not two.
  sync_.start_remaining();
  auto control = torch::tensor({local_loss, vote_.local_vote()}, torch::kFloat64).to(device);
  PendingCollective control_sum = group_.start_all_reduce_sum(control);
  sync_.finish();  // the sums the backward started, and the rest
  control_sum.wait();
  const auto sums = control.cpu();
  vote_.record(sums[1].item<double>());
  const double loss = sums[0].item<double>() / world;
  seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return loss;
}

}  // namespace relora::distributed
