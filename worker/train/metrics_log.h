// <checkpoint.dir>/metrics.jsonl: one JSON line per optimizer step, the loss curve of the whole
// job across resumes (a resume drops the lines past its checkpoint). An observer of the training
// loop like the Prometheus metrics; rank 0 keeps it.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "worker/train/train_metrics.h"

namespace relora::train {

class MetricsLog final : public TrainMetrics {
 public:
  explicit MetricsLog(std::string path) : path_(std::move(path)) {}

  void step_done(const StepReport& report, double data_wait_seconds) override;
  // Keeps the lines of steps <= `step` (and drops a torn last line from a crash).
  void truncate_after(int64_t step);

 private:
  std::string path_;
  std::ofstream out_;
};

// Fans every report out to several observers (Prometheus, the metrics log), skipping nulls.
class TrainObservers final : public TrainMetrics {
 public:
  void add(TrainMetrics* observer) {
    if (observer) observers_.push_back(observer);
  }
  void job_started(const TrainStaticInfo& info) override { each([&](auto* o) { o->job_started(info); }); }
  void step_done(const StepReport& r, double wait) override { each([&](auto* o) { o->step_done(r, wait); }); }
  void eval_done(const EvalReport& r) override { each([&](auto* o) { o->eval_done(r); }); }
  void merged(bool reset) override { each([&](auto* o) { o->merged(reset); }); }
  void trainable_changed(int64_t n) override { each([&](auto* o) { o->trainable_changed(n); }); }
  void checkpoint_saved(double s) override { each([&](auto* o) { o->checkpoint_saved(s); }); }
  void update_rank(const std::string& layer, int64_t rank) override { each([&](auto* o) { o->update_rank(layer, rank); }); }
  void gradient_sync_done(double s) override { each([&](auto* o) { o->gradient_sync_done(s); }); }
  void collective_sent(const char* kind, int64_t bytes, int64_t sent) override {
    each([&](auto* o) { o->collective_sent(kind, bytes, sent); });
  }

 private:
  template <class F>
  void each(F f) {
    for (auto* o : observers_) f(o);
  }
  std::vector<TrainMetrics*> observers_;
};

}  // namespace relora::train
