// Gang scheduling: a job starts only when cluster.workers free workers exist, strict FIFO,
// ranks by registration order, rank 0's host and port as the rendezvous.
#include <gtest/gtest.h>

#include "tests/coordinator/harness.h"

namespace relora::coordinator::testing {
namespace {

TEST(CoordinatorScheduling, GangWaitsForEnoughWorkersAndSharesRankZerosRendezvous) {
  relora::testing::TempDir dir;
  Coordinator c(dir.path());
  SimWorker a(c.channel(), "host-a", 29501);
  a.join();
  const std::string job = c.submit_ok(job_yaml("gang", 2)).id();
  EXPECT_FALSE(a.next(300ms).has_value());  // one worker is not a gang of two
  EXPECT_EQ(c.state(job), v1::JOB_STATE_QUEUED);

  SimWorker b(c.channel(), "host-b", 29502);
  b.join();
  auto ma = a.next();
  auto mb = b.next();
  ASSERT_TRUE(ma && ma->has_assignment());
  ASSERT_TRUE(mb && mb->has_assignment());
  for (const auto* m : {&ma->assignment(), &mb->assignment()}) {
    EXPECT_EQ(m->job_id(), job);
    EXPECT_EQ(m->world_size(), 2);
    EXPECT_EQ(m->rendezvous_host(), "host-a");  // rank 0 hosts the c10d store
    EXPECT_EQ(m->rendezvous_port(), 29501);
    EXPECT_EQ(m->spec().name(), "gang");
  }
  EXPECT_EQ(ma->assignment().rank(), 0);
  EXPECT_EQ(mb->assignment().rank(), 1);
  const v1::Job running = c.get_ok(job);
  EXPECT_EQ(running.state(), v1::JOB_STATE_RUNNING);
  ASSERT_EQ(running.worker_ids_size(), 2);
  EXPECT_EQ(running.worker_ids(0), a.id());
  EXPECT_EQ(running.worker_ids(1), b.id());
  EXPECT_GT(running.started_unix_ms(), 0);
  EXPECT_EQ(worker_state(c, a.id()), "busy");
  EXPECT_EQ(worker_state(c, b.id()), "busy");
}

TEST(CoordinatorScheduling, StrictFifoABigJobAtTheHeadBlocksSmallerOnes) {
  relora::testing::TempDir dir;
  Coordinator c(dir.path());
  SimWorker a(c.channel(), "host-a", 29501);
  a.join();
  const std::string big = c.submit_ok(job_yaml("big", 2)).id();
  const std::string small = c.submit_ok(job_yaml("small", 1)).id();
  EXPECT_FALSE(a.next(300ms).has_value());  // `small` would fit but waits behind `big`
  EXPECT_EQ(c.state(small), v1::JOB_STATE_QUEUED);

  SimWorker b(c.channel(), "host-b", 29502);
  b.join();
  auto ma = a.next();
  ASSERT_TRUE(ma && ma->has_assignment());
  EXPECT_EQ(ma->assignment().job_id(), big);
  ASSERT_TRUE(b.next().has_value());
  EXPECT_EQ(c.state(small), v1::JOB_STATE_QUEUED);

  // Rank 0 finishing completes the job; its gang is free; the next job starts on the oldest.
  a.finished(big, 0, true, "", R"({"steps": 100})");
  ASSERT_TRUE(c.wait_state(big, v1::JOB_STATE_COMPLETED));
  EXPECT_EQ(c.get_ok(big).summary_json(), R"({"steps": 100})");
  ma = a.next();
  ASSERT_TRUE(ma && ma->has_assignment());
  EXPECT_EQ(ma->assignment().job_id(), small);
  EXPECT_EQ(ma->assignment().world_size(), 1);
  EXPECT_EQ(c.state(small), v1::JOB_STATE_RUNNING);
  EXPECT_TRUE(eventually([&] { return worker_state(c, b.id()) == "idle"; }));
}

TEST(CoordinatorScheduling, AFailedRankFailsTheJobAndCancelsTheOthers) {
  relora::testing::TempDir dir;
  Coordinator c(dir.path());
  SimWorker a(c.channel(), "host-a", 29501);
  SimWorker b(c.channel(), "host-b", 29502);
  a.join();
  b.join();
  const std::string job = c.submit_ok(job_yaml("doomed", 2)).id();
  ASSERT_TRUE(a.next().has_value());
  ASSERT_TRUE(b.next().has_value());
  b.finished(job, 1, false, "data.train: corpus.txt: no such file");
  ASSERT_TRUE(c.wait_state(job, v1::JOB_STATE_FAILED));
  EXPECT_EQ(c.get_ok(job).error(), "rank 1 (worker " + b.id() + ") failed: data.train: corpus.txt: no such file");
  auto ma = a.next();
  ASSERT_TRUE(ma && ma->has_cancel());
  EXPECT_EQ(ma->cancel().job_id(), job);
  EXPECT_TRUE(eventually([&] { return worker_state(c, a.id()) == "idle" && worker_state(c, b.id()) == "idle"; }));
}

}  // namespace
}  // namespace relora::coordinator::testing
