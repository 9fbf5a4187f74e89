#include "worker/train/spectrum_probe.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <torch/torch.h>

#include "worker/train/update_spectrum.h"

namespace relora::train {

torch::Tensor UpdateSpectrumProbe::sampled_weight(model::Llama& model) const {
  for (auto& [name, linear] : model->relora_linears())
    if (name == layer_) return linear->full_weight();
  return {};
}

// W + s·B·A (what an export holds) of the export layers, on the host.
std::map<std::string, torch::Tensor> UpdateSpectrumProbe::export_layer_weights(model::Llama& model) const {
  std::map<std::string, torch::Tensor> out;
  for (auto& [name, linear] : model->relora_linears())
    if (std::find(export_layers_.begin(), export_layers_.end(), name) != export_layers_.end())
      out[name] = linear->merged_weight().cpu();
  return out;
}

void UpdateSpectrumProbe::at_low_rank_start(model::Llama& model) {
  if (auto w = sampled_weight(model); w.defined()) reference_ = w.detach().clone();
  low_rank_ = export_layer_weights(model);
}

std::optional<int64_t> UpdateSpectrumProbe::update_rank(model::Llama& model) {
  if (!reference_.defined()) return std::nullopt;
  const auto w = sampled_weight(model);
  if (!w.defined()) return std::nullopt;
  return update_spectrum(w, reference_).rank_above_threshold;
}

// Written to a temporary name, then renamed.
void UpdateSpectrumProbe::write_spectra(model::Llama& model, const std::string& path, nlohmann::json info) {
  const auto to_json = [](const UpdateSpectrum& s) {
    return nlohmann::json{{"rank_above_threshold", s.rank_above_threshold},
                          {"threshold", s.threshold},
                          {"singular_values", s.singular_values}};
  };
  const auto weights = export_layer_weights(model);  // on every rank: the gathers are collective
  if (path.empty()) return;
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& [name, now] : weights) {
    nlohmann::json layer = {{"name", name}, {"shape", {now.size(0), now.size(1)}}};
    if (auto it = initial_.find(name); it != initial_.end()) layer["since_init"] = to_json(update_spectrum(now, it->second));
    if (auto it = low_rank_.find(name); it != low_rank_.end())
      layer["since_low_rank_start"] = to_json(update_spectrum(now, it->second));
    layers.push_back(std::move(layer));
  }
  info["relative_threshold"] = kRelativeRankThreshold;
  info["layers"] = layers;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path + ".tmp", std::ios::trunc) << info.dump(1) << "\n";
  std::filesystem::rename(path + ".tmp", path);
}

void UpdateSpectrumProbe::save(NamedTensors& out) const {
  if (reference_.defined()) out.emplace_back("ref/spectrum_layer", reference_);
  for (const auto& [name, w] : low_rank_) out.emplace_back("ref/low_rank_start/" + name, w);
}

void UpdateSpectrumProbe::restore(const Checkpoint& ckpt, const torch::Device& device) {
  const auto& tensors = ckpt.state.tensors;
  if (auto ref = tensors.find("ref/spectrum_layer"); ref != tensors.end()) reference_ = ref->second.to(device);
  for (const auto& name : export_layers_)
    if (auto it = tensors.find("ref/low_rank_start/" + name); it != tensors.end())
      low_rank_[name] = it->second.to(torch::kCPU, torch::kFloat);
}

}  // namespace relora::train
