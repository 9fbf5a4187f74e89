// Heartbeat timeouts: a silent worker is lost; its job restarts (elastic, from its checkpoint) or,
// with no restarts left, fails with a reason naming it; the other ranks are cancelled, and the
// coordinator goes on answering.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/coordinator/harness.h"

namespace relora::coordinator::testing {
namespace {

using ::testing::HasSubstr;

TEST(CoordinatorHeartbeat, ASilentWorkerIsLostAndItsJobFails) {
  relora::testing::TempDir dir;
  Coordinator c(dir.path(), /*heartbeat_timeout=*/300ms);
  SimWorker alive(c.channel(), "host-a", 29501);
  SimWorker silent(c.channel(), "host-b", 29502);
  alive.join();
  EXPECT_EQ(alive.heartbeat_interval_ms(), 100);  // a third of the timeout
  alive.start_heartbeats(50ms);
  silent.join();  // connected, but never heartbeats or sends anything
  const std::string job = c.submit_ok(job_yaml("hb", 2, ", max_restarts: 0")).id();
  ASSERT_TRUE(alive.next().has_value());

  ASSERT_TRUE(c.wait_state(job, v1::JOB_STATE_FAILED, 3000ms));
  EXPECT_EQ(c.get_ok(job).error(), "worker " + silent.id() +
                                       " (rank 1) lost: no heartbeat for 300ms (restarted 0 time(s): "
                                       "cluster.max_restarts is 0)");
  auto m = alive.next();
  ASSERT_TRUE(m && m->has_cancel());
  EXPECT_EQ(m->cancel().job_id(), job);
  EXPECT_EQ(worker_state(c, silent.id()), "lost");
  EXPECT_EQ(worker_state(c, alive.id()), "idle");
  // The lost worker's stream is ended; it must register again to come back.
  ASSERT_TRUE(silent.stream_ended());
  EXPECT_EQ(silent.finish().error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(silent.heartbeat().error_code(), grpc::StatusCode::NOT_FOUND);  // workers re-register on it

  // Until its cancelled run reports its end, the survivor is not given another job.
  const std::string next = c.submit_ok(job_yaml("after", 1)).id();
  EXPECT_FALSE(alive.next(300ms).has_value());
  alive.finished(job, 0, false, "cancelled by the coordinator");

  // Still answering, and the survivor takes the next job.
  ASSERT_TRUE(c.wait_state(next, v1::JOB_STATE_RUNNING));
  m = alive.next();
  ASSERT_TRUE(m && m->has_assignment());
  EXPECT_EQ(m->assignment().job_id(), next);

  // Registering again with its id brings the lost worker back.
  ASSERT_TRUE(silent.register_worker(silent.id()).ok());
  EXPECT_EQ(worker_state(c, silent.id()), "idle");
  alive.stop_heartbeats();
}

TEST(CoordinatorHeartbeat, AWorkerWhoseStreamStaysClosedIsLost) {
  relora::testing::TempDir dir;
  Coordinator c(dir.path(), /*heartbeat_timeout=*/300ms);
  SimWorker w(c.channel(), "host-a", 29501);
  w.join();
  w.start_heartbeats(50ms);  // heartbeats alone do not keep a worker without a stream
  const std::string job = c.submit_ok(job_yaml("gone", 1, ", max_restarts: 0")).id();
  ASSERT_TRUE(w.next().has_value());
  w.disconnect();
  ASSERT_TRUE(c.wait_state(job, v1::JOB_STATE_FAILED, 3000ms));
  EXPECT_THAT(c.get_ok(job).error(), HasSubstr("lost: stream disconnected for 300ms"));
  w.stop_heartbeats();
}

// An elastic job (min_workers 1) that loses a rank restarts on the survivor, once the survivor's
// cancelled run has ended, with the accumulation that keeps the global batch.
TEST(CoordinatorHeartbeat, ALostRankRestartsTheJobOnTheWorkersLeft) {
  relora::testing::TempDir dir;
  // Longer than the other tests' 300 ms: the survivor must not miss it under a loaded machine.
  Coordinator c(dir.path(), /*heartbeat_timeout=*/1000ms);
  SimWorker alive(c.channel(), "host-a", 29501);
  SimWorker silent(c.channel(), "host-b", 29502);
  alive.join();
  alive.start_heartbeats(50ms);
  silent.join();
  const std::string job = c.submit_ok(job_yaml("elastic", 2, ", min_workers: 1")).id();
  auto first = alive.next();
  ASSERT_TRUE(first && first->has_assignment());
  EXPECT_EQ(first->assignment().world_size(), 2);
  EXPECT_EQ(first->assignment().spec().training().grad_accum_steps(), 1);
  alive.progress(job, 0, 30, 4.5, "/ckpt/step-00000030");

  ASSERT_TRUE(c.wait_state(job, v1::JOB_STATE_QUEUED, 5000ms));
  v1::Job queued = c.get_ok(job);
  EXPECT_EQ(queued.restarts(), 1);
  EXPECT_TRUE(queued.error().empty());
  auto m = alive.next();
  ASSERT_TRUE(m && m->has_cancel());
  alive.finished(job, 0, false, "cancelled by the coordinator");

  auto again = alive.next();
  ASSERT_TRUE(again && again->has_assignment()) << "the job was not restarted on the survivor";
  EXPECT_EQ(again->assignment().job_id(), job);
  EXPECT_EQ(again->assignment().world_size(), 1);
  EXPECT_EQ(again->assignment().spec().training().grad_accum_steps(), 2);  // same global batch
  ASSERT_TRUE(c.wait_state(job, v1::JOB_STATE_RUNNING));
  EXPECT_EQ(c.get_ok(job).world_size(), 1);
  bool restarting = false;
  for (const auto& e : c.events(job))
    if (e.kind() == "restarting") {
      restarting = true;
      EXPECT_THAT(e.message(), HasSubstr("restart 1 of 3, resuming from checkpoint /ckpt/step-00000030"));
    }
  EXPECT_TRUE(restarting);
  alive.stop_heartbeats();
}

// A failure while training (retryable) restarts the job; bad input (not retryable) fails it.
TEST(CoordinatorHeartbeat, RetryableRankFailuresRestartUntilMaxRestarts) {
  relora::testing::TempDir dir;
  Coordinator c(dir.path());
  SimWorker w(c.channel(), "host-a", 29501);
  w.join();
  const std::string job = c.submit_ok(job_yaml("flaky", 1, ", max_restarts: 1")).id();
  ASSERT_TRUE(w.next().has_value());
  w.finished(job, 0, false, "Connection closed by peer", "", /*retryable=*/true);
  auto again = w.next();
  ASSERT_TRUE(again && again->has_assignment());
  EXPECT_EQ(c.get_ok(job).restarts(), 1);
  w.finished(job, 0, false, "Connection closed by peer", "", /*retryable=*/true);
  ASSERT_TRUE(c.wait_state(job, v1::JOB_STATE_FAILED));
  EXPECT_THAT(c.get_ok(job).error(), HasSubstr("cluster.max_restarts is 1"));
}

}  // namespace
}  // namespace relora::coordinator::testing
