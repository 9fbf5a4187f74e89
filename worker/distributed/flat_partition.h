// How ZeRO splits the trainable parameters across ranks: balanced by elements, not by tensors.
//
// The parameters, in order, are laid end to end in one flat index space, which is cut into
// buckets of up to `bucket_elements` consecutive elements (the unit of one reduce-scatter and one
// all-gather). Each bucket is split into `world` equal chunks of ceil(size / world) elements; rank
// r owns chunk r of every bucket (the last chunks may be short or empty). So every rank owns at
// most one chunk per bucket more than 1/world of the elements, whatever the tensor sizes: the
// embedding and the head no longer decide the balance.
//
// A rank's pieces are the intersections of its chunks with the parameters: a parameter may be cut
// between ranks and between buckets. Pure index arithmetic, the same on every rank.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace relora::distributed {

struct FlatBucket {
  int64_t begin = 0;  // flat index of its first element
  int64_t end = 0;    // one past its last
  int64_t chunk = 0;  // elements per rank: ceil((end - begin) / world)
  int64_t size() const { return end - begin; }
};

struct FlatPiece {
  size_t param = 0;          // index in the parameter list
  int64_t offset = 0;        // first element, within the parameter (flattened)
  int64_t length = 0;        // elements
  size_t bucket = 0;         // the bucket it lies in
  int64_t chunk_offset = 0;  // first element, within this rank's chunk of that bucket
};

class FlatPartition {
 public:
  FlatPartition() = default;
  // Throws std::invalid_argument for world < 1 or bucket_elements < 1.
  FlatPartition(const std::vector<int64_t>& numels, int world, int64_t bucket_elements);

  int world() const { return world_; }
  int64_t total() const { return total_; }
  const std::vector<FlatBucket>& buckets() const { return buckets_; }
  // Flat index of each parameter's first element.
  const std::vector<int64_t>& param_offsets() const { return offsets_; }
  // Rank `rank`'s flat range in bucket `b`: [first, second).
  std::pair<int64_t, int64_t> owned_range(size_t bucket, int rank) const;
  // Rank `rank`'s pieces, by bucket, then by parameter.
  std::vector<FlatPiece> pieces(int rank) const;
  // Elements rank `rank` owns.
  int64_t owned_elements(int rank) const;

 private:
  int world_ = 1;
  int64_t total_ = 0;
  std::vector<int64_t> numels_;
  std::vector<int64_t> offsets_;
  std::vector<FlatBucket> buckets_;
};

}  // namespace relora::distributed
