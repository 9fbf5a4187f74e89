// The Trainer's state across processes: checkpoints (committed atomically by rank 0; with a sharded
// optimizer every rank writes its own moments first, nothing gathered), resuming from the newest
// complete one, and the per-step metrics log that a resume trims back to the checkpoint. The
// training loop itself is in trainer.cpp.
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

// Sharded optimizer: every rank writes its own moments into the staging directory rank 0 has
// prepared, and rank 0 learns every file's size and CRC-32 (a collective: every rank calls it at
// the same step). A rank that fails to write makes every rank fail the save, each saying why.
std::vector<ShardFile> Trainer::write_optimizer_shards(const NamedTensors& own) {
  const auto device = options_.device;
  std::string failure;
  if (options_.rank == 0) {
    try {
      store_.begin(step_);
    } catch (const std::exception& e) {
      failure = e.what();
    }
  }
  // Rank 0's verdict on begin() reaches every rank before any writes into the staging directory.
  std::vector<torch::Tensor> begun = {torch::tensor({failure.empty() ? 0.0 : 1.0}, torch::kFloat64).to(device)};
  options_.parallel->all_reduce_sum(begun);
  if (begun[0].item<double>() > 0)
    throw std::runtime_error("checkpoint at step " + std::to_string(step_) + ": rank 0 could not prepare it" +
                             (failure.empty() ? "" : ": " + failure));
  ShardFile mine;
  try {
    mine = store_.write_shard(step_, options_.rank, own);
  } catch (const std::exception& e) {
    failure = e.what();
  }
  // Sizes and CRCs by rank (float64 holds both exactly); -1 marks a rank that failed.
  auto table = torch::zeros({options_.world, 2}, torch::kFloat64);
  table[options_.rank][0] = failure.empty() ? static_cast<double>(mine.bytes) : -1.0;
  table[options_.rank][1] = static_cast<double>(mine.crc32);
  std::vector<torch::Tensor> shared = {table.to(device)};
  options_.parallel->all_reduce_sum(shared);
  const auto host = shared[0].cpu();
  if (!failure.empty()) throw std::runtime_error("checkpoint at step " + std::to_string(step_) + ": " + failure);
  std::vector<ShardFile> shards;
  for (int r = 0; r < options_.world; ++r) {
    if (host[r][0].item<double>() < 0)
      throw std::runtime_error("checkpoint at step " + std::to_string(step_) + ": rank " + std::to_string(r) +
                               " could not write its optimizer shard");
    shards.push_back({CheckpointStore::shard_name(r), static_cast<uint64_t>(host[r][0].item<double>()),
                      static_cast<uint32_t>(host[r][1].item<double>())});
  }
  return shards;
}

void Trainer::save_checkpoint() {
  if (!options_.save_checkpoints) return;
  const auto t0 = Clock::now();
  NamedTensors tensors, own;
  optimizer_->save_state(tensors, own);
  // Before the rank test: writing the shards takes every rank.
  const std::vector<ShardFile> shards = sharded_optimizer_ ? write_optimizer_shards(own) : std::vector<ShardFile>{};
  if (options_.rank != 0) return;  // the rest is identical on every rank
  append_model_tensors(model_, tensors);
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
  last_checkpoint_ = store_.save(step_, meta, tensors, shards);
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
  // Whatever optimizer and world size wrote it: each rank takes the ranges it now holds.
  optimizer_->load_state(*ckpt);
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
