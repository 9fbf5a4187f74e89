// Averaging (or summing) many tensors across the data-parallel ranks in a few large all-reduces:
// the gradient synchronisation of plain (replicated) data parallelism.
//
// Tensors are packed, in order, into flat buckets of one dtype and device: consecutive tensors
// fill a bucket up to `bucket_bytes`, and one that does not fit starts the next (a contiguous
// tensor alone in its bucket is reduced in place). The bucket order depends only on the tensor
// list, which is the same on every rank, so the ranks' collectives match. After the sum a mean
// divides every bucket by the world size; then the buckets are copied back. Gloo's all-reduce
// leaves the same bytes on every rank and the division is local and deterministic, so all ranks
// keep bit-identical values.
//
// Threading: all methods on the rank's training thread.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

#include "worker/distributed/process_group.h"

namespace relora::distributed {

// Packs tensors, in order, into buckets of one dtype and device of up to `bucket_bytes` each (a
// tensor that does not fit starts the next): the members' indices, per bucket. Throws
// std::invalid_argument for a non-floating tensor.
std::vector<std::vector<size_t>> plan_buckets(const std::vector<at::Tensor>& tensors, int64_t bucket_bytes);
// A bucket as one flat tensor: its member itself when alone and contiguous (reduced in place, no
// copy), else a packed copy.
at::Tensor pack_bucket(const std::vector<at::Tensor>& members);
// After the reduction: divides the flat bucket by `divisor` (1: a sum) and copies it back into
// the members, unless it is the member itself.
void unpack_bucket(at::Tensor& flat, std::vector<at::Tensor>& members, double divisor);

class BucketedAllReduce {
 public:
  static constexpr int64_t kDefaultBucketBytes = int64_t{25} << 20;

  explicit BucketedAllReduce(DataParallelGroup& group, int64_t bucket_bytes = kDefaultBucketBytes);

  // In place. Throws std::invalid_argument for a non-floating tensor, std::runtime_error when the
  // all-reduce fails (see DataParallelGroup::all_reduce_sum).
  void mean(std::vector<at::Tensor>& tensors) { reduce(tensors, /*mean=*/true); }
  void sum(std::vector<at::Tensor>& tensors) { reduce(tensors, /*mean=*/false); }

  int64_t collectives() const { return collectives_; }  // all-reduces (buckets) so far
  DataParallelGroup& group() { return group_; }

 private:
  void reduce(std::vector<at::Tensor>& tensors, bool mean);

  DataParallelGroup& group_;
  const int64_t bucket_bytes_;
  int64_t collectives_ = 0;
};

}  // namespace relora::distributed
