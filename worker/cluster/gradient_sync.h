// The trainer's GradientSync over a DataParallelGroup: the mean of the ranks' gradients (and of
// the step's loss, which the trainer appends), once per optimizer step.
//
// Tensors are packed, in order, into flat buckets of one dtype and device: consecutive tensors
// fill a bucket up to `bucket_bytes`, and one that does not fit starts the next (a contiguous
// tensor alone in its bucket is reduced in place), so a step costs a few large all-reduces
// instead of one per parameter. The bucket order depends only on the tensor list, which is the
// same on every rank, so the ranks' collectives match. After the sum every bucket is divided by the world
// size and copied back. Gloo's all-reduce leaves the same bytes on every rank, and the division is
// local and deterministic, so all ranks keep bit-identical parameters.
//
// Stopping together: ranks poll the cancel flag between steps, and a Cancel can reach one rank
// a step before another; a rank that stopped alone would leave the others waiting in the next
// all-reduce until it times out. So every call also carries a stop vote (1.0 when `local_stop`
// says so) in its float64 bucket; after the call, stop_agreed() is true on every rank at once.
//
// Threading: all methods on the rank's training thread; `local_stop` may read state another
// thread sets (it must be thread-safe itself).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "worker/cluster/process_group.h"
#include "worker/train/trainer.h"

namespace relora::cluster {

class BucketedGradientSync final : public train::GradientSync {
 public:
  static constexpr int64_t kDefaultBucketBytes = int64_t{25} << 20;

  explicit BucketedGradientSync(DataParallelGroup& group, int64_t bucket_bytes = kDefaultBucketBytes);

  // Throws std::invalid_argument for a non-floating tensor, std::runtime_error when the
  // all-reduce fails (see DataParallelGroup::all_reduce_sum).
  void all_reduce_mean(std::vector<torch::Tensor>& tensors) override;
  // Element-wise sums, exact for one non-zero contribution per element (the sharded optimizer's
  // exchange of updated parameters); no stop vote.
  void all_reduce_sum(std::vector<torch::Tensor>& tensors) override;

  void set_local_stop(std::function<bool()> local_stop) { local_stop_ = std::move(local_stop); }
  bool stop_agreed() const { return stop_agreed_; }

  int64_t calls() const { return calls_; }            // all_reduce_mean calls so far
  int64_t collectives() const { return collectives_; }  // all-reduces (buckets) so far

 private:
  DataParallelGroup& group_;
  const int64_t bucket_bytes_;
  std::function<bool()> local_stop_;
  void reduce(std::vector<torch::Tensor>& tensors, bool mean);

  bool stop_agreed_ = false;
  int64_t calls_ = 0;
  int64_t collectives_ = 0;
};

}  // namespace relora::cluster
