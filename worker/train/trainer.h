// The training loop: one job's model, optimizer, schedule and data, driven step by step.
//
// The loop asks a CycleController what to do at every phase boundary (low-rank start, ReLoRA
// cycle end, job end) and applies the answer at exactly that step; between boundaries it runs
// plain optimizer steps. Data parallelism enters only through DataParallel (worker/distributed
// implements it over c10d): it supplies the optimizer, replicated or sharded, and the loop stays
// single-rank code; the model never sees ranks.
#pragma once

#include <cstdint>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Generator.h>
#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "relora/v1/job.pb.h"
#include "worker/model/llama.h"
#include "worker/train/adamw.h"
#include "worker/train/checkpoint.h"
#include "worker/train/data_parallel.h"
#include "worker/train/optimizer.h"
#include "worker/train/cycle_controller.h"
#include "worker/train/data_pipeline.h"
#include "worker/train/evaluator.h"
#include "worker/train/metrics_log.h"
#include "worker/train/schedule.h"
#include "worker/train/spectrum_probe.h"
#include "worker/train/train_metrics.h"
#include "worker/train/train_state.h"

namespace relora::train {

struct StepReport {
  int64_t step = 0;  // steps completed
  int64_t total_steps = 0;
  double loss = 0;
  double lr = 0;
  double grad_norm = 0;
  double tokens_per_second = 0;  // this step, all ranks together
  double step_seconds = 0;
  int64_t cycle = 0;
  int64_t merges = 0;
  int64_t optimizer_resets = 0;
  double eta_seconds = 0;
  // Tokens trained so far per data source (DataPipeline::source_names() order), all ranks:
  // a function of the step (the sample order is), so it is right after a resume too.
  std::vector<std::pair<std::string, int64_t>> source_tokens;
  // The CUDA caching allocator's bytes after the step (-1 on the CPU): allocated, reserved, and
  // the peak allocated since the process started.
  int64_t device_allocated_bytes = -1;
  int64_t device_reserved_bytes = -1;
  int64_t device_peak_bytes = -1;
};

struct TrainSummary {
  std::string mode;
  bool completed = false;  // false when stopped early (cancelled or stop_after_step)
  int64_t steps = 0;       // steps completed
  int64_t merges = 0;
  int64_t optimizer_resets = 0;
  double initial_train_loss = 0;  // mean of the first (up to) 10 steps of this process
  double final_train_loss = 0;    // mean of the last (up to) 10 steps
  double eval_loss = 0;
  double eval_perplexity = 0;
  double tokens_per_second = 0;  // training steps only, all ranks together
  int64_t peak_rss_bytes = 0;
  int64_t trainable_parameters = 0;
  int64_t total_parameters = 0;
  double train_seconds = 0;
  std::string checkpoint;  // newest checkpoint directory
  std::string export_dir;
  std::vector<std::pair<int64_t, double>> losses;  // (step index, loss) run by this process
  nlohmann::json to_json() const;
};

struct TrainerOptions {
  int rank = 0;
  int world = 1;
  CycleController* controller = nullptr;  // nullptr: a LocalCycleController from the spec
  DataParallel* parallel = nullptr;       // nullptr: single process (rank 0 of 1)
  bool resume = true;                     // continue from the newest checkpoint in checkpoint.dir
  int64_t stop_after_step = -1;           // stop (after a checkpoint) once this many steps are done
  torch::Device device = torch::kCPU;     // where the model trains (cuda:N in GPU builds)
  bool export_model = true;               // write a Hugging Face export when the job completes
  bool save_checkpoints = true;           // false: benchmarks (nothing written to checkpoint.dir)
  TrainMetrics* metrics = nullptr;         // Prometheus in workers; nullptr: none
  // The layer whose total update (W_now - W_start of the low-rank phase) is analysed at merges.
  std::string spectrum_layer = "model.layers.0.self_attn.q_proj";
  // Projections whose full singular-value spectra are written to <checkpoint.dir>/update_spectrum.json
  // when the job completes (rank 0): one attention and one MLP matrix, as in the paper's analysis
  // (bench/quality plots them). Names that the model lacks are skipped.
  std::vector<std::string> spectrum_export_layers = {"model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj"};
  std::function<void(const StepReport&)> on_step;
  std::function<void(const EvalReport&)> on_eval;
  // Phase boundaries, merges and checkpoints, as one-line human-readable events.
  std::function<void(int64_t step, const std::string& event)> on_event;
  // A checkpoint was committed (rank 0): its directory.
  std::function<void(int64_t step, const std::string& path)> on_checkpoint;
};

class Trainer {
 public:
  Trainer(relora::v1::JobSpec spec, TrainerOptions options);
  ~Trainer();

  TrainSummary run();

  model::Llama& model() { return model_; }
  const Optimizer& optimizer() const { return *optimizer_; }
  const DataPipeline& data() const { return *data_; }
  int64_t step() const { return counters_.step; }

 private:
  bool low_rank_mode() const { return plan_.mode() != TrainMode::kFull; }
  void register_trainable_parameters();
  void enable_low_rank(uint64_t seed);
  // The low-rank branch the job asks for; under bf16 the frozen W is stored in bf16 (the factors,
  // their gradients and moments stay fp32).
  model::LoraOptions lora_options() const;
  void apply_boundary(const Boundary& boundary);
  struct StepResult {
    double loss = 0;  // mean over micro-batches and ranks
    double grad_norm = 0;
    double data_seconds = 0;  // assembling batches
  };
  TrainStaticInfo static_info();
  void report_update_rank();
  StepResult train_step();
  std::vector<ShardFile> write_rank_shards(const NamedTensors& own);
  EvalReport evaluate();
  void save_checkpoint();
  bool resume_from_checkpoint();
  void load_warm_start_weights(const std::string& path);
  void event(const std::string& text);

  relora::v1::JobSpec spec_;
  TrainerOptions options_;
  ReloraPlan plan_;    // where the boundaries are (the coordinator reads the same plan)
  bool bf16_ = false;  // training.dtype == bf16: the forward and backward under bf16 autocast
  std::unique_ptr<CycleController> own_controller_;
  CycleController* controller_;
  std::unique_ptr<DataPipeline> data_;
  model::Llama model_{nullptr};
  std::unique_ptr<Optimizer> optimizer_;
  bool sharded_optimizer_ = false;  // each rank checkpoints its own optimizer state
  bool frozen_sharded_ = false;     // cluster.shard_frozen_weights: each rank keeps rows of every frozen W
  JobSchedule schedule_;
  CheckpointStore store_;
  data::BatchGeometry geometry_;
  torch::Tensor batch_;  // [micro_batch, seq_len] int64 on the host (pinned for GPUs), reused
  // This rank's dropout masks, on the model's device (not the process-wide generator: ranks may be
  // threads of one process). Reseeded before every micro-batch from the job seed and the
  // micro-batch's first sample, so a sample gets the same masks whatever the world size, the
  // accumulation and any resume: nothing of it needs checkpointing.
  at::Generator dropout_gen_;

  TrainCounters counters_;  // step, merges, resets, ... (checkpointed with the TrainState)
  UpdateSpectrumProbe probe_;
  std::unique_ptr<TrainState> state_;  // what checkpoints read and write
  std::unique_ptr<Evaluator> evaluator_;
  std::string last_checkpoint_;
  // Observers of the run: the caller's metrics (Prometheus in workers) and, on rank 0, the
  // metrics log.
  std::unique_ptr<MetricsLog> metrics_log_;
  TrainObservers observers_;
  TrainMetrics* monitor_ = &observers_;
};

}  // namespace relora::train
