// A job started from a Hugging Face directory (model.from_hf) on two ranks: each rank reads the
// directory itself, so they start from the same weights without a broadcast, frozen-weight
// sharding included.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tests/cluster/cluster_test_util.h"
#include "tests/train/hf_checkpoint.h"

namespace relora::cluster {
namespace {

using relora::testing::TempDir;

TEST(ClusterFromHf, TwoShardedRanksStartFromTheSameImportedWeights) {
  TempDir hf, one_dir, two_dir;
  relora::testing::write_tiny_pretrained(hf.file("pretrained"), /*seed=*/11);
  const char* relora = "{mode: relora, rank: 8, alpha: 16, dropout: 0.0, cycle_steps: 3, restart_warmup_steps: 1}";
  const auto one = testing::run_world(
      1, relora::testing::tiny_from_hf_spec({relora, 6, /*grad_accum=*/4, 0, one_dir.path()}, hf.file("pretrained")));
  auto spec = relora::testing::tiny_from_hf_spec({relora, 6, /*grad_accum=*/2, 0, two_dir.path()}, hf.file("pretrained"));
  spec.mutable_cluster()->set_workers(2);
  spec.mutable_cluster()->set_shard_frozen_weights(true);
  const auto two = testing::run_two_ranks(spec);
  EXPECT_EQ(two[0].checksum, two[1].checksum);
  ASSERT_EQ(two[0].summary.losses.size(), 6u);
  EXPECT_LT(two[0].frozen_elements, two[0].frozen_elements_whole);  // W really was sharded
  // The same global batch as one rank: the same first loss, up to the order of the sum.
  EXPECT_NEAR(two[0].summary.losses[0].second, one[0].summary.losses[0].second, 1e-6);
  EXPECT_EQ(two[0].summary.losses[0].second, two[1].summary.losses[0].second);
}

}  // namespace
}  // namespace relora::cluster
