// WatchJob: replay, coalesced live updates, the end at a terminal state, client cancellation.
#include <gtest/gtest.h>

#include "tests/coordinator/harness.h"

namespace relora::coordinator::testing {
namespace {

TEST(CoordinatorWatch, StreamsUpdatesAndEndsWhenTheJobCompletes) {
  relora::testing::TempDir dir;
  Coordinator c(dir.path());
  SimWorker w(c.channel(), "host-a", 29501);
  w.join();
  const std::string job = c.submit_ok(job_yaml("watched")).id();
  ASSERT_TRUE(w.next().has_value());

  grpc::ClientContext ctx;
  set_deadline(ctx, 10000ms);
  v1::WatchJobRequest req;
  req.set_job_id(job);
  auto reader = c.jobs().WatchJob(&ctx, req);
  v1::JobUpdate update;
  ASSERT_TRUE(reader->Read(&update));
  EXPECT_EQ(update.job().state(), v1::JOB_STATE_RUNNING);
  ASSERT_EQ(update.events_size(), 2);  // the replay: submitted, scheduled
  EXPECT_EQ(update.events(0).kind(), "submitted");
  EXPECT_EQ(update.events(1).kind(), "scheduled");

  // 20 progress reports in quick succession: far fewer updates (at most ~5/s).
  std::thread driver([&] {
    for (int step = 1; step <= 20; ++step) {
      w.progress(job, 0, step, 10.0 - step * 0.1);
      std::this_thread::sleep_for(10ms);
    }
    w.finished(job, 0, true, "", "{}");
  });
  int updates = 0;
  int64_t last_seq = update.events(1).seq();
  v1::JobUpdate last;
  while (reader->Read(&update)) {
    ++updates;
    for (const auto& e : update.events()) EXPECT_EQ(e.seq(), ++last_seq) << "events arrive once, in order";
    last = update;
  }
  driver.join();
  const grpc::Status st = reader->Finish();
  EXPECT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(last.job().state(), v1::JOB_STATE_COMPLETED);
  EXPECT_EQ(last.job().progress().step(), 20);
  EXPECT_GE(updates, 1);
  EXPECT_LE(updates, 6) << "updates were not coalesced";
  EXPECT_EQ(last_seq, c.events(job).back().seq());
}

TEST(CoordinatorWatch, ReplaysAfterASequenceNumberAndEndsAtOnceForAFinishedJob) {
  relora::testing::TempDir dir;
  Coordinator c(dir.path());
  const std::string job = c.submit_ok(job_yaml("done")).id();
  v1::Job out;
  ASSERT_TRUE(c.cancel(job, &out).ok());
  grpc::ClientContext ctx;
  set_deadline(ctx);
  v1::WatchJobRequest req;
  req.set_job_id(job);
  req.set_after_event_seq(1);
  auto reader = c.jobs().WatchJob(&ctx, req);
  v1::JobUpdate update;
  ASSERT_TRUE(reader->Read(&update));
  EXPECT_EQ(update.job().state(), v1::JOB_STATE_CANCELLED);
  ASSERT_EQ(update.events_size(), 1);
  EXPECT_EQ(update.events(0).seq(), 2);
  EXPECT_EQ(update.events(0).kind(), "cancelled");
  EXPECT_FALSE(reader->Read(&update));
  EXPECT_TRUE(reader->Finish().ok());
}

TEST(CoordinatorWatch, ClientsThatGoAwayAreForgottenCleanly) {
  relora::testing::TempDir dir;
  Coordinator c(dir.path());
  SimWorker w(c.channel(), "host-a", 29501);
  w.join();
  const std::string job = c.submit_ok(job_yaml("watched")).id();
  for (int i = 0; i < 5; ++i) {
    grpc::ClientContext ctx;
    set_deadline(ctx);
    v1::WatchJobRequest req;
    req.set_job_id(job);
    auto reader = c.jobs().WatchJob(&ctx, req);
    v1::JobUpdate update;
    ASSERT_TRUE(reader->Read(&update));
    w.progress(job, 0, i + 1, 1.0);  // changes while the client leaves
    ctx.TryCancel();
    while (reader->Read(&update)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  // Still serving; a watcher open at shutdown gets UNAVAILABLE instead of hanging the server.
  EXPECT_EQ(c.state(job), v1::JOB_STATE_RUNNING);
  grpc::ClientContext ctx;
  set_deadline(ctx);
  v1::WatchJobRequest req;
  req.set_job_id(job);
  auto reader = c.jobs().WatchJob(&ctx, req);
  v1::JobUpdate update;
  ASSERT_TRUE(reader->Read(&update));
  c.shutdown();
  while (reader->Read(&update)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
}

}  // namespace
}  // namespace relora::coordinator::testing
