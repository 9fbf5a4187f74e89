// cluster.shard_optimizer: 2 ranks (threads, Gloo on loopback) with the AdamW moments sharded train
// exactly like 2 ranks without sharding (random optimizer resets at the merges included), each
// rank holding about half of the moments; and a sharded run stopped at a checkpoint and resumed
// matches an uninterrupted one (the checkpoint gathers the shards, the resume splits them again).
#include <cmath>
#include <functional>
#include <iostream>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tests/cluster/cluster_test_util.h"

namespace relora::cluster {
namespace {

using relora::testing::TempDir;
using testing::loopback_group;
using testing::run_two_ranks;
using testing::tiny_spec;

// Random resets draw from the shared seed: the sharded ranks must draw the same elements.
constexpr const char* kReloraRandomReset =
    "{mode: relora, rank: 8, alpha: 16, dropout: 0.0, warm_start_steps: 2, cycle_steps: 4, restart_warmup_steps: 1, "
    "optimizer_reset: random, prune_ratio: 0.9}";

relora::v1::JobSpec sharded(relora::v1::JobSpec spec) {
  spec.mutable_cluster()->set_workers(2);
  spec.mutable_cluster()->set_shard_optimizer(true);
  return spec;
}

void expect_same_losses(const train::TrainSummary& a, const train::TrainSummary& b, const std::string& what) {
  ASSERT_EQ(a.losses.size(), b.losses.size()) << what;
  double max_rel = 0;
  for (size_t i = 0; i < a.losses.size(); ++i) {
    const double rel = std::abs(a.losses[i].second - b.losses[i].second) / std::abs(b.losses[i].second);
    EXPECT_LT(rel, 1e-5) << what << ", step " << i + 1 << ": " << a.losses[i].second << " vs " << b.losses[i].second;
    max_rel = std::max(max_rel, rel);
  }
  std::cout << what << ": largest relative loss difference " << max_rel << "\n";
}

TEST(ClusterShardedOptimizer, MatchesUnshardedAndHoldsHalfTheMomentsPerRank) {
  TempDir plain_dir, sharded_dir;
  const auto plain = run_two_ranks(tiny_spec({kReloraRandomReset, 14, 1, 5, plain_dir.path()}));
  const auto shard = run_two_ranks(sharded(tiny_spec({kReloraRandomReset, 14, 1, 5, sharded_dir.path()})));
  for (int rank = 0; rank < 2; ++rank) {
    ASSERT_TRUE(shard[rank].summary.completed);
    EXPECT_EQ(shard[rank].summary.merges, 2);
    expect_same_losses(shard[rank].summary, plain[rank].summary, "rank " + std::to_string(rank) + " sharded vs not");
    EXPECT_EQ(shard[rank].checksum, plain[0].checksum) << "rank " << rank;
    // Unsharded, every rank holds every moment; sharded, each about half, together all of them.
    EXPECT_EQ(plain[rank].moment_elements, plain[rank].parameter_elements);
    EXPECT_LT(shard[rank].moment_elements, 0.6 * static_cast<double>(shard[rank].parameter_elements)) << rank;
  }
  EXPECT_EQ(shard[0].moment_elements + shard[1].moment_elements, shard[0].parameter_elements);
  std::cout << "moment elements per rank, sharded: " << shard[0].moment_elements << " + " << shard[1].moment_elements
            << " of " << shard[0].parameter_elements << "\n";
}

TEST(ClusterShardedOptimizer, StopAtACheckpointAndResumeMatchesAnUninterruptedRun) {
  TempDir straight_dir, resumed_dir;
  const auto straight = run_two_ranks(sharded(tiny_spec({kReloraRandomReset, 14, 1, 5, straight_dir.path()})));
  const auto spec = sharded(tiny_spec({kReloraRandomReset, 14, 1, 5, resumed_dir.path()}));
  const auto first = run_two_ranks(spec, [](train::TrainerOptions& o) {
    o.resume = false;
    o.stop_after_step = 7;  // past the merge at 6, inside a cycle
  });
  ASSERT_FALSE(first[0].summary.completed);
  const auto second = run_two_ranks(spec);  // resumes from the step-7 checkpoint
  ASSERT_TRUE(second[0].summary.completed);
  EXPECT_EQ(second[0].checksum, straight[0].checksum);
  EXPECT_EQ(second[1].checksum, straight[0].checksum);
  // The resumed run's losses are those of steps 8..14 of the uninterrupted one.
  ASSERT_EQ(second[0].summary.losses.size(), 7u);
  for (size_t i = 0; i < 7; ++i) {
    const double a = second[0].summary.losses[i].second, b = straight[0].summary.losses[7 + i].second;
    EXPECT_LT(std::abs(a - b) / std::abs(b), 1e-5) << "step " << 8 + i << ": " << a << " vs " << b;
  }
}

}  // namespace
}  // namespace relora::cluster
