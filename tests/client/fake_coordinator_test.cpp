// The CLI against a stand-in coordinator (a real gRPC server on loopback, fake_coordinator.h):
// calls and their errors, following a job (events once each, reconnecting after a restart),
// and the built `relora` binary's output and exit codes for each subcommand.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "client/rpc.h"
#include "client/watch.h"
#include "tests/client/cli_runner.h"
#include "tests/client/fake_coordinator.h"

namespace relora::testing {
namespace {

using client::Rpc;
using client::RpcError;
using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string job_yaml(const std::string& name, int steps = 40) {
  return "name: " + name + "\nmodel: {preset: nano}\ndata: {train: [corpus.txt]}\ntraining: {steps: " +
         std::to_string(steps) + "}\nrelora: {cycle_steps: 10}\n";
}

class ClientFakeCoordinator : public ::testing::Test {
 protected:
  std::shared_ptr<FakeJobs> jobs_ = std::make_shared<FakeJobs>(/*step_ms=*/5);
  FakeCoordinator server_{jobs_};
  Rpc rpc_{server_.address(), std::chrono::seconds(5)};
  TempDir tmp_;

  CliResult cli(std::vector<std::string> args) {
    args.insert(args.end(), {"--coordinator", server_.address()});
    return run_cli(args);
  }
  std::string write_job(const std::string& name, const std::string& text) {
    std::ofstream(tmp_.file(name)) << text;
    return tmp_.file(name);
  }
};

TEST_F(ClientFakeCoordinator, ErrorsCarryTheirCodes) {
  try {
    rpc_.submit("name: x\nbogus: 1\n", "x.yaml");
    FAIL();
  } catch (const RpcError& e) {
    EXPECT_EQ(e.exit_code(), 2);
    EXPECT_THAT(e.what(), HasSubstr("unknown field 'bogus'"));
  }
  try {
    rpc_.get_job("job-404");
    FAIL();
  } catch (const RpcError& e) {
    EXPECT_EQ(e.code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_STREQ(e.what(), "job 'job-404' not found");
  }
}

TEST_F(ClientFakeCoordinator, FollowDeliversEveryEventOnceUntilTheEnd) {
  const auto job = rpc_.submit(job_yaml("follow"), "follow.yaml");
  std::vector<int64_t> seqs;
  int updates = 0;
  const auto last = client::follow_job(rpc_, job.id(), [&](const relora::v1::Job&, const auto& events) {
    ++updates;
    for (const auto& e : events) seqs.push_back(e.seq());
  });
  EXPECT_EQ(last.state(), relora::v1::JOB_STATE_COMPLETED);
  EXPECT_EQ(last.progress().step(), 40);
  EXPECT_GT(updates, 1);
  EXPECT_EQ(seqs, (std::vector<int64_t>{1, 2, 3, 4, 5}));  // submitted, started, checkpoint, ack, completed
}

TEST_F(ClientFakeCoordinator, FollowReconnectsAfterACoordinatorRestart) {
  auto jobs = std::make_shared<FakeJobs>(/*step_ms=*/20);
  auto first = std::make_unique<FakeCoordinator>(jobs);
  const std::string address = first->address();
  Rpc rpc(address, std::chrono::seconds(5));
  const auto job = rpc.submit(job_yaml("restart", 60), "restart.yaml");
  std::thread restarter([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    first->shutdown();  // the stream breaks mid-job
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    first = std::make_unique<FakeCoordinator>(jobs, address);  // same port, same jobs
  });
  std::vector<int64_t> seqs;
  const auto last = client::follow_job(rpc, job.id(), [&](const relora::v1::Job&, const auto& events) {
    for (const auto& e : events) seqs.push_back(e.seq());
  });
  restarter.join();
  EXPECT_EQ(last.state(), relora::v1::JOB_STATE_COMPLETED);
  EXPECT_EQ(seqs, (std::vector<int64_t>{1, 2, 3, 4, 5}));  // nothing replayed twice
}

TEST_F(ClientFakeCoordinator, CancellerStopsAFollow) {
  const auto job = rpc_.submit(job_yaml("hang-forever"), "hang.yaml");
  client::WatchCanceller canceller;
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    canceller.cancel();
  });
  const auto last = client::follow_job(rpc_, job.id(), [](const auto&, const auto&) {}, &canceller);
  stopper.join();
  EXPECT_EQ(last.state(), relora::v1::JOB_STATE_RUNNING);
}

TEST_F(ClientFakeCoordinator, CliSubmitJsonStatusListEventsWorkers) {
  const auto submitted = cli({"submit", write_job("a.yaml", job_yaml("cli-a")), "-o", "json"});
  ASSERT_EQ(submitted.exit_code, 0) << submitted.err;
  const std::string id = nlohmann::json::parse(submitted.out).at("job_id");
  EXPECT_EQ(id, "job-1");

  const auto text = cli({"submit", write_job("b.yaml", job_yaml("cli-b"))});
  EXPECT_EQ(text.out, "job-2\n");

  std::this_thread::sleep_for(std::chrono::milliseconds(400));  // both finish (40 steps x 5 ms)
  const auto status = cli({"status", id, "-o", "json"});
  ASSERT_EQ(status.exit_code, 0) << status.err;
  const auto s = nlohmann::json::parse(status.out);
  EXPECT_EQ(s.at("state"), "completed");
  EXPECT_EQ(s.at("step"), 40);
  EXPECT_EQ(s.at("merges"), 4);
  EXPECT_EQ(s.at("job").at("id"), id);

  const auto status_text = cli({"status", id});
  EXPECT_THAT(status_text.out, HasSubstr("state      completed"));

  const auto list = cli({"list"});
  EXPECT_THAT(list.out, StartsWith("ID     NAME   STATE      STEP/TOTAL  LOSS    MERGES  AGE\n"));
  EXPECT_THAT(list.out, HasSubstr("job-2  cli-b  completed  40/40"));
  const auto list_json = nlohmann::json::parse(cli({"list", "-o", "json"}).out);
  ASSERT_EQ(list_json.size(), 2u);
  EXPECT_EQ(list_json[1].at("state"), "completed");

  const auto events = cli({"events", id});
  EXPECT_THAT(events.out, HasSubstr("CHECKSUM"));
  EXPECT_THAT(events.out, HasSubstr("c0ffee42"));
  EXPECT_THAT(events.out, HasSubstr("checkpoint"));

  const auto workers = cli({"workers"});
  EXPECT_THAT(workers.out, HasSubstr("worker-fake"));
}

TEST_F(ClientFakeCoordinator, CliWatchExitCodes) {
  const auto ok = rpc_.submit(job_yaml("watch-ok"), "ok.yaml");
  const auto w = cli({"watch", ok.id()});
  EXPECT_EQ(w.exit_code, 0) << w.err;
  EXPECT_THAT(w.out, HasSubstr("checkpoint  runs/watch-ok/step-20"));
  EXPECT_THAT(w.out, HasSubstr("checksum c0ffee42"));
  EXPECT_THAT(w.out, HasSubstr("completed  step 40/40 (100%)"));
  EXPECT_EQ(w.out.find('\r'), std::string::npos);  // not a terminal: plain lines

  const auto bad = rpc_.submit(job_yaml("fail-midway"), "fail.yaml");
  const auto f = cli({"watch", bad.id()});
  EXPECT_EQ(f.exit_code, 1);
  EXPECT_THAT(f.err, HasSubstr("error: job '" + bad.id() + "' failed: simulated failure at step 20"));

  const auto j = cli({"submit", write_job("c.yaml", job_yaml("watch-json")), "--watch", "-o", "json"});
  EXPECT_EQ(j.exit_code, 0) << j.err;
  std::istringstream lines(j.out);
  std::string line, final_line;
  while (std::getline(lines, line)) final_line = line;
  EXPECT_EQ(nlohmann::json::parse(final_line).at("state"), "completed");

  const auto missing = cli({"watch", "job-404"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_EQ(missing.err, "error: job 'job-404' not found\n");
}

TEST_F(ClientFakeCoordinator, CliCancelAndItsErrors) {
  const auto job = rpc_.submit(job_yaml("hang-cancel"), "hang.yaml");
  const auto c = cli({"cancel", job.id()});
  EXPECT_EQ(c.exit_code, 0) << c.err;
  EXPECT_EQ(c.out, "job " + job.id() + ": cancelled\n");
  const auto again = cli({"cancel", job.id()});
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_THAT(again.err, StartsWith("error: job '" + job.id() + "' already finished"));
  const auto w = cli({"watch", job.id()});
  EXPECT_EQ(w.exit_code, 1);
  EXPECT_THAT(w.err, HasSubstr("was cancelled"));
}

TEST_F(ClientFakeCoordinator, CliCoordinatorSideSpecErrorsExit2) {
  // --no-check: only the coordinator sees the spec; its INVALID_ARGUMENT is exit code 2.
  const auto r = cli({"submit", "--no-check", write_job("u.yaml", job_yaml("x") + "trainig: {}\n")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, StartsWith("error: u.yaml: unknown field 'trainig'"));
  EXPECT_EQ(r.err_lines().size(), 1u);
}

TEST_F(ClientFakeCoordinator, CliExportWithoutCheckpoint) {
  const auto job = rpc_.submit(job_yaml("hang-export"), "hang.yaml");
  const auto r = cli({"export", job.id(), "--out", tmp_.file("out")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("has no checkpoint yet"));
}

TEST_F(ClientFakeCoordinator, CliExportRunsTheWorker) {
  const auto job = rpc_.submit(job_yaml("export-me"), "export.yaml");
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  // The checkpoint path the fake reports (relative to the worker's directory: here, ours).
  const std::string ckpt = "runs/export-me/step-20";
  std::filesystem::create_directories(tmp_.file(ckpt));
  const std::string fake_worker = tmp_.file("relora-worker");
  std::ofstream(fake_worker) << "#!/bin/sh\necho \"$@\" > " << tmp_.file("args") << "\n";
  std::filesystem::permissions(fake_worker, std::filesystem::perms::owner_all);
  const auto cwd = std::filesystem::current_path();
  std::filesystem::current_path(tmp_.path());
  const auto r = run_cli({"export", job.id(), "--out", "hf", "--coordinator", server_.address()},
                         {"RELORA_WORKER_BINARY=" + fake_worker});
  std::filesystem::current_path(cwd);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(read_text(tmp_.file("args")), "--export " + ckpt + " --out hf\n");
}

}  // namespace
}  // namespace relora::testing
