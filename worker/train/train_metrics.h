// What the trainer reports for monitoring, as one narrow interface. The trainer calls it at the
// points where each figure is known; worker/metrics implements it for Prometheus. Every method
// has an empty default so tests and benchmarks can pass nothing (TrainerOptions.metrics = null).
#pragma once

#include <cstdint>
#include <string>

namespace relora::train {

struct StepReport;
struct EvalReport;

struct TrainStaticInfo {
  int64_t total_steps = 0;
  int64_t trainable_parameters = 0;
  int64_t total_parameters = 0;
  int64_t tokens_per_step_per_rank = 0;
  // Model FLOPs per token of full-rank training (6N + 12·L·T·C; N: non-embedding weights incl. the
  // head), the standard MFU numerator, and the matrix-product peak measured at start (FLOP/s).
  double model_flops_per_token = 0;
  double peak_flops = 0;
};

class TrainMetrics {
 public:
  virtual ~TrainMetrics() = default;
  virtual void job_started(const TrainStaticInfo& /*info*/) {}
  // After every optimizer step; data_wait_seconds: time spent assembling this step's batches.
  virtual void step_done(const StepReport& /*report*/, double /*data_wait_seconds*/) {}
  virtual void eval_done(const EvalReport& /*report*/) {}
  virtual void merged(bool /*optimizer_reset*/) {}
  virtual void trainable_changed(int64_t /*trainable_parameters*/) {}
  virtual void checkpoint_saved(double /*seconds*/) {}
  // Singular values of (W_now - W_start) above the threshold, for the sampled layer (at merges).
  virtual void update_rank(const std::string& /*layer*/, int64_t /*rank*/) {}
  // The gradient all-reduce of one step took `seconds` (data parallelism only).
  virtual void gradient_sync_done(double /*seconds*/) {}
  // The process group ran one collective of `kind` ("all_reduce", "reduce_scatter", "all_gather"):
  // `bytes` of payload, of which this rank sent `sent_bytes` (see CollectiveTraffic in
  // worker/distributed/process_group.h). Gradients, the sharded optimizer's parameter exchange,
  // evaluation sums, checkpoint records.
  virtual void collective_sent(const char* /*kind*/, int64_t /*bytes*/, int64_t /*sent_bytes*/) {}
};

}  // namespace relora::train
