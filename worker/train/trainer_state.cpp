// The Trainer's state across processes: checkpoints (saved atomically by rank 0, sharded optimizer
// moments gathered first), resuming from the newest complete one, and the per-step metrics log that
// a resume trims back to the checkpoint. The training loop itself is in trainer.cpp.
#include <chrono>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "common/cycle_plan.h"
#include "common/job_spec.h"
#include "worker/train/model_state.h"
#include "worker/train/runtime.h"
#include "worker/train/trainer.h"

namespace relora::train {
namespace {

using Clock = std::chrono::steady_clock;

}  // namespace

// The Adam moments of every trainable parameter: this rank's own, or, with a sharded optimizer,
// gathered from their owners (a collective: every rank calls it at the same step; the whole state
// is held for the duration of a checkpoint save).
std::vector<std::pair<torch::Tensor, torch::Tensor>> Trainer::full_optimizer_moments() {
  std::vector<std::pair<torch::Tensor, torch::Tensor>> moments;
  if (optimizer_->shard_world() <= 1) {
    for (const auto& e : optimizer_->entries()) moments.emplace_back(e.exp_avg, e.exp_avg_sq);
    return moments;
  }
  std::vector<torch::Tensor> flat;
  for (const auto& e : optimizer_->entries()) {
    const bool own = optimizer_->owns(e);
    moments.emplace_back(own ? e.exp_avg.clone() : torch::zeros_like(e.param),
                         own ? e.exp_avg_sq.clone() : torch::zeros_like(e.param));
    flat.push_back(moments.back().first);
    flat.push_back(moments.back().second);
  }
  options_.sync->all_reduce_sum(flat);
  return moments;
}

// Every rank's dropout-generator state, by rank. A collective like full_optimizer_moments: each
// rank contributes its own state in its row of a zero table and one all-reduce sum fills the table
// (the bytes travel as float64, exact for 0..255).
std::vector<torch::Tensor> Trainer::dropout_generator_states() {
  torch::Tensor mine;
  {
    std::lock_guard<std::mutex> lock(dropout_gen_.mutex());
    mine = dropout_gen_.get_state();  // uint8 [n] on the host
  }
  if (!options_.sync || options_.world <= 1) return {mine};
  auto table = torch::zeros({options_.world, mine.numel()}, torch::TensorOptions(torch::kFloat64).device(options_.device));
  table[options_.rank].copy_(mine.to(torch::kFloat64));
  std::vector<torch::Tensor> shared = {table};
  options_.sync->all_reduce_sum(shared);
  const auto host = shared[0].cpu().to(torch::kUInt8);
  std::vector<torch::Tensor> states;
  for (int r = 0; r < options_.world; ++r) states.push_back(host[r].clone());
  return states;
}

// This rank's dropout stream from the checkpoint. After an elastic restart on another world size
// the ranks' streams cannot continue (rank r's data slice changed as well): each is reseeded from
// (seed, rank, step), which is deterministic but not the uninterrupted run's masks.
void Trainer::restore_dropout_generator(const Checkpoint& ckpt, int64_t saved_world) {
  auto it = ckpt.state.tensors.find("rng/dropout/rank" + std::to_string(options_.rank));
  std::lock_guard<std::mutex> lock(dropout_gen_.mutex());
  if (it != ckpt.state.tensors.end() && saved_world == options_.world) {
    dropout_gen_.set_state(it->second.to(torch::kCPU, torch::kUInt8).contiguous());
    return;
  }
  const uint64_t seed = spec_.training().seed() + static_cast<uint64_t>(options_.rank);
  dropout_gen_.set_current_seed(boundary_seed(seed, ckpt.step));
  spdlog::info("rank {}: dropout generator reseeded at step {} (checkpoint saved by {} rank(s), now {})",
               options_.rank, ckpt.step, saved_world, options_.world);
}

void Trainer::save_checkpoint() {
  if (!options_.save_checkpoints) return;
  // Before the rank test: gathering sharded moments and every rank's generator takes every rank.
  const auto moments = full_optimizer_moments();
  const auto generators = dropout_generator_states();
  if (options_.rank != 0) return;  // ranks hold identical state
  const auto t0 = Clock::now();
  NamedTensors tensors;
  append_model_tensors(model_, tensors);
  for (size_t i = 0; i < optimizer_->entries().size(); ++i) {
    const auto& e = optimizer_->entries()[i];
    tensors.emplace_back("optim/" + e.name + "/exp_avg", moments[i].first);
    tensors.emplace_back("optim/" + e.name + "/exp_avg_sq", moments[i].second);
    tensors.emplace_back("optim/" + e.name + "/step", torch::tensor({e.step}, torch::kInt64));
  }
  for (size_t r = 0; r < generators.size(); ++r) tensors.emplace_back("rng/dropout/rank" + std::to_string(r), generators[r]);
  if (spectrum_reference_.defined()) tensors.emplace_back("ref/spectrum_layer", spectrum_reference_);
  for (const auto& [name, w] : low_rank_start_weights_) tensors.emplace_back("ref/low_rank_start/" + name, w);
  nlohmann::json meta = {{"step", step_},
                         {"merges", merges_},
                         {"optimizer_resets", optimizer_resets_},
                         {"low_rank", model_->lora_enabled()},
                         {"last_boundary_step", last_boundary_step_},
                         {"rewarm_step", rewarm_step_},
                         {"next_sample", step_ * geometry_.global_batch()},
                         {"world", options_.world},
                         {"tokenizer_model", data_->tokenizer_path()},
                         {"eos_id", data_->eos_id()},
                         {"pad_id", data_->pad_id()},
                         {"spec", nlohmann::json::parse(job_spec_to_json(spec_))}};
  last_checkpoint_ = store_.save(step_, meta, tensors);
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  event("checkpoint saved: " + last_checkpoint_ + " (" + format_duration(seconds) + ")");
  if (options_.on_checkpoint) options_.on_checkpoint(step_, last_checkpoint_);
  monitor_->checkpoint_saved(seconds);
}

// One JSON line per step in <checkpoint.dir>/metrics.jsonl (rank 0): the loss curve of the whole
// job, across resumes (lines past a resumed checkpoint are dropped when it resumes).
void Trainer::log_metrics(const StepReport& r) {
  if (options_.rank != 0) return;
  if (!metrics_.is_open()) {
    std::filesystem::create_directories(spec_.checkpoint().dir());
    metrics_.open(spec_.checkpoint().dir() + "/metrics.jsonl", std::ios::app);
  }
  nlohmann::json line = {{"step", r.step},       {"loss", r.loss},   {"lr", r.lr},
                         {"grad_norm", r.grad_norm}, {"tokens_per_second", r.tokens_per_second},
                         {"cycle", r.cycle},     {"merges", r.merges}};
  metrics_ << line.dump() << "\n";
  metrics_.flush();
}

void Trainer::truncate_metrics_after(int64_t step) {
  const std::string path = spec_.checkpoint().dir() + "/metrics.jsonl";
  std::ifstream in(path);
  if (!in) return;
  std::string kept, line;
  while (std::getline(in, line)) {
    try {
      if (nlohmann::json::parse(line).value("step", int64_t{0}) <= step) kept += line + "\n";
    } catch (const std::exception&) {
      // A torn last line from a crash: drop it.
    }
  }
  in.close();
  std::ofstream(path, std::ios::trunc) << kept;
}

bool Trainer::resume_from_checkpoint() {
  std::vector<std::string> skipped;
  auto ckpt = store_.load_latest(&skipped);
  for (const auto& why : skipped) event("corrupt checkpoint skipped: " + why);
  if (!ckpt) return false;
  const auto& meta = ckpt->meta;
  const auto& rl = spec_.relora();
  load_model_tensors(model_, *ckpt, model::LoraOptions{rl.rank(), rl.alpha(), rl.dropout()}, /*allow_low_rank=*/true);
  register_trainable_parameters();
  for (auto& e : optimizer_->mutable_entries()) {
    auto m = ckpt->state.tensors.find("optim/" + e.name + "/exp_avg");
    auto v = ckpt->state.tensors.find("optim/" + e.name + "/exp_avg_sq");
    auto s = ckpt->state.tensors.find("optim/" + e.name + "/step");
    if (m == ckpt->state.tensors.end() || v == ckpt->state.tensors.end() || s == ckpt->state.tensors.end())
      throw std::runtime_error(ckpt->path + ": optimizer state for '" + e.name + "' is missing");
    e.step = s->second.item<int64_t>();
    if (!optimizer_->owns(e)) continue;  // sharded: another rank keeps these moments
    e.exp_avg.copy_(m->second);
    e.exp_avg_sq.copy_(v->second);
  }
  auto ref = ckpt->state.tensors.find("ref/spectrum_layer");
  if (ref != ckpt->state.tensors.end()) spectrum_reference_ = ref->second.to(options_.device);
  for (const auto& name : options_.spectrum_export_layers) {
    auto it = ckpt->state.tensors.find("ref/low_rank_start/" + name);
    if (it != ckpt->state.tensors.end()) low_rank_start_weights_[name] = it->second.to(torch::kCPU, torch::kFloat);
  }
  step_ = ckpt->step;
  // The data order continues where it stopped only under the global batch the checkpoint was
  // saved with. An elastic restart on fewer ranks keeps it (common/elastic.h); anything else would
  // silently skip or repeat samples.
  // meta.json has no checksum of its own: a field of the wrong type is an error naming it, not a
  // nlohmann exception.
  auto meta_int = [&](const char* key, int64_t fallback) -> int64_t {
    if (!meta.contains(key)) return fallback;
    if (!meta[key].is_number_integer())
      throw std::runtime_error(ckpt->path + "/meta.json: " + key + " is not an integer");
    return meta[key].get<int64_t>();
  };
  const int64_t next_sample = step_ * geometry_.global_batch();
  const int64_t saved_next_sample = meta_int("next_sample", next_sample);
  if (saved_next_sample != next_sample)
    throw std::runtime_error(ckpt->path + ": saved at sample " + std::to_string(saved_next_sample) + " of step " +
                             std::to_string(step_) + ", but this run's global batch puts that step at sample " +
                             std::to_string(next_sample) +
                             " (micro_batch_size * grad_accum_steps * workers changed since the checkpoint)");
  restore_dropout_generator(*ckpt, meta_int("world", 1));
  merges_ = meta_int("merges", 0);
  optimizer_resets_ = meta_int("optimizer_resets", 0);
  last_boundary_step_ = meta_int("last_boundary_step", -1);
  // Checkpoints from before commanded re-warms were saved under the planned schedule.
  rewarm_step_ = meta_int("rewarm_step", schedule_.planned_rewarm_step(step_));
  last_checkpoint_ = ckpt->path;
  if (options_.rank == 0) truncate_metrics_after(step_);
  event("resumed from " + ckpt->path + " on " + std::to_string(options_.world) + " rank(s), at sample " +
        std::to_string(next_sample));
  return true;
}

}  // namespace relora::train
