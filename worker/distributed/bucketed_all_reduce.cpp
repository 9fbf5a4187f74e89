#include "worker/distributed/bucketed_all_reduce.h"

#include <stdexcept>
#include <string>

#include <torch/torch.h>

namespace relora::distributed {

BucketedAllReduce::BucketedAllReduce(DataParallelGroup& group, int64_t bucket_bytes)
    : group_(group), bucket_bytes_(bucket_bytes) {
  if (bucket_bytes_ <= 0) throw std::invalid_argument("all-reduce: bucket size must be positive");
}

void BucketedAllReduce::reduce(std::vector<torch::Tensor>& tensors, bool mean) {
  // ---- pack: consecutive members of one dtype and device, up to bucket_bytes_ each ----------
  struct Bucket {
    std::vector<torch::Tensor> members;
    int64_t bytes = 0;
    torch::Tensor flat;
  };
  std::vector<Bucket> buckets;
  std::vector<size_t> open;  // index in `buckets` of the bucket still filling, per dtype/device
  auto add = [&](const torch::Tensor& t) {
    if (!t.is_floating_point())
      throw std::invalid_argument(std::string("all-reduce: cannot average a tensor of dtype ") +
                                  c10::toString(t.scalar_type()));
    const int64_t bytes = t.numel() * static_cast<int64_t>(t.element_size());
    for (size_t& b : open) {
      Bucket& bucket = buckets[b];
      const auto& first = bucket.members.front();
      if (first.scalar_type() != t.scalar_type() || first.device() != t.device()) continue;
      if (bucket.bytes + bytes <= bucket_bytes_) {
        bucket.members.push_back(t);
        bucket.bytes += bytes;
        return;
      }
      buckets.push_back({{t}, bytes, {}});
      b = buckets.size() - 1;
      return;
    }
    buckets.push_back({{t}, bytes, {}});
    open.push_back(buckets.size() - 1);
  };
  for (const auto& t : tensors) add(t);

  std::vector<torch::Tensor> flats;
  flats.reserve(buckets.size());
  for (auto& bucket : buckets) {
    if (bucket.members.size() == 1 && bucket.members[0].is_contiguous()) {
      bucket.flat = bucket.members[0];  // reduced in place, no copy
    } else {
      std::vector<torch::Tensor> views;
      for (const auto& m : bucket.members) views.push_back(m.reshape({-1}));
      bucket.flat = torch::cat(views);
    }
    flats.push_back(bucket.flat);
  }

  // ---- reduce -------------------------------------------------------------------------------
  group_.all_reduce_sum(flats);
  collectives_ += static_cast<int64_t>(flats.size());

  // ---- unpack: mean, copied back into the members -------------------------------------------
  torch::NoGradGuard no_grad;
  const double world = static_cast<double>(group_.world());
  for (auto& bucket : buckets) {
    if (mean) bucket.flat.div_(world);
    if (bucket.flat.is_same(bucket.members[0])) continue;
    int64_t offset = 0;
    for (auto& m : bucket.members) {
      m.copy_(bucket.flat.slice(0, offset, offset + m.numel()).view(m.sizes()));
      offset += m.numel();
    }
  }
}

}  // namespace relora::distributed
