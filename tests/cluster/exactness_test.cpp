// Data parallelism changes nothing but speed: 2 and 4 ranks (threads, Gloo on loopback), plain
// (replicated), ZeRO-sharded and with frozen-weight sharding (FSDP-style), train a ReLoRA job with dropout through two merges, each with a
// random optimizer reset, and give the losses and final parameters of one rank accumulating the
// same samples (the same global batch of 16: micro-batches of 4, world x grad_accum = 4). Dropout
// masks follow the samples, not the ranks, so they are the same in every layout.
//
// The sharded runs use 4 KiB buckets, so parameters straddle buckets and ranks.
#include <cmath>
#include <iostream>
#include <string>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tests/cluster/cluster_test_util.h"

namespace relora::cluster {
namespace {

using relora::testing::TempDir;
using testing::run_world;
using testing::tiny_spec;

using testing::kSmallBuckets;

// Random resets: the sharded ranks must draw the same elements as one rank.
relora::v1::JobSpec layout(int world, bool shard, const std::string& dir, bool frozen = false) {
  return testing::reset_layout_spec(world, shard, "random", dir, frozen);
}

// Relative difference of two parameter sets: max |a - b| over max |b|, per tensor.
double largest_parameter_difference(const std::map<std::string, torch::Tensor>& a,
                                    const std::map<std::string, torch::Tensor>& b) {
  double worst = 0;
  for (const auto& [name, tb] : b) {
    const auto it = a.find(name);
    EXPECT_NE(it, a.end()) << name;
    if (it == a.end()) continue;
    const double scale = std::max(1e-12, tb.abs().max().item<double>());
    worst = std::max(worst, (it->second - tb).abs().max().item<double>() / scale);
  }
  return worst;
}

struct Reference {
  train::TrainSummary summary;
  std::map<std::string, torch::Tensor> parameters;
};

const Reference& one_rank_accumulating() {
  static const Reference ref = [] {
    TempDir dir;
    train::TrainerOptions options;
    options.export_model = false;
    train::Trainer trainer(layout(1, false, dir.path()), options);
    Reference r;
    r.summary = trainer.run();
    for (const auto& item : trainer.model()->named_parameters()) r.parameters[item.key()] = item.value().detach().clone();
    return r;
  }();
  return ref;
}

// (world, ZeRO-1, frozen-weight sharding)
class Exactness : public ::testing::TestWithParam<std::tuple<int, bool, bool>> {};

TEST_P(Exactness, SameLossesAndParametersAsOneRankAccumulatingTheSameSamples) {
  const auto [world, shard, frozen] = GetParam();
  const Reference& ref = one_rank_accumulating();
  ASSERT_TRUE(ref.summary.completed);
  ASSERT_EQ(ref.summary.merges, 2);
  ASSERT_EQ(ref.summary.optimizer_resets, 2);
  TempDir dir;
  const auto ranks =
      run_world(world, layout(world, shard, dir.path(), frozen), {}, shard ? kSmallBuckets : int64_t{25} << 20);
  double max_loss = 0;
  for (int r = 0; r < world; ++r) {
    const auto& s = ranks[r].summary;
    ASSERT_TRUE(s.completed);
    EXPECT_EQ(s.merges, 2);
    EXPECT_EQ(s.optimizer_resets, 2);
    ASSERT_EQ(s.losses.size(), ref.summary.losses.size());
    for (size_t i = 0; i < s.losses.size(); ++i) {
      const double a = s.losses[i].second, b = ref.summary.losses[i].second;
      max_loss = std::max(max_loss, std::abs(a - b) / std::abs(b));
      EXPECT_LT(std::abs(a - b) / std::abs(b), 1e-5) << "rank " << r << ", step " << i + 1 << ": " << a << " vs " << b;
    }
    // Every rank ends with the same parameters, bit for bit.
    EXPECT_EQ(ranks[r].checksum, ranks[0].checksum) << "rank " << r;
  }
  const double max_param = largest_parameter_difference(ranks[0].parameters, ref.parameters);
  EXPECT_LT(max_param, 1e-4);
  std::cout << world << " ranks, " << (shard ? "sharded" : "replicated") << (frozen ? ", frozen W sharded" : "")
            << ": largest relative loss difference " << max_loss << ", parameter difference " << max_param << "\n";
  if (shard) {
    // ZeRO: each rank holds about 1/world of the moments, together exactly all of them.
    int64_t together = 0;
    for (int r = 0; r < world; ++r) {
      together += ranks[r].moment_elements;
      EXPECT_LE(ranks[r].moment_elements, ranks[r].parameter_elements / world + 4096 / 4) << "rank " << r;
    }
    EXPECT_EQ(together, ranks[0].parameter_elements);
  } else {
    EXPECT_EQ(ranks[0].moment_elements, ranks[0].parameter_elements);
  }
  // Frozen-weight sharding: each rank holds its rows of every frozen W (1/world of the bytes, as
  // the tiny model's row counts divide by 2 and 4), together exactly all of them.
  int64_t frozen_together = 0;
  for (int r = 0; r < world; ++r) {
    ASSERT_GT(ranks[r].frozen_elements_whole, 0);
    frozen_together += ranks[r].frozen_elements;
    EXPECT_EQ(ranks[r].frozen_elements, frozen ? ranks[r].frozen_elements_whole / world : ranks[r].frozen_elements_whole)
        << "rank " << r;
  }
  if (frozen) EXPECT_EQ(frozen_together, ranks[0].frozen_elements_whole);
}

INSTANTIATE_TEST_SUITE_P(Layouts, Exactness,
                         ::testing::Combine(::testing::Values(2, 4), ::testing::Values(false, true),
                                            ::testing::Values(false)),
                         [](const auto& info) {
                           return std::to_string(std::get<0>(info.param)) + "Ranks" +
                                  (std::get<1>(info.param) ? "Sharded" : "Replicated");
                         });
// Frozen-weight sharding with a replicated optimizer (2 ranks) and with ZeRO-1 (4 ranks).
INSTANTIATE_TEST_SUITE_P(FrozenWeightsSharded, Exactness,
                         ::testing::Values(std::make_tuple(2, false, true), std::make_tuple(4, true, true)),
                         [](const auto& info) {
                           return std::to_string(std::get<0>(info.param)) + "Ranks" +
                                  (std::get<1>(info.param) ? "ZeroAndFrozenSharded" : "FrozenSharded");
                         });

}  // namespace
}  // namespace relora::cluster

namespace relora::cluster {
namespace {

// training.dtype bf16 with frozen-weight sharding: each rank keeps its rows of the bf16 W and
// rounds its own rows at each merge with bits fixed by (seed, element index), so the ranks end
// bit-identical, and the run tracks one rank accumulating the same samples to bf16 accuracy (the
// summation order differs, and a merge may round an element the other way).
TEST(FrozenWeightsShardedBf16, TwoRanksEndBitIdenticalAndTrackOneRank) {
  TempDir one_dir, two_dir;
  auto one_spec = layout(1, false, one_dir.path());
  one_spec.mutable_training()->set_dtype("bf16");
  train::TrainerOptions options;
  options.export_model = false;
  train::Trainer one(one_spec, options);
  const auto reference = one.run();
  ASSERT_EQ(reference.merges, 2);
  auto two_spec = layout(2, false, two_dir.path(), /*frozen=*/true);
  two_spec.mutable_training()->set_dtype("bf16");
  const auto ranks = run_world(2, two_spec, {}, int64_t{25} << 20);
  for (int r = 0; r < 2; ++r) {
    const auto& s = ranks[r].summary;
    ASSERT_TRUE(s.completed);
    EXPECT_EQ(s.merges, 2);
    EXPECT_EQ(ranks[r].checksum, ranks[0].checksum) << "rank " << r;
    ASSERT_EQ(s.losses.size(), reference.losses.size());
    for (size_t i = 0; i < s.losses.size(); ++i)
      EXPECT_NEAR(s.losses[i].second, reference.losses[i].second, 2e-2 * reference.losses[i].second)
          << "rank " << r << ", step " << i + 1;
    EXPECT_EQ(ranks[r].frozen_elements * 2, ranks[r].frozen_elements_whole) << "rank " << r;
  }
}

}  // namespace
}  // namespace relora::cluster
