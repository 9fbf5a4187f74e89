// Job files on the client: local errors name the file and field; --workers overrides
// cluster.workers without disturbing the rest of the spec.
#include "client/job_file.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>

#include "tests/test_paths.h"

namespace relora::client {
namespace {

using relora::testing::TempDir;
using ::testing::HasSubstr;
using ::testing::StartsWith;

const char* const kJob = R"(name: cli-test   # a comment
model: {preset: nano}
data:
  train: [corpus.txt]
  seq_len: 64
training: {steps: 40, lr: 1e-3}
relora: {mode: relora, rank: 8, warm_start_steps: 10, cycle_steps: 10}
)";

std::string write(const TempDir& t, const std::string& name, const std::string& text) {
  std::ofstream(t.file(name)) << text;
  return t.file(name);
}

std::string error_of(const std::string& path) {
  try {
    read_job_file(path);
  } catch (const JobSpecError& e) {
    return e.what();
  }
  return "";
}

TEST(ClientJobFile, ReadsAndChecks) {
  TempDir t;
  const auto f = read_job_file(write(t, "job.yaml", kJob));
  EXPECT_EQ(f.text, kJob);  // sent as written
  EXPECT_EQ(f.spec.name(), "cli-test");
  EXPECT_EQ(f.spec.cluster().workers(), 1);  // resolved
}

TEST(ClientJobFile, ErrorsNameTheFileAndField) {
  TempDir t;
  EXPECT_THAT(error_of(t.file("missing.yaml")), StartsWith(t.file("missing.yaml") + ": cannot read job spec"));
  const std::string bad_yaml = error_of(write(t, "bad.yaml", "name: [unclosed\n"));
  EXPECT_THAT(bad_yaml, HasSubstr("bad.yaml:"));
  EXPECT_THAT(bad_yaml, HasSubstr("YAML syntax error"));
  EXPECT_THAT(error_of(write(t, "unknown.yaml", std::string(kJob) + "trainig: {}\n")),
              HasSubstr("unknown field 'trainig'"));
  std::string rank0 = kJob;
  rank0.replace(rank0.find("rank: 8"), 7, "rank: 0");
  const std::string e = error_of(write(t, "rank0.yaml", rank0));
  EXPECT_THAT(e, StartsWith(t.file("rank0.yaml") + ": "));
  EXPECT_THAT(e, HasSubstr("relora.rank"));
  EXPECT_EQ(e.find('\n'), std::string::npos);  // one line
}

TEST(ClientJobFile, UncheckedReadKeepsBadSpecsForTheCoordinator) {
  TempDir t;
  EXPECT_NO_THROW(read_job_file(write(t, "unknown.yaml", "bogus: 1\n"), /*check=*/false));
}

TEST(ClientJobFile, OverrideWorkersAddsOrReplaces) {
  for (const std::string& tail : {std::string(""), std::string("cluster: {workers: 4, backend: gloo}\n"),
                                  std::string("cluster:\n")}) {
    const std::string text = override_cluster_workers(std::string(kJob) + tail, 2, "job.yaml");
    auto spec = parse_job_spec_yaml(text, "job.yaml");
    resolve_job_spec(spec);
    EXPECT_NO_THROW(validate_job_spec(spec)) << text;
    EXPECT_EQ(spec.cluster().workers(), 2) << text;
    EXPECT_EQ(spec.name(), "cli-test");
    EXPECT_EQ(spec.relora().rank(), 8);
    EXPECT_EQ(spec.training().steps(), 40);
    EXPECT_DOUBLE_EQ(spec.training().lr(), 1e-3);
    if (tail.find("gloo") != std::string::npos) EXPECT_EQ(spec.cluster().backend(), "gloo");
  }
}

TEST(ClientJobFile, OverrideRejectsNonMappings) {
  EXPECT_THROW(override_cluster_workers("- a\n- b\n", 2, "job.yaml"), JobSpecError);
  EXPECT_THROW(override_cluster_workers("name: x\ncluster: 3\n", 2, "job.yaml"), JobSpecError);
}

}  // namespace
}  // namespace relora::client
