// Zero-loss operations at the control plane: a restarted coordinator adopts the runs whose ranks
// report back (wherever they stand in a boundary round), requeues a run whose ranks do not all
// come back, stops a run it does not know; a job below its size regroups onto free workers at its
// next boundary. Real server, real SQLite file, simulated workers (harness.h).
#include <gtest/gtest.h>

#include <algorithm>

#include "tests/coordinator/harness.h"

namespace relora::coordinator::testing {
namespace {

std::vector<std::string> kinds(Coordinator& c, const std::string& job) {
  std::vector<std::string> out;
  for (const auto& e : c.events(job)) out.push_back(e.kind());
  return out;
}

bool has(const std::vector<std::string>& v, const std::string& x) { return std::find(v.begin(), v.end(), x) != v.end(); }

v1::RegisterRequest running(const std::string& job, int rank, int world, int run, int64_t resumed_step) {
  v1::RegisterRequest r;
  r.set_running_job_id(job);
  r.set_running_rank(rank);
  r.set_running_world_size(world);
  r.set_running_run(run);
  r.set_running_resumed_step(resumed_step);
  return r;
}

// A two-worker job started on a first coordinator and driven through the low-rank start at 20;
// the coordinator is then shut down (as if killed: the store is all that survives).
struct RunningPair {
  std::string job;
  std::string id_a, id_b;
};

RunningPair start_and_lose_the_coordinator(const std::string& dir, bool resume_low_rank_start = true) {
  RunningPair out;
  Coordinator c(dir);
  SimWorker a(c.channel(), "host-a", 29501);
  SimWorker b(c.channel(), "host-b", 29502);
  a.join();
  b.join();
  out.job = c.submit_ok(job_yaml("survivor", 2)).id();
  auto ma = a.next();
  auto mb = b.next();
  EXPECT_TRUE(ma && ma->has_assignment() && mb && mb->has_assignment());
  EXPECT_EQ(ma->assignment().run(), 1);
  a.boundary(out.job, 0, 20, "low_rank_start");
  b.boundary(out.job, 1, 20, "low_rank_start");
  EXPECT_TRUE(a.next().has_value());  // the command
  EXPECT_TRUE(b.next().has_value());
  if (resume_low_rank_start) {
    a.ack(out.job, 0, 20, "c1");
    b.ack(out.job, 1, 20, "c1");
    EXPECT_TRUE(a.next().has_value());  // Resume{20}
    EXPECT_TRUE(b.next().has_value());
  }
  out.id_a = a.id();
  out.id_b = b.id();
  EXPECT_EQ(c.get_ok(out.job).run(), 1);
  c.shutdown();
  return out;
}

TEST(CoordinatorAdoption, ARestartedCoordinatorAdoptsTheRunWhenAllItsRanksReportBack) {
  relora::testing::TempDir dir;
  const RunningPair before = start_and_lose_the_coordinator(dir.path());

  Coordinator c(dir.path());
  EXPECT_EQ(c.state(before.job), v1::JOB_STATE_RUNNING);  // waiting for its ranks, not requeued
  SimWorker a(c.channel(), "host-a", 29501);
  SimWorker b(c.channel(), "host-b", 29502);
  const auto ra = running(before.job, 0, 2, 1, 20);
  const auto rb = running(before.job, 1, 2, 1, 20);
  ASSERT_TRUE(a.register_worker(before.id_a, &ra).ok());
  EXPECT_FALSE(has(kinds(c, before.job), "reattached"));  // one of two
  ASSERT_TRUE(b.register_worker(before.id_b, &rb).ok());
  ASSERT_TRUE(eventually([&] { return has(kinds(c, before.job), "reattached"); }));
  a.connect();
  b.connect();
  EXPECT_EQ(worker_state(c, a.id()), "busy");
  EXPECT_EQ(worker_state(c, b.id()), "busy");

  // The adopted run goes on: the merge at 60 is collected and commanded as usual.
  a.boundary(before.job, 0, 60, "cycle_end");
  b.boundary(before.job, 1, 60, "cycle_end");
  for (SimWorker* w : {&a, &b}) {
    std::optional<v1::CoordinatorMessage> m;
    do m = w->next();  // skip resends of Resume{20} sent on attach
    while (m && m->has_resume());
    ASSERT_TRUE(m && m->has_command());
    EXPECT_EQ(m->command().step(), 60);
    EXPECT_TRUE(m->command().merge());
  }
  const v1::Job job = c.get_ok(before.job);
  EXPECT_EQ(job.state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(job.run(), 1);
  EXPECT_EQ(job.restarts(), 0);
  const auto k = kinds(c, before.job);
  EXPECT_TRUE(has(k, "reattaching"));
  EXPECT_FALSE(has(k, "requeued"));
  EXPECT_FALSE(has(k, "restarting"));
  EXPECT_EQ(std::count(k.begin(), k.end(), "scheduled"), 1);
}

TEST(CoordinatorAdoption, ARoundLeftHalfwayIsTakenUpWhereEachRankStood) {
  relora::testing::TempDir dir;
  // The previous coordinator sent the low-rank-start command and died before any Resume.
  const RunningPair before = start_and_lose_the_coordinator(dir.path(), /*resume_low_rank_start=*/false);

  Coordinator c(dir.path());
  SimWorker a(c.channel(), "host-a", 29501);
  SimWorker b(c.channel(), "host-b", 29502);
  // Rank 0 applied the command and waits for Resume{20}; rank 1 never got the command.
  const auto ra = running(before.job, 0, 2, 1, -1);
  const auto rb = running(before.job, 1, 2, 1, -1);
  ASSERT_TRUE(a.register_worker(before.id_a, &ra).ok());
  ASSERT_TRUE(b.register_worker(before.id_b, &rb).ok());
  a.connect();
  b.connect();
  a.ack(before.job, 0, 20, "c1");                     // resent after reconnecting
  b.boundary(before.job, 1, 20, "low_rank_start");  // resent after reconnecting
  auto mb = b.next();
  ASSERT_TRUE(mb && mb->has_command()) << (mb ? mb->DebugString() : "nothing");
  EXPECT_EQ(mb->command().step(), 20);
  EXPECT_TRUE(mb->command().enable_low_rank());
  b.ack(before.job, 1, 20, "c1");
  for (SimWorker* w : {&a, &b}) {
    std::optional<v1::CoordinatorMessage> m;
    do m = w->next();
    while (m && m->has_command());  // rank 0 may get the command again too: it ignores it
    ASSERT_TRUE(m && m->has_resume());
    EXPECT_EQ(m->resume().step(), 20);
  }
  EXPECT_EQ(c.state(before.job), v1::JOB_STATE_RUNNING);
  EXPECT_FALSE(has(kinds(c, before.job), "requeued"));
}

TEST(CoordinatorAdoption, ARankAlreadyResumedReleasesTheOneStillWaitingForItsResume) {
  relora::testing::TempDir dir;
  const RunningPair before = start_and_lose_the_coordinator(dir.path(), /*resume_low_rank_start=*/false);

  Coordinator c(dir.path());
  SimWorker a(c.channel(), "host-a", 29501);
  SimWorker b(c.channel(), "host-b", 29502);
  // Rank 1 waits for Resume{20} and registers first; rank 0 had it (its ack and Resume were the
  // last things the old coordinator did) and is training on, stuck at the next all-reduce.
  const auto rb = running(before.job, 1, 2, 1, -1);
  ASSERT_TRUE(b.register_worker(before.id_b, &rb).ok());
  b.connect();
  b.ack(before.job, 1, 20, "c1");
  const auto ra = running(before.job, 0, 2, 1, 20);
  ASSERT_TRUE(a.register_worker(before.id_a, &ra).ok());
  std::optional<v1::CoordinatorMessage> mb;
  do mb = b.next();
  while (mb && mb->has_command());  // its ack alone re-sent the command (which it ignores)
  ASSERT_TRUE(mb && mb->has_resume()) << (mb ? mb->DebugString() : "nothing");
  EXPECT_EQ(mb->resume().step(), 20);
  EXPECT_TRUE(eventually([&] { return has(kinds(c, before.job), "reattached"); }));
}

TEST(CoordinatorAdoption, RanksThatDoNotAllComeBackInTimeRequeueTheJob) {
  relora::testing::TempDir dir;
  const RunningPair before = start_and_lose_the_coordinator(dir.path());

  Coordinator c(dir.path(), 10s, -1, /*reattach_timeout=*/500ms);
  SimWorker a(c.channel(), "host-a", 29501);
  const auto ra = running(before.job, 0, 2, 1, 20);
  ASSERT_TRUE(a.register_worker(before.id_a, &ra).ok());
  a.connect();
  ASSERT_TRUE(c.wait_state(before.job, v1::JOB_STATE_QUEUED));
  const auto events = c.events(before.job);
  const auto requeued = std::find_if(events.begin(), events.end(), [](auto& e) { return e.kind() == "requeued"; });
  ASSERT_NE(requeued, events.end());
  EXPECT_NE(requeued->message().find("only 1 of 2 rank(s) of run 1 reported back within 500ms"), std::string::npos)
      << requeued->message();
  // The rank that came back is stopped; the job resumes from its checkpoint once it has.
  std::optional<v1::CoordinatorMessage> m;
  do m = a.next();
  while (m && !m->has_cancel());
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->cancel().job_id(), before.job);
}

TEST(CoordinatorAdoption, ARunTheCoordinatorDoesNotKnowIsStopped) {
  relora::testing::TempDir dir;
  const RunningPair before = start_and_lose_the_coordinator(dir.path());

  Coordinator c(dir.path());
  SimWorker a(c.channel(), "host-a", 29501);
  const auto stale = running(before.job, 0, 2, /*run=*/7, 20);  // not the run the store knows
  ASSERT_TRUE(a.register_worker(before.id_a, &stale).ok());
  a.connect();
  auto m = a.next();
  ASSERT_TRUE(m && m->has_cancel());
  EXPECT_EQ(m->cancel().job_id(), before.job);
  EXPECT_EQ(c.state(before.job), v1::JOB_STATE_RUNNING);  // still waiting for the real ranks
}

TEST(CoordinatorRegroup, AJobBelowItsSizeTakesAFreeWorkerBackAtItsNextBoundary) {
  relora::testing::TempDir dir;
  Coordinator c(dir.path(), /*heartbeat_timeout=*/600ms);
  SimWorker a(c.channel(), "host-a", 29501);
  a.join();
  a.start_heartbeats(100ms);
  auto b = std::make_unique<SimWorker>(c.channel(), "host-b", 29502);
  b->join();
  const std::string job = c.submit_ok(job_yaml("grow", 2, ", min_workers: 1")).id();
  ASSERT_TRUE(a.next().has_value());
  ASSERT_TRUE(b->next().has_value());
  b.reset();  // rank 1's machine is gone: lost after the heartbeat timeout

  // Rank 0 is cancelled; once it says it stopped, the job restarts on it alone (run 2, world 1).
  std::optional<v1::CoordinatorMessage> m = a.next(5000ms);
  ASSERT_TRUE(m && m->has_cancel());
  a.finished(job, 0, false, "cancelled by the coordinator", "", true);
  m = a.next();
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->assignment().world_size(), 1);
  EXPECT_EQ(m->assignment().run(), 2);

  // A new worker registers; at the next boundary the run stops with a checkpoint instead.
  SimWorker d(c.channel(), "host-d", 29504);
  d.join();
  d.start_heartbeats(100ms);
  EXPECT_FALSE(d.next(300ms).has_value());  // not before the boundary
  a.boundary(job, 0, 20, "low_rank_start");
  m = a.next();
  ASSERT_TRUE(m && m->has_command());
  EXPECT_TRUE(m->command().stop());
  EXPECT_TRUE(m->command().checkpoint());
  EXPECT_FALSE(m->command().enable_low_rank());  // left for the next run
  EXPECT_NE(m->command().reason().find("regrouping onto 2 workers"), std::string::npos) << m->command().reason();
  EXPECT_TRUE(has(kinds(c, job), "regrouping"));

  // Its end reported, the job starts again on both (run 3), rank 0 still the oldest worker.
  a.finished(job, 0, false, "stopped by the coordinator: regrouping", "", true);
  auto ma = a.next();
  auto md = d.next();
  ASSERT_TRUE(ma && ma->has_assignment());
  ASSERT_TRUE(md && md->has_assignment());
  EXPECT_EQ(ma->assignment().world_size(), 2);
  EXPECT_EQ(ma->assignment().rank(), 0);
  EXPECT_EQ(md->assignment().rank(), 1);
  EXPECT_EQ(ma->assignment().run(), 3);
  const v1::Job grown = c.get_ok(job);
  EXPECT_EQ(grown.world_size(), 2);
  EXPECT_EQ(grown.restarts(), 1);  // the loss, not the regroup
  EXPECT_EQ(grown.state(), v1::JOB_STATE_RUNNING);
}

}  // namespace
}  // namespace relora::coordinator::testing
