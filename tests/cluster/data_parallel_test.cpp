// Data parallelism end to end: 2 ranks (threads, Gloo on loopback) with one micro-batch each train
// like 1 process accumulating 2 micro-batches over the same samples, ReLoRA merges included, and
// the ranks end with bit-identical parameters.
#include <algorithm>
#include <cmath>
#include <iostream>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tests/cluster/cluster_test_util.h"
#include "worker/cluster/gradient_sync.h"
#include "worker/train/model_state.h"
#include "worker/train/trainer.h"

namespace relora::cluster {
namespace {

using relora::testing::TempDir;
using testing::kReloraNoDropout;
using testing::loopback_group;
using testing::run_ranks;
using testing::run_two_ranks;
using testing::tiny_spec;

TEST(ClusterDataParallel, TwoRanksMatchOneRankAccumulatingTheSameSamples) {
  TempDir single_dir, dp_dir;
  train::TrainerOptions base;
  base.export_model = false;
  base.resume = false;

  // Reference: world 1, grad_accum 2 (micro-batches of 4: the global batch is 8 samples).
  const auto single_spec = tiny_spec({kReloraNoDropout, 14, /*grad_accum=*/2, 0, single_dir.path()});
  train::Trainer single(single_spec, base);
  const train::TrainSummary ref = single.run();
  ASSERT_TRUE(ref.completed);
  ASSERT_EQ(ref.merges, 2);

  // World 2, grad_accum 1: rank r takes micro-slice r of each step's same 8 samples.
  const auto dp_spec = tiny_spec({kReloraNoDropout, 14, /*grad_accum=*/1, 0, dp_dir.path()});
  const int port = find_free_port();
  std::vector<train::TrainSummary> summaries(2);
  std::vector<std::string> checksums(2);
  std::vector<int64_t> sync_calls(2);
  run_ranks(2, [&](int rank) {
    DataParallelGroup group(loopback_group(port, rank, 2));
    BucketedGradientSync sync(group);
    train::TrainerOptions opts = base;
    opts.rank = rank;
    opts.world = 2;
    opts.sync = &sync;
    std::unique_ptr<train::Trainer> trainer;
    group.run_rank0_first("prepare", [&] { trainer = std::make_unique<train::Trainer>(dp_spec, opts); },
                          std::chrono::seconds(60));
    summaries[rank] = trainer->run();
    checksums[rank] = train::parameter_checksum(trainer->model());
    sync_calls[rank] = sync.calls();
  });

  double max_rel = 0;
  for (int rank = 0; rank < 2; ++rank) {
    const auto& s = summaries[rank];
    ASSERT_TRUE(s.completed) << "rank " << rank;
    EXPECT_EQ(s.merges, 2) << "rank " << rank;
    ASSERT_EQ(s.losses.size(), ref.losses.size());
    for (size_t i = 0; i < ref.losses.size(); ++i) {
      const double a = s.losses[i].second, b = ref.losses[i].second;
      EXPECT_LT(std::abs(a - b) / std::abs(b), 1e-4) << "rank " << rank << " step " << i << ": " << a << " vs " << b;
      max_rel = std::max(max_rel, std::abs(a - b) / std::abs(b));
    }
    EXPECT_NEAR(s.eval_loss, ref.eval_loss, 1e-4 * ref.eval_loss);
    // One all-reduce call per optimizer step, plus the final evaluation's.
    EXPECT_EQ(sync_calls[rank], 14 + 1);
  }
  std::cout << "largest relative loss difference, 2 ranks vs 1 accumulating: " << max_rel << "\n";
  // The loss is averaged across ranks, so both ranks report the same value bit for bit.
  for (size_t i = 0; i < ref.losses.size(); ++i) EXPECT_EQ(summaries[0].losses[i].second, summaries[1].losses[i].second);
  EXPECT_EQ(checksums[0], checksums[1]);
  EXPECT_EQ(checksums[0].size(), 8u);
}


// Exact resume on 2 ranks with dropout: each rank draws its masks from its own generator (ranks
// here are threads of one process, so a process-wide generator would be shared and raced on), and
// the checkpoint keeps every rank's generator, not only rank 0's. The resumed run's losses and
// parameters equal the uninterrupted run's bit for bit.
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
