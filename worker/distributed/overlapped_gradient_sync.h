// Gradient averaging that overlaps the backward, as PyTorch's DDP does: the trainable parameters
// are grouped into buckets in reverse registration order (about the order in which the backward
// completes their gradients), and each bucket's all-reduce starts as soon as the last of its
// gradients has been accumulated, while the backward goes on with the earlier layers.
//
// The hook is a post-hook on each parameter's gradient accumulator (the autograd node that adds a
// micro-batch's gradient into .grad), the one LibTorch offers in C++ (1.13 and 2.x): it runs after
// the accumulation, so .grad already holds every micro-batch of the step. Only the step's last
// backward starts sums (arm()); earlier micro-batches only accumulate. Every rank builds the same
// graph, so the backward completes buckets in the same order on every rank and their collectives
// match. A bucket the backward did not complete (a parameter without a gradient) starts in
// finish(), in bucket order.
//
// Threading: the hooks run on the thread that runs the backward (the training thread on the CPU;
// the autograd engine's device thread for CUDA, while the training thread waits in backward()).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <torch/types.h>

#include "worker/distributed/process_group.h"

namespace torch::autograd {
struct Node;
}

namespace relora::distributed {

class OverlappedGradientSync {
 public:
  OverlappedGradientSync(DataParallelGroup& group, int64_t bucket_bytes);
  ~OverlappedGradientSync();
  OverlappedGradientSync(const OverlappedGradientSync&) = delete;
  OverlappedGradientSync& operator=(const OverlappedGradientSync&) = delete;

  // The parameters whose gradients are averaged (leaves that require grad), in registration order.
  void set_parameters(const std::vector<torch::Tensor>& params);
  // The next backward is the step's last: start each bucket's sum once its gradients are complete.
  void arm();
  // Starts the buckets the backward did not (in bucket order). Collective. Another collective
  // started after it (the step's control all-reduce) then runs alongside the buckets' sums.
  void start_remaining();
  // start_remaining(), then waits for every bucket and leaves each parameter's .grad holding the
  // mean over the ranks (a missing gradient counts as zeros). Collective.
  void finish();

  // Buckets whose all-reduce started during the backward, and all buckets, at the last finish().
  int64_t started_in_backward() const { return started_in_backward_; }
  int64_t buckets() const { return static_cast<int64_t>(buckets_.size()); }

 private:
  struct Bucket {
    std::vector<size_t> members;  // parameter indices
    size_t waiting = 0;           // gradients not yet complete in the armed backward
    torch::Tensor flat;
    std::vector<torch::Tensor> grads;
    PendingCollective sum;
    bool started = false;
  };
  struct ReadyHook;
  void gradient_ready(size_t param);
  void start(Bucket& bucket);
  void remove_hooks();

  DataParallelGroup& group_;
  const int64_t bucket_bytes_;
  std::vector<torch::Tensor> params_;
  // Held, so that every graph uses these accumulators (and so these hooks).
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators_;
  std::vector<uintptr_t> hook_keys_;
  std::vector<size_t> bucket_of_;  // by parameter index
  std::vector<Bucket> buckets_;
  bool armed_ = false;
  int64_t started_in_backward_ = 0;
};

}  // namespace relora::distributed
