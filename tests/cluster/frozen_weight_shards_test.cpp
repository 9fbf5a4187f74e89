// Frozen-weight sharding below the Trainer: rows split and gathered exactly on 3 ranks (10 rows do
// not divide by 3, so blocks differ in size), and a ReloraLinear whose W is sharded computes the
// same outputs, input gradients, factor gradients and merges as the whole layer, in fp32 and under
// bf16 autocast. Ranks are threads, joined by Gloo on loopback.
#include "worker/distributed/frozen_weight_shards.h"

#include <algorithm>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tests/cluster/cluster_test_util.h"
#include "worker/model/relora_linear.h"
#include "worker/train/runtime.h"

namespace relora::cluster {
namespace {

using distributed::CollectiveKind;
using distributed::GroupFrozenWeightShards;
using testing::loopback_group;
using testing::run_ranks;

TEST(ClusterFrozenWeightShards, RowsAreBalancedAndGatherRebuildsTheWholeWeightBitForBit) {
  const int port = find_free_port();
  const auto whole = torch::randn({10, 3});
  std::vector<model::RowRange> kept(3);
  std::vector<torch::Tensor> gathered(3);
  std::vector<int64_t> gathered_bytes(3);
  run_ranks(3, [&](int rank) {
    DataParallelGroup group(loopback_group(port, rank, 3));
    GroupFrozenWeightShards shards(group);
    kept[rank] = shards.rows_kept(10);
    gathered[rank] = shards.gather(whole.slice(0, kept[rank].begin, kept[rank].end).clone(), 10);
    gathered_bytes[rank] = group.traffic().bytes[static_cast<int>(CollectiveKind::kAllGather)];
  });
  EXPECT_EQ(kept[0].begin, 0);
  EXPECT_EQ(kept[2].end, 10);
  for (int r = 0; r < 3; ++r) {
    if (r > 0) EXPECT_EQ(kept[r].begin, kept[r - 1].end);
    EXPECT_GE(kept[r].size(), 3);
    EXPECT_LE(kept[r].size(), 4);
    EXPECT_TRUE(torch::equal(gathered[r], whole)) << "rank " << r;
    EXPECT_EQ(gathered_bytes[r], 3 * 4 * 3 * 4) << "3 blocks of 4 padded rows of 3 floats";
  }
}

// One forward and backward of a [2, 5, 8] input through a 12 x 8 layer with a rank-4 branch: the
// sharded layer on each of 3 ranks against the whole layer, then a merge and a second forward.
// Relative tolerances: the whole layer takes the fused CPU path, the sharded one the general path,
// which round differently in bf16 (2^-8); a wrong or misplaced row would differ by O(1).
// frozen_bf16: W stored in bf16 (training.dtype bf16), gathered as bits, merged with stochastic
// rounding whose bits follow each element's index in the whole W.
void expect_sharded_layer_matches_whole(bool bf16, double tolerance, bool frozen_bf16 = false) {
  const int port = find_free_port();
  torch::manual_seed(3);
  const auto x = torch::randn({2, 5, 8});
  const auto dy = torch::randn({2, 5, 12});
  const auto run = [&](const std::shared_ptr<model::FrozenWeightShards>& shards) {
    model::ReloraLinear layer(8, 12);
    torch::NoGradGuard no_grad;
    layer->weight.copy_(torch::linspace(-1, 1, 96).reshape({12, 8}));
    model::LoraOptions options{4, 8.0, 0.0};
    if (frozen_bf16) options.frozen_dtype = torch::kBFloat16;
    layer->enable_lora(options, /*seed=*/11);
    layer->lora_B.copy_(torch::linspace(-0.5, 0.5, 48).reshape({12, 4}));
    if (shards) layer->shard_weight(shards);
    std::vector<torch::Tensor> out;
    {
      torch::AutoGradMode grad(true);
      train::Bf16Autocast autocast(bf16, torch::kCPU);
      auto xi = x.clone().requires_grad_(true);
      auto y = layer(xi);
      y.backward(dy.to(y.scalar_type()));
      out = {y.to(torch::kFloat), xi.grad(), layer->lora_A.grad(), layer->lora_B.grad()};
    }
    layer->merge_and_reinit(/*seed=*/12);
    EXPECT_EQ(layer->weight.scalar_type(), frozen_bf16 ? torch::kBFloat16 : torch::kFloat);
    out.push_back(layer->full_weight().to(torch::kFloat, /*non_blocking=*/false, /*copy=*/true));
    out.push_back(layer(x));
    return out;
  };
  const auto whole = run(nullptr);
  std::vector<std::vector<torch::Tensor>> sharded(3);
  run_ranks(3, [&](int rank) {
    DataParallelGroup group(loopback_group(port, rank, 3));
    sharded[rank] = run(std::make_shared<GroupFrozenWeightShards>(group));
  });
  const char* what[] = {"y", "dx", "dA", "dB", "merged W", "y after the merge"};
  for (int r = 0; r < 3; ++r)
    for (size_t i = 0; i < whole.size(); ++i)
      EXPECT_LT((sharded[r][i] - whole[i]).abs().max().item<double>() / std::max(1.0, whole[i].abs().max().item<double>()),
                tolerance)
          << "rank " << r << ": " << what[i];
}

TEST(ClusterFrozenWeightShards, ShardedLayerMatchesTheWholeLayerInFp32) { expect_sharded_layer_matches_whole(false, 1e-5); }

TEST(ClusterFrozenWeightShards, ShardedLayerMatchesTheWholeLayerUnderBf16Autocast) {
  expect_sharded_layer_matches_whole(true, 2e-2);
}

TEST(ClusterFrozenWeightShards, Bf16FrozenWeightShardedMatchesTheWholeLayer) {
  expect_sharded_layer_matches_whole(true, 2e-2, /*frozen_bf16=*/true);
}

TEST(ClusterFrozenWeightShards, Bf16RowsGatherBitForBit) {
  const int port = find_free_port();
  const auto whole = torch::randn({10, 3}).to(torch::kBFloat16);
  std::vector<torch::Tensor> gathered(3);
  run_ranks(3, [&](int rank) {
    DataParallelGroup group(loopback_group(port, rank, 3));
    GroupFrozenWeightShards shards(group);
    const auto kept = shards.rows_kept(10);
    gathered[rank] = shards.gather(whole.slice(0, kept.begin, kept.end).clone(), 10);
  });
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(gathered[r].scalar_type(), torch::kBFloat16);
    EXPECT_TRUE(torch::equal(gathered[r], whole)) << "rank " << r;
  }
}

TEST(ClusterFrozenWeightShards, OnlyAFrozenWeightCanBeSharded) {
  model::ReloraLinear layer(8, 12);
  struct Nowhere final : model::FrozenWeightShards {
    model::RowRange rows_kept(int64_t rows) const override { return {0, rows}; }
    torch::Tensor gather(const torch::Tensor& local, int64_t) override { return local; }
  };
  EXPECT_THROW(layer->shard_weight(std::make_shared<Nowhere>()), std::logic_error);
}

}  // namespace
}  // namespace relora::cluster
