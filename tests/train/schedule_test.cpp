#include "worker/train/schedule.h"

#include <gtest/gtest.h>

#include "common/job_spec.h"

namespace relora::train {
namespace {

// The test vectors of relora-spec.md: T = 15000, W0 = 500, Wr = 100, C = 5000, m = 0.1.
TEST(TrainSchedule, MatchesSpecTestVectors) {
  CosineSchedule s{15000, 500, 5000, 100, 0.1};
  const std::pair<int64_t, double> expected[] = {
      {0, 0.0},        {250, 0.5},        {500, 1.0},      {4999, 0.8026},   {5000, 0.0},   {5001, 0.0079},
      {5050, 0.3972},  {5100, 0.7944},    {10000, 0.0},    {10100, 0.3307},  {14999, 0.1},
  };
  for (const auto& [t, lambda] : expected) EXPECT_NEAR(lr_multiplier(s, t), lambda, 1e-4) << "t = " << t;
}

TEST(TrainSchedule, WithoutRestartsIsWarmupThenCosine) {
  CosineSchedule s{1000, 100, 0, 0, 0.1};
  EXPECT_DOUBLE_EQ(lr_multiplier(s, 50), 0.5);
  EXPECT_NEAR(lr_multiplier(s, 100), 1.0, 1e-12);
  EXPECT_NEAR(lr_multiplier(s, 550), 0.1 + 0.9 * 0.5, 1e-12);  // half-way through the decay
  EXPECT_GT(lr_multiplier(s, 500), lr_multiplier(s, 501));     // no restart anywhere
}

relora::v1::JobSpec spec_with_warm_start() {
  auto spec = parse_job_spec_yaml(R"(
name: sched
model: {preset: nano}
data: {train: [x.txt]}
training: {steps: 1200, lr: 0.001, warmup_steps: 100}
relora: {mode: relora, warm_start_steps: 200, cycle_steps: 250, restart_warmup_steps: 50, lr: 0.002}
)");
  resolve_job_spec(spec);
  validate_job_spec(spec);
  return spec;
}

// restart_warmup_steps: 0 (the ablation without the jagged schedule): merges keep the cosine's
// rate instead of dropping to 0.
TEST(TrainSchedule, ZeroRestartWarmupKeepsTheCosineAcrossMerges) {
  auto spec = parse_job_spec_yaml(R"(
name: sched
model: {preset: nano}
data: {train: [x.txt]}
training: {steps: 1000, lr: 0.001, warmup_steps: 100}
relora: {mode: relora, cycle_steps: 250, restart_warmup_steps: 0}
)");
  resolve_job_spec(spec);
  validate_job_spec(spec);
  JobSchedule js(spec);
  CosineSchedule plain{1000, 100, 0, 0, 0.1};
  for (int64_t t : {249, 250, 251, 500, 750, 999}) EXPECT_DOUBLE_EQ(js.lr(t), 0.001 * lr_multiplier(plain, t)) << t;
  EXPECT_EQ(js.cycle(250), 1);
}

TEST(TrainSchedule, WarmStartThenRebuiltJaggedSchedule) {
  auto spec = spec_with_warm_start();
  JobSchedule js(spec);
  EXPECT_EQ(js.low_rank_start(), 200);
  // Warm start: full-rank cosine over the whole job at training.lr.
  CosineSchedule full{1200, 100, 0, 0, 0.1};
  EXPECT_DOUBLE_EQ(js.lr(50), 0.001 * lr_multiplier(full, 50));
  EXPECT_DOUBLE_EQ(js.lr(199), 0.001 * lr_multiplier(full, 199));
  // Low-rank phase: a fresh first warm-up from 0 at relora.lr, restarts every 250 steps.
  CosineSchedule low{1000, 100, 250, 50, 0.1};
  EXPECT_DOUBLE_EQ(js.lr(200), 0.0);
  EXPECT_DOUBLE_EQ(js.lr(250), 0.002 * 0.5);
  EXPECT_DOUBLE_EQ(js.lr(450), 0.0);  // first restart
  EXPECT_DOUBLE_EQ(js.lr(475), 0.002 * lr_multiplier(low, 275));
  EXPECT_EQ(js.cycle(199), 0);
  EXPECT_EQ(js.cycle(449), 0);
  EXPECT_EQ(js.cycle(450), 1);
  EXPECT_EQ(js.cycle(1199), 3);
}

}  // namespace
}  // namespace relora::train
