// The worker's Prometheus series for collective traffic and GPU memory (docs/observability.md):
// what PrometheusTrainMetrics exports, read back in the text format a scrape gets.
#include "worker/metrics/prometheus_train_metrics.h"

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
  PrometheusTrainMetrics m(*registry, "job-1", 0, "w-1", "cpu");
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
  PrometheusTrainMetrics m(*registry, "job-1", 0, "w-1", "cuda:0");
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

}  // namespace
}  // namespace relora::metrics
