#include "worker/distributed/flat_partition.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace relora::distributed {

FlatPartition::FlatPartition(const std::vector<int64_t>& numels, int world, int64_t bucket_elements)
    : world_(world), numels_(numels) {
  if (world < 1) throw std::invalid_argument("flat partition: world must be at least 1, got " + std::to_string(world));
  if (bucket_elements < 1)
    throw std::invalid_argument("flat partition: buckets must hold at least one element, got " +
                                std::to_string(bucket_elements));
  for (int64_t n : numels) {
    if (n < 0) throw std::invalid_argument("flat partition: negative parameter size");
    offsets_.push_back(total_);
    total_ += n;
  }
  for (int64_t begin = 0; begin < total_; begin += bucket_elements) {
    const int64_t end = std::min(total_, begin + bucket_elements);
    buckets_.push_back({begin, end, (end - begin + world - 1) / world});
  }
}

std::pair<int64_t, int64_t> FlatPartition::owned_range(size_t bucket, int rank) const {
  const FlatBucket& b = buckets_.at(bucket);
  const int64_t first = std::min(b.end, b.begin + rank * b.chunk);
  return {first, std::min(b.end, first + b.chunk)};
}

std::vector<FlatPiece> FlatPartition::pieces(int rank) const {
  std::vector<FlatPiece> out;
  for (size_t b = 0; b < buckets_.size(); ++b) {
    const auto [lo, hi] = owned_range(b, rank);
    if (lo >= hi) continue;
    // The first parameter that ends after `lo`.
    size_t p = static_cast<size_t>(std::upper_bound(offsets_.begin(), offsets_.end(), lo) - offsets_.begin()) - 1;
    for (; p < numels_.size() && offsets_[p] < hi; ++p) {
      const int64_t s = std::max(lo, offsets_[p]), e = std::min(hi, offsets_[p] + numels_[p]);
      if (s >= e) continue;
      out.push_back({p, s - offsets_[p], e - s, b, s - lo});
    }
  }
  return out;
}

int64_t FlatPartition::owned_elements(int rank) const {
  int64_t n = 0;
  for (size_t b = 0; b < buckets_.size(); ++b) {
    const auto [lo, hi] = owned_range(b, rank);
    n += hi - lo;
  }
  return n;
}

}  // namespace relora::distributed
