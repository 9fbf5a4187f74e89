// The real `relora` binary against the real relora-coordinator (port 0, temporary state dir, no
// workers): submit, list, status, events, cancel; bad requests each give one line and the right
// exit code while the coordinator keeps serving; and a coordinator killed with SIGKILL and
// restarted on the same state dir still lists the job.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "client/local_cluster.h"
#include "tests/client/cli_runner.h"

namespace relora::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

const char* const kJob = R"(name: cli-integration
model: {preset: nano}
data: {train: [corpus.txt]}
training: {steps: 40}
relora: {rank: 8, warm_start_steps: 10, cycle_steps: 10}
)";

class ClientCoordinator : public ::testing::Test {
 protected:
  void SetUp() override { start(); }

  void start() {
    const std::string port_file = state_.file("port");
    std::remove(port_file.c_str());
    coordinator_ = std::make_unique<RunningBinary>(
        binary_path("coordinator/relora-coordinator"),
        std::vector<std::string>{"--listen", "127.0.0.1:0", "--port-file", port_file, "--state-dir", state_.path()});
    const auto port = client::wait_for_port_file(port_file, std::chrono::seconds(20), [] { return true; });
    ASSERT_TRUE(port.has_value()) << coordinator_->err_so_far();
    address_ = "127.0.0.1:" + std::to_string(*port);
  }

  CliResult cli(std::vector<std::string> args) {
    args.insert(args.end(), {"--coordinator", address_});
    return run_cli(args);
  }

  std::string job_file(const std::string& name, const std::string& text) {
    std::ofstream(files_.file(name)) << text;
    return files_.file(name);
  }

  std::string submit(const std::string& text = kJob) {
    const auto r = cli({"submit", job_file("job.yaml", text), "-o", "json"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return nlohmann::json::parse(r.out).at("job_id");
  }

  // One "error: ..." line, the expected exit code, and a coordinator that still answers.
  void expect_one_line_error(const CliResult& r, int exit_code, const std::string& fragment) {
    EXPECT_EQ(r.exit_code, exit_code) << r.err;
    ASSERT_EQ(r.err_lines().size(), 1u) << r.err;
    EXPECT_THAT(r.err_lines()[0], StartsWith("error: "));
    EXPECT_THAT(r.err_lines()[0], HasSubstr(fragment));
    EXPECT_EQ(::kill(coordinator_->pid(), 0), 0) << "the coordinator died";
    EXPECT_EQ(cli({"list"}).exit_code, 0) << "the coordinator stopped answering";
  }

  TempDir state_, files_;
  std::unique_ptr<RunningBinary> coordinator_;
  std::string address_;
};

TEST_F(ClientCoordinator, SubmitListStatusEventsCancel) {
  const std::string id = submit();
  EXPECT_FALSE(id.empty());

  const auto list = cli({"list"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_THAT(list.out, StartsWith("ID"));
  EXPECT_THAT(list.out, HasSubstr(id));
  EXPECT_THAT(list.out, HasSubstr("cli-integration"));
  EXPECT_THAT(list.out, HasSubstr("queued"));  // no workers

  const auto status = cli({"status", id, "-o", "json"});
  ASSERT_EQ(status.exit_code, 0) << status.err;
  const auto s = nlohmann::json::parse(status.out);
  EXPECT_EQ(s.at("state"), "queued");
  EXPECT_EQ(s.at("step"), 0);
  EXPECT_EQ(s.at("merges"), 0);
  EXPECT_EQ(s.at("job").at("spec").at("relora").at("rank"), 8);

  const auto events = cli({"events", id});
  ASSERT_EQ(events.exit_code, 0) << events.err;
  EXPECT_THAT(events.out, StartsWith("TIME"));
  EXPECT_THAT(events.out, HasSubstr("submitted"));

  const auto cancel = cli({"cancel", id});
  ASSERT_EQ(cancel.exit_code, 0) << cancel.err;
  EXPECT_EQ(cancel.out, "job " + id + ": cancelled\n");
  EXPECT_EQ(nlohmann::json::parse(cli({"status", id, "-o", "json"}).out).at("state"), "cancelled");
  expect_one_line_error(cli({"cancel", id}), 1, id);  // FAILED_PRECONDITION: already finished
  // A cancelled job: `watch` returns at once with exit code 1.
  const auto watch = cli({"watch", id});
  EXPECT_EQ(watch.exit_code, 1);
  EXPECT_THAT(watch.err, HasSubstr("cancelled"));
}

TEST_F(ClientCoordinator, BadRequestsAreOneLineErrors) {
  const std::string malformed = job_file("malformed.yaml", "name: x\nmodel: {preset: nano\n");
  const std::string unknown = job_file("unknown.yaml", std::string(kJob) + "trainig: {steps: 5}\n");
  std::string rank0_text = kJob;
  rank0_text.replace(rank0_text.find("rank: 8"), 7, "rank: 0");
  const std::string rank0 = job_file("rank0.yaml", rank0_text);
  // --no-check: the coordinator's own validation, through INVALID_ARGUMENT.
  expect_one_line_error(cli({"submit", "--no-check", malformed}), 2, "malformed.yaml");
  expect_one_line_error(cli({"submit", "--no-check", unknown}), 2, "unknown field 'trainig'");
  expect_one_line_error(cli({"submit", "--no-check", rank0}), 2, "relora.rank");
  // The same caught locally first.
  expect_one_line_error(cli({"submit", malformed}), 2, "YAML syntax error");
  expect_one_line_error(cli({"submit", rank0}), 2, "relora.rank");
  // Unknown job ids.
  for (const char* sub : {"status", "events", "cancel", "watch"}) {
    expect_one_line_error(cli({sub, "job-nope"}), 1, "job 'job-nope' not found");
  }
  expect_one_line_error(cli({"export", "job-nope", "--out", files_.file("out")}), 1, "job 'job-nope' not found");
  EXPECT_EQ(nlohmann::json::parse(cli({"list", "-o", "json"}).out).size(), 0u);  // nothing bad was stored
}

TEST_F(ClientCoordinator, JobSurvivesACoordinatorKilledAndRestarted) {
  const std::string id = submit();
  ::kill(coordinator_->pid(), SIGKILL);
  coordinator_->wait();
  const std::string old_address = address_;
  const auto down = cli({"list"});
  EXPECT_EQ(down.exit_code, 3);
  EXPECT_THAT(down.err, HasSubstr(old_address));

  start();  // same state dir, a new port
  const auto list = cli({"list", "-o", "json"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  const auto jobs = nlohmann::json::parse(list.out);
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].at("job_id"), id);
  EXPECT_EQ(jobs[0].at("state"), "queued");
  EXPECT_THAT(cli({"list"}).out, HasSubstr(id));
}

TEST_F(ClientCoordinator, WorkersTableWithNoWorkers) {
  const auto r = cli({"workers"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, StartsWith("ID"));
}

}  // namespace
}  // namespace relora::testing
