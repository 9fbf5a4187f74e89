// Finding relora-worker / relora-coordinator: next to the CLI, in the build tree's sibling
// folder, then on PATH; non-executable files are skipped.
#include "client/binaries.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "tests/test_paths.h"

namespace relora::client {
namespace {

namespace fs = std::filesystem;
using relora::testing::TempDir;

void make_file(const std::string& path, bool executable) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path) << "#!/bin/sh\n";
  ::chmod(path.c_str(), executable ? 0755 : 0644);
}

TEST(ClientBinaries, PrefersTheCliDirectory) {
  TempDir t;
  make_file(t.file("bin/relora-worker"), true);
  make_file(t.file("worker/relora-worker"), true);
  EXPECT_EQ(find_binary(worker_binary(), t.file("bin"), t.file("path")), t.file("bin/relora-worker"));
}

TEST(ClientBinaries, FindsTheBuildTreeSibling) {
  TempDir t;
  fs::create_directories(t.file("client"));
  make_file(t.file("worker/relora-worker"), true);
  make_file(t.file("coordinator/relora-coordinator"), true);
  EXPECT_EQ(find_binary(worker_binary(), t.file("client"), ""), t.file("worker/relora-worker"));
  EXPECT_EQ(find_binary(coordinator_binary(), t.file("client"), ""), t.file("coordinator/relora-coordinator"));
}

TEST(ClientBinaries, FallsBackToPathAndSkipsNonExecutables) {
  TempDir t;
  fs::create_directories(t.file("client"));
  make_file(t.file("worker/relora-worker"), false);  // not executable: skipped
  make_file(t.file("p2/relora-worker"), true);
  std::vector<std::string> tried;
  const auto found = find_binary(worker_binary(), t.file("client"), t.file("p1") + "::" + t.file("p2"), &tried);
  EXPECT_EQ(found, t.file("p2/relora-worker"));
  ASSERT_EQ(tried.size(), 4u);  // client/, worker/, p1, p2 (the empty entry is skipped)
  EXPECT_EQ(tried[1], t.file("worker/relora-worker"));
}

TEST(ClientBinaries, NothingFound) {
  TempDir t;
  EXPECT_FALSE(find_binary(worker_binary(), t.path(), t.file("nowhere")).has_value());
}

TEST(ClientBinaries, SelfExeDirIsThisTestsDirectory) {
  EXPECT_EQ(self_exe_dir(), relora::testing::binary_path("tests/client"));
}

}  // namespace
}  // namespace relora::client
