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
  EXPECT_EQ(b[0].kind, BoundaryKind::kLowRankStart);
  EXPECT_EQ(b[0].step, 100);
  EXPECT_EQ(b[1].kind, BoundaryKind::kCycleEnd);
  EXPECT_EQ(b[1].step, 400);
  EXPECT_EQ(b[1].cycle, 1);
  EXPECT_EQ(b[2].step, 700);
  EXPECT_EQ(b[2].cycle, 2);
  EXPECT_EQ(b[3].kind, BoundaryKind::kJobEnd);
  EXPECT_EQ(b[3].step, 1000);
}

TEST(CommonCyclePlan, FullAndLoraHaveNoMerges) {
  EXPECT_EQ(plan_boundaries(spec("{mode: full}")).size(), 1u);
  auto lora = plan_boundaries(spec("{mode: lora}"));
  ASSERT_EQ(lora.size(), 2u);
  EXPECT_EQ(lora[0].kind, BoundaryKind::kLowRankStart);
  EXPECT_EQ(lora[0].step, 0);
}

TEST(CommonCyclePlan, CommandsFollowTheSpec) {
  auto s = spec("{mode: relora, cycle_steps: 250, optimizer_reset: random, prune_ratio: 0.9}");
  auto start = plan_command(s, BoundaryKind::kLowRankStart, 0);
  EXPECT_TRUE(start.enable_low_rank());
  EXPECT_FALSE(start.merge());
  auto merge = plan_command(s, BoundaryKind::kCycleEnd, 250);
  EXPECT_TRUE(merge.merge());
  EXPECT_TRUE(merge.rewarm());
  EXPECT_EQ(merge.optimizer_reset(), "random");
  EXPECT_DOUBLE_EQ(merge.prune_ratio(), 0.9);
  EXPECT_EQ(merge.step(), 250);
  // Seeds: a function of (training.seed, step) only, so every rank and rerun agrees, and
  // different boundaries draw different factors.
  EXPECT_EQ(merge.seed(), plan_command(s, BoundaryKind::kCycleEnd, 250).seed());
  EXPECT_NE(merge.seed(), plan_command(s, BoundaryKind::kCycleEnd, 500).seed());
  EXPECT_EQ(merge.seed(), boundary_seed(s.training().seed(), 250));
  auto end = plan_command(s, BoundaryKind::kJobEnd, 1000);
  EXPECT_FALSE(end.merge() || end.enable_low_rank());
}

TEST(CommonCyclePlan, NoRewarmWithoutRestartWarmup) {
  auto s = spec("{mode: relora, cycle_steps: 250, restart_warmup_steps: 0}");
  auto merge = plan_command(s, BoundaryKind::kCycleEnd, 250);
  EXPECT_TRUE(merge.merge());
  EXPECT_FALSE(merge.rewarm());
}

// The one plan both the trainer and the coordinator read: every step is plain, or carries exactly
// the boundary plan_boundaries lists; the phase flips at the low-rank start.
TEST(CommonCyclePlan, EveryStepIsPlainOrItsPlannedBoundary) {
  const ReloraPlan plan(spec("{mode: relora, warm_start_steps: 100, cycle_steps: 300}"));
  EXPECT_EQ(plan.mode(), TrainMode::kRelora);
  EXPECT_EQ(plan.low_rank_start(), 100);
  int boundaries = 0;
  for (int64_t step = 0; step <= 1000; ++step) {
    const auto b = plan.boundary_at(step);
    EXPECT_EQ(plan.phase_at(step), step < 100 ? ReloraPlan::Phase::kFullRank : ReloraPlan::Phase::kLowRank);
    if (!b) continue;
    ++boundaries;
    EXPECT_EQ(b->step, step);
    if (step == 100) EXPECT_EQ(b->kind, BoundaryKind::kLowRankStart);
    if (step == 400 || step == 700) EXPECT_EQ(b->kind, BoundaryKind::kCycleEnd);
    if (step == 1000) {
      EXPECT_EQ(b->kind, BoundaryKind::kJobEnd);
      EXPECT_EQ(b->cycle, 2);  // the job ends in cycle 2
    }
  }
  EXPECT_EQ(boundaries, 4);
  const ReloraPlan full(spec("{mode: full}"));
  EXPECT_EQ(full.low_rank_start(), -1);
  EXPECT_EQ(full.phase_at(999), ReloraPlan::Phase::kFullRank);
  EXPECT_FALSE(full.boundary_at(500).has_value());
}

TEST(CommonCyclePlan, BoundaryNamesRoundTripAndUnknownNamesAreRejected) {
  for (BoundaryKind k : {BoundaryKind::kLowRankStart, BoundaryKind::kCycleEnd, BoundaryKind::kJobEnd})
    EXPECT_EQ(parse_boundary_kind(boundary_kind_name(k)), k);
  EXPECT_STREQ(boundary_kind_name(BoundaryKind::kCycleEnd), "cycle_end");
  EXPECT_FALSE(parse_boundary_kind("merge").has_value());
}

}  // namespace
}  // namespace relora
