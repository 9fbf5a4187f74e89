#include "worker/distributed/replicated_optimizer.h"

#include <chrono>

#include <torch/torch.h>

namespace relora::distributed {

double ReplicatedOptimizer::average(std::vector<torch::Tensor>& grads, double local_loss, double& seconds) {
  const auto start = std::chrono::steady_clock::now();
  // On the gradients' device, so that it shares a bucket with them (NCCL reduces no CPU tensors).
  const auto device = grads.empty() ? torch::Device(torch::kCPU) : grads.front().device();
  const int world = all_reduce_.group().world();
  grads.push_back(torch::tensor({local_loss, vote_.local_vote()}, torch::kFloat64).to(device));
  all_reduce_.mean(grads);
  const auto control = grads.back().cpu();
  grads.pop_back();
  vote_.record(control[1].item<double>() * world);
  seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return control[0].item<double>();
}

}  // namespace relora::distributed
