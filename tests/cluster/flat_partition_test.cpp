// ZeRO's partition of the trainable parameters: balanced by elements whatever the tensor sizes,
// pieces that tile every parameter exactly once, and chunks laid out as the collectives expect.
#include "worker/distributed/flat_partition.h"

#include <algorithm>
#include <map>

#include <gtest/gtest.h>

namespace relora::distributed {
namespace {

// Every element of every parameter is owned by exactly one rank's piece.
void expect_tiles(const FlatPartition& p, const std::vector<int64_t>& numels) {
  std::vector<std::vector<int>> owner(numels.size());
  for (size_t i = 0; i < numels.size(); ++i) owner[i].assign(static_cast<size_t>(numels[i]), -1);
  for (int r = 0; r < p.world(); ++r) {
    int64_t owned = 0;
    for (const auto& piece : p.pieces(r)) {
      owned += piece.length;
      const auto [lo, hi] = p.owned_range(piece.bucket, r);
      const int64_t flat = p.param_offsets()[piece.param] + piece.offset;
      EXPECT_GE(flat, lo);
      EXPECT_LE(flat + piece.length, hi);
      EXPECT_EQ(piece.chunk_offset, flat - lo);  // where the reduce-scatter puts it
      for (int64_t k = 0; k < piece.length; ++k) {
        auto& o = owner[piece.param][static_cast<size_t>(piece.offset + k)];
        EXPECT_EQ(o, -1) << "element owned twice";
        o = r;
      }
    }
    EXPECT_EQ(owned, p.owned_elements(r));
  }
  for (const auto& param : owner)
    for (int o : param) ASSERT_NE(o, -1) << "element owned by nobody";
}

TEST(FlatPartition, BalancesByElementsNotTensors) {
  // An embedding-sized tensor, a head-sized one and small ones: whole-tensor owners would leave
  // one rank with about half of everything.
  const std::vector<int64_t> numels = {32000 * 64, 64, 64 * 64, 64, 64 * 128, 32000 * 64};
  for (int world : {2, 3, 4}) {
    const FlatPartition p(numels, world, /*bucket_elements=*/1 << 20);
    expect_tiles(p, numels);
    const double fair = static_cast<double>(p.total()) / world;
    for (int r = 0; r < world; ++r) {
      // At most one chunk per bucket away from 1/world: within a few elements here.
      EXPECT_LE(std::abs(static_cast<double>(p.owned_elements(r)) - fair),
                static_cast<double>(p.buckets().size()))
          << "world " << world << " rank " << r;
    }
  }
}

TEST(FlatPartition, ParametersStraddleBucketsAndRanks) {
  const std::vector<int64_t> numels = {10, 0, 7, 33, 1, 20};
  const FlatPartition p(numels, 4, /*bucket_elements=*/16);
  EXPECT_EQ(p.total(), 71);
  ASSERT_EQ(p.buckets().size(), 5u);  // 16, 16, 16, 16, 7
  EXPECT_EQ(p.buckets().back().size(), 7);
  EXPECT_EQ(p.buckets().back().chunk, 2);  // ceil(7 / 4): rank 3 owns 1 element of it
  EXPECT_EQ(p.owned_range(4, 3), (std::pair<int64_t, int64_t>{70, 71}));
  expect_tiles(p, numels);
  // The 33-element parameter (flat 17..49) is cut into pieces on every rank.
  std::map<int, int64_t> of_param3;
  for (int r = 0; r < 4; ++r)
    for (const auto& piece : p.pieces(r))
      if (piece.param == 3) of_param3[r] += piece.length;
  EXPECT_EQ(of_param3.size(), 4u);
}

TEST(FlatPartition, MoreRanksThanElementsLeavesSomeRanksEmpty) {
  const FlatPartition p({3}, 8, 100);
  expect_tiles(p, {3});
  int empty = 0;
  for (int r = 0; r < 8; ++r) empty += p.pieces(r).empty();
  EXPECT_EQ(empty, 5);
}

TEST(FlatPartition, RejectsABadWorldOrBucket) {
  EXPECT_THROW(FlatPartition({4}, 0, 16), std::invalid_argument);
  EXPECT_THROW(FlatPartition({4}, 2, 0), std::invalid_argument);
}

}  // namespace
}  // namespace relora::distributed
