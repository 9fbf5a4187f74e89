// The worker's Prometheus series (docs/observability.md): a job's (collective traffic, GPU
// memory) as PrometheusTrainMetrics exports them, and the process's (info, state, memory, jobs)
// as WorkerProcessMetrics does, read back in the text format a scrape gets.
#include "worker/metrics/prometheus_train_metrics.h"
#include "worker/metrics/process_metrics.h"

#include <memory>
#include <string>

#include <gtest/gtest.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include "worker/train/trainer.h"

namespace relora::metrics {
namespace {

std::string scrape(prometheus::Registry& registry) {
  return prometheus::TextSerializer().Serialize(registry.Collect());
}

const char* kLabels = R"(job_id="job-1",rank="0",worker="w-1")";

TEST(WorkerTrainMetrics, CollectiveBytesByKindExistFromTheStartAndCountWhatWasSent) {
  auto registry = std::make_shared<prometheus::Registry>();
  PrometheusTrainMetrics m(*registry, "job-1", 0, "w-1");
  // prometheus-cpp writes labels sorted by name.
  const auto series = [](const char* family, const char* kind) {
    return std::string(family) + R"({job_id="job-1",kind=")" + kind + R"(",rank="0",worker="w-1"})";
  };
  for (const char* kind : {"all_reduce", "reduce_scatter", "all_gather"}) {
    EXPECT_NE(scrape(*registry).find(series("relora_worker_collective_bytes_total", kind) + " 0"), std::string::npos)
        << kind << "\n" << scrape(*registry);
    EXPECT_NE(scrape(*registry).find(series("relora_worker_collective_sent_bytes_total", kind) + " 0"),
              std::string::npos) << kind;
  }
  m.collective_sent("all_reduce", 1000, 1000);
  m.collective_sent("all_reduce", 24, 24);
  m.collective_sent("reduce_scatter", 4000, 3000);
  const std::string text = scrape(*registry);
  EXPECT_NE(text.find(series("relora_worker_collective_bytes_total", "all_reduce") + " 1024"), std::string::npos) << text;
  EXPECT_NE(text.find(series("relora_worker_collective_bytes_total", "reduce_scatter") + " 4000"), std::string::npos);
  EXPECT_NE(text.find(series("relora_worker_collective_sent_bytes_total", "reduce_scatter") + " 3000"), std::string::npos);
  EXPECT_NE(text.find(series("relora_worker_collective_bytes_total", "all_gather") + " 0"), std::string::npos);
}

TEST(WorkerTrainMetrics, DeviceMemoryGaugesOnlyWhereTheStepReportsThem) {
  auto registry = std::make_shared<prometheus::Registry>();
  PrometheusTrainMetrics m(*registry, "job-1", 0, "w-1");
  train::StepReport cpu_step;
  cpu_step.step = 1;
  m.step_done(cpu_step, 0.0);
  EXPECT_EQ(scrape(*registry).find("relora_worker_device_memory"), std::string::npos);
  train::StepReport gpu_step;
  gpu_step.step = 2;
  gpu_step.device_allocated_bytes = 1 << 20;
  gpu_step.device_reserved_bytes = 2 << 20;
  gpu_step.device_peak_bytes = 3 << 20;
  m.step_done(gpu_step, 0.0);
  const std::string text = scrape(*registry);
  const std::string labels = std::string("{") + kLabels + "}";
  EXPECT_NE(text.find("relora_worker_device_memory_allocated_bytes" + labels + " 1048576"), std::string::npos) << text;
  EXPECT_NE(text.find("relora_worker_device_memory_reserved_bytes" + labels + " 2097152"), std::string::npos) << text;
  EXPECT_NE(text.find("relora_worker_device_memory_peak_bytes" + labels + " 3145728"), std::string::npos) << text;
}

// The value of the one sample `series` (name and labels as prometheus-cpp writes them), or -1.
double value_of(const std::string& text, const std::string& series) {
  const auto at = text.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + series.size() + 2));
}

TEST(WorkerProcessMetrics, NothingBeforeTheWorkerIsKnownThenEverySeriesWithTheWorkerLabelOnly) {
  auto registry = std::make_shared<prometheus::Registry>();
  WorkerProcessMetrics p(registry, "cpu");
  EXPECT_EQ(scrape(*registry).find("relora_worker_info{"), std::string::npos);
  p.job_finished(WorkerProcessMetrics::Outcome::kFailed);  // before registration: still counted
  p.set_worker("w-1");
  const std::string text = scrape(*registry);
  EXPECT_EQ(value_of(text, R"(relora_worker_info{device="cpu",version="0.1.0",worker="w-1"})"), 1) << text;
  EXPECT_EQ(value_of(text, R"(relora_worker_state{state="idle",worker="w-1"})"), 1) << text;
  EXPECT_EQ(value_of(text, R"(relora_worker_state{state="training",worker="w-1"})"), 0) << text;
  EXPECT_EQ(value_of(text, R"(relora_worker_jobs_total{outcome="completed",worker="w-1"})"), 0) << text;
  EXPECT_EQ(value_of(text, R"(relora_worker_jobs_total{outcome="failed",worker="w-1"})"), 1) << text;
  EXPECT_EQ(value_of(text, R"(relora_worker_jobs_total{outcome="stopped",worker="w-1"})"), 0) << text;
  const double rss = value_of(text, R"(relora_worker_resident_memory_bytes{worker="w-1"})");
  const double peak = value_of(text, R"(relora_worker_resident_memory_peak_bytes{worker="w-1"})");
  const double limit = value_of(text, R"(relora_worker_memory_limit_bytes{worker="w-1"})");
  EXPECT_GT(rss, 1 << 20) << text;  // bytes, not KiB
  EXPECT_GE(peak, rss);
  EXPECT_GE(limit, peak);
  EXPECT_EQ(text.find("job_id"), std::string::npos) << "process series carry no job\n" << text;
}

TEST(WorkerProcessMetrics, StateFollowsTheJobAndANewIdKeepsTheCounts) {
  auto registry = std::make_shared<prometheus::Registry>();
  WorkerProcessMetrics p(registry, "cuda:0");
  p.set_worker("w-1");
  p.set_state(WorkerProcessMetrics::State::kTraining);
  std::string text = scrape(*registry);
  EXPECT_EQ(value_of(text, R"(relora_worker_state{state="training",worker="w-1"})"), 1) << text;
  EXPECT_EQ(value_of(text, R"(relora_worker_state{state="idle",worker="w-1"})"), 0) << text;
  p.job_finished(WorkerProcessMetrics::Outcome::kCompleted);
  p.set_state(WorkerProcessMetrics::State::kIdle);
  p.set_worker("w-2");  // the coordinator forgot w-1
  text = scrape(*registry);
  EXPECT_EQ(text.find(R"(worker="w-1")"), std::string::npos) << text;
  EXPECT_EQ(value_of(text, R"(relora_worker_info{device="cuda:0",version="0.1.0",worker="w-2"})"), 1) << text;
  EXPECT_EQ(value_of(text, R"(relora_worker_state{state="idle",worker="w-2"})"), 1) << text;
  EXPECT_EQ(value_of(text, R"(relora_worker_jobs_total{outcome="completed",worker="w-2"})"), 1) << text;
  p.refresh();
  EXPECT_GT(value_of(scrape(*registry), R"(relora_worker_resident_memory_bytes{worker="w-2"})"), 1 << 20);
}

TEST(WorkerTrainMetrics, AJobsSeriesStayUntilTheObjectGoes) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto job = std::make_unique<PrometheusTrainMetrics>(*registry, "job-1", 0, "w-1");
  train::EvalReport eval;
  eval.loss = 2.5;
  eval.perplexity = 12.182493960703473;
  job->eval_done(eval);
  const std::string labels = std::string("{") + kLabels + "}";
  EXPECT_EQ(value_of(scrape(*registry), "relora_worker_eval_loss" + labels), 2.5);
  job.reset();  // what ClusterWorker does when the next job starts
  EXPECT_EQ(scrape(*registry).find("job-1"), std::string::npos) << scrape(*registry);
}

}  // namespace
}  // namespace relora::metrics
