// The worker end to end against a real gRPC WorkerService on loopback (FakeCoordinator): message
// order, commands applied at their steps, cancel, failures, two ranks in lockstep, reconnects.
#include "worker/cluster/cluster_worker.h"

#include <algorithm>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/cluster/cluster_test_util.h"
#include "tests/cluster/fake_coordinator.h"
#include "worker/cluster/coordinator_client.h"
#include "worker/cluster/host_info.h"

namespace relora::cluster {
namespace {

using namespace std::chrono_literals;
using relora::testing::TempDir;
using relora::v1::WorkerMessage;
using testing::FakeCoordinator;
using testing::kReloraNoDropout;
using testing::tiny_spec;

ClusterWorkerOptions worker_options(const std::string& address) {
  ClusterWorkerOptions o;
  o.client.address = address;
  o.client.host = "127.0.0.1";
  o.client.memory_bytes = total_memory_bytes();
  o.client.rpc_timeout = 2s;
  o.client.backoff_initial = 50ms;
  o.client.backoff_max = 500ms;
  o.progress_interval = 0ms;  // a report per step, so that the order can be checked
  o.rendezvous_timeout = 10s;
  o.collective_timeout = 30s;
  o.boundary_timeout = 30s;
  o.data_timeout = 60s;
  return o;
}

// A worker running on its own thread, stopped and joined by the destructor.
class RunningWorker {
 public:
  explicit RunningWorker(const std::string& address) : worker_(worker_options(address)) {
    thread_ = std::thread([this] { worker_.run(); });
    EXPECT_TRUE(worker_.wait_connected(10s)) << "the worker did not connect";
  }
  ~RunningWorker() {
    worker_.stop();
    thread_.join();
  }
  std::string id() const { return worker_.worker_id(); }
  int port() const { return worker_.rendezvous_port(); }

 private:
  ClusterWorker worker_;
  std::thread thread_;
};

relora::v1::Assignment assignment(const std::string& job, const relora::v1::JobSpec& spec, int rank, int world,
                                  int rendezvous_port) {
  relora::v1::Assignment a;
  a.set_job_id(job);
  *a.mutable_spec() = spec;
  a.set_rank(rank);
  a.set_world_size(world);
  a.set_rendezvous_host("127.0.0.1");
  a.set_rendezvous_port(rendezvous_port);
  return a;
}

std::string job_of(const WorkerMessage& m) {
  if (m.has_boundary()) return m.boundary().job_id();
  if (m.has_ack()) return m.ack().job_id();
  if (m.has_progress()) return m.progress().job_id();
  if (m.has_finished()) return m.finished().job_id();
  if (m.has_log()) return m.log().job_id();
  return "";
}

std::vector<WorkerMessage> finished_of(const FakeCoordinator::Log& log, const std::string& job) {
  std::vector<WorkerMessage> out;
  for (const auto& m : log)
    if (m.has_finished() && m.finished().job_id() == job) out.push_back(m);
  return out;
}

auto finished_by(const std::string& job, size_t ranks) {
  return [job, ranks](const FakeCoordinator::Log& log) { return finished_of(log, job).size() >= ranks; };
}

TEST(ClusterWorker, RunsJobsInProtocolOrderAndReturnsToIdle) {
  FakeCoordinator coord;
  RunningWorker worker(coord.address());
  ASSERT_TRUE(coord.wait_connected(worker.id(), 10s));
  const auto reg = coord.registrations().at(0);
  EXPECT_EQ(reg.host(), "127.0.0.1");
  EXPECT_EQ(reg.device(), "cpu");
  EXPECT_GT(reg.memory_bytes(), 0);
  EXPECT_GT(reg.rendezvous_port(), 0);
  EXPECT_EQ(reg.worker_id(), "");

  TempDir dir;
  coord.assign(worker.id(), assignment("job-1", tiny_spec({kReloraNoDropout, 14, 2, 0, dir.path()}), 0, 1, 0));
  ASSERT_TRUE(coord.wait_for(finished_by("job-1", 1), 60s));

  std::vector<std::string> protocol;
  std::vector<int64_t> merge_steps;
  int64_t waiting_at = -1, last_progress = 0;
  std::string checkpoint;
  for (const auto& m : coord.messages()) {
    if (job_of(m) != "job-1") continue;
    EXPECT_EQ(m.worker_id(), worker.id());
    if (m.has_boundary()) {
      protocol.push_back("boundary " + m.boundary().boundary() + " " + std::to_string(m.boundary().step()));
      waiting_at = m.boundary().step();
    } else if (m.has_ack()) {
      protocol.push_back("ack " + std::to_string(m.ack().step()));
      EXPECT_EQ(m.ack().param_checksum().size(), 8u);
      waiting_at = -1;
    } else if (m.has_finished()) {
      protocol.push_back(m.finished().ok() ? "finished ok" : "finished: " + m.finished().error());
    } else if (m.has_progress()) {
      const auto& p = m.progress().progress();
      // No step runs while a rank waits at a boundary.
      if (waiting_at >= 0) {
        EXPECT_LE(p.step(), waiting_at);
      }
      EXPECT_GE(p.step(), last_progress);
      last_progress = p.step();
      EXPECT_EQ(p.total_steps(), 14);
      EXPECT_GT(p.rss_bytes(), 0);
      if (!m.progress().checkpoint().empty()) checkpoint = m.progress().checkpoint();
    } else if (m.has_log() && m.log().message().rfind("merge", 0) == 0) {
      merge_steps.push_back(m.log().step());
    }
  }
  EXPECT_EQ(protocol, (std::vector<std::string>{"boundary low_rank_start 2", "ack 2", "boundary cycle_end 6", "ack 6",
                                                "boundary cycle_end 10", "ack 10", "boundary job_end 14",
                                                "finished ok"}));
  EXPECT_EQ(merge_steps, (std::vector<int64_t>{6, 10}));  // each command applied at its step
  EXPECT_EQ(last_progress, 14);
  EXPECT_NE(checkpoint.find(dir.path()), std::string::npos) << checkpoint;
  const auto summary = nlohmann::json::parse(finished_of(coord.messages(), "job-1").at(0).finished().summary_json());
  EXPECT_EQ(summary.at("merges"), 2);
  EXPECT_EQ(summary.at("completed"), true);
  EXPECT_EQ(summary.at("steps"), 14);

  // Idle again: the next assignment runs too.
  TempDir dir2;
  coord.assign(worker.id(), assignment("job-2", tiny_spec({"{mode: full}", 3, 1, 0, dir2.path()}), 0, 1, 0));
  ASSERT_TRUE(coord.wait_for(finished_by("job-2", 1), 60s));
  EXPECT_TRUE(finished_of(coord.messages(), "job-2").at(0).finished().ok());
}

TEST(ClusterWorker, CancelAndFailuresEndTheJobNotTheWorker) {
  FakeCoordinator coord;
  RunningWorker worker(coord.address());
  ASSERT_TRUE(coord.wait_connected(worker.id(), 10s));

  // Cancel between steps: the job stops at the next step, and rank 0 checkpoints first.
  TempDir dir;
  coord.assign(worker.id(), assignment("long", tiny_spec({"{mode: full}", 400, 1, 0, dir.path()}), 0, 1, 0));
  ASSERT_TRUE(coord.wait_for(
      [](const FakeCoordinator::Log& log) {
        for (const auto& m : log)
          if (m.has_progress() && m.progress().progress().step() >= 2) return true;
        return false;
      },
      60s));
  coord.cancel("long");
  ASSERT_TRUE(coord.wait_for(finished_by("long", 1), 30s));
  const auto cancelled = finished_of(coord.messages(), "long").at(0).finished();
  EXPECT_FALSE(cancelled.ok());
  EXPECT_EQ(cancelled.error(), "cancelled by the coordinator");
  int64_t last_step = 0;
  std::string checkpoint;
  for (const auto& m : coord.messages())
    if (m.has_progress() && m.progress().job_id() == "long") {
      last_step = std::max(last_step, m.progress().progress().step());
      if (!m.progress().checkpoint().empty()) checkpoint = m.progress().checkpoint();
    }
  EXPECT_LT(last_step, 400);
  EXPECT_NE(checkpoint.find("step-"), std::string::npos) << "no checkpoint reported when stopping";

  // A job that cannot start (its corpus is missing) fails with the trainer's message.
  TempDir bad_dir;
  auto bad = tiny_spec({"{mode: full}", 3, 1, 0, bad_dir.path()});
  bad.mutable_data()->set_train(0, "/nonexistent/corpus.txt");
  coord.assign(worker.id(), assignment("bad", bad, 0, 1, 0));
  ASSERT_TRUE(coord.wait_for(finished_by("bad", 1), 30s));
  const auto failed = finished_of(coord.messages(), "bad").at(0).finished();
  EXPECT_FALSE(failed.ok());
  EXPECT_NE(failed.error().find("/nonexistent/corpus.txt"), std::string::npos) << failed.error();

  // The worker is still there.
  TempDir ok_dir;
  coord.assign(worker.id(), assignment("after", tiny_spec({"{mode: full}", 3, 1, 0, ok_dir.path()}), 0, 1, 0));
  ASSERT_TRUE(coord.wait_for(finished_by("after", 1), 60s));
  EXPECT_TRUE(finished_of(coord.messages(), "after").at(0).finished().ok());
}

TEST(ClusterWorker, TwoWorkersTrainOneJobInLockstep) {
  FakeCoordinator coord;
  RunningWorker w0(coord.address()), w1(coord.address());
  ASSERT_TRUE(coord.wait_connected(w0.id(), 10s));
  ASSERT_TRUE(coord.wait_connected(w1.id(), 10s));
  TempDir dir;
  const auto spec = tiny_spec({kReloraNoDropout, 14, 1, 0, dir.path()});
  coord.assign(w0.id(), assignment("dp", spec, 0, 2, w0.port()));
  coord.assign(w1.id(), assignment("dp", spec, 1, 2, w0.port()));
  ASSERT_TRUE(coord.wait_for(finished_by("dp", 2), 90s));

  std::map<int, std::vector<int64_t>> boundary_steps;
  std::map<int64_t, std::map<int, std::string>> checksums;  // step -> rank -> checksum
  for (const auto& m : coord.messages()) {
    if (m.has_boundary()) boundary_steps[m.boundary().rank()].push_back(m.boundary().step());
    if (m.has_ack()) checksums[m.ack().step()][m.ack().rank()] = m.ack().param_checksum();
  }
  for (int rank = 0; rank < 2; ++rank)
    EXPECT_EQ(boundary_steps[rank], (std::vector<int64_t>{2, 6, 10, 14})) << "rank " << rank;
  ASSERT_EQ(checksums.size(), 3u);
  for (const auto& [step, by_rank] : checksums) {
    ASSERT_EQ(by_rank.size(), 2u) << "step " << step;
    EXPECT_EQ(by_rank.at(0), by_rank.at(1)) << "ranks diverged by step " << step;
  }
  for (const auto& m : finished_of(coord.messages(), "dp")) {
    EXPECT_TRUE(m.finished().ok()) << "rank " << m.finished().rank() << ": " << m.finished().error();
    if (m.finished().rank() == 0) {
      EXPECT_EQ(nlohmann::json::parse(m.finished().summary_json()).at("merges"), 2);
    } else {
      EXPECT_EQ(m.finished().summary_json(), "");
    }
  }
}

TEST(ClusterCoordinatorClient, ReconnectsWithItsIdAndKeepsWhatMustBeDelivered) {
  auto coord = std::make_unique<FakeCoordinator>();
  const int port = coord->port();
  CoordinatorClientOptions o = worker_options(coord->address()).client;
  std::atomic<int> connects{0};
  CoordinatorClient client(o, [](const relora::v1::CoordinatorMessage&) {}, [&] { ++connects; });
  client.start();
  ASSERT_TRUE(client.wait_connected(10s));
  const std::string id = client.worker_id();
  ASSERT_FALSE(id.empty());
  const int rendezvous_port = client.rendezvous_port();

  coord.reset();  // the coordinator goes away
  for (int i = 0; i < 200 && client.connected(); ++i) std::this_thread::sleep_for(10ms);
  ASSERT_FALSE(client.connected());
  WorkerMessage log, progress;
  log.mutable_log()->set_message("kept while away");
  progress.mutable_progress()->set_job_id("superseded");
  client.send(log);
  client.send(progress, /*droppable=*/true);
  std::this_thread::sleep_for(300ms);  // a few failed attempts with backoff

  coord = std::make_unique<FakeCoordinator>(port);  // back on the same address
  ASSERT_TRUE(coord->wait_connected(id, 10s));
  ASSERT_TRUE(coord->wait_for([](const FakeCoordinator::Log& l) { return l.size() >= 2; }, 5s));
  const auto regs = coord->registrations();
  ASSERT_FALSE(regs.empty());
  EXPECT_EQ(regs[0].worker_id(), id);  // re-registered under its previous id
  EXPECT_EQ(regs[0].rendezvous_port(), rendezvous_port);
  const auto got = coord->messages();
  EXPECT_TRUE(got[0].has_hello());
  EXPECT_EQ(got[1].log().message(), "kept while away");
  EXPECT_EQ(got[1].worker_id(), id);
  for (const auto& m : got) EXPECT_FALSE(m.has_progress());
  EXPECT_EQ(connects, 2);
  client.stop();
}

TEST(ClusterCoordinatorClient, HeartbeatsWatchTheStream) {
  FakeCoordinator coord;
  CoordinatorClient client(worker_options(coord.address()).client, nullptr, nullptr);
  client.start();
  ASSERT_TRUE(client.wait_connected(10s));
  const std::string id = client.worker_id();
  // The coordinator no longer knows this worker: the stream is dropped and the worker registers
  // again under its id, then opens a new stream (a second hello).
  coord.set_heartbeat_status(grpc::StatusCode::NOT_FOUND);
  ASSERT_TRUE(coord.wait_for(
      [](const FakeCoordinator::Log& log) {
        return std::count_if(log.begin(), log.end(), [](const WorkerMessage& m) { return m.has_hello(); }) >= 2;
      },
      10s));
  coord.set_heartbeat_status(grpc::StatusCode::OK);
  const auto regs = coord.registrations();
  ASSERT_GE(regs.size(), 2u);
  EXPECT_EQ(regs[1].worker_id(), id);
  client.stop();
}

TEST(ClusterCoordinatorClient, BackoffDoublesUpToItsCap) {
  Backoff b(200ms, 1000ms);
  EXPECT_EQ(b.next(), 200ms);
  EXPECT_EQ(b.next(), 400ms);
  EXPECT_EQ(b.next(), 800ms);
  EXPECT_EQ(b.next(), 1000ms);
  EXPECT_EQ(b.next(), 1000ms);
  b.reset();
  EXPECT_EQ(b.next(), 200ms);
}

}  // namespace
}  // namespace relora::cluster
