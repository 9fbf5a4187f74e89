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
#include "common/job_spec.h"
#include "worker/model/torch_compat.h"
#include "worker/train/export.h"
#include "worker/train/local_optimizer.h"
#include "worker/train/model_state.h"
#include "worker/train/runtime.h"
#include "worker/train/update_spectrum.h"

namespace relora::train {
namespace {

using Clock = std::chrono::steady_clock;

// Keeps dropout seeds apart from the merges' re-init seeds (both mix the job seed with a number).
constexpr uint64_t kDropoutSeedSalt = 0x6a09e667f3bcc909ULL;

bool is_low_rank_factor(const std::string& name) {
  return name.find("lora_A") != std::string::npos || name.find("lora_B") != std::string::npos;
}

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
    : spec_(std::move(spec)),
      options_(std::move(options)),
      plan_(spec_),
      bf16_(spec_.training().dtype() == "bf16"),
      schedule_(spec_),
      store_(spec_.checkpoint().dir(), spec_.checkpoint().keep()) {
  monitor_ = options_.metrics ? options_.metrics : &no_metrics_;
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
  register_trainable_parameters();
  // The start of the total update W_final - W_init. Taken here, before any resume, so that a resumed
  // process rebuilds the same reference from the seed (or the warm-start checkpoint).
  initial_weights_ = export_layer_weights();
  batch_ = torch::empty({geometry_.micro_batch, data_->seq_len()},
                        torch::TensorOptions(torch::kInt64).pinned_memory(options_.device.is_cuda()));
}

Trainer::~Trainer() = default;

void Trainer::event(const std::string& text) {
  spdlog::info("[step {}] {}", step_, text);
  if (options_.on_event) options_.on_event(step_, text);
}

// Keeps the optimizer's parameter list equal to the model's trainable parameters: new ones get
// fresh state, ones that stopped training (W at the low-rank start) are dropped, and the others
// (embeddings, norms, head) keep their moments and step counters.
void Trainer::register_trainable_parameters() {
  std::vector<TrainableParameter> params;
  for (auto& [name, param] : model_->trainable_parameters()) params.push_back({name, param, is_low_rank_factor(name)});
  optimizer_->set_parameters(params);
}

void Trainer::enable_low_rank(uint64_t seed) {
  const auto& rl = spec_.relora();
  model_->enable_lora(model::LoraOptions{rl.rank(), rl.alpha(), rl.dropout()}, seed);
  register_trainable_parameters();
  monitor_->trainable_changed(model_->count_trainable_parameters());
  if (auto* w = spectrum_weight()) spectrum_reference_ = w->detach().clone();
  low_rank_start_weights_ = export_layer_weights();
}

torch::Tensor* Trainer::spectrum_weight() {
  for (auto& [name, linear] : model_->relora_linears())
    if (name == options_.spectrum_layer) return &linear->weight;
  return nullptr;
}

// W + s·B·A (what an export holds) of the layers in options_.spectrum_export_layers, on the host.
std::map<std::string, torch::Tensor> Trainer::export_layer_weights() {
  std::map<std::string, torch::Tensor> out;
  for (auto& [name, linear] : model_->relora_linears()) {
    const auto& wanted = options_.spectrum_export_layers;
    if (std::find(wanted.begin(), wanted.end(), name) != wanted.end()) out[name] = linear->merged_weight().cpu();
  }
  return out;
}

// <checkpoint.dir>/update_spectrum.json: the singular values of each export layer's total update
// since the job start and, in the low-rank modes, since the low-rank start (the update the adapters
// made: LoRA's has rank <= r, ReLoRA's can exceed it). Written to a temporary name, then renamed.
void Trainer::write_update_spectra() {
  const auto to_json = [](const UpdateSpectrum& s) {
    return nlohmann::json{{"rank_above_threshold", s.rank_above_threshold},
                          {"threshold", s.threshold},
                          {"singular_values", s.singular_values}};
  };
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& [name, now] : export_layer_weights()) {
    nlohmann::json layer = {{"name", name}, {"shape", {now.size(0), now.size(1)}}};
    if (auto it = initial_weights_.find(name); it != initial_weights_.end())
      layer["since_init"] = to_json(update_spectrum(now, it->second));
    if (auto it = low_rank_start_weights_.find(name); it != low_rank_start_weights_.end())
      layer["since_low_rank_start"] = to_json(update_spectrum(now, it->second));
    layers.push_back(std::move(layer));
  }
  nlohmann::json doc = {{"mode", spec_.relora().mode()},
                        {"step", step_},
                        {"lora_rank", low_rank_mode() ? spec_.relora().rank() : 0},
                        {"low_rank_start_step", low_rank_mode() ? schedule_.low_rank_start() : step_},
                        {"merges", merges_},
                        {"relative_threshold", kRelativeRankThreshold},
                        {"layers", layers}};
  const std::string path = spec_.checkpoint().dir() + "/update_spectrum.json";
  std::filesystem::create_directories(spec_.checkpoint().dir());
  std::ofstream(path + ".tmp", std::ios::trunc) << doc.dump(1) << "\n";
  std::filesystem::rename(path + ".tmp", path);
  event("update spectra written to " + path);
}

// The paper's analysis, live: how many directions the merged updates of one layer span so far.
void Trainer::report_update_rank() {
  auto* w = spectrum_weight();
  if (!w || !spectrum_reference_.defined()) return;
  const auto spectrum = update_spectrum(*w, spectrum_reference_);
  monitor_->update_rank(options_.spectrum_layer, spectrum.rank_above_threshold);
  event("update rank of " + options_.spectrum_layer + ": " + std::to_string(spectrum.rank_above_threshold) +
        " singular values above 1% of the largest");
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
  if (cmd.rewarm) rewarm_step_ = boundary.step;
  if (cmd.merge) {
    model_->merge_and_reinit(cmd.seed);
    ++merges_;
    std::string text = "merge " + std::to_string(merges_) + " (cycle " + std::to_string(boundary.cycle) + ")";
    if (cmd.reset != ResetMode::kNone) {
      ResetStats stats = optimizer_->reset_low_rank_states(cmd.reset, cmd.prune_ratio, cmd.seed);
      ++optimizer_resets_;
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
  if (!cmd.stop) last_boundary_step_ = boundary.step;
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
      auto samples = data::micro_batch_samples(geometry_, step_, k, options_.rank);
      data::gather_blocks(data_->train(), data_->order(), samples, tokens);
      {
        std::lock_guard<std::mutex> lock(dropout_gen_.mutex());
        dropout_gen_.set_current_seed(boundary_seed(spec_.training().seed() ^ kDropoutSeedSalt, samples.front()));
      }
      std::memcpy(batch_.data_ptr<int64_t>(), tokens.data(), tokens.size() * sizeof(int64_t));
      data_seconds += std::chrono::duration<double>(Clock::now() - data_start).count();
      auto loss = model_->loss(batch_.to(options_.device, /*non_blocking=*/true));
      (loss / static_cast<double>(accum)).backward();
      loss_sum += loss.item<double>();
    }
  }
  // Gradient synchronisation (if several ranks), clipping (clip_grad_norm_ folded into the fused
  // AdamW pass: no separate rescaling of the gradients) and the update: the optimizer's.
  const double max_norm = spec_.training().grad_clip() > 0 ? spec_.training().grad_clip() : 1e30;
  const OptimizerStepResult update =
      optimizer_->step(loss_sum / static_cast<double>(accum), schedule_.lr(step_, rewarm_step_), max_norm);
  if (options_.parallel) monitor_->gradient_sync_done(update.communication_seconds);
  synchronize_device(options_.device);  // step time must include the queued GPU work
  // ---- end of step ------------------------------------------------------------------------
  return {update.loss, update.grad_norm, data_seconds};
}

EvalReport Trainer::evaluate() {
  EvalReport report;
  report.step = step_;
  const auto& val = data_->validation();
  const int64_t seq = data_->seq_len();
  const int64_t max_blocks = std::max<int64_t>(1, spec_.eval().max_tokens() / seq);
  const int64_t blocks = std::min<int64_t>(val.num_blocks, max_blocks);
  torch::NoGradGuard no_grad;
  model_->eval();
  double nll = 0;
  int64_t count = 0;
  {
    Bf16Autocast autocast(bf16_, options_.device);
    const int64_t mb = geometry_.micro_batch;
    // Ranks take interleaved batches of the validation blocks; sums are added across ranks.
    for (int64_t first = options_.rank * mb; first < blocks; first += mb * options_.world) {
      const int64_t n = std::min(mb, blocks - first);
      auto x = torch::empty({n, seq}, torch::kInt64);
      auto* dst = x.data_ptr<int64_t>();
      for (int64_t i = 0; i < n; ++i) {
        const uint32_t* src = val.block(first + i);
        for (int64_t j = 0; j < seq; ++j) dst[i * seq + j] = src[j];
      }
      auto [s, c] = model_->nll_sum(x.to(options_.device));
      nll += s;
      count += c;
    }
  }
  model_->train();
  if (options_.parallel) {
    std::vector<torch::Tensor> sums = {
        torch::tensor({nll, static_cast<double>(count)}, torch::kFloat64).to(options_.device)};
    options_.parallel->all_reduce_sum(sums);
    auto host = sums[0].cpu();
    nll = host[0].item<double>();
    count = static_cast<int64_t>(std::llround(host[1].item<double>()));
  }
  report.tokens = count;
  report.loss = count > 0 ? nll / static_cast<double>(count) : 0.0;
  report.perplexity = std::exp(report.loss);
  spdlog::info("eval  step {} | loss {:.4f} | perplexity {:.2f} | {} tokens", step_, report.loss,
               report.perplexity, count);
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
  int64_t last_saved = last_checkpoint_.empty() ? -1 : step_;
  bool stopped = false;

  monitor_->job_started(static_info());
  spdlog::info("training {} ({} mode): {} steps, {} trainable of {} parameters, {} tokens per step", spec_.name(),
               summary.mode, total, model_->count_trainable_parameters(), model_->count_model_parameters(),
               tokens_per_step);
  while (step_ < total) {
    if (const auto planned = plan_.boundary_at(step_); planned && planned->step != last_boundary_step_)
      apply_boundary({planned->kind, planned->step, planned->cycle});
    if (controller_->stop_requested()) {
      event("stop requested");
      stopped = true;
      break;
    }
    if (options_.stop_after_step >= 0 && step_ >= options_.stop_after_step) {
      stopped = true;
      break;
    }
    const auto t0 = Clock::now();
    const StepResult result = train_step();
    const double loss = result.loss;
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    train_seconds += seconds;
    const double lr = schedule_.lr(step_, rewarm_step_);
    summary.losses.emplace_back(step_, loss);
    ++step_;
    if (!std::isfinite(loss)) throw std::runtime_error("training loss is not finite at step " + std::to_string(step_));

    StepReport report;
    report.step = step_;
    report.total_steps = total;
    report.loss = loss;
    report.grad_norm = result.grad_norm;
    report.lr = lr;
    report.step_seconds = seconds;
    report.tokens_per_second = tokens_per_step / seconds;
    report.cycle = schedule_.cycle(step_ - 1);
    report.merges = merges_;
    report.optimizer_resets = optimizer_resets_;
    if (options_.device.is_cuda()) {
      const DeviceMemory memory = device_memory(options_.device);
      report.device_allocated_bytes = memory.allocated;
      report.device_reserved_bytes = memory.reserved;
      report.device_peak_bytes = memory.peak_allocated;
    }
    report.eta_seconds = train_seconds / static_cast<double>(summary.losses.size()) * static_cast<double>(total - step_);
    if (step_ % log_every == 0 || step_ == total || step_ == 1)
      spdlog::info("step {}/{} | loss {:.4f} | lr {:.2e} | {} tok/s | cycle {} | merges {} | eta {}", step_, total,
                   loss, lr, format_count(report.tokens_per_second), report.cycle, merges_,
                   format_duration(report.eta_seconds));
    if (options_.on_step) options_.on_step(report);
    monitor_->step_done(report, result.data_seconds);
    log_metrics(report);

    if (eval_every > 0 && step_ % eval_every == 0 && step_ < total) evaluate();
    if ((ckpt_every > 0 && step_ % ckpt_every == 0) || step_ == total) {
      save_checkpoint();
      last_saved = step_;
    }
  }
  if (stopped && last_saved != step_) save_checkpoint();

  const auto& losses = summary.losses;
  summary.completed = step_ >= total;
  summary.steps = step_;
  summary.merges = merges_;
  summary.optimizer_resets = optimizer_resets_;
  summary.initial_train_loss = mean_of(losses, 0, std::min<size_t>(10, losses.size()));
  summary.final_train_loss = mean_of(losses, losses.size() - std::min<size_t>(10, losses.size()), losses.size());
  summary.train_seconds = train_seconds;
  summary.tokens_per_second = train_seconds > 0 ? tokens_per_step * static_cast<double>(losses.size()) / train_seconds : 0;
  summary.trainable_parameters = model_->count_trainable_parameters();
  summary.total_parameters = model_->count_model_parameters();
  if (summary.completed) {
    const auto end = plan_.boundary_at(step_);  // the job end
    controller_->at_boundary({end->kind, end->step, end->cycle});
    EvalReport final_eval = evaluate();
    summary.eval_loss = final_eval.loss;
    summary.eval_perplexity = final_eval.perplexity;
    if (options_.rank == 0 && options_.save_checkpoints && !options_.spectrum_export_layers.empty())
      write_update_spectra();
    if (options_.export_model && options_.rank == 0) {
      auto info = export_hf_model(model_, data_->tokenizer_path(), data_->eos_id(), data_->pad_id(),
                                  spec_.checkpoint().dir() + "/export");
      summary.export_dir = info.dir;
      event("exported merged model (" + std::to_string(info.parameters) + " parameters) to " + info.dir);
    }
  }
  summary.checkpoint = last_checkpoint_;
  summary.peak_rss_bytes = peak_rss_bytes();
  return summary;
}

}  // namespace relora::train
