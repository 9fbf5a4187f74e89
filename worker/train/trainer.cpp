#include "worker/train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <numeric>
#include <stdexcept>

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "common/cycle_plan.h"
#include "common/failpoint.h"
#include "common/job_spec.h"
#include "worker/model/torch_compat.h"
#include "worker/train/export.h"
#include "worker/train/hf_config.h"
#include "worker/train/hf_weights.h"
#include "worker/train/local_optimizer.h"
#include "worker/train/model_state.h"
#include "worker/train/runtime.h"

namespace relora::train {
namespace {

using Clock = std::chrono::steady_clock;

// Keeps dropout seeds apart from the merges' re-init seeds (both mix the job seed with a number).
constexpr uint64_t kDropoutSeedSalt = 0x6a09e667f3bcc909ULL;

double mean_of(const std::vector<std::pair<int64_t, double>>& v, size_t first, size_t last) {
  if (first >= last) return 0.0;
  double s = 0;
  for (size_t i = first; i < last; ++i) s += v[i].second;
  return s / static_cast<double>(last - first);
}

}  // namespace

nlohmann::json TrainSummary::to_json() const {
  return {{"mode", mode},
          {"completed", completed},
          {"steps", steps},
          {"merges", merges},
          {"optimizer_resets", optimizer_resets},
          {"initial_train_loss", initial_train_loss},
          {"final_train_loss", final_train_loss},
          {"eval_loss", eval_loss},
          {"eval_perplexity", eval_perplexity},
          {"tokens_per_second", tokens_per_second},
          {"peak_rss_bytes", peak_rss_bytes},
          {"trainable_parameters", trainable_parameters},
          {"total_parameters", total_parameters},
          {"train_seconds", train_seconds},
          {"checkpoint", checkpoint},
          {"export_dir", export_dir}};
}

Trainer::Trainer(relora::v1::JobSpec spec, TrainerOptions options)
    : spec_(apply_hf_config(std::move(spec))),  // model.from_hf: the shape from its config.json
      options_(std::move(options)),
      plan_(spec_),
      bf16_(spec_.training().dtype() == "bf16"),
      schedule_(spec_),
      store_(spec_.checkpoint().dir(), spec_.checkpoint().keep()),
      probe_(options_.spectrum_layer, options_.spectrum_export_layers) {
  observers_.add(options_.metrics);
  if (options_.rank == 0) {
    metrics_log_ = std::make_unique<MetricsLog>(spec_.checkpoint().dir() + "/metrics.jsonl");
    observers_.add(metrics_log_.get());
  }
  if (options_.controller) {
    controller_ = options_.controller;
  } else {
    own_controller_ = std::make_unique<LocalCycleController>(spec_);
    controller_ = own_controller_.get();
  }
  geometry_.micro_batch = spec_.training().micro_batch_size();
  geometry_.grad_accum = spec_.training().grad_accum_steps();
  geometry_.world = options_.world;

  data_ = std::make_unique<DataPipeline>(spec_);

  const uint64_t seed = spec_.training().seed();
  model_ = model::Llama(model_config(spec_));
  model_->init_weights(seed);
  model_->to(options_.device);
  model_->train();
  model_->set_activation_checkpointing(spec_.training().activation_checkpointing());
  dropout_gen_ = model::compat::make_device_generator(options_.device, seed);
  for (auto& [name, linear] : model_->relora_linears()) linear->set_dropout_generator(dropout_gen_);

  const auto& tr = spec_.training();
  const AdamWOptions adamw{tr.adam_beta1(), tr.adam_beta2(), tr.adam_eps(), tr.weight_decay()};
  if (options_.parallel) {
    if (options_.parallel->rank() != options_.rank || options_.parallel->world() != options_.world)
      throw std::invalid_argument("trainer: options say rank " + std::to_string(options_.rank) + " of " +
                                  std::to_string(options_.world) + ", the data-parallel group rank " +
                                  std::to_string(options_.parallel->rank()) + " of " +
                                  std::to_string(options_.parallel->world()));
    sharded_optimizer_ = spec_.cluster().shard_optimizer() && options_.world > 1;
    optimizer_ = options_.parallel->make_optimizer(adamw, sharded_optimizer_);
  } else {
    if (options_.world != 1) throw std::invalid_argument("trainer: a world of several ranks needs a DataParallel");
    optimizer_ = std::make_unique<LocalOptimizer>(adamw);
  }
  if (!spec_.relora().warm_start_checkpoint().empty()) load_warm_start_weights(spec_.relora().warm_start_checkpoint());
  // Every rank reads the Hugging Face weights itself, as it reads a warm-start checkpoint: no
  // broadcast, and the same bytes give the same parameters. A resumed job reads them too (they are
  // W_init of the update-spectrum reference below); its own checkpoint then replaces them.
  if (!spec_.model().from_hf().empty()) {
    const auto hf = load_hf_weights(model_, spec_.model().from_hf());
    spdlog::info("initial weights: {} tensors, {} parameters from {} ({} file(s){})", hf.tensors, hf.parameters,
                 spec_.model().from_hf(), hf.files.size(), hf.tied ? ", tied embeddings untied" : "");
  }
  // Frozen-weight sharding takes hold when W freezes (the low-rank start, or a resume into it).
  frozen_sharded_ = spec_.cluster().shard_frozen_weights() && options_.world > 1;
  if (frozen_sharded_) model_->shard_frozen_weights(options_.parallel->frozen_weight_shards());
  register_trainable_parameters();
  state_ = std::make_unique<TrainState>(model_, *optimizer_, probe_, counters_);
  // The start of the total update W_final - W_init. Taken here, before any resume, so that a resumed
  // process rebuilds the same reference from the seed (or the warm-start checkpoint).
  probe_.at_job_start(model_);
  EvalSettings eval;
  eval.max_tokens = spec_.eval().max_tokens();
  eval.micro_batch = geometry_.micro_batch;
  eval.rank = options_.rank;
  eval.world = options_.world;
  eval.device = options_.device;
  eval.bf16 = bf16_;
  eval.equal_forwards = frozen_sharded_;  // every forward gathers: all ranks must run as many
  evaluator_ = std::make_unique<Evaluator>(data_->validation(), eval, options_.parallel);
  batch_ = torch::empty({geometry_.micro_batch, data_->seq_len()},
                        torch::TensorOptions(torch::kInt64).pinned_memory(options_.device.is_cuda()));
}

Trainer::~Trainer() = default;

void Trainer::event(const std::string& text) {
  spdlog::info("[step {}] {}", counters_.step, text);
  if (options_.on_event) options_.on_event(counters_.step, text);
}

// Keeps the optimizer's parameter list equal to the model's trainable parameters: new ones get
// fresh state, ones that stopped training (W at the low-rank start) are dropped, and the others
// (embeddings, norms, head) keep their moments and step counters.
void Trainer::register_trainable_parameters() { optimizer_->set_parameters(trainable_parameters(model_)); }

model::LoraOptions Trainer::lora_options() const {
  const auto& rl = spec_.relora();
  model::LoraOptions options{rl.rank(), rl.alpha(), rl.dropout()};
  if (bf16_) options.frozen_dtype = torch::kBFloat16;
  return options;
}

void Trainer::enable_low_rank(uint64_t seed) {
  model_->enable_lora(lora_options(), seed);
  register_trainable_parameters();
  // A bf16 W frees its fp32 copy, and the warm start's moments of W go: gigabytes at 1b3.
  release_free_host_memory();
  monitor_->trainable_changed(model_->count_trainable_parameters());
  probe_.at_low_rank_start(model_);
}

// The paper's analysis, live: how many directions the merged updates of one layer span so far.
void Trainer::report_update_rank() {
  const auto rank = probe_.update_rank(model_);
  if (!rank) return;
  monitor_->update_rank(probe_.layer(), *rank);
  event("update rank of " + probe_.layer() + ": " + std::to_string(*rank) + " singular values above 1% of the largest");
}

// Model FLOPs per token of full-rank training, the usual MFU numerator (PaLM, appendix B):
// 6 FLOPs per weight (forward, input gradient, weight gradient) for the non-embedding weights and
// the head, plus 12·L·T·C for attention scores and values.
TrainStaticInfo Trainer::static_info() {
  TrainStaticInfo info;
  const auto& c = model_->config();
  double weights = static_cast<double>(c.vocab_size * c.hidden_size);  // lm_head
  for (auto& [name, linear] : model_->relora_linears())
    weights += static_cast<double>(linear->in_features() * linear->out_features());
  info.total_steps = spec_.training().steps();
  info.trainable_parameters = model_->count_trainable_parameters();
  info.total_parameters = model_->count_model_parameters();
  info.tokens_per_step_per_rank = geometry_.micro_batch * geometry_.grad_accum * data_->seq_len();
  info.model_flops_per_token =
      6.0 * weights + 12.0 * static_cast<double>(c.num_layers * data_->seq_len() * c.hidden_size);
  if (options_.metrics) {
    info.peak_flops = measure_matmul_peak_flops(bf16_ ? torch::kBFloat16 : torch::kFloat32, options_.device);
  }
  return info;
}

void Trainer::load_warm_start_weights(const std::string& path) {
  Checkpoint ckpt = load_checkpoint(path);
  load_model_tensors(model_, ckpt, {}, /*allow_low_rank=*/false);
  spdlog::info("warm start: loaded full-rank weights from {} (step {})", ckpt.path, ckpt.step);
}

void Trainer::apply_boundary(const Boundary& boundary) {
  CycleCommand cmd = controller_->at_boundary(boundary);
  if (cmd.enable_low_rank) {
    enable_low_rank(cmd.seed);
    event("low-rank phase starts: rank " + std::to_string(spec_.relora().rank()) + ", " +
          std::to_string(model_->count_trainable_parameters()) + " trainable parameters");
  }
  // The learning rate re-warms from here only when the command says so (the coordinator decides;
  // a command without it keeps the cosine going).
  if (cmd.rewarm) counters_.rewarm_step = boundary.step;
  if (cmd.merge) {
    model_->merge_and_reinit(cmd.seed);
    ++counters_.merges;
    std::string text = "merge " + std::to_string(counters_.merges) + " (cycle " + std::to_string(boundary.cycle) + ")";
    if (cmd.reset != ResetMode::kNone) {
      ResetStats stats = optimizer_->reset_low_rank_states(cmd.reset, cmd.prune_ratio, cmd.seed);
      ++counters_.optimizer_resets;
      char buf[128];
      std::snprintf(buf, sizeof(buf), "; optimizer reset %s p=%.3f zeroed %.1f%% of low-rank moments",
                    reset_mode_name(cmd.reset), cmd.prune_ratio, 100.0 * stats.fraction());
      text += buf;
    }
    event(text);
    monitor_->merged(cmd.reset != ResetMode::kNone);
    report_update_rank();
  }
  // A stop (cancel, shutdown) stands in for the boundary's own command, which was never applied:
  // leave the boundary pending, so that a resume from the checkpoint saved below asks for it
  // again instead of skipping a merge.
  if (!cmd.stop) counters_.last_boundary_step = boundary.step;
  if (cmd.evaluate) evaluate();
  if (cmd.checkpoint) save_checkpoint();
  controller_->acknowledge(boundary, controller_->wants_parameter_checksum() ? parameter_checksum(model_) : "");
  if (cmd.stop) throw std::runtime_error("stopped by the controller");
}

// One optimizer step: micro-batches (forward, backward), gradient sync, clip, update.
Trainer::StepResult Trainer::train_step() {
  const int64_t accum = geometry_.grad_accum;
  double loss_sum = 0.0;
  std::vector<int64_t> tokens;
  double data_seconds = 0;
  // ---- step -------------------------------------------------------------------------------
  {
    Bf16Autocast autocast(bf16_, options_.device);
    for (int64_t k = 0; k < accum; ++k) {
      const auto data_start = Clock::now();
      auto samples = data::micro_batch_samples(geometry_, counters_.step, k, options_.rank);
      data::gather_blocks(data_->train_sources(), data_->order(), samples, tokens);
      {
        std::lock_guard<std::mutex> lock(dropout_gen_.mutex());
        dropout_gen_.set_current_seed(boundary_seed(spec_.training().seed() ^ kDropoutSeedSalt, samples.front()));
      }
      std::memcpy(batch_.data_ptr<int64_t>(), tokens.data(), tokens.size() * sizeof(int64_t));
      data_seconds += std::chrono::duration<double>(Clock::now() - data_start).count();
      auto loss = model_->loss(batch_.to(options_.device, /*non_blocking=*/true));
      if (k == accum - 1) optimizer_->before_last_backward();  // gradient sync may start in this backward
      (loss / static_cast<double>(accum)).backward();
      loss_sum += loss.item<double>();
    }
  }
  // Gradient synchronisation (if several ranks), clipping (clip_grad_norm_ folded into the fused
  // AdamW pass: no separate rescaling of the gradients) and the update: the optimizer's.
  const double max_norm = spec_.training().grad_clip() > 0 ? spec_.training().grad_clip() : 1e30;
  const OptimizerStepResult update =
      optimizer_->step(loss_sum / static_cast<double>(accum), schedule_.lr(counters_.step, counters_.rewarm_step), max_norm);
  if (options_.parallel) monitor_->gradient_sync_done(update.communication_seconds);
  synchronize_device(options_.device);  // step time must include the queued GPU work
  // ---- end of step ------------------------------------------------------------------------
  return {update.loss, update.grad_norm, data_seconds};
}

EvalReport Trainer::evaluate() {
  const EvalReport report = evaluator_->run(model_, counters_.step);
  spdlog::info("eval  step {} | loss {:.4f} | perplexity {:.2f} | {} tokens", report.step, report.loss,
               report.perplexity, report.tokens);
  if (options_.on_eval) options_.on_eval(report);
  monitor_->eval_done(report);
  return report;
}

TrainSummary Trainer::run() {
  const int64_t total = spec_.training().steps();
  if (options_.resume) resume_from_checkpoint();

  TrainSummary summary;
  summary.mode = spec_.relora().mode();
  const int64_t tokens_per_step = geometry_.global_batch() * data_->seq_len();
  const int64_t log_every = spec_.training().log_every_steps() > 0
                                ? spec_.training().log_every_steps()
                                : std::max<int64_t>(1, std::min<int64_t>(100, total / 50));
  const int64_t eval_every = spec_.eval().every_steps();
  const int64_t ckpt_every = spec_.checkpoint().every_steps();
  double train_seconds = 0;
  int64_t last_saved = last_checkpoint_.empty() ? -1 : counters_.step;
  bool stopped = false;

  monitor_->job_started(static_info());
  spdlog::info("training {} ({} mode): {} steps, {} trainable of {} parameters, {} tokens per step", spec_.name(),
               summary.mode, total, model_->count_trainable_parameters(), model_->count_model_parameters(),
               tokens_per_step);
  while (counters_.step < total) {
    if (const auto planned = plan_.boundary_at(counters_.step); planned && planned->step != counters_.last_boundary_step)
      apply_boundary({planned->kind, planned->step, planned->cycle});
    if (controller_->stop_requested()) {
      event("stop requested");
      stopped = true;
      break;
    }
    if (options_.stop_after_step >= 0 && counters_.step >= options_.stop_after_step) {
      stopped = true;
      break;
    }
    hang_at_failpoint("train-hang", counters_.step);  // tests of the stall watchdog
    const auto t0 = Clock::now();
    const StepResult result = train_step();
    const double loss = result.loss;
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    train_seconds += seconds;
    const double lr = schedule_.lr(counters_.step, counters_.rewarm_step);
    summary.losses.emplace_back(counters_.step, loss);
    ++counters_.step;
    if (!std::isfinite(loss)) throw std::runtime_error("training loss is not finite at step " + std::to_string(counters_.step));

    StepReport report;
    report.step = counters_.step;
    report.total_steps = total;
    report.loss = loss;
    report.grad_norm = result.grad_norm;
    report.lr = lr;
    report.step_seconds = seconds;
    report.tokens_per_second = tokens_per_step / seconds;
    report.cycle = schedule_.cycle(counters_.step - 1);
    report.merges = counters_.merges;
    report.optimizer_resets = counters_.optimizer_resets;
    if (options_.device.is_cuda()) {
      const DeviceMemory memory = device_memory(options_.device);
      report.device_allocated_bytes = memory.allocated;
      report.device_reserved_bytes = memory.reserved;
      report.device_peak_bytes = memory.peak_allocated;
    }
    const auto samples = data_->order().counts_before(counters_.step * geometry_.global_batch());
    for (size_t i = 0; i < samples.size(); ++i)
      report.source_tokens.emplace_back(data_->source_names()[i], samples[i] * data_->seq_len());
    report.eta_seconds = train_seconds / static_cast<double>(summary.losses.size()) * static_cast<double>(total - counters_.step);
    if (counters_.step % log_every == 0 || counters_.step == total || counters_.step == 1)
      spdlog::info("step {}/{} | loss {:.4f} | lr {:.2e} | {} tok/s | cycle {} | merges {} | eta {}", counters_.step, total,
                   loss, lr, format_count(report.tokens_per_second), report.cycle, counters_.merges,
                   format_duration(report.eta_seconds));
    if (options_.on_step) options_.on_step(report);
    monitor_->step_done(report, result.data_seconds);

    if (eval_every > 0 && counters_.step % eval_every == 0 && counters_.step < total) evaluate();
    if ((ckpt_every > 0 && counters_.step % ckpt_every == 0) || counters_.step == total) {
      save_checkpoint();
      last_saved = counters_.step;
    }
  }
  if (stopped && last_saved != counters_.step) save_checkpoint();

  const auto& losses = summary.losses;
  summary.completed = counters_.step >= total;
  summary.steps = counters_.step;
  summary.merges = counters_.merges;
  summary.optimizer_resets = counters_.optimizer_resets;
  summary.initial_train_loss = mean_of(losses, 0, std::min<size_t>(10, losses.size()));
  summary.final_train_loss = mean_of(losses, losses.size() - std::min<size_t>(10, losses.size()), losses.size());
  summary.train_seconds = train_seconds;
  summary.tokens_per_second = train_seconds > 0 ? tokens_per_step * static_cast<double>(losses.size()) / train_seconds : 0;
  summary.trainable_parameters = model_->count_trainable_parameters();
  summary.total_parameters = model_->count_model_parameters();
  if (summary.completed) {
    const auto end = plan_.boundary_at(counters_.step);  // the job end
    controller_->at_boundary({end->kind, end->step, end->cycle});
    EvalReport final_eval = evaluate();
    summary.eval_loss = final_eval.loss;
    summary.eval_perplexity = final_eval.perplexity;
    if (options_.save_checkpoints && probe_.writes_spectra()) {
      // <checkpoint.dir>/update_spectrum.json: the singular values of each export layer's total
      // update since the job start and, in the low-rank modes, since the low-rank start (LoRA's has
      // rank <= r, ReLoRA's can exceed it).
      const std::string path = spec_.checkpoint().dir() + "/update_spectrum.json";
      probe_.write_spectra(model_, options_.rank == 0 ? path : "",
                           {{"mode", spec_.relora().mode()},
                            {"step", counters_.step},
                            {"lora_rank", low_rank_mode() ? spec_.relora().rank() : 0},
                            {"low_rank_start_step", low_rank_mode() ? schedule_.low_rank_start() : counters_.step},
                            {"merges", counters_.merges}});
      if (options_.rank == 0) event("update spectra written to " + path);
    }
    if (options_.export_model && options_.rank == 0) {
      auto info = export_hf_model(model_, data_->tokenizer_path(), data_->seq_len(),
                                  spec_.checkpoint().dir() + "/export");
      summary.export_dir = info.dir;
      event("exported merged model (" + std::to_string(info.parameters) + " parameters) to " + info.dir);
    } else if (options_.export_model && frozen_sharded_) {
      model_->visit_export_state([](const std::string&, const torch::Tensor&) {});  // rank 0's gathers
    }
  }
  summary.checkpoint = last_checkpoint_;
  summary.peak_rss_bytes = peak_rss_bytes();
  return summary;
}

}  // namespace relora::train
