// Everything a checkpoint holds of a run, in one place: the model (frozen W and any un-merged
// low-rank factors), the optimizer (step counters; moments, sharded or not), the update-spectrum
// references and the run's counters. Versioned: meta.json carries train_state_version, and a
// resume reads every version it knows (fields added later fall back to what older runs did).
//
// Random streams are not state: dropout masks are seeded from the samples (trainer.h), re-inits
// from the boundary's seed (common/cycle_plan.h).
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "worker/model/llama.h"
#include "worker/train/checkpoint.h"
#include "worker/train/optimizer.h"
#include "worker/train/safetensors.h"
#include "worker/train/spectrum_probe.h"

namespace relora::train {

// 1: the first format (per-rank dropout generator states, moments gathered into the state file);
// 2: dropout seeded per sample, optimizer moments as pieces (optimizer_state.h), shard files.
inline constexpr int kTrainStateVersion = 2;

struct TrainCounters {
  int64_t step = 0;  // optimizer steps completed
  int64_t merges = 0;
  int64_t optimizer_resets = 0;
  int64_t last_boundary_step = -1;  // boundary already applied at this step (resume guard)
  int64_t rewarm_step = -1;         // the last boundary whose command re-warmed the learning rate
};

class TrainState {
 public:
  TrainState(model::Llama& model, Optimizer& optimizer, UpdateSpectrumProbe& probe, TrainCounters& counters)
      : model_(model), optimizer_(optimizer), probe_(probe), counters_(counters) {}

  // The tensors: `common` for the state file (rank 0), `own` for this rank's shard file.
  void save_tensors(NamedTensors& common, NamedTensors& own) const;
  // The counters (and the version) as meta.json fields.
  nlohmann::json meta() const;

  // Restores the model (adding the low-rank branches the checkpoint has), the optimizer (its
  // parameters re-registered first), the references and the counters. `planned_rewarm_step`
  // gives version-1 runs' re-warm step, saved under the planned schedule. Throws naming the
  // checkpoint and the field or tensor that is missing or malformed.
  void load(const Checkpoint& ckpt, const model::LoraOptions& lora, const torch::Device& device,
            const std::function<int64_t(int64_t step)>& planned_rewarm_step);

 private:
  model::Llama& model_;
  Optimizer& optimizer_;
  UpdateSpectrumProbe& probe_;
  TrainCounters& counters_;
};

// A meta.json integer field, or `fallback` when absent; throws naming the file when it is there
// but not an integer (meta.json has no checksum of its own).
int64_t meta_int(const Checkpoint& ckpt, const char* key, int64_t fallback);

}  // namespace relora::train
