// A job's Prometheus series on one worker (names and meanings: docs/observability.md, "Worker
// job series"). One instance per job run on this worker; its series carry job_id, rank and worker
// labels and are removed when the instance is destroyed. The owner keeps the instance after the
// job ends and destroys it just before the next job's is made, so the finished job's final
// values (eval loss, steps, merges, tokens) stay scrapeable while the worker is idle, and a worker
// exports one job's series at a time. The process's own series (info, state, memory) are
// WorkerProcessMetrics' (process_metrics.h).
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include <prometheus/registry.h>

#include "worker/train/train_metrics.h"

namespace relora::metrics {

class PrometheusTrainMetrics : public train::TrainMetrics {
 public:
  PrometheusTrainMetrics(prometheus::Registry& registry, const std::string& job_id, int rank,
                         const std::string& worker);
  ~PrometheusTrainMetrics() override;

  void job_started(const train::TrainStaticInfo& info) override;
  void step_done(const train::StepReport& report, double data_wait_seconds) override;
  void eval_done(const train::EvalReport& report) override;
  void merged(bool optimizer_reset) override;
  void trainable_changed(int64_t trainable_parameters) override;
  void checkpoint_saved(double seconds) override;
  void update_rank(const std::string& layer, int64_t rank) override;
  void gradient_sync_done(double seconds) override;
  void collective_sent(const char* kind, int64_t bytes, int64_t sent_bytes) override;

 private:
  struct Series;  // the labelled children; defined in the .cpp
  std::unique_ptr<Series> s_;
  train::TrainStaticInfo info_;
};

}  // namespace relora::metrics
