// `relora local` with one GPU worker (label `gpu`; skipped where no CUDA device is usable): the
// real CLI starts the real relora-coordinator and one relora-worker that trains a tiny ReLoRA job
// (bf16, one merge) on cuda:0.
//
// `relora local` has no flag for the workers' device; it runs the worker binary named by
// RELORA_WORKER_BINARY (client/binaries.h). The test points that at a small wrapper script that
// execs the built relora-worker with `--device cuda:0 --log-level debug` added to cluster-mode runs
// (a failure's C++ stack is logged at debug level), and records the arguments it was given.
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/cuda.h>

#include "common/job_spec.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/test_paths.h"

namespace relora {
namespace {

namespace fs = std::filesystem;
using relora::testing::TempDir;

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  ASSERT_TRUE(out.good()) << path;
}

std::string tail(const std::string& text, size_t chars = 4000) {
  return text.size() > chars ? "..." + text.substr(text.size() - chars) : text;
}

TEST(GpuLocal, OneGpuWorkerTrainsAReloraJob) {
  const std::string cli = relora::testing::binary_path("client/relora");
  const std::string worker = relora::testing::binary_path("worker/relora-worker");
  TempDir dir;
  gpu_testing::TinyJob job;
  job.name = "gpu-local";
  job.tok_path = dir.file("train.tok");
  job.checkpoint_dir = dir.file("run");
  job.dtype = "bf16";
  job.relora = "{mode: relora, rank: 8, alpha: 16, dropout: 0.0, warm_start_steps: 2, cycle_steps: 2, "
               "restart_warmup_steps: 1}";
  job.steps = 6;
  job.workers = 1;
  gpu_testing::write_random_tokens(job.tok_path, 512, 40000);
  write_text(dir.file("job.yaml"), gpu_testing::tiny_job_yaml(job));
  {  // checked on every machine: a spec that drifts fails in CI too
    auto spec = parse_job_spec_yaml(gpu_testing::tiny_job_yaml(job), "job.yaml");
    resolve_job_spec(spec);
    validate_job_spec(spec);
  }
  RELORA_REQUIRE_CUDA();
  ASSERT_TRUE(fs::exists(cli)) << cli;
  ASSERT_TRUE(fs::exists(worker)) << worker;

  const std::string wrapper = dir.file("relora-worker-cuda");
  write_text(wrapper, "#!/bin/sh\n"
                      "# relora-worker on cuda:0 for cluster-mode runs (written by gpu_local_test)\n"
                      "echo \"$*\" >> '" + dir.file("worker-args.txt") + "'\n"
                      "case \" $* \" in\n"
                      "  *' --coordinator '*) exec '" + worker + "' \"$@\" --device cuda:0 --log-level debug ;;\n"
                      "esac\n"
                      "exec '" + worker + "' \"$@\"\n");
  fs::permissions(wrapper, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec,
                  fs::perm_options::replace);

  const std::string state = dir.file("state");
  const std::string cmd = "RELORA_WORKER_BINARY='" + wrapper + "' timeout 300 '" + cli + "' local '" +
                          dir.file("job.yaml") + "' --workers 1 --summary-json '" + dir.file("summary.json") +
                          "' --state-dir '" + state + "' --keep-state > '" + dir.file("local.log") + "' 2>&1";
  const int status = std::system(cmd.c_str());
  const std::string log = read_text(dir.file("local.log"));
  const std::string worker_log = read_text(state + "/worker-0.log");
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "relora local failed (status " << status << "):\n" << tail(log) << "\n--- worker-0.log:\n" << tail(worker_log);

  // The worker really ran with --device cuda:0 (main.cpp refuses it where CUDA is unusable).
  EXPECT_NE(read_text(dir.file("worker-args.txt")).find("--device cuda:0"), std::string::npos);
  EXPECT_NE(worker_log.find("rank 0 of 1"), std::string::npos) << tail(worker_log);

  const auto summary = nlohmann::json::parse(read_text(dir.file("summary.json")), nullptr, false);
  ASSERT_FALSE(summary.is_discarded()) << read_text(dir.file("summary.json"));
  EXPECT_EQ(summary.value("completed", false), true) << summary.dump(2);
  EXPECT_EQ(summary.value("steps", 0), 6);
  EXPECT_GE(summary.value("merges", 0), 1);  // low-rank from step 2, a merge at 4
  EXPECT_EQ(summary.value("workers", 0), 1);
  const double loss = summary.value("final_train_loss", -1.0);
  EXPECT_TRUE(loss > 0 && loss < 10) << summary.dump(2);
}

}  // namespace
}  // namespace relora
