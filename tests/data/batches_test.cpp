// Batches: block split, the per-epoch order, and the data-parallel split of every step.
#include "worker/data/batches.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <set>

namespace relora::data {
namespace {

// The first `n` of `tokens` as a stream (vocab large enough for any test id).
TokenStream stream_of(const std::vector<uint32_t>& tokens, size_t n) {
  TokenStream stream;
  stream.append(tokens.data(), n, /*vocab_size=*/1u << 20, "test tokens");
  return stream;
}

TEST(DataBatches, SplitBlocksSizes) {
  std::vector<uint32_t> tokens(1000);
  // 1000 tokens / 64 = 15 blocks (the 40-token tail is dropped); ceil(0.1 * 15) = 2 validation.
  const TokenStream all = stream_of(tokens, tokens.size());
  TrainValSplit split = split_blocks(all, 64, 0.1);
  EXPECT_EQ(split.train.first_block, 0);
  EXPECT_EQ(split.train.num_blocks, 13);
  EXPECT_EQ(split.validation.first_block, 13);
  EXPECT_EQ(split.validation.num_blocks, 2);
  std::iota(tokens.begin(), tokens.end(), 0u);
  std::vector<int64_t> block(64);
  split.validation.copy_block(1, block.data());
  EXPECT_EQ(block.front(), 14 * 64);
  EXPECT_EQ(split.train.seq_len, 64);

  split = split_blocks(all, 64, 0.0);
  EXPECT_EQ(split.train.num_blocks, 15);
  EXPECT_EQ(split.validation.num_blocks, 0);

  split = split_blocks(all, 64, 0.001);  // tiny fraction: still 1
  EXPECT_EQ(split.validation.num_blocks, 1);

  split = split_blocks(stream_of(tokens, 640), 64, 0.7);  // exactly 7 of 10, no rounding up to 8
  EXPECT_EQ(split.validation.num_blocks, 7);

  split = split_blocks(stream_of(tokens, 128), 64, 0.9);  // 2 blocks: train keeps one
  EXPECT_EQ(split.train.num_blocks, 1);
  EXPECT_EQ(split.validation.num_blocks, 1);

  EXPECT_THROW(split_blocks(stream_of(tokens, 127), 64, 0.1), std::runtime_error);
  EXPECT_ANY_THROW(split_blocks(all, 64, 1.0));
  EXPECT_ANY_THROW(split_blocks(all, 0, 0.1));
}

TEST(DataBatches, ShardsAreDisjointAndCoverOneEpoch) {
  const int64_t steps = 5;
  for (int64_t world : {1, 2, 3, 4}) {
    for (int64_t accum : {1, 2, 3}) {
      const BatchGeometry g{/*micro_batch=*/2, accum, world};
      const int64_t num_blocks = g.global_batch() * steps;  // exactly one epoch
      const SampleOrder order(num_blocks, /*seed=*/42);
      std::vector<int> seen(static_cast<size_t>(num_blocks), 0);
      std::vector<std::set<int64_t>> per_rank(static_cast<size_t>(world));
      for (int64_t step = 0; step < steps; ++step) {
        for (int64_t rank = 0; rank < world; ++rank) {
          for (int64_t micro = 0; micro < accum; ++micro) {
            const auto samples = micro_batch_samples(g, step, micro, rank);
            ASSERT_EQ(samples.size(), 2u);
            for (int64_t s : samples) {
              const int64_t block = order.block_of(s);
              ASSERT_GE(block, 0);
              ASSERT_LT(block, num_blocks);
              ++seen[static_cast<size_t>(block)];
              per_rank[static_cast<size_t>(rank)].insert(block);
            }
          }
        }
      }
      SCOPED_TRACE("world " + std::to_string(world) + " accum " + std::to_string(accum));
      // Every block exactly once: together, the union is everything and nothing repeats.
      EXPECT_TRUE(std::all_of(seen.begin(), seen.end(), [](int n) { return n == 1; }));
      size_t total = 0;
      for (int64_t a = 0; a < world; ++a) {
        total += per_rank[static_cast<size_t>(a)].size();
        EXPECT_EQ(per_rank[static_cast<size_t>(a)].size(), static_cast<size_t>(num_blocks / world));
        for (int64_t b = a + 1; b < world; ++b) {
          for (int64_t block : per_rank[static_cast<size_t>(a)]) {
            EXPECT_EQ(per_rank[static_cast<size_t>(b)].count(block), 0u)
                << "ranks " << a << " and " << b << " share block " << block;
          }
        }
      }
      EXPECT_EQ(total, static_cast<size_t>(num_blocks));
    }
  }
}

TEST(DataBatches, TwoRanksSeeWhatOneRankWithAccumulationSees) {
  const BatchGeometry two_ranks{/*micro_batch=*/3, /*grad_accum=*/1, /*world=*/2};
  const BatchGeometry one_rank{/*micro_batch=*/3, /*grad_accum=*/2, /*world=*/1};
  for (int64_t step : {0, 1, 7}) {
    std::vector<int64_t> a, b;
    for (int64_t rank = 0; rank < 2; ++rank) {
      const auto s = micro_batch_samples(two_ranks, step, 0, rank);
      a.insert(a.end(), s.begin(), s.end());
    }
    for (int64_t micro = 0; micro < 2; ++micro) {
      const auto s = micro_batch_samples(one_rank, step, micro, 0);
      b.insert(b.end(), s.begin(), s.end());
    }
    EXPECT_EQ(a, b) << "step " << step;
    std::vector<int64_t> expected(6);
    std::iota(expected.begin(), expected.end(), step * 6);
    EXPECT_EQ(a, expected);
  }
  // The documented layout: micro-step k of rank r starts at (k*world + r)*micro_batch.
  const BatchGeometry g{2, 3, 4};
  EXPECT_EQ(micro_batch_samples(g, 1, 2, 3), (std::vector<int64_t>{24 + 22, 24 + 23}));
  EXPECT_ANY_THROW(micro_batch_samples(g, 0, 3, 0));
  EXPECT_ANY_THROW(micro_batch_samples(g, 0, 0, 4));
}

std::vector<int64_t> epoch_of(const SampleOrder& order, int64_t epoch) {
  std::vector<int64_t> blocks;
  for (int64_t i = 0; i < order.num_blocks(); ++i) {
    blocks.push_back(order.block_of(epoch * order.num_blocks() + i));
  }
  return blocks;
}

TEST(DataBatches, SampleOrderIsAPermutationPerEpochAndDeterministic) {
  const SampleOrder order(1000, 7);
  const auto e0 = epoch_of(order, 0), e1 = epoch_of(order, 1);
  for (const auto& e : {e0, e1}) {
    std::vector<int64_t> sorted = e;
    std::sort(sorted.begin(), sorted.end());
    std::vector<int64_t> identity(1000);
    std::iota(identity.begin(), identity.end(), 0);
    EXPECT_EQ(sorted, identity);
    EXPECT_NE(e, identity);  // actually shuffled
  }
  EXPECT_NE(e0, e1);
  EXPECT_NE(epoch_of(SampleOrder(1000, 8), 0), e0);
  // Same (seed, epoch), fresh object and out-of-order access: same order.
  const SampleOrder again(1000, 7);
  EXPECT_EQ(epoch_of(again, 1), e1);
  EXPECT_EQ(epoch_of(again, 0), e0);
  EXPECT_EQ(again.block_of(2 * 1000 + 5), SampleOrder(1000, 7).block_of(2 * 1000 + 5));
}

TEST(DataBatches, SampleOrderIsPortable) {
  // Golden values pin the generator (mt19937_64, SplitMix64 seeding, our own uniform draw), so a
  // change of standard library or of the algorithm cannot silently reshuffle resumed jobs. They
  // were computed by an independent Python implementation of the same algorithm from the
  // published MT19937-64 definition, not by this code.
  const SampleOrder order(10, 1234);
  EXPECT_EQ(epoch_of(order, 0), (std::vector<int64_t>{2, 0, 3, 5, 9, 1, 7, 6, 4, 8}));
  EXPECT_EQ(epoch_of(order, 1), (std::vector<int64_t>{9, 4, 7, 5, 1, 6, 2, 8, 3, 0}));
}

TEST(DataBatches, LargeCorporaGetAComputedPermutationPerEpoch) {
  // Just above the listed limit, and a count far from a power of 4 (cycle walking).
  for (int64_t n : {SampleOrder::kMaxListedBlocks + 1, int64_t{3} * SampleOrder::kMaxListedBlocks + 7}) {
    const SampleOrder order(n, 11);
    std::vector<char> seen(static_cast<size_t>(n), 0);
    int64_t in_place = 0;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t b = order.block_of(n + i);  // epoch 1
      ASSERT_GE(b, 0);
      ASSERT_LT(b, n);
      ASSERT_FALSE(seen[static_cast<size_t>(b)]) << "block " << b << " twice";
      seen[static_cast<size_t>(b)] = 1;
      in_place += b == i;
    }
    EXPECT_LT(in_place, 10);  // shuffled, not the identity
    EXPECT_NE(order.block_of(0), order.block_of(n));  // another epoch, another order
    EXPECT_EQ(SampleOrder(n, 11).block_of(12345), order.block_of(12345));
  }
}

TEST(DataBatches, GatherBlocksCopiesTheSampledBlocks) {
  std::vector<uint32_t> tokens(10 * 4);
  std::iota(tokens.begin(), tokens.end(), 100u);
  const TokenStream all = stream_of(tokens, tokens.size());
  const TrainValSplit split = split_blocks(all, 4, 0.2);
  ASSERT_EQ(split.train.num_blocks, 8);
  const SampleOrder order(split.train.num_blocks, 3);
  const std::vector<int64_t> samples = {0, 5, 9};  // 9 is in epoch 1
  std::vector<int64_t> out;
  gather_blocks(split.train, order, samples, out);
  ASSERT_EQ(out.size(), 3u * 4u);
  for (size_t row = 0; row < samples.size(); ++row) {
    const int64_t block = order.block_of(samples[row]);
    for (int64_t t = 0; t < 4; ++t) {
      EXPECT_EQ(out[row * 4 + static_cast<size_t>(t)], 100 + block * 4 + t);
    }
  }
  // Validation blocks are read from their own offset (blocks 8 and 9).
  const SampleOrder val_order(split.validation.num_blocks, 3);
  gather_blocks(split.validation, val_order, {0, 1}, out);
  std::vector<int64_t> got(out.begin(), out.end());
  std::sort(got.begin(), got.end());
  std::vector<int64_t> expected(8);
  std::iota(expected.begin(), expected.end(), 100 + 8 * 4);
  EXPECT_EQ(got, expected);
  // An order over another block count is a wiring error.
  EXPECT_ANY_THROW(gather_blocks(split.train, SampleOrder(5, 3), {0}, out));
}

}  // namespace
}  // namespace relora::data
