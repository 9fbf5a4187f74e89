// The barrier's state machine alone (no gRPC): what completes it, what is a duplicate, what is a
// protocol error.
#include "coordinator/cycle_barrier.h"

#include <gmock/gmock.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include "common/cycle_plan.h"
#include "common/job_spec.h"
#include "tests/coordinator/harness.h"

namespace relora::coordinator {
namespace {

using ::testing::HasSubstr;

relora::v1::JobSpec two_rank_spec() {
  auto spec = parse_job_spec_yaml(testing::job_yaml("barrier", 2));
  resolve_job_spec(spec);
  validate_job_spec(spec);
  return spec;
}

TEST(CoordinatorBarrier, CompletesWhenEveryRankReportsAndAcks) {
  const auto spec = two_rank_spec();
  CycleBarrier b("job-1", spec);
  EXPECT_EQ(b.boundary(0, 20, "low_rank_start").result, BarrierResult::kWaiting);
  EXPECT_EQ(b.boundary(0, 20, "low_rank_start").result, BarrierResult::kDuplicate);
  EXPECT_EQ(b.boundary(1, 20, "low_rank_start").result, BarrierResult::kComplete);
  ASSERT_TRUE(b.awaiting_acks());
  auto expected = plan_command(spec, relora::BoundaryKind::kLowRankStart, 20);
  expected.set_job_id("job-1");
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(b.command(), expected));

  EXPECT_EQ(b.ack(1, 20, "c").result, BarrierResult::kWaiting);
  EXPECT_EQ(b.ack(0, 20, "c").result, BarrierResult::kComplete);
  EXPECT_FALSE(b.awaiting_acks());
  EXPECT_EQ(b.ack(0, 20, "c").result, BarrierResult::kDuplicate);  // a resend
  EXPECT_EQ(b.boundary(1, 20, "low_rank_start").result, BarrierResult::kDuplicate);
  // The next boundary starts a fresh round.
  EXPECT_EQ(b.boundary(1, 60, "cycle_end").result, BarrierResult::kWaiting);
  EXPECT_EQ(b.boundary(0, 60, "cycle_end").result, BarrierResult::kComplete);
  EXPECT_TRUE(b.command().merge());
}

TEST(CoordinatorBarrier, ProtocolErrorsNameTheRanksAndSteps) {
  const auto spec = two_rank_spec();
  {
    CycleBarrier b("j", spec);
    b.boundary(0, 20, "low_rank_start");
    auto out = b.boundary(1, 60, "cycle_end");
    EXPECT_EQ(out.result, BarrierResult::kError);
    EXPECT_THAT(out.error, HasSubstr("rank 1 reported boundary cycle_end at step 60 but rank 0 reported "
                                     "low_rank_start at step 20"));
  }
  {
    CycleBarrier b("j", spec);
    auto out = b.boundary(0, 30, "cycle_end");
    EXPECT_EQ(out.result, BarrierResult::kError);
    EXPECT_THAT(out.error, HasSubstr("not in the job's plan (next planned: cycle_end at step 60)"));
  }
  {
    CycleBarrier b("j", spec);
    EXPECT_EQ(b.ack(0, 20, "").result, BarrierResult::kError);  // nothing outstanding
    b.boundary(0, 20, "low_rank_start");
    b.boundary(1, 20, "low_rank_start");
    auto out = b.ack(0, 60, "");
    EXPECT_EQ(out.result, BarrierResult::kError);
    EXPECT_THAT(out.error, HasSubstr("outstanding command is for step 20"));
    EXPECT_EQ(b.boundary(0, 60, "cycle_end").result, BarrierResult::kError);       // before resuming
    EXPECT_EQ(b.boundary(2, 20, "low_rank_start").result, BarrierResult::kError);  // no rank 2
  }
  {
    CycleBarrier b("j", spec);
    b.boundary(0, 20, "low_rank_start");
    b.boundary(1, 20, "low_rank_start");
    b.ack(0, 20, "aaaa");
    auto out = b.ack(1, 20, "bbbb");
    EXPECT_EQ(out.result, BarrierResult::kError);
    EXPECT_THAT(out.error, HasSubstr("ranks diverged"));
    EXPECT_THAT(out.error, HasSubstr("rank 0 parameter checksum aaaa, rank 1 bbbb"));
  }
}

TEST(CoordinatorBarrier, ResendsWhatAReconnectingRankMayHaveMissed) {
  CycleBarrier b("job-9", two_rank_spec());
  EXPECT_FALSE(b.message_to_resend(0).has_value());
  b.boundary(0, 20, "low_rank_start");
  b.boundary(1, 20, "low_rank_start");
  b.ack(0, 20, "");
  ASSERT_TRUE(b.message_to_resend(1).has_value());
  EXPECT_TRUE(b.message_to_resend(1)->has_command());
  EXPECT_FALSE(b.message_to_resend(0).has_value());  // acked: waits for the resume
  b.ack(1, 20, "");
  ASSERT_TRUE(b.message_to_resend(0).has_value());
  EXPECT_EQ(b.message_to_resend(0)->resume().step(), 20);
  EXPECT_EQ(b.message_to_resend(0)->resume().job_id(), "job-9");
}

}  // namespace
}  // namespace relora::coordinator
