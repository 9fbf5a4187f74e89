// `relora local` with a stand-in coordinator (client_fake_coordinator) and shell-script
// workers: the summary, --workers overriding cluster.workers, logs per child, failures with
// log tails, a worker dying mid-job, Ctrl-C, --linger, a coordinator that never listens, and no
// process left behind in any of these.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "client/local_metrics.h"
#include "tests/client/cli_runner.h"

namespace relora::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

bool alive(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string pid_s, comm, state;
  if (!(stat >> pid_s >> comm >> state)) return false;
  return state != "Z" && state != "X";  // a zombie is dead (see local_cluster_test.cpp)
}

bool eventually_dead(pid_t pid) {
  for (int i = 0; i < 200 && alive(pid); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  return !alive(pid);
}

class ClientLocal : public ::testing::Test {
 protected:
  TempDir tmp_;

  std::string script(const std::string& name, const std::string& body) {
    const std::string path = tmp_.file(name);
    std::ofstream(path) << "#!/bin/sh\n" << body << "\n";
    fs::permissions(path, fs::perms::owner_all);
    return path;
  }
  // Workers that record their pid and wait to be stopped.
  std::string sleeping_worker() {
    return script("worker.sh", "echo \"fake worker $*\"\necho $$ >> " + tmp_.file("worker.pids") + "\nexec sleep 1000");
  }
  std::string job(const std::string& name, const std::string& extra = "") {
    const std::string path = tmp_.file(name + ".yaml");
    std::ofstream(path) << "name: " << name
                        << "\nmodel: {preset: nano}\ndata: {train: [corpus.txt]}\ntraining: {steps: 40}\n"
                           "relora: {cycle_steps: 10}\n"
                        << extra;
    return path;
  }
  std::vector<std::string> env(const std::string& worker, const std::string& coordinator = FAKE_COORDINATOR_BINARY) {
    return {"RELORA_COORDINATOR_BINARY=" + coordinator, "RELORA_WORKER_BINARY=" + worker, "FAKE_STEP_MS=5"};
  }
  std::vector<pid_t> pids(const std::string& file) {
    std::vector<pid_t> out;
    std::ifstream in(file);
    for (pid_t p; in >> p;) out.push_back(p);
    return out;
  }
  // The fake coordinator prints its pid first thing.
  pid_t coordinator_pid(const std::string& state_dir) {
    std::smatch m;
    const std::string log = read_text(state_dir + "/coordinator.log");
    return std::regex_search(log, m, std::regex("pid (\\d+)")) ? std::stoi(m[1]) : 0;
  }
  void expect_nothing_left(const std::string& state_dir) {
    for (pid_t p : pids(tmp_.file("worker.pids"))) EXPECT_TRUE(eventually_dead(p)) << "worker " << p;
    const pid_t c = coordinator_pid(state_dir);
    EXPECT_GT(c, 0);
    EXPECT_TRUE(eventually_dead(c)) << "coordinator " << c;
  }
};

TEST_F(ClientLocal, RunsTheJobWritesTheSummaryAndStopsEverything) {
  const std::string state = tmp_.file("state");
  const auto r = run_cli({"local", job("local-ok"), "--workers", "2", "--summary-json", tmp_.file("summary.json"),
                          "--state-dir", state},
                         env(sleeping_worker()));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const auto summary = nlohmann::json::parse(read_text(tmp_.file("summary.json")));
  EXPECT_EQ(summary.at("workers"), 2);
  EXPECT_EQ(summary.at("spec_workers"), 2);  // --workers reached the submitted spec
  EXPECT_EQ(summary.at("steps"), 40);
  EXPECT_THAT(r.out, HasSubstr("\"workers\": 2"));
  EXPECT_THAT(r.out, HasSubstr("completed  step 40/40"));
  EXPECT_THAT(r.out, HasSubstr("checkpoint  runs/local-ok/step-20"));
  EXPECT_THAT(read_text(state + "/worker-1.log"), HasSubstr("fake worker --coordinator 127.0.0.1:"));
  // Metrics are on by default (9400 and up, or free ports where those are taken).
  EXPECT_THAT(r.out, HasSubstr("metrics: coordinator "));
  EXPECT_THAT(read_text(state + "/worker-1.log"), HasSubstr(" --metrics-port "));
  EXPECT_TRUE(fs::exists(state + "/coordinator.log"));
  EXPECT_EQ(pids(tmp_.file("worker.pids")).size(), 2u);
  expect_nothing_left(state);
}

// A base port P with P, P+1 and P+2 free now (the kernel's pick, then its neighbours checked).
int free_port_base() {
  for (int attempt = 0; attempt < 50; ++attempt) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    socklen_t len = sizeof addr;
    ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    ::close(fd);
    const int p = ntohs(addr.sin_port);
    if (p > 0 && p + 2 <= 65535 && relora::client::tcp_port_free(p) && relora::client::tcp_port_free(p + 1) &&
        relora::client::tcp_port_free(p + 2))
      return p;
  }
  ADD_FAILURE() << "no three free ports in a row";
  return 0;
}

TEST_F(ClientLocal, MetricsPortsArePassedToEveryChildAndPrinted) {
  const int base = free_port_base();
  ASSERT_GT(base, 0);
  const std::string state = tmp_.file("state");
  const auto r = run_cli({"local", job("local-metrics"), "--workers", "2", "--state-dir", state,
                          "--metrics-port-base", std::to_string(base)},
                         env(sleeping_worker()));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const auto url = [](int port) { return "http://127.0.0.1:" + std::to_string(port) + "/metrics"; };
  EXPECT_THAT(r.out, HasSubstr("metrics: coordinator " + url(base) + ", workers " + url(base + 1) + " " +
                               url(base + 2) + "\n"));  // not the default ports: no Prometheus hint
  EXPECT_THAT(read_text(state + "/coordinator.log"), HasSubstr("--metrics-port " + std::to_string(base)));
  EXPECT_THAT(read_text(state + "/worker-0.log"), HasSubstr("--metrics-port " + std::to_string(base + 1)));
  EXPECT_THAT(read_text(state + "/worker-1.log"), HasSubstr("--metrics-port " + std::to_string(base + 2)));
  expect_nothing_left(state);
}

TEST_F(ClientLocal, ATakenMetricsPortFallsBackToAFreeOneAndNamesTheLog) {
  const int base = free_port_base();
  ASSERT_GT(base, 0);
  // Something listens on worker-0's port.
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(base + 1));
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  const std::string state = tmp_.file("state");
  const auto r = run_cli({"local", job("local-taken"), "--workers", "1", "--state-dir", state,
                          "--metrics-port-base", std::to_string(base)},
                         env(sleeping_worker()));
  ::close(fd);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("metrics: coordinator http://127.0.0.1:" + std::to_string(base) +
                               "/metrics, worker (see " + state + "/worker-0.log)"));
  EXPECT_THAT(read_text(state + "/worker-0.log"), HasSubstr("--metrics-port 0"));
  expect_nothing_left(state);
}

TEST_F(ClientLocal, MetricsOffPassesNoFlag) {
  const std::string state = tmp_.file("state");
  const auto r = run_cli({"local", job("local-nometrics"), "--state-dir", state, "--metrics-port-base", "-1"},
                         env(sleeping_worker()));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_THAT(r.out, Not(HasSubstr("metrics:")));
  EXPECT_THAT(read_text(state + "/worker-0.log"), Not(HasSubstr("--metrics-port")));
  EXPECT_THAT(read_text(state + "/coordinator.log"), Not(HasSubstr("--metrics-port")));
  expect_nothing_left(state);
}

TEST_F(ClientLocal, SpecWorkersByDefaultAndTheTemporaryStateIsRemoved) {
  const auto r = run_cli({"local", job("local-spec", "cluster: {workers: 3}\n"), "-o", "json"}, env(sleeping_worker()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto summary = nlohmann::json::parse(r.out);  // with -o json stdout is the summary only
  EXPECT_EQ(summary.at("workers"), 3);
  EXPECT_EQ(pids(tmp_.file("worker.pids")).size(), 3u);
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.err, m, std::regex("logs in (\\S+)"))) << r.err;
  EXPECT_FALSE(fs::exists(m[1].str()));
}

TEST_F(ClientLocal, FailedJobShowsLogTailsAndKeepsState) {
  const std::string state = tmp_.file("state");
  const auto r = run_cli({"local", job("fail-local"), "--state-dir", state}, env(sleeping_worker()));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("error: job 'job-1' failed: simulated failure at step 20"));
  EXPECT_THAT(r.err, HasSubstr("coordinator log (" + state + "/coordinator.log)"));
  EXPECT_THAT(r.err, HasSubstr("fake worker --coordinator"));  // worker-0's log tail
  EXPECT_THAT(r.err, HasSubstr("state and logs kept in " + state));
  expect_nothing_left(state);
}

TEST_F(ClientLocal, AWorkerDyingMidJobFailsTheRun) {
  const std::string state = tmp_.file("state");
  const std::string dying = script("dying.sh", "echo worker exploded\nsleep 0.3\nexit 3");
  const auto r = run_cli({"local", job("hang-local"), "--state-dir", state}, env(dying));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_LT(r.seconds, 20);
  EXPECT_THAT(r.err, HasSubstr("error: worker-0 exited with status 3 while job job-1 was running"));
  EXPECT_THAT(r.err, HasSubstr("worker exploded"));
  EXPECT_TRUE(eventually_dead(coordinator_pid(state)));
}

TEST_F(ClientLocal, CtrlCCancelsAndStopsChildren) {
  const std::string state = tmp_.file("state");
  RunningBinary local(relora_cli(), {"local", job("hang-interrupt"), "--state-dir", state}, env(sleeping_worker()));
  for (int i = 0; i < 500 && local.out_so_far().find("job job-1") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_THAT(local.out_so_far(), HasSubstr("job job-1"));
  ::kill(local.pid(), SIGINT);
  const auto r = local.wait();
  EXPECT_EQ(r.exit_code, 130);
  EXPECT_THAT(r.err, HasSubstr("interrupted: cancelling job job-1"));
  expect_nothing_left(state);
}

// --linger keeps every child up after the job (their metrics endpoints keep the final values);
// Ctrl-C ends the linger early and, the job having completed, the exit code stays 0.
TEST_F(ClientLocal, LingerKeepsTheChildrenUpAfterTheJobUntilCtrlC) {
  const std::string state = tmp_.file("state");
  RunningBinary local(relora_cli(),
                      {"local", job("linger"), "--state-dir", state, "--summary-json", tmp_.file("summary.json"),
                       "--linger", "10m"},
                      env(sleeping_worker()));
  for (int i = 0; i < 1000 && local.out_so_far().find("(--linger)") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_THAT(local.out_so_far(), HasSubstr("keeping the cluster up for 10m00s (--linger)"));
  EXPECT_TRUE(fs::exists(tmp_.file("summary.json")));  // written before the linger
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_TRUE(alive(coordinator_pid(state)));
  for (pid_t p : pids(tmp_.file("worker.pids"))) EXPECT_TRUE(alive(p)) << "worker " << p;
  ::kill(local.pid(), SIGINT);
  const auto r = local.wait();
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  expect_nothing_left(state);
}

TEST_F(ClientLocal, CoordinatorThatExitsOrNeverListens) {
  const auto crashed = run_cli({"local", job("local-crash"), "--state-dir", tmp_.file("s1")},
                               env(sleeping_worker(), script("crash.sh", "echo boom; exit 4")));
  EXPECT_EQ(crashed.exit_code, 1);
  EXPECT_THAT(crashed.err, HasSubstr("error: the coordinator exited with status 4"));
  EXPECT_THAT(crashed.err, HasSubstr("boom"));
  EXPECT_TRUE(pids(tmp_.file("worker.pids")).empty());  // no worker started

  const std::string mute = script("mute.sh", "echo $$ > " + tmp_.file("mute.pid") + "\nexec sleep 1000");
  const auto silent = run_cli({"local", job("local-mute"), "--state-dir", tmp_.file("s2"), "--startup-timeout", "500ms"},
                              env(sleeping_worker(), mute));
  EXPECT_EQ(silent.exit_code, 1);
  EXPECT_THAT(silent.err, HasSubstr("did not write " + tmp_.file("s2") + "/coordinator.port within 500ms"));
  EXPECT_TRUE(eventually_dead(pids(tmp_.file("mute.pid")).at(0)));
}

}  // namespace
}  // namespace relora::testing
