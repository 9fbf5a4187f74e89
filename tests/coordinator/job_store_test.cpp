// JobStore on a real SQLite file: what goes in comes back after the file is reopened.
#include "coordinator/job_store.h"

#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include "common/job_spec.h"
#include "tests/coordinator/harness.h"

namespace relora::coordinator {
namespace {

using google::protobuf::util::MessageDifferencer;

relora::v1::Job sample_job(const std::string& id) {
  relora::v1::Job job;
  job.set_id(id);
  job.set_name("name-" + id);
  job.set_state(relora::v1::JOB_STATE_QUEUED);
  auto spec = parse_job_spec_yaml(testing::job_yaml("name-" + id, 2));
  resolve_job_spec(spec);
  *job.mutable_spec() = spec;
  job.mutable_progress()->set_total_steps(100);
  job.set_submitted_unix_ms(1700000000000);
  return job;
}

TEST(CoordinatorStore, JobsAndEventsSurviveReopening) {
  relora::testing::TempDir dir;
  const std::string path = dir.file("relora.db");
  relora::v1::Job a = sample_job("job-0000000a");
  relora::v1::Job b = sample_job("job-0000000b");
  {
    JobStore store(path);
    store.insert_job(a);
    store.insert_job(b);
    a.set_state(relora::v1::JOB_STATE_FAILED);
    a.set_error("rank 1 (worker w) failed: data.train: no such file");
    a.mutable_progress()->set_step(42);
    a.mutable_progress()->set_loss(3.25);
    a.mutable_progress()->set_merges(2);
    a.add_worker_ids("worker-1");
    a.add_worker_ids("worker-2");
    a.set_checkpoint("runs/a/step-40");
    a.set_summary_json(R"({"steps": 42})");
    a.set_started_unix_ms(1700000001000);
    a.set_finished_unix_ms(1700000002000);
    store.update_job(a);
    for (int seq = 1; seq <= 3; ++seq) {
      relora::v1::JobEvent e;
      e.set_job_id(a.id());
      e.set_seq(seq);
      e.set_unix_ms(1700000000000 + seq);
      e.set_step(seq * 10);
      e.set_rank(seq == 2 ? 1 : -1);
      e.set_kind(seq == 2 ? "ack" : "log");
      e.set_message("event " + std::to_string(seq));
      e.set_param_checksum(seq == 2 ? "abc123" : "");
      store.append_event(e);
    }
  }
  JobStore store(path);
  const auto jobs = store.load_jobs();
  ASSERT_EQ(jobs.size(), 2u);
  EXPECT_TRUE(MessageDifferencer::Equals(jobs[0], a)) << jobs[0].DebugString();
  EXPECT_TRUE(MessageDifferencer::Equals(jobs[1], b)) << jobs[1].DebugString();  // submission order
  EXPECT_EQ(store.last_event_seq(a.id()), 3);
  EXPECT_EQ(store.last_event_seq(b.id()), 0);
  const auto after1 = store.events(a.id(), 1, 0);
  ASSERT_EQ(after1.size(), 2u);
  EXPECT_EQ(after1[0].seq(), 2);
  EXPECT_EQ(after1[0].kind(), "ack");
  EXPECT_EQ(after1[0].rank(), 1);
  EXPECT_EQ(after1[0].param_checksum(), "abc123");
  EXPECT_EQ(store.events(a.id(), 0, 1).size(), 1u);  // limit
}

TEST(CoordinatorStore, UsesWalAndRejectsDuplicateIds) {
  relora::testing::TempDir dir;
  JobStore store(dir.file("relora.db"));
  store.insert_job(sample_job("job-00000001"));
  EXPECT_THROW(store.insert_job(sample_job("job-00000001")), StoreError);
  EXPECT_TRUE(std::filesystem::exists(dir.file("relora.db-wal")));
}

TEST(CoordinatorStore, UnopenableFileIsAClearError) {
  relora::testing::TempDir dir;
  try {
    JobStore store(dir.file("no-such-dir/relora.db"));
    FAIL() << "opened a database in a missing directory";
  } catch (const StoreError& e) {
    EXPECT_NE(std::string(e.what()).find("no-such-dir/relora.db"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace relora::coordinator
