// The built `relora` binary's argument and input errors: exit code 2 and one line on stderr;
// an unreachable coordinator: exit code 3, quickly, naming the address tried.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>

#include "tests/client/cli_runner.h"
#include "tests/test_paths.h"

namespace relora::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

void expect_usage_error(const std::vector<std::string>& args, const std::string& fragment) {
  SCOPED_TRACE(::testing::PrintToString(args));
  const auto r = run_cli(args);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  ASSERT_EQ(r.err_lines().size(), 1u) << r.err;
  EXPECT_THAT(r.err_lines()[0], StartsWith("error: "));
  EXPECT_THAT(r.err_lines()[0], HasSubstr(fragment));
  EXPECT_EQ(r.out, "");
}

TEST(ClientCli, BadFlagsAreOneLineAndExit2) {
  expect_usage_error({}, "subcommand");
  expect_usage_error({"frobnicate"}, "frobnicate");
  expect_usage_error({"list", "--bogus"}, "--bogus");
  expect_usage_error({"status"}, "JOB");
  expect_usage_error({"list", "-o", "yaml"}, "yaml");
  expect_usage_error({"list", "--timeout", "10"}, "not a duration");
  expect_usage_error({"list", "--timeout", "soon"}, "not a duration");
  expect_usage_error({"export", "job-1"}, "--out");
  expect_usage_error({"local", "job.yaml", "--workers", "0"}, "--workers");
  expect_usage_error({"list", "--log-level", "loud"}, "loud");
  expect_usage_error({"tokenize", "corpus/", "--out", "t"}, "--tokenizer");
  expect_usage_error({"tokenize", "corpus/", "--tokenizer", "/nonexistent.model", "--out", "t"}, "nonexistent");
}

TEST(ClientCli, HelpExitsZero) {
  const auto r = run_cli({"--help"});
  EXPECT_EQ(r.exit_code, 0);
  for (const char* sub : {"submit", "list", "status", "watch", "events", "cancel", "workers", "export", "local", "tokenize"}) {
    EXPECT_THAT(r.out, HasSubstr(sub));
  }
  const auto sub = run_cli({"local", "--help"});
  EXPECT_EQ(sub.exit_code, 0);
  EXPECT_THAT(sub.out, HasSubstr("--summary-json"));
}

TEST(ClientCli, BadJobFilesAreCaughtBeforeAnyRpc) {
  // The coordinator address is unreachable on purpose: these must fail before connecting.
  TempDir t;
  expect_usage_error({"submit", t.file("missing.yaml"), "--coordinator", "127.0.0.1:1"}, "missing.yaml: cannot read");
  std::ofstream(t.file("bad.yaml")) << "name: x\nmodel: {preset: nano\n";
  expect_usage_error({"submit", t.file("bad.yaml"), "--coordinator", "127.0.0.1:1"}, "YAML syntax error");
  std::ofstream(t.file("unknown.yaml")) << "name: x\nmodel: {preset: nano}\nmodle: {}\n";
  expect_usage_error({"submit", t.file("unknown.yaml")}, "unknown field 'modle'");
  std::ofstream(t.file("rank.yaml"))
      << "name: x\nmodel: {preset: nano}\ndata: {train: [a.txt]}\ntraining: {steps: 20}\n"
         "relora: {rank: 0, cycle_steps: 10}\n";
  expect_usage_error({"submit", t.file("rank.yaml")}, "relora.rank");
  expect_usage_error({"local", t.file("rank.yaml")}, "relora.rank");
}

TEST(ClientCli, UnreachableCoordinatorExits3Quickly) {
  const auto r = run_cli({"list", "--coordinator", "127.0.0.1:1"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_LT(r.seconds, 5.0);
  ASSERT_EQ(r.err_lines().size(), 1u) << r.err;
  EXPECT_THAT(r.err_lines()[0], StartsWith("error: cannot reach the coordinator at 127.0.0.1:1"));
}

TEST(ClientCli, CoordinatorFromTheEnvironment) {
  const auto r = run_cli({"status", "job-1"}, {"RELORA_COORDINATOR=127.0.0.1:2"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_THAT(r.err, HasSubstr("127.0.0.1:2"));
  // The flag wins over the environment.
  const auto flag = run_cli({"workers", "--coordinator", "127.0.0.1:1"}, {"RELORA_COORDINATOR=127.0.0.1:2"});
  EXPECT_THAT(flag.err, HasSubstr("127.0.0.1:1"));
}

}  // namespace
}  // namespace relora::testing
