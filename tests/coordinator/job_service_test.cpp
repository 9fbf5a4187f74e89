// JobService end to end over gRPC: validation of every request, restart recovery, cancel.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <regex>

#include "tests/coordinator/harness.h"

namespace relora::coordinator::testing {
namespace {

using ::testing::HasSubstr;

TEST(CoordinatorJobs, SubmitAssignsAnIdAndQueues) {
  relora::testing::TempDir dir;
  Coordinator c(dir.path());
  const v1::Job job = c.submit_ok(job_yaml("first"));
  EXPECT_TRUE(std::regex_match(job.id(), std::regex("job-[0-9a-f]{8}"))) << job.id();
  EXPECT_EQ(job.name(), "first");
  EXPECT_EQ(job.state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(job.spec().training().micro_batch_size(), 8);  // resolved: defaults filled
  EXPECT_GT(job.submitted_unix_ms(), 0);
  const auto events = c.events(job.id());
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind(), "submitted");
  EXPECT_EQ(events[0].rank(), -1);
  EXPECT_NE(c.submit_ok(job_yaml("second")).id(), job.id());
}

TEST(CoordinatorJobs, BadRequestsAreRejectedWithTheirReasonAndServingGoesOn) {
  relora::testing::TempDir dir;
  Coordinator c(dir.path());
  v1::Job job;

  grpc::Status st = c.submit("name: x\nmodel: [unclosed\n", &job, "broken.yaml");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(st.error_message(), HasSubstr("broken.yaml"));

  st = c.submit(job_yaml("x") + "modle: {preset: nano}\n", &job);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(st.error_message(), HasSubstr("modle"));

  std::string rank0 = job_yaml("x");
  rank0.replace(rank0.find("relora: {"), 9, "relora: {rank: 0, ");
  st = c.submit(rank0, &job);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(st.error_message(), HasSubstr("relora.rank"));
  EXPECT_THAT(st.error_message(), HasSubstr("job.yaml"));

  st = c.submit("", &job);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(st.error_message(), HasSubstr("spec_yaml"));

  st = c.get("job-nothere", &job);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(st.error_message(), "job 'job-nothere' not found");
  st = c.get("", &job);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(st.error_message(), HasSubstr("job_id"));
  st = c.cancel("job-nothere", &job);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
  {
    grpc::ClientContext ctx;
    set_deadline(ctx);
    v1::GetJobEventsRequest req;
    req.set_job_id("job-nothere");
    v1::GetJobEventsResponse resp;
    EXPECT_EQ(c.jobs().GetJobEvents(&ctx, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext ctx;
    set_deadline(ctx);
    v1::WatchJobRequest req;
    req.set_job_id("job-nothere");
    auto reader = c.jobs().WatchJob(&ctx, req);
    v1::JobUpdate update;
    EXPECT_FALSE(reader->Read(&update));
    st = reader->Finish();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_EQ(st.error_message(), "job 'job-nothere' not found");
  }

  // Worker-side requests.
  auto workers = v1::WorkerService::NewStub(c.channel());
  {
    grpc::ClientContext ctx;
    set_deadline(ctx);
    v1::RegisterRequest req;
    req.set_rendezvous_port(29500);
    v1::RegisterResponse resp;
    st = workers->Register(&ctx, req, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(st.error_message(), HasSubstr("host"));
  }
  {
    grpc::ClientContext ctx;
    set_deadline(ctx);
    v1::RegisterRequest req;
    req.set_host("h");
    v1::RegisterResponse resp;
    st = workers->Register(&ctx, req, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(st.error_message(), HasSubstr("rendezvous_port"));
  }
  {
    grpc::ClientContext ctx;
    set_deadline(ctx);
    v1::HeartbeatRequest req;
    req.set_worker_id("worker-nothere");
    v1::HeartbeatResponse resp;
    st = workers->Heartbeat(&ctx, req, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_THAT(st.error_message(), HasSubstr("worker-nothere"));
  }
  {
    SimWorker ghost(c.channel(), "h", 29500);
    ghost.connect("worker-nothere");
    ASSERT_TRUE(ghost.stream_ended());
    st = ghost.finish();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_THAT(st.error_message(), HasSubstr("worker-nothere"));
  }
  {
    SimWorker w(c.channel(), "h", 29500);
    ASSERT_TRUE(w.register_worker().ok());
    w.connect("");  // a hello without an id
    ASSERT_TRUE(w.stream_ended());
    st = w.finish();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(st.error_message(), HasSubstr("worker_id"));
  }

  // Still serving, and none of the bad submissions was stored.
  EXPECT_TRUE(c.list().empty());
  const v1::Job ok = c.submit_ok(job_yaml("fine"));
  EXPECT_EQ(c.state(ok.id()), v1::JOB_STATE_QUEUED);
}

TEST(CoordinatorJobs, JobsSubmittedBeforeARestartAreStillListedWithTheirState) {
  relora::testing::TempDir dir;
  std::string running, queued, cancelled;
  {
    Coordinator c(dir.path());
    SimWorker w(c.channel(), "127.0.0.1", 29500);
    w.join();
    running = c.submit_ok(job_yaml("running")).id();
    ASSERT_TRUE(c.wait_state(running, v1::JOB_STATE_RUNNING));
    w.progress(running, 0, 7, 5.5, "runs/running/step-5");
    ASSERT_TRUE(eventually([&] { return c.get_ok(running).progress().step() == 7; }));
    queued = c.submit_ok(job_yaml("queued")).id();
    cancelled = c.submit_ok(job_yaml("cancelled")).id();
    v1::Job out;
    ASSERT_TRUE(c.cancel(cancelled, &out).ok());
    c.shutdown();
  }
  // Its worker never reports back: after the reattach timeout the job is requeued.
  Coordinator c(dir.path(), 10s, -1, /*reattach_timeout=*/300ms);
  ASSERT_TRUE(c.wait_state(running, v1::JOB_STATE_QUEUED));
  const auto jobs = c.list();
  ASSERT_EQ(jobs.size(), 3u);
  EXPECT_EQ(jobs[0].id(), running);
  EXPECT_EQ(jobs[1].id(), queued);
  EXPECT_EQ(jobs[2].id(), cancelled);
  // RUNNING when the coordinator died, not adopted: queued again to resume from its checkpoint.
  EXPECT_EQ(jobs[0].state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(jobs[0].progress().step(), 7);
  EXPECT_EQ(jobs[0].checkpoint(), "runs/running/step-5");
  EXPECT_EQ(jobs[1].state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(jobs[2].state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(jobs[1].spec().name(), "queued");
  const auto events = c.events(running);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().kind(), "requeued");
  EXPECT_THAT(events.back().message(), HasSubstr("runs/running/step-5"));
  for (size_t i = 0; i < events.size(); ++i) EXPECT_EQ(events[i].seq(), static_cast<int64_t>(i + 1));

  // The requeued job goes first (its original place in the FIFO) when a worker comes back.
  SimWorker w(c.channel(), "127.0.0.1", 29500);
  w.join();
  ASSERT_TRUE(c.wait_state(running, v1::JOB_STATE_RUNNING));
  EXPECT_EQ(c.state(queued), v1::JOB_STATE_QUEUED);
  auto msg = w.next();
  ASSERT_TRUE(msg && msg->has_assignment());
  EXPECT_EQ(msg->assignment().job_id(), running);
}

TEST(CoordinatorJobs, CancelQueuedRunningAndFinished) {
  relora::testing::TempDir dir;
  Coordinator c(dir.path());
  v1::Job out;
  const std::string queued = c.submit_ok(job_yaml("q", 2)).id();
  ASSERT_TRUE(c.cancel(queued, &out).ok());
  EXPECT_EQ(out.state(), v1::JOB_STATE_CANCELLED);
  EXPECT_GT(out.finished_unix_ms(), 0);

  SimWorker w(c.channel(), "127.0.0.1", 29500);
  w.join();
  const std::string running = c.submit_ok(job_yaml("r")).id();
  auto msg = w.next();
  ASSERT_TRUE(msg && msg->has_assignment());
  ASSERT_TRUE(c.cancel(running, &out).ok());
  EXPECT_EQ(out.state(), v1::JOB_STATE_CANCELLED);
  msg = w.next();
  ASSERT_TRUE(msg && msg->has_cancel());
  EXPECT_EQ(msg->cancel().job_id(), running);
  EXPECT_TRUE(eventually([&] { return worker_state(c, w.id()) == "idle"; }));

  grpc::Status st = c.cancel(running, &out);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(st.error_message(), HasSubstr("already finished (CANCELLED)"));
  EXPECT_EQ(c.events(running).back().kind(), "cancelled");
}

}  // namespace
}  // namespace relora::coordinator::testing
