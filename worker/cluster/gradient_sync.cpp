#include "worker/cluster/gradient_sync.h"

#include <stdexcept>
#include <string>

#include <torch/torch.h>

namespace relora::cluster {

BucketedGradientSync::BucketedGradientSync(DataParallelGroup& group, int64_t bucket_bytes)
    : group_(group), bucket_bytes_(bucket_bytes) {
  if (bucket_bytes_ <= 0) throw std::invalid_argument("gradient sync: bucket size must be positive");
}

void BucketedGradientSync::all_reduce_mean(std::vector<torch::Tensor>& tensors) {
  ++calls_;
  reduce(tensors, /*mean=*/true);
}

void BucketedGradientSync::all_reduce_sum(std::vector<torch::Tensor>& tensors) { reduce(tensors, /*mean=*/false); }

void BucketedGradientSync::reduce(std::vector<torch::Tensor>& tensors, bool mean) {
  // On the tensors' device, so that it shares a bucket with the loss (NCCL reduces no CPU tensors).
  // Only the per-step mean carries the stop vote: every rank makes the same calls in the same
  // order, so the vote is counted once per step everywhere.
  const auto device = tensors.empty() ? torch::Device(torch::kCPU) : tensors.front().device();
  auto vote = torch::full({1}, mean && local_stop_ && local_stop_() ? 1.0 : 0.0,
                          torch::TensorOptions(torch::kFloat64).device(device));

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
      throw std::invalid_argument(std::string("gradient sync: cannot average a tensor of dtype ") +
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
  if (mean) add(vote);

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
  if (mean && vote.item<double>() > 0) stop_agreed_ = true;
}

}  // namespace relora::cluster
