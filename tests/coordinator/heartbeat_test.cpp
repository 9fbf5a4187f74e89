// Heartbeat timeouts: a silent worker is lost, its job fails with a reason naming it, the other
// ranks are cancelled, and the coordinator goes on answering.
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
  const std::string job = c.submit_ok(job_yaml("hb", 2)).id();
  ASSERT_TRUE(alive.next().has_value());

  ASSERT_TRUE(c.wait_state(job, v1::JOB_STATE_FAILED, 3000ms));
  EXPECT_EQ(c.get_ok(job).error(), "worker " + silent.id() + " (rank 1) lost: no heartbeat for 300ms");
  auto m = alive.next();
  ASSERT_TRUE(m && m->has_cancel());
  EXPECT_EQ(m->cancel().job_id(), job);
  EXPECT_EQ(worker_state(c, silent.id()), "lost");
  EXPECT_EQ(worker_state(c, alive.id()), "idle");
  // The lost worker's stream is ended; it must register again to come back.
  ASSERT_TRUE(silent.stream_ended());
  EXPECT_EQ(silent.finish().error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(silent.heartbeat().error_code(), grpc::StatusCode::NOT_FOUND);  // workers re-register on it

  // Still answering, and the survivor takes the next job.
  const std::string next = c.submit_ok(job_yaml("after", 1)).id();
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
  const std::string job = c.submit_ok(job_yaml("gone", 1)).id();
  ASSERT_TRUE(w.next().has_value());
  w.disconnect();
  ASSERT_TRUE(c.wait_state(job, v1::JOB_STATE_FAILED, 3000ms));
  EXPECT_THAT(c.get_ok(job).error(), HasSubstr("lost: stream disconnected for 300ms"));
  w.stop_heartbeats();
}

}  // namespace
}  // namespace relora::coordinator::testing
