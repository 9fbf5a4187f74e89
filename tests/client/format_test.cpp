// Formatting: state names, durations, counts, tables, the progress line with ETA, event lines
// and the JSON shape scripts rely on.
#include "client/format.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace relora::client {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

relora::v1::Job running_job() {
  relora::v1::Job job;
  job.set_id("job-1f3a9c07");
  job.set_name("demo");
  job.set_state(relora::v1::JOB_STATE_RUNNING);
  auto* p = job.mutable_progress();
  p->set_step(120);
  p->set_total_steps(1000);
  p->set_loss(4.21304);
  p->set_tokens_per_second(12345);
  p->set_cycle(2);
  p->set_merges(1);
  p->set_eta_seconds(192);
  job.set_submitted_unix_ms(1'700'000'000'000);
  return job;
}

TEST(ClientFormat, StateNames) {
  EXPECT_EQ(state_name(relora::v1::JOB_STATE_QUEUED), "queued");
  EXPECT_EQ(state_name(relora::v1::JOB_STATE_RUNNING), "running");
  EXPECT_EQ(state_name(relora::v1::JOB_STATE_COMPLETED), "completed");
  EXPECT_EQ(state_name(relora::v1::JOB_STATE_FAILED), "failed");
  EXPECT_EQ(state_name(relora::v1::JOB_STATE_CANCELLED), "cancelled");
  EXPECT_EQ(state_name(relora::v1::JOB_STATE_UNSPECIFIED), "unknown");
  EXPECT_TRUE(is_terminal(relora::v1::JOB_STATE_CANCELLED));
  EXPECT_FALSE(is_terminal(relora::v1::JOB_STATE_RUNNING));
}

TEST(ClientFormat, Durations) {
  EXPECT_EQ(format_duration(0), "0s");
  EXPECT_EQ(format_duration(42.4), "42s");
  EXPECT_EQ(format_duration(185), "3m05s");
  EXPECT_EQ(format_duration(3720), "1h02m");
  EXPECT_EQ(format_duration(183600), "2d03h");
  EXPECT_EQ(format_duration(-1), "-");
  EXPECT_EQ(format_duration(std::nan("")), "-");
  EXPECT_EQ(format_timeout(500), "500ms");
  EXPECT_EQ(format_timeout(1500), "1500ms");
  EXPECT_EQ(format_timeout(10000), "10s");
  EXPECT_EQ(format_timeout(90000), "1m30s");
  EXPECT_EQ(format_age(0, 5000), "-");
  EXPECT_EQ(format_age(1000, 61000), "1m00s");
}

TEST(ClientFormat, CountsAndBytes) {
  EXPECT_EQ(format_count(950), "950");
  EXPECT_EQ(format_count(12345), "12.3k");
  EXPECT_EQ(format_count(4.2e6), "4.2M");
  EXPECT_EQ(format_bytes(512), "512 B");
  EXPECT_EQ(format_bytes(1536), "1.5 KiB");
  EXPECT_EQ(format_bytes(int64_t{8} << 30), "8.0 GiB");
}

TEST(ClientFormat, TableAlignsColumnsAndTrimsTrailingSpace) {
  const std::string t = format_table({"ID", "NAME", "STATE"}, {{"job-1", "a", "running"}, {"j2", "longer-name", ""}});
  EXPECT_EQ(t,
            "ID     NAME         STATE\n"
            "job-1  a            running\n"
            "j2     longer-name\n");
}

TEST(ClientFormat, JobsTableHasTheDocumentedColumns) {
  auto job = running_job();
  const std::string t = jobs_table({job}, job.submitted_unix_ms() + 65'000);
  EXPECT_THAT(t, HasSubstr("ID"));
  for (const char* col : {"NAME", "STATE", "STEP/TOTAL", "LOSS", "MERGES", "AGE"}) EXPECT_THAT(t, HasSubstr(col));
  EXPECT_THAT(t, HasSubstr("job-1f3a9c07  demo  running  120/1000    4.2130  1       1m05s"));
}

TEST(ClientFormat, ProgressLineWithEta) {
  EXPECT_EQ(progress_line(running_job()),
            "running  step 120/1000 (12%)  loss 4.2130  12.3k tok/s  cycle 2  merges 1  ETA 3m12s");
}

TEST(ClientFormat, ProgressLineOfQueuedAndFinishedJobs) {
  auto job = running_job();
  job.set_state(relora::v1::JOB_STATE_QUEUED);
  job.mutable_spec()->mutable_cluster()->set_workers(2);
  EXPECT_EQ(progress_line(job), "queued  waiting for 2 workers");

  job = running_job();
  job.set_state(relora::v1::JOB_STATE_COMPLETED);
  job.mutable_progress()->set_step(1000);
  job.mutable_progress()->set_eval_loss(3.9);
  job.mutable_progress()->set_eval_perplexity(49.4);
  job.set_started_unix_ms(1'000'000);
  job.set_finished_unix_ms(1'305'000);
  const std::string line = progress_line(job);
  EXPECT_THAT(line, HasSubstr("completed  step 1000/1000 (100%)"));
  EXPECT_THAT(line, HasSubstr("eval ppl 49.40"));
  EXPECT_THAT(line, HasSubstr("took 5m05s"));
  EXPECT_THAT(line, Not(HasSubstr("ETA")));
}

TEST(ClientFormat, LossBeforeTheFirstStepIsADash) {
  relora::v1::JobProgress p;
  EXPECT_EQ(format_loss(p), "-");
}

TEST(ClientFormat, EventLinesAndTable) {
  relora::v1::JobEvent ack;
  ack.set_seq(3);
  ack.set_step(200);
  ack.set_rank(1);
  ack.set_kind("ack");
  ack.set_message("merge + magnitude reset");
  ack.set_param_checksum("9c1e22ab");
  EXPECT_EQ(event_line(ack), "step 200  rank 1  ack  merge + magnitude reset  checksum 9c1e22ab");
  relora::v1::JobEvent sched;
  sched.set_rank(-1);
  sched.set_kind("scheduled");
  EXPECT_EQ(event_line(sched), "step 0  coordinator  scheduled");

  const std::string t = events_table({sched, ack});
  EXPECT_THAT(t, HasSubstr("TIME"));
  EXPECT_THAT(t, HasSubstr("CHECKSUM"));
  EXPECT_THAT(t, HasSubstr("coord"));
  EXPECT_THAT(t, HasSubstr("9c1e22ab"));
  // Without any checksum, no empty CHECKSUM column.
  EXPECT_THAT(events_table({sched}), Not(HasSubstr("CHECKSUM")));
}

TEST(ClientFormat, WorkersTable) {
  relora::v1::WorkerInfo w;
  w.set_id("worker-ab12");
  w.set_host("node1");
  w.set_device("cpu");
  w.set_memory_bytes(int64_t{16} << 30);
  w.set_state("busy");
  w.set_job_id("job-1");
  w.set_rank(0);
  w.set_last_heartbeat_unix_ms(10'000);
  const std::string t = workers_table({w}, 12'000);
  EXPECT_THAT(t, HasSubstr("worker-ab12  node1  cpu     16.0 GiB  busy   job-1  0     2s"));
}

TEST(ClientFormat, JobJsonHasPlainTopLevelFieldsAndTheFullJob) {
  auto job = running_job();
  job.set_summary_json(R"({"steps": 120, "merges": 1})");
  const auto j = job_json(job);
  EXPECT_EQ(j["job_id"], "job-1f3a9c07");
  EXPECT_EQ(j["state"], "running");
  EXPECT_EQ(j["step"], 120);  // a number, not protobuf's int64 string
  EXPECT_EQ(j["merges"], 1);
  EXPECT_EQ(j["summary"]["merges"], 1);
  EXPECT_EQ(j["job"]["id"], "job-1f3a9c07");
  EXPECT_EQ(j["job"]["state"], "JOB_STATE_RUNNING");
  EXPECT_EQ(j["job"]["progress"]["total_steps"], "1000");  // snake_case names
}

TEST(ClientFormat, JobSummaryNamesStateErrorAndCheckpoint) {
  auto job = running_job();
  job.set_state(relora::v1::JOB_STATE_FAILED);
  job.set_error("rank 1 lost");
  const std::string s = job_summary(job, job.submitted_unix_ms() + 1000);
  EXPECT_THAT(s, HasSubstr("state      failed"));
  EXPECT_THAT(s, HasSubstr("error      rank 1 lost"));
  EXPECT_THAT(s, HasSubstr("checkpoint none yet"));
}

TEST(ClientFormat, StatusShowsTokensPerDataSource) {
  auto job = running_job();
  EXPECT_THAT(job_summary(job, job.submitted_unix_ms()), Not(HasSubstr("data ")));
  (*job.mutable_progress()->mutable_source_tokens())["/data/pile"] = 300000;
  (*job.mutable_progress()->mutable_source_tokens())["/data/c4"] = 700000;
  EXPECT_THAT(job_summary(job, job.submitted_unix_ms()), HasSubstr("data       /data/c4 700.0k tokens, /data/pile 300.0k tokens"));
  EXPECT_EQ(job_json(job)["source_tokens"]["/data/c4"], 700000);
}

}  // namespace
}  // namespace relora::client
