#include "common/cycle_plan.h"

#include <gtest/gtest.h>

#include "common/job_spec.h"

namespace relora {
namespace {

relora::v1::JobSpec spec(const std::string& relora_yaml, int steps = 1000) {
  auto s = parse_job_spec_yaml("name: p\nmodel: {preset: nano}\ndata: {train: [x.txt]}\ntraining: {steps: " +
                               std::to_string(steps) + ", warmup_steps: 10}\nrelora: " + relora_yaml + "\n");
  resolve_job_spec(s);
  validate_job_spec(s);
  return s;
}

TEST(CommonCyclePlan, ReloraWithWarmStartHasStartCyclesAndEnd) {
  auto b = plan_boundaries(spec("{mode: relora, warm_start_steps: 100, cycle_steps: 300}"));
  ASSERT_EQ(b.size(), 4u);  // 100 low-rank start; 400, 700 cycle ends; 1000 job end
  EXPECT_EQ(b[0].kind, kBoundaryLowRankStart);
  EXPECT_EQ(b[0].step, 100);
  EXPECT_EQ(b[1].kind, kBoundaryCycleEnd);
  EXPECT_EQ(b[1].step, 400);
  EXPECT_EQ(b[1].cycle, 1);
  EXPECT_EQ(b[2].step, 700);
  EXPECT_EQ(b[2].cycle, 2);
  EXPECT_EQ(b[3].kind, kBoundaryJobEnd);
  EXPECT_EQ(b[3].step, 1000);
}

TEST(CommonCyclePlan, FullAndLoraHaveNoMerges) {
  EXPECT_EQ(plan_boundaries(spec("{mode: full}")).size(), 1u);
  auto lora = plan_boundaries(spec("{mode: lora}"));
  ASSERT_EQ(lora.size(), 2u);
  EXPECT_EQ(lora[0].kind, kBoundaryLowRankStart);
  EXPECT_EQ(lora[0].step, 0);
}

TEST(CommonCyclePlan, CommandsFollowTheSpec) {
  auto s = spec("{mode: relora, cycle_steps: 250, optimizer_reset: random, prune_ratio: 0.9}");
  auto start = plan_command(s, kBoundaryLowRankStart, 0);
  EXPECT_TRUE(start.enable_low_rank());
  EXPECT_FALSE(start.merge());
  auto merge = plan_command(s, kBoundaryCycleEnd, 250);
  EXPECT_TRUE(merge.merge());
  EXPECT_TRUE(merge.rewarm());
  EXPECT_EQ(merge.optimizer_reset(), "random");
  EXPECT_DOUBLE_EQ(merge.prune_ratio(), 0.9);
  EXPECT_EQ(merge.step(), 250);
  // Seeds: a function of (training.seed, step) only, so every rank and rerun agrees, and
  // different boundaries draw different factors.
  EXPECT_EQ(merge.seed(), plan_command(s, kBoundaryCycleEnd, 250).seed());
  EXPECT_NE(merge.seed(), plan_command(s, kBoundaryCycleEnd, 500).seed());
  EXPECT_EQ(merge.seed(), boundary_seed(s.training().seed(), 250));
  auto end = plan_command(s, kBoundaryJobEnd, 1000);
  EXPECT_FALSE(end.merge() || end.enable_low_rank());
}

TEST(CommonCyclePlan, NoRewarmWithoutRestartWarmup) {
  auto s = spec("{mode: relora, cycle_steps: 250, restart_warmup_steps: 0}");
  auto merge = plan_command(s, kBoundaryCycleEnd, 250);
  EXPECT_TRUE(merge.merge());
  EXPECT_FALSE(merge.rewarm());
}

}  // namespace
}  // namespace relora
