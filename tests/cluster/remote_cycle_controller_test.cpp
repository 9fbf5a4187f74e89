// RemoteCycleController on its own, against a recording sink: what it sends, in which order, and
// how it treats answers for the wrong step, late answers, stale duplicates and a Cancel.
#include "worker/cluster/remote_cycle_controller.h"

#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>

#include <gtest/gtest.h>

#include "common/cycle_plan.h"

namespace relora::cluster {
namespace {

using namespace std::chrono_literals;
using relora::v1::CoordinatorMessage;
using relora::v1::WorkerMessage;
using train::Boundary;
using train::BoundaryKind;

class RecordingSink final : public MessageSink {
 public:
  void send(WorkerMessage msg, bool droppable) override {
    std::lock_guard<std::mutex> lock(mu_);
    EXPECT_FALSE(droppable) << "boundaries and acks must never be dropped";
    sent_.push_back(std::move(msg));
    cv_.notify_all();
  }
  // Waits until `n` messages were sent; returns the n-th (1-based).
  WorkerMessage wait_for(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    EXPECT_TRUE(cv_.wait_for(lock, 5s, [&] { return sent_.size() >= n; })) << "message " << n << " never sent";
    return sent_.size() >= n ? sent_[n - 1] : WorkerMessage();
  }
  size_t count() {
    std::lock_guard<std::mutex> lock(mu_);
    return sent_.size();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<WorkerMessage> sent_;
};

CoordinatorMessage command(const std::string& job, const std::string& kind, int64_t step) {
  CoordinatorMessage msg;
  relora::v1::JobSpec spec;
  spec.mutable_training()->set_seed(7);
  spec.mutable_relora()->set_optimizer_reset("magnitude");
  spec.mutable_relora()->set_prune_ratio(0.9);
  *msg.mutable_command() = plan_command(spec, *parse_boundary_kind(kind), step);
  msg.mutable_command()->set_job_id(job);
  return msg;
}

CoordinatorMessage resume(const std::string& job, int64_t step) {
  CoordinatorMessage msg;
  msg.mutable_resume()->set_job_id(job);
  msg.mutable_resume()->set_step(step);
  return msg;
}

CoordinatorMessage cancel(const std::string& job) {
  CoordinatorMessage msg;
  msg.mutable_cancel()->set_job_id(job);
  return msg;
}

const Boundary kCycleEnd7{BoundaryKind::kCycleEnd, 7, 1};

TEST(ClusterRemoteCycleController, BoundaryThenCommandThenAckThenResume) {
  RecordingSink sink;
  RemoteCycleController c(sink, "job-1", 1, 5s);
  EXPECT_TRUE(c.wants_parameter_checksum());
  auto reached = std::async(std::launch::async, [&] { return c.at_boundary(kCycleEnd7); });
  const WorkerMessage b = sink.wait_for(1);
  ASSERT_TRUE(b.has_boundary());
  EXPECT_EQ(b.boundary().job_id(), "job-1");
  EXPECT_EQ(b.boundary().rank(), 1);
  EXPECT_EQ(b.boundary().step(), 7);
  EXPECT_EQ(b.boundary().boundary(), "cycle_end");
  c.deliver(command("other-job", "cycle_end", 7));  // not ours: ignored
  EXPECT_EQ(reached.wait_for(50ms), std::future_status::timeout);
  c.deliver(command("job-1", "cycle_end", 7));
  const train::CycleCommand cmd = reached.get();
  EXPECT_TRUE(cmd.merge);
  EXPECT_EQ(cmd.reset, train::ResetMode::kMagnitude);
  EXPECT_DOUBLE_EQ(cmd.prune_ratio, 0.9);
  EXPECT_EQ(cmd.seed, boundary_seed(7, 7));
  EXPECT_FALSE(cmd.stop);

  auto acked = std::async(std::launch::async, [&] { c.acknowledge(kCycleEnd7, "0badf00d"); });
  const WorkerMessage a = sink.wait_for(2);
  ASSERT_TRUE(a.has_ack());
  EXPECT_EQ(a.ack().step(), 7);
  EXPECT_EQ(a.ack().param_checksum(), "0badf00d");
  EXPECT_EQ(acked.wait_for(50ms), std::future_status::timeout);  // blocks until Resume
  c.deliver(resume("job-1", 7));
  acked.get();
  EXPECT_FALSE(c.stop_requested());
  EXPECT_EQ(sink.count(), 2u);
}

TEST(ClusterRemoteCycleController, StaleCommandsAreIgnoredAndFutureOnesAreErrors) {
  RecordingSink sink;
  RemoteCycleController c(sink, "job-1", 0, 5s);
  c.deliver(command("job-1", "low_rank_start", 2));  // a duplicate of an earlier boundary's answer
  auto reached = std::async(std::launch::async, [&] { return c.at_boundary(kCycleEnd7); });
  sink.wait_for(1);
  EXPECT_EQ(reached.wait_for(50ms), std::future_status::timeout);
  c.deliver(command("job-1", "cycle_end", 11));
  try {
    reached.get();
    FAIL() << "a command for step 11 was applied at step 7";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("command for step 11 (out of lockstep)"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("boundary 'cycle_end' at step 7"), std::string::npos) << e.what();
  }
}

TEST(ClusterRemoteCycleController, ACommandForAnotherBoundaryIsAnError) {
  RecordingSink sink;
  RemoteCycleController c(sink, "job-1", 0, 5s);
  c.deliver(command("job-1", "job_end", 7));
  EXPECT_THROW(
      {
        try {
          c.at_boundary(kCycleEnd7);
        } catch (const std::runtime_error& e) {
          EXPECT_NE(std::string(e.what()).find("is for boundary 'job_end'"), std::string::npos) << e.what();
          throw;
        }
      },
      std::runtime_error);
}

TEST(ClusterRemoteCycleController, SilenceTimesOutWithAClearError) {
  RecordingSink sink;
  RemoteCycleController c(sink, "job-9", 3, 100ms);
  try {
    c.at_boundary({BoundaryKind::kLowRankStart, 2, 0});
    FAIL() << "no timeout";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()),
              "job job-9, rank 3, boundary 'low_rank_start' at step 2: no command from the coordinator within 0.1 s");
  }
  c.deliver(command("job-9", "cycle_end", 7));
  c.at_boundary(kCycleEnd7);
  EXPECT_THROW(c.acknowledge(kCycleEnd7, "x"), std::runtime_error);  // no Resume
}

TEST(ClusterRemoteCycleController, CancelStopsAtABoundaryWithACheckpoint) {
  RecordingSink sink;
  RemoteCycleController c(sink, "job-1", 0, 5s);
  auto reached = std::async(std::launch::async, [&] { return c.at_boundary(kCycleEnd7); });
  sink.wait_for(1);
  c.deliver(cancel("job-1"));
  const train::CycleCommand cmd = reached.get();
  EXPECT_TRUE(cmd.stop);
  EXPECT_TRUE(cmd.checkpoint);
  EXPECT_FALSE(cmd.merge);
  c.acknowledge(kCycleEnd7, "x");  // returns at once, sends nothing
  EXPECT_EQ(sink.count(), 1u);
  EXPECT_TRUE(c.stop_requested());
  EXPECT_EQ(c.stop_reason(), "cancelled by the coordinator");
}

TEST(ClusterRemoteCycleController, AStopCommandEndsTheRunWithItsReasonAndNoAcknowledgement) {
  // The coordinator regroups the job: a stop at the boundary instead of the boundary's command.
  RecordingSink sink;
  RemoteCycleController c(sink, "job-1", 0, 5s);
  auto reached = std::async(std::launch::async, [&] { return c.at_boundary(kCycleEnd7); });
  sink.wait_for(1);
  EXPECT_TRUE(c.waiting_on_coordinator());
  CoordinatorMessage stop;
  stop.mutable_command()->set_job_id("job-1");
  stop.mutable_command()->set_step(7);
  stop.mutable_command()->set_boundary("cycle_end");
  stop.mutable_command()->set_optimizer_reset("none");
  stop.mutable_command()->set_stop(true);
  stop.mutable_command()->set_checkpoint(true);
  stop.mutable_command()->set_reason("regrouping onto 2 workers from the checkpoint at step 7");
  c.deliver(stop);
  const train::CycleCommand cmd = reached.get();
  EXPECT_FALSE(c.waiting_on_coordinator());
  EXPECT_TRUE(cmd.stop);
  EXPECT_TRUE(cmd.checkpoint);
  EXPECT_FALSE(cmd.merge);
  c.acknowledge(kCycleEnd7, "x");  // returns at once, sends nothing
  EXPECT_EQ(sink.count(), 1u);
  EXPECT_TRUE(c.stopping());
  EXPECT_EQ(c.stop_reason(), "stopped by the coordinator: regrouping onto 2 workers from the checkpoint at step 7");
}

TEST(ClusterRemoteCycleController, ResumedStepIsWhatItTellsARestartedCoordinator) {
  RecordingSink sink;
  RemoteCycleController c(sink, "job-1", 0, 5s);
  EXPECT_EQ(c.resumed_step(), -1);
  c.deliver(command("job-1", "cycle_end", 7));
  c.at_boundary(kCycleEnd7);
  auto acked = std::async(std::launch::async, [&] { c.acknowledge(kCycleEnd7, "x"); });
  sink.wait_for(2);
  EXPECT_EQ(c.resumed_step(), -1);  // still waiting for it
  c.deliver(resume("job-1", 7));
  acked.get();
  EXPECT_EQ(c.resumed_step(), 7);
}

TEST(ClusterRemoteCycleController, WithSeveralRanksStopWaitsForTheAgreedVote) {
  RecordingSink sink;
  RemoteCycleController c(sink, "job-1", 0, 5s);
  bool agreed = false;
  c.set_group_stop([&] { return agreed; });
  c.deliver(cancel("job-1"));
  EXPECT_TRUE(c.stopping());         // this rank votes to stop...
  EXPECT_FALSE(c.stop_requested());  // ...but stops only when every rank has the vote
  agreed = true;
  EXPECT_TRUE(c.stop_requested());
}

TEST(ClusterRemoteCycleController, ResendPendingRepeatsTheOutstandingRequest) {
  RecordingSink sink;
  RemoteCycleController c(sink, "job-1", 0, 5s);
  c.resend_pending();  // nothing outstanding
  EXPECT_EQ(sink.count(), 0u);
  auto reached = std::async(std::launch::async, [&] { return c.at_boundary(kCycleEnd7); });
  sink.wait_for(1);
  c.resend_pending();  // as after a reconnect
  const WorkerMessage again = sink.wait_for(2);
  EXPECT_TRUE(again.has_boundary());
  EXPECT_EQ(again.boundary().step(), 7);
  c.deliver(command("job-1", "cycle_end", 7));
  c.deliver(command("job-1", "cycle_end", 7));  // the coordinator answered both
  reached.get();
  // The duplicate answer is stale at the next boundary.
  auto next = std::async(std::launch::async, [&] { return c.at_boundary({BoundaryKind::kCycleEnd, 11, 2}); });
  sink.wait_for(3);
  c.deliver(command("job-1", "cycle_end", 11));
  EXPECT_TRUE(next.get().merge);
}

}  // namespace
}  // namespace relora::cluster
