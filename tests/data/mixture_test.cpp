// The weighted sample order: proportions, determinism, random access (resume), per-source epochs.
#include "worker/data/mixture.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <numeric>
#include <set>

namespace relora::data {
namespace {

TEST(DataMixture, ProportionsWithinOnePercentOverTenThousandSamples) {
  const std::vector<double> weights = {0.7, 0.2, 0.1};
  for (uint64_t seed : {1u, 42u, 7777u}) {
    const MixtureOrder order({1000, 333, 50}, weights, seed);
    std::vector<int64_t> counts(3, 0);
    for (int64_t i = 0; i < 10000; ++i) ++counts[static_cast<size_t>(order.pick(i).source)];
    for (size_t s = 0; s < 3; ++s) {
      EXPECT_NEAR(static_cast<double>(counts[s]) / 10000.0, weights[s], 0.01) << "source " << s << " seed " << seed;
    }
    EXPECT_EQ(order.counts_before(10000), counts);
  }
  // Weights are relative: 7:2:1 deals as 0.7:0.2:0.1 (to a sample: the normalized shares differ
  // in the last bit, which may flip a tie of the rounding).
  const MixtureOrder a({10, 10, 10}, {7, 2, 1}, 3), b({10, 10, 10}, {0.7, 0.2, 0.1}, 3);
  const auto ca = a.counts_before(30000), cb = b.counts_before(30000);
  for (size_t s = 0; s < 3; ++s) EXPECT_LE(std::abs(ca[s] - cb[s]), 1) << "source " << s;
}

TEST(DataMixture, RandomAccessEqualsSequentialReading) {
  const MixtureOrder sequential({97, 13}, {0.5, 0.5}, 9);
  std::vector<MixtureOrder::Pick> picks;
  for (int64_t i = 0; i < 5000; ++i) picks.push_back(sequential.pick(i));
  // A resumed job starts in the middle; a fresh object read backwards gives the same picks.
  const MixtureOrder resumed({97, 13}, {0.5, 0.5}, 9);
  for (int64_t i = 4999; i >= 0; i -= 7) {
    const auto p = resumed.pick(i);
    ASSERT_EQ(p.source, picks[static_cast<size_t>(i)].source) << i;
    ASSERT_EQ(p.block, picks[static_cast<size_t>(i)].block) << i;
  }
  // Each source goes through its blocks as whole epochs: the first 13 picks of source 1 are a
  // permutation of its 13 blocks.
  std::set<int64_t> first_epoch;
  for (const auto& p : picks)
    if (p.source == 1 && first_epoch.size() < 13) first_epoch.insert(p.block);
  EXPECT_EQ(first_epoch.size(), 13u);
  // Another seed, another order.
  const MixtureOrder other({97, 13}, {0.5, 0.5}, 10);
  int same = 0;
  for (int64_t i = 0; i < 1000; ++i) same += other.pick(i).source == picks[static_cast<size_t>(i)].source;
  EXPECT_LT(same, 800);
}

TEST(DataMixture, OneSourceIsTheUnweightedSampleOrder) {
  const MixtureOrder mixture({123}, {1.0}, 42);
  const SampleOrder order(123, 42);
  for (int64_t i = 0; i < 500; ++i) {
    ASSERT_EQ(mixture.pick(i).source, 0);
    ASSERT_EQ(mixture.pick(i).block, order.block_of(i));
  }
  EXPECT_EQ(mixture.counts_before(77), std::vector<int64_t>{77});
}

TEST(DataMixture, RejectsBadWeights) {
  EXPECT_THROW(MixtureOrder({10, 10}, {1.0, 0.0}, 1), std::invalid_argument);
  EXPECT_THROW(MixtureOrder({10, 10}, {1.0}, 1), std::invalid_argument);
  EXPECT_THROW(MixtureOrder({}, {}, 1), std::invalid_argument);
}

TEST(DataMixture, GatherReadsEachSourcesBlocksAcrossFiles) {
  // Source 0 spans two arrays (a block straddles them); source 1 is one array.
  std::vector<uint32_t> a0(6), a1(10), b(8);
  std::iota(a0.begin(), a0.end(), 0u);
  std::iota(a1.begin(), a1.end(), 6u);
  std::iota(b.begin(), b.end(), 1000u);
  TokenStream s0, s1;
  s0.append(a0.data(), a0.size(), 2000, "a0");
  s0.append(a1.data(), a1.size(), 2000, "a1");
  s1.append(b.data(), b.size(), 2000, "b");
  const std::vector<BlockRange> sources = {split_blocks(s0, 4, 0.0).train, split_blocks(s1, 4, 0.0).train};
  const MixtureOrder order({4, 2}, {0.5, 0.5}, 5);
  std::vector<int64_t> out;
  gather_blocks(sources, order, {0, 1, 2, 3, 4, 5}, out);
  for (size_t row = 0; row < 6; ++row) {
    const auto p = order.pick(static_cast<int64_t>(row));
    const int64_t base = p.source == 0 ? p.block * 4 : 1000 + p.block * 4;
    for (int64_t t = 0; t < 4; ++t) EXPECT_EQ(out[row * 4 + static_cast<size_t>(t)], base + t);
  }
  // An id outside the vocabulary is caught as it is read, naming its file.
  std::vector<uint32_t> bad = {1, 2, 3, 99};
  TokenStream corrupt;
  corrupt.append(bad.data(), bad.size(), 50, "corrupt.tok");
  std::vector<int64_t> block(4);
  try {
    corrupt.copy(0, 4, block.data());
    FAIL() << "an out-of-vocabulary id was read";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("corrupt.tok"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace relora::data
