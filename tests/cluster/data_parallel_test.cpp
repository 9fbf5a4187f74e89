// Data parallelism with dropout, resumed (the layouts' exactness against one rank is in
// exactness_test.cpp).
#include <algorithm>
#include <cmath>
#include <iostream>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tests/cluster/cluster_test_util.h"
#include "worker/train/model_state.h"
#include "worker/train/trainer.h"

namespace relora::cluster {
namespace {

using relora::testing::TempDir;
using testing::kReloraNoDropout;
using testing::run_two_ranks;
using testing::tiny_spec;

// Exact resume on 2 ranks with dropout: each rank draws its masks from its own generator (ranks
// here are threads of one process, so a process-wide generator would be shared and raced on),
// seeded from the samples of each micro-batch. The resumed run's losses and parameters equal the
// uninterrupted run's bit for bit.
TEST(ClusterDataParallel, TwoRanksWithDropoutResumeExactly) {
  const char* relora_dropout =
      "{mode: relora, rank: 8, alpha: 16, dropout: 0.2, warm_start_steps: 2, cycle_steps: 4, restart_warmup_steps: 1}";
  TempDir straight_dir, resumed_dir, no_dropout_dir;
  const auto straight = run_two_ranks(tiny_spec({relora_dropout, 14, 1, 5, straight_dir.path()}));
  const auto spec = tiny_spec({relora_dropout, 14, 1, 5, resumed_dir.path()});
  const auto first = run_two_ranks(spec, [](train::TrainerOptions& o) { o.stop_after_step = 7; });
  ASSERT_FALSE(first[0].summary.completed);
  const auto second = run_two_ranks(spec);  // resumes from the step-7 checkpoint
  ASSERT_TRUE(second[0].summary.completed);
  ASSERT_EQ(second[0].summary.losses.size(), 7u);
  for (int rank = 0; rank < 2; ++rank) {
    EXPECT_EQ(second[rank].checksum, straight[0].checksum) << "rank " << rank;
    for (size_t i = 0; i < 7; ++i)
      EXPECT_EQ(second[rank].summary.losses[i].second, straight[rank].summary.losses[7 + i].second)
          << "rank " << rank << ", step " << 8 + i;
  }
  // Dropout was really drawn: without it the low-rank steps' losses differ.
  const auto plain = run_two_ranks(tiny_spec({kReloraNoDropout, 14, 1, 0, no_dropout_dir.path()}));
  EXPECT_NE(plain[0].summary.losses[5].second, straight[0].summary.losses[5].second);
}

}  // namespace
}  // namespace relora::cluster
