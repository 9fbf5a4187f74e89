#include "worker/train/train_state.h"

#include <stdexcept>

#include "worker/train/model_state.h"

namespace relora::train {

int64_t meta_int(const Checkpoint& ckpt, const char* key, int64_t fallback) {
  const auto& meta = ckpt.meta;
  if (!meta.contains(key)) return fallback;
  if (!meta[key].is_number_integer()) throw std::runtime_error(ckpt.path + "/meta.json: " + key + " is not an integer");
  return meta[key].get<int64_t>();
}

void TrainState::save_tensors(NamedTensors& common, NamedTensors& own) const {
  optimizer_.save_state(common, own);
  append_model_tensors(model_, common, own);
  probe_.save(common);
}

nlohmann::json TrainState::meta() const {
  return {{"train_state_version", kTrainStateVersion},
          {"step", counters_.step},
          {"merges", counters_.merges},
          {"optimizer_resets", counters_.optimizer_resets},
          {"low_rank", model_->lora_enabled()},
          {"last_boundary_step", counters_.last_boundary_step},
          {"rewarm_step", counters_.rewarm_step}};
}

void TrainState::load(const Checkpoint& ckpt, const model::LoraOptions& lora, const torch::Device& device,
                      const std::function<int64_t(int64_t step)>& planned_rewarm_step) {
  const int64_t version = meta_int(ckpt, "train_state_version", 1);
  if (version < 1 || version > kTrainStateVersion)
    throw std::runtime_error(ckpt.path + "/meta.json: train_state_version " + std::to_string(version) +
                             " is not one this worker reads (1.." + std::to_string(kTrainStateVersion) + ")");
  load_model_tensors(model_, ckpt, lora, /*allow_low_rank=*/true);
  optimizer_.set_parameters(trainable_parameters(model_));
  // Whatever optimizer and world size wrote it: each rank takes the ranges it now holds.
  optimizer_.load_state(ckpt);
  probe_.restore(ckpt, device);
  counters_.step = ckpt.step;
  counters_.merges = meta_int(ckpt, "merges", 0);
  counters_.optimizer_resets = meta_int(ckpt, "optimizer_resets", 0);
  counters_.last_boundary_step = meta_int(ckpt, "last_boundary_step", -1);
  // Checkpoints from before commanded re-warms were saved under the planned schedule.
  counters_.rewarm_step = meta_int(ckpt, "rewarm_step", planned_rewarm_step(ckpt.step));
}

}  // namespace relora::train
