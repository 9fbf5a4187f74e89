// Sharded checkpoints: every rank writes its own optimizer shard and, with frozen-weight sharding,
// its rows of every frozen W (nothing gathered); rank 0 commits them with their sizes and CRCs, and
// a checkpoint written on 4 ranks resumes on 4, 2 and 1 ranks (sharded or not) with the
// uninterrupted run's curve.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "tests/cluster/cluster_test_util.h"
#include "worker/train/checkpoint.h"
#include "worker/train/safetensors.h"

namespace relora::cluster {
namespace {

namespace fs = std::filesystem;
using relora::testing::TempDir;
using testing::run_world;
using testing::tiny_spec;

using testing::kSmallBuckets;

// Magnitude resets: the sharded ranks rank each factor's moments whole.
relora::v1::JobSpec layout(int world, bool shard, const std::string& dir, bool frozen = false) {
  return testing::reset_layout_spec(world, shard, "magnitude", dir, frozen);
}

std::vector<testing::RankResult> train(int world, bool shard, const std::string& dir,
                                       const std::function<void(train::TrainerOptions&)>& configure = {},
                                       bool frozen = false) {
  if (world == 1) {  // one rank: the plain Trainer, as a standalone worker runs it
    train::TrainerOptions options;
    options.export_model = false;
    if (configure) configure(options);
    train::Trainer trainer(layout(1, false, dir), options);
    testing::RankResult r;
    r.summary = trainer.run();
    r.checksum = train::parameter_checksum(trainer.model());
    return {r};
  }
  return run_world(world, layout(world, shard, dir, frozen), configure, kSmallBuckets);
}

// The losses of `resumed` (from step 8) against the uninterrupted run's; returns the largest
// relative difference.
double expect_uninterrupted_curve(const train::TrainSummary& resumed, const train::TrainSummary& straight,
                                  const std::string& what) {
  EXPECT_EQ(resumed.losses.size(), 7u) << what;
  double worst = 0;
  for (size_t i = 0; i < std::min<size_t>(7, resumed.losses.size()); ++i) {
    const double a = resumed.losses[i].second, b = straight.losses[7 + i].second;
    worst = std::max(worst, std::abs(a - b) / std::abs(b));
    EXPECT_LT(std::abs(a - b) / std::abs(b), 1e-5) << what << ", step " << 8 + i << ": " << a << " vs " << b;
  }
  return worst;
}

TEST(ClusterShardedCheckpoint, EachRankWritesItsOwnShardAndRank0CommitsThem) {
  TempDir dir;
  const auto ranks = train(4, true, dir.path(), [](train::TrainerOptions& o) { o.stop_after_step = 7; });
  ASSERT_FALSE(ranks[0].summary.completed);
  const auto ckpt = train::load_checkpoint(dir.path());  // verifies every file's size and CRC
  EXPECT_EQ(ckpt.step, 7);
  ASSERT_EQ(ckpt.shard_files.size(), 4u);
  // The state file holds the step counters but no moments; each shard about a quarter of them.
  int64_t state_moments = 0;
  for (const auto& [key, t] : ckpt.state.tensors)
    if (key.find("/exp_avg") != std::string::npos) state_moments += t.numel();
  EXPECT_EQ(state_moments, 0);
  std::vector<int64_t> per_rank;
  for (const auto& path : ckpt.shard_files) {
    int64_t n = 0;
    for (const auto& [key, t] : train::read_safetensors(path).tensors) n += key.find("/exp_avg@") != std::string::npos ? t.numel() : 0;
    per_rank.push_back(n);  // exp_avg pieces (exp_avg_sq's are "/exp_avg_sq@...")
  }
  int64_t total = 0;
  for (int r = 0; r < 4; ++r) {
    EXPECT_EQ(per_rank[r], ranks[r].moment_elements) << "rank " << r;
    total += per_rank[r];
  }
  EXPECT_EQ(total, ranks[0].parameter_elements);

  // A shard whose bytes changed: the checkpoint is corrupt, and says which file.
  {
    std::fstream f(ckpt.shard_files[2], std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(fs::file_size(ckpt.shard_files[2]) - 3));
    f.put('\x7f');
  }
  try {
    train::load_checkpoint(ckpt.path);
    FAIL() << "a corrupt shard was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("optim-rank-00002.safetensors: checksum mismatch"), std::string::npos)
        << e.what();
  }
}

// Written on 4 sharded ranks at step 7 (past the merge at 6, inside a cycle); resumed on 4, on 2
// sharded, on 2 replicated and on 1 rank: every resumed curve is the uninterrupted one's.
TEST(ClusterShardedCheckpoint, WrittenOnFourRanksResumesOnFourTwoAndOne) {
  TempDir straight_dir, written_dir;
  const auto straight = train(4, true, straight_dir.path());
  ASSERT_TRUE(straight[0].summary.completed);
  ASSERT_EQ(straight[0].summary.merges, 2);
  const auto first = train(4, true, written_dir.path(), [](train::TrainerOptions& o) { o.stop_after_step = 7; });
  ASSERT_FALSE(first[0].summary.completed);

  struct Resume {
    int world;
    bool shard;
  };
  for (const Resume& r : {Resume{4, true}, Resume{2, true}, Resume{2, false}, Resume{1, false}}) {
    const std::string what = std::to_string(r.world) + (r.shard ? " sharded" : " replicated") + " rank(s)";
    TempDir dir;
    fs::copy(written_dir.path(), dir.path(), fs::copy_options::recursive | fs::copy_options::overwrite_existing);
    const auto resumed = train(r.world, r.shard, dir.path());
    ASSERT_TRUE(resumed[0].summary.completed) << what;
    EXPECT_EQ(resumed[0].summary.merges, 2) << what;
    const double worst = expect_uninterrupted_curve(resumed[0].summary, straight[0].summary, what);
    if (r.world == 4) {
      for (const auto& rank : resumed) EXPECT_EQ(rank.checksum, straight[0].checksum) << what;
    }
    std::cout << "resumed on " << what << ": largest relative loss difference " << worst << " (last loss "
              << std::setprecision(12) << resumed[0].summary.losses.back().second << " vs "
              << straight[0].summary.losses.back().second << ")\n";
  }
}

// Frozen-weight sharding: written on 4 ranks (ZeRO-1 too) at step 7, each rank's shard file holds
// its rows of every frozen W and the state file none of them; the checkpoint resumes on 4 and 2
// ranks that shard W, on 2 that do not, and on 1, with the uninterrupted curve.
TEST(ClusterShardedCheckpoint, FrozenWeightRowsWrittenOnFourRanksResumeOnFourTwoAndOne) {
  TempDir straight_dir, written_dir;
  const auto straight = train(4, true, straight_dir.path(), {}, /*frozen=*/true);
  ASSERT_TRUE(straight[0].summary.completed);
  ASSERT_EQ(straight[0].summary.merges, 2);
  const auto first = train(4, true, written_dir.path(), [](train::TrainerOptions& o) { o.stop_after_step = 7; }, true);
  ASSERT_FALSE(first[0].summary.completed);

  const auto ckpt = train::load_checkpoint(written_dir.path());
  for (const auto& [key, t] : ckpt.state.tensors)
    EXPECT_FALSE(key.rfind("model/", 0) == 0 && key.find("_proj.weight") != std::string::npos) << key << " in the state file";
  ASSERT_EQ(ckpt.shard_files.size(), 4u);
  for (size_t r = 0; r < 4; ++r) {
    int64_t rows_elements = 0;
    for (const auto& [key, t] : train::read_safetensors(ckpt.shard_files[r]).tensors)
      if (key.rfind("model/", 0) == 0 && key.find("_proj.weight@") != std::string::npos) rows_elements += t.numel();
    EXPECT_EQ(rows_elements, first[r].frozen_elements) << "rank " << r;
    EXPECT_EQ(rows_elements * 4, first[r].frozen_elements_whole) << "rank " << r;
  }

  struct Resume {
    int world;
    bool frozen;
  };
  for (const Resume& r : {Resume{4, true}, Resume{2, true}, Resume{2, false}, Resume{1, false}}) {
    const std::string what = std::to_string(r.world) + " rank(s)" + (r.frozen ? ", frozen W sharded" : "");
    TempDir dir;
    fs::copy(written_dir.path(), dir.path(), fs::copy_options::recursive | fs::copy_options::overwrite_existing);
    const auto resumed = train(r.world, r.world > 1, dir.path(), {}, r.frozen);
    ASSERT_TRUE(resumed[0].summary.completed) << what;
    EXPECT_EQ(resumed[0].summary.merges, 2) << what;
    const double worst = expect_uninterrupted_curve(resumed[0].summary, straight[0].summary, what);
    if (r.world == 4) {
      for (const auto& rank : resumed) EXPECT_EQ(rank.checksum, straight[0].checksum) << what;
    }
    std::cout << "resumed on " << what << ": largest relative loss difference " << worst << "\n";
  }
}

}  // namespace
}  // namespace relora::cluster
