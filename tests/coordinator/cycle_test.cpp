// The cycle barrier over the wire: boundary from every rank -> one command to all -> acks ->
// resume, with every step recorded as an event.
#include <gmock/gmock.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include "common/cycle_plan.h"
#include "tests/coordinator/harness.h"

namespace relora::coordinator::testing {
namespace {

using google::protobuf::util::MessageDifferencer;
using ::testing::HasSubstr;

class CoordinatorCycle : public ::testing::Test {
 protected:
  void SetUp() override {
    c_ = std::make_unique<Coordinator>(dir_.path());
    a_ = std::make_unique<SimWorker>(c_->channel(), "host-a", 29501);
    b_ = std::make_unique<SimWorker>(c_->channel(), "host-b", 29502);
    a_->join();
    b_->join();
    const v1::Job job = c_->submit_ok(job_yaml("cycles", 2));
    job_ = job.id();
    spec_ = job.spec();
    ASSERT_TRUE(a_->next().has_value());
    ASSERT_TRUE(b_->next().has_value());
  }
  void TearDown() override {
    a_.reset();
    b_.reset();
    c_.reset();
  }

  // Both ranks through one boundary; checks what each receives.
  void run_boundary(int64_t step, const std::string& kind) {
    a_->boundary(job_, 0, step, kind);
    EXPECT_FALSE(a_->next(150ms).has_value()) << "a command before every rank arrived";
    b_->boundary(job_, 1, step, kind);
    v1::CycleCommand expected = relora::plan_command(spec_, *relora::parse_boundary_kind(kind), step);
    expected.set_job_id(job_);
    for (SimWorker* w : {a_.get(), b_.get()}) {
      auto m = w->next();
      ASSERT_TRUE(m && m->has_command()) << (m ? m->DebugString() : "nothing");
      EXPECT_TRUE(MessageDifferencer::Equals(m->command(), expected)) << m->command().DebugString();
    }
    a_->ack(job_, 0, step, "sum-" + std::to_string(step));
    EXPECT_FALSE(b_->next(150ms).has_value()) << "a resume before every rank acked";
    b_->ack(job_, 1, step, "sum-" + std::to_string(step));
    for (SimWorker* w : {a_.get(), b_.get()}) {
      auto m = w->next();
      ASSERT_TRUE(m && m->has_resume());
      EXPECT_EQ(m->resume().step(), step);
      EXPECT_EQ(m->resume().job_id(), job_);
    }
  }

  relora::testing::TempDir dir_;
  std::unique_ptr<Coordinator> c_;
  std::unique_ptr<SimWorker> a_, b_;
  std::string job_;
  v1::JobSpec spec_;
};

TEST_F(CoordinatorCycle, EveryRankGetsTheSameCommandThenResumesAfterAllAcks) {
  run_boundary(20, "low_rank_start");
  run_boundary(60, "cycle_end");
  a_->progress(job_, 0, 80, 4.5, "runs/cycles/step-80");
  b_->progress(job_, 1, 80, 9.9);  // ignored: rank 0 speaks for the job
  ASSERT_TRUE(eventually([&] { return c_->get_ok(job_).progress().step() == 80; }));
  EXPECT_DOUBLE_EQ(c_->get_ok(job_).progress().loss(), 4.5);
  EXPECT_EQ(c_->get_ok(job_).checkpoint(), "runs/cycles/step-80");
  // job_end: a command with nothing to do; the trainer does not acknowledge it, and the job is
  // complete when rank 0 reports it finished.
  a_->boundary(job_, 0, 100, "job_end");
  ASSERT_TRUE(eventually([&] { return c_->events(job_).back().step() == 100; }));  // fixes the event order
  b_->boundary(job_, 1, 100, "job_end");
  ASSERT_TRUE(a_->next().has_value());
  ASSERT_TRUE(b_->next().has_value());
  b_->finished(job_, 1, true);
  a_->finished(job_, 0, true, "", R"({"merges": 1})");
  ASSERT_TRUE(c_->wait_state(job_, v1::JOB_STATE_COMPLETED));

  std::vector<std::string> kinds;
  for (const auto& e : c_->events(job_)) {
    kinds.push_back(e.kind() + "@" + std::to_string(e.step()) + "/r" + std::to_string(e.rank()));
    if (e.kind() == "ack") {
      EXPECT_EQ(e.param_checksum(), "sum-" + std::to_string(e.step()));
    }
    if (e.kind() == "command" && e.step() == 60) {
      EXPECT_THAT(e.message(), HasSubstr("merge"));
    }
  }
  const std::vector<std::string> expected = {"submitted@0/r-1", "scheduled@0/r-1", "started@0/r-1",   "boundary@20/r0",
                                             "boundary@20/r1",  "command@20/r-1",  "ack@20/r0",       "ack@20/r1",
                                             "resumed@20/r-1",  "boundary@60/r0",  "boundary@60/r1",  "command@60/r-1",
                                             "ack@60/r0",       "ack@60/r1",       "resumed@60/r-1",  "boundary@100/r0",
                                             "boundary@100/r1", "command@100/r-1", "completed@80/r-1"};
  EXPECT_EQ(kinds, expected);
}

TEST_F(CoordinatorCycle, ARankAtADifferentStepFailsTheJob) {
  a_->boundary(job_, 0, 20, "low_rank_start");
  // Two streams: make the arrival order (and so the message) deterministic.
  ASSERT_TRUE(eventually([&] { return c_->events(job_).back().kind() == "boundary"; }));
  b_->boundary(job_, 1, 60, "cycle_end");
  ASSERT_TRUE(c_->wait_state(job_, v1::JOB_STATE_FAILED));
  const std::string error = c_->get_ok(job_).error();
  EXPECT_THAT(error, HasSubstr("rank 1 reported boundary cycle_end at step 60"));
  EXPECT_THAT(error, HasSubstr("rank 0 reported low_rank_start at step 20"));
  for (SimWorker* w : {a_.get(), b_.get()}) {
    auto m = w->next();
    ASSERT_TRUE(m && m->has_cancel());
  }
  EXPECT_EQ(c_->events(job_).back().kind(), "failed");
}

TEST_F(CoordinatorCycle, DivergedChecksumsFailTheJob) {
  a_->boundary(job_, 0, 20, "low_rank_start");
  b_->boundary(job_, 1, 20, "low_rank_start");
  ASSERT_TRUE(a_->next().has_value());
  ASSERT_TRUE(b_->next().has_value());
  a_->ack(job_, 0, 20, "aaaa");
  b_->ack(job_, 1, 20, "bbbb");
  ASSERT_TRUE(c_->wait_state(job_, v1::JOB_STATE_FAILED));
  EXPECT_THAT(c_->get_ok(job_).error(), HasSubstr("ranks diverged"));
}

TEST_F(CoordinatorCycle, AReconnectingRankKeepsItsJobAndGetsTheCommandAgain) {
  a_->boundary(job_, 0, 20, "low_rank_start");
  b_->boundary(job_, 1, 20, "low_rank_start");
  ASSERT_TRUE(a_->next().has_value());
  ASSERT_TRUE(b_->next().has_value());
  // Rank 1's stream breaks before it acknowledges; it comes back with the same id.
  const std::string id = b_->id();
  b_->disconnect();
  ASSERT_TRUE(b_->register_worker(id).ok());
  EXPECT_EQ(b_->id(), id);
  b_->connect();
  auto m = b_->next();
  ASSERT_TRUE(m && m->has_command());
  EXPECT_EQ(m->command().step(), 20);
  a_->ack(job_, 0, 20, "s");
  b_->ack(job_, 1, 20, "s");
  ASSERT_TRUE(a_->next().has_value());
  m = b_->next();
  ASSERT_TRUE(m && m->has_resume());
  EXPECT_EQ(c_->state(job_), v1::JOB_STATE_RUNNING);
}

}  // namespace
}  // namespace relora::coordinator::testing
