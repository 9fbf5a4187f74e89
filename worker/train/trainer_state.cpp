// The Trainer's state across processes: checkpoints of its TrainState (committed atomically by
// rank 0; with a sharded optimizer or frozen weights every rank writes its own part first, nothing
// gathered) and resuming from the newest complete one. The training loop itself is in trainer.cpp.
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

// Sharded optimizer or frozen weights: every rank writes its own moments and rows of W into the
// staging directory rank 0 has prepared, and rank 0 learns every file's size and CRC-32 (a collective: every rank calls it at
// the same step). A rank that fails to write makes every rank fail the save, each saying why.
std::vector<ShardFile> Trainer::write_rank_shards(const NamedTensors& own) {
  const auto device = options_.device;
  std::string failure;
  if (options_.rank == 0) {
    try {
      store_.begin(counters_.step);
    } catch (const std::exception& e) {
      failure = e.what();
    }
  }
  // Rank 0's verdict on begin() reaches every rank before any writes into the staging directory.
  std::vector<torch::Tensor> begun = {torch::tensor({failure.empty() ? 0.0 : 1.0}, torch::kFloat64).to(device)};
  options_.parallel->all_reduce_sum(begun);
  if (begun[0].item<double>() > 0)
    throw std::runtime_error("checkpoint at step " + std::to_string(counters_.step) + ": rank 0 could not prepare it" +
                             (failure.empty() ? "" : ": " + failure));
  ShardFile mine;
  try {
    mine = store_.write_shard(counters_.step, options_.rank, own);
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
  if (!failure.empty()) throw std::runtime_error("checkpoint at step " + std::to_string(counters_.step) + ": " + failure);
  std::vector<ShardFile> shards;
  for (int r = 0; r < options_.world; ++r) {
    if (host[r][0].item<double>() < 0)
      throw std::runtime_error("checkpoint at step " + std::to_string(counters_.step) + ": rank " + std::to_string(r) +
                               " could not write its shard of the state");
    shards.push_back({CheckpointStore::shard_name(r), static_cast<uint64_t>(host[r][0].item<double>()),
                      static_cast<uint32_t>(host[r][1].item<double>())});
  }
  return shards;
}

void Trainer::save_checkpoint() {
  if (!options_.save_checkpoints) return;
  const auto t0 = Clock::now();
  NamedTensors tensors, own;
  state_->save_tensors(tensors, own);
  // Before the rank test: writing the shards takes every rank.
  const std::vector<ShardFile> shards =
      sharded_optimizer_ || frozen_sharded_ ? write_rank_shards(own) : std::vector<ShardFile>{};
  if (options_.rank != 0) return;  // the rest is identical on every rank
  nlohmann::json meta = state_->meta();
  // Absolute, like the checkpoint path the coordinator is told: `relora-worker --export` reads it
  // from wherever the shared volume is visible, not from this worker's working directory.
  const std::string tokenizer =
      data_->tokenizer_path().empty() ? "" : std::filesystem::absolute(data_->tokenizer_path()).lexically_normal().string();
  meta.update({{"next_sample", counters_.step * geometry_.global_batch()},
               {"world", options_.world},
               {"tokenizer_model", tokenizer},
               {"tokenizer_fingerprint", data_->tokenizer() ? data_->tokenizer()->fingerprint() : ""},
               {"eos_id", data_->eos_id()},
               {"pad_id", data_->pad_id()},
               {"spec", nlohmann::json::parse(job_spec_to_json(spec_))}});
  last_checkpoint_ = store_.save(counters_.step, meta, tensors, shards);
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  event("checkpoint saved: " + last_checkpoint_ + " (" + format_duration(seconds) + ")");
  if (options_.on_checkpoint) options_.on_checkpoint(counters_.step, last_checkpoint_);
  monitor_->checkpoint_saved(seconds);
}

bool Trainer::resume_from_checkpoint() {
  std::vector<std::string> skipped;
  auto ckpt = store_.load_latest(&skipped);
  for (const auto& why : skipped) event("corrupt checkpoint skipped: " + why);
  if (!ckpt) return false;
  // The token ids must be the ones the checkpoint trained on. A tokenizer trained anew (another
  // data.tokenizer_model_type, or a checkpoint from before BPE became the default) would feed the
  // model other ids without any error. Checkpoints from before the fingerprint was saved are
  // compared by the model file's name, which the cache derives from the recipe and the inputs.
  const std::string saved_tokenizer = ckpt->meta.value("tokenizer_model", "");
  const std::string saved_fingerprint = ckpt->meta.value("tokenizer_fingerprint", "");
  if (data_->tokenizer() && !saved_tokenizer.empty() &&
      (saved_fingerprint.empty()
           ? std::filesystem::path(saved_tokenizer).filename() != std::filesystem::path(data_->tokenizer_path()).filename()
           : saved_fingerprint != data_->tokenizer()->fingerprint()))
    throw std::runtime_error(ckpt->path + ": trained with tokenizer " + saved_tokenizer + ", but this run tokenizes with " +
                             data_->tokenizer_path() +
                             ": resume with the data.tokenizer_model_type the job started with (a job from before "
                             "BPE became the default: data.tokenizer_model_type: unigram), or with data.tokenizer_model: " +
                             saved_tokenizer);
  state_->load(*ckpt, lora_options(), options_.device,
               [this](int64_t step) { return schedule_.planned_rewarm_step(step); });
  // The data order continues where it stopped only under the global batch the checkpoint was
  // saved with. An elastic restart on fewer ranks keeps it (common/elastic.h); anything else would
  // silently skip or repeat samples.
  const int64_t next_sample = counters_.step * geometry_.global_batch();
  const int64_t saved_next_sample = meta_int(*ckpt, "next_sample", next_sample);
  if (saved_next_sample != next_sample)
    throw std::runtime_error(ckpt->path + ": saved at sample " + std::to_string(saved_next_sample) + " of step " +
                             std::to_string(counters_.step) + ", but this run's global batch puts that step at sample " +
                             std::to_string(next_sample) +
                             " (micro_batch_size * grad_accum_steps * workers changed since the checkpoint)");
  last_checkpoint_ = ckpt->path;
  if (metrics_log_) metrics_log_->truncate_after(counters_.step);
  event("resumed from " + ckpt->path + " on " + std::to_string(options_.world) + " rank(s), at sample " +
        std::to_string(next_sample));
  return true;
}

}  // namespace relora::train
