// Child processes: logs, exec failures, early exits, shutdown with SIGTERM then SIGKILL (no
// orphans, grandchildren included), log tails and the port-file wait.
#include "client/local_cluster.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <thread>

#include "tests/test_paths.h"

namespace relora::client {
namespace {

using relora::testing::TempDir;
using ::testing::HasSubstr;

ChildSpec sh(const TempDir& t, const std::string& name, const std::string& script) {
  return {name, "/bin/sh", {"-c", script}, t.file(name + ".log")};
}

// Running, not a zombie: an orphaned grandchild that was killed stays a zombie until init
// reaps it, and some containers' init never does.
bool alive(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string pid_s, comm, state;
  if (!(stat >> pid_s >> comm >> state)) return false;
  return state != "Z" && state != "X";
}

std::string read(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

TEST(ClientLocalCluster, ChildOutputGoesToItsLog) {
  TempDir t;
  LocalCluster c;
  c.spawn(sh(t, "worker-0", "echo hello; echo oops >&2"));
  std::optional<ChildExit> exit;
  for (int i = 0; i < 200 && !exit; ++i) {
    exit = c.poll_exited();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(exit.has_value());
  EXPECT_EQ(exit->name, "worker-0");
  EXPECT_EQ(exit->how, "exited with status 0");
  EXPECT_EQ(read(t.file("worker-0.log")), "hello\noops\n");
  EXPECT_FALSE(c.poll_exited().has_value());  // reported once
}

TEST(ClientLocalCluster, ExecFailureIsAnErrorNow) {
  TempDir t;
  LocalCluster c;
  try {
    c.spawn({"ghost", t.file("no-such-binary"), {}, t.file("ghost.log")});
    FAIL() << "expected an exception";
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("no-such-binary"));
    EXPECT_THAT(e.what(), HasSubstr("No such file"));
  }
}

TEST(ClientLocalCluster, StopKillsStubbornChildrenAndGrandchildren) {
  TempDir t;
  LocalCluster c;
  // Ignores SIGTERM, and has a grandchild that must go with it.
  const pid_t stubborn =
      c.spawn(sh(t, "coordinator", "trap '' TERM; sleep 1000 & echo $! > " + t.file("grandchild.pid") + "; wait"));
  const pid_t polite = c.spawn(sh(t, "worker-0", "exec sleep 1000"));
  pid_t grandchild = 0;
  for (int i = 0; i < 200 && grandchild == 0; ++i) {
    std::ifstream(t.file("grandchild.pid")) >> grandchild;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_GT(grandchild, 0);
  const auto start = std::chrono::steady_clock::now();
  c.stop(std::chrono::milliseconds(300));
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(took, 5.0);
  EXPECT_FALSE(alive(stubborn));
  EXPECT_FALSE(alive(polite));
  for (int i = 0; i < 100 && alive(grandchild); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_FALSE(alive(grandchild));  // (reaped by init once killed)
}

TEST(ClientLocalCluster, DescribeWaitStatus) {
  EXPECT_EQ(describe_wait_status(3 << 8), "exited with status 3");
  EXPECT_THAT(describe_wait_status(SIGKILL), HasSubstr("killed by signal 9"));
}

TEST(ClientLocalCluster, TailFile) {
  TempDir t;
  std::ofstream(t.file("log")) << "1\n2\n3\n4\n";
  EXPECT_EQ(tail_file(t.file("log"), 2), "3\n4");
  EXPECT_EQ(tail_file(t.file("log"), 10), "1\n2\n3\n4");
  EXPECT_EQ(tail_file(t.file("missing"), 2), "");
  std::ofstream(t.file("empty"));
  EXPECT_EQ(tail_file(t.file("empty"), 2), "");
  std::ofstream(t.file("no-newline")) << "a\nb";
  EXPECT_EQ(tail_file(t.file("no-newline"), 1), "b");
}

TEST(ClientLocalCluster, PortFileWait) {
  TempDir t;
  const std::string f = t.file("port");
  std::thread writer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::ofstream(f + ".tmp") << "43210\n";
    std::rename((f + ".tmp").c_str(), f.c_str());
  });
  EXPECT_EQ(wait_for_port_file(f, std::chrono::seconds(5), [] { return true; }), 43210);
  writer.join();
  // Gives up when told to (the coordinator died) and on timeout.
  EXPECT_FALSE(wait_for_port_file(t.file("none"), std::chrono::seconds(5), [] { return false; }).has_value());
  EXPECT_FALSE(wait_for_port_file(t.file("none"), std::chrono::milliseconds(100), [] { return true; }).has_value());
}

TEST(ClientLocalCluster, RunAndWait) {
  EXPECT_EQ(run_and_wait("/bin/sh", {"-c", "exit 7"}), 7);
  EXPECT_THROW(run_and_wait("/nonexistent/relora-worker", {}), std::runtime_error);
}

}  // namespace
}  // namespace relora::client
