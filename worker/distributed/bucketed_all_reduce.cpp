#include "worker/distributed/bucketed_all_reduce.h"

#include <stdexcept>
#include <string>

#include <torch/torch.h>

namespace relora::distributed {

BucketedAllReduce::BucketedAllReduce(DataParallelGroup& group, int64_t bucket_bytes)
    : group_(group), bucket_bytes_(bucket_bytes) {
  if (bucket_bytes_ <= 0) throw std::invalid_argument("all-reduce: bucket size must be positive");
}

std::vector<std::vector<size_t>> plan_buckets(const std::vector<at::Tensor>& tensors, int64_t bucket_bytes) {
  struct Open {
    size_t bucket;
    int64_t bytes;
  };
  std::vector<std::vector<size_t>> buckets;
  std::vector<Open> open;  // the bucket still filling, per dtype and device
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    if (!t.is_floating_point())
      throw std::invalid_argument(std::string("all-reduce: cannot average a tensor of dtype ") +
                                  c10::toString(t.scalar_type()));
    const int64_t bytes = t.numel() * static_cast<int64_t>(t.element_size());
    bool placed = false;
    for (Open& o : open) {
      const auto& first = tensors[buckets[o.bucket].front()];
      if (first.scalar_type() != t.scalar_type() || first.device() != t.device()) continue;
      if (o.bytes + bytes <= bucket_bytes) {
        buckets[o.bucket].push_back(i);
        o.bytes += bytes;
      } else {
        buckets.push_back({i});
        o = {buckets.size() - 1, bytes};
      }
      placed = true;
      break;
    }
    if (!placed) {
      buckets.push_back({i});
      open.push_back({buckets.size() - 1, bytes});
    }
  }
  return buckets;
}

at::Tensor pack_bucket(const std::vector<at::Tensor>& members) {
  if (members.size() == 1 && members[0].is_contiguous()) return members[0];
  std::vector<torch::Tensor> views;
  views.reserve(members.size());
  for (const auto& m : members) views.push_back(m.reshape({-1}));
  return torch::cat(views);
}

void unpack_bucket(at::Tensor& flat, std::vector<at::Tensor>& members, double divisor) {
  torch::NoGradGuard no_grad;
  if (divisor != 1.0) flat.div_(divisor);
  if (flat.is_same(members[0])) return;
  int64_t offset = 0;
  for (auto& m : members) {
    m.copy_(flat.slice(0, offset, offset + m.numel()).view(m.sizes()));
    offset += m.numel();
  }
}

void BucketedAllReduce::reduce(std::vector<torch::Tensor>& tensors, bool mean) {
  std::vector<std::vector<torch::Tensor>> members;
  std::vector<torch::Tensor> flats;
  for (const auto& indices : plan_buckets(tensors, bucket_bytes_)) {
    members.emplace_back();
    for (size_t i : indices) members.back().push_back(tensors[i]);
    flats.push_back(pack_bucket(members.back()));
  }
  group_.all_reduce_sum(flats);
  collectives_ += static_cast<int64_t>(flats.size());
  const double divisor = mean ? static_cast<double>(group_.world()) : 1.0;
  for (size_t b = 0; b < flats.size(); ++b) unpack_bucket(flats[b], members[b], divisor);
}

}  // namespace relora::distributed
