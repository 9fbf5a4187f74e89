// The paper's analysis of the update W_now - W_start, live and at the end of a job.
//
// Holds the reference weights: W of one sampled layer at the low-rank start (its update's rank is
// reported at every merge), and W + s·B·A of a few export layers at the job start and at the
// low-rank start (their full spectra go to <checkpoint.dir>/update_spectrum.json when the job
// completes). The references taken at the low-rank start travel in checkpoints; the job-start
// ones are rebuilt identically from the seed (or the warm-start checkpoint) on resume.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "worker/model/llama.h"
#include "worker/train/checkpoint.h"
#include "worker/train/safetensors.h"

namespace relora::train {

class UpdateSpectrumProbe {
 public:
  // `layer`: the layer whose update rank is reported at merges; `export_layers`: those whose full
  // spectra are written at the end (names the model lacks are skipped).
  UpdateSpectrumProbe(std::string layer, std::vector<std::string> export_layers)
      : layer_(std::move(layer)), export_layers_(std::move(export_layers)) {}

  const std::string& layer() const { return layer_; }
  bool writes_spectra() const { return !export_layers_.empty(); }

  void at_job_start(model::Llama& model) { initial_ = export_layer_weights(model); }
  void at_low_rank_start(model::Llama& model);
  // The sampled layer's update rank since the low-rank start; nullopt before it. Collective with
  // sharded weights.
  std::optional<int64_t> update_rank(model::Llama& model);
  // <path>: the spectra since the job start and since the low-rank start, plus `info` fields.
  // Collective with sharded weights (every rank calls it; an empty path writes nothing).
  void write_spectra(model::Llama& model, const std::string& path, nlohmann::json info);

  void save(NamedTensors& out) const;
  void restore(const Checkpoint& ckpt, const torch::Device& device);

 private:
  std::map<std::string, torch::Tensor> export_layer_weights(model::Llama& model) const;
  // The sampled layer's whole W (collective with sharded weights); undefined when the model lacks it.
  torch::Tensor sampled_weight(model::Llama& model) const;

  std::string layer_;
  std::vector<std::string> export_layers_;
  torch::Tensor reference_;                        // W of layer_ at the low-rank start
  std::map<std::string, torch::Tensor> initial_;   // at the job start (fp32, host)
  std::map<std::string, torch::Tensor> low_rank_;  // at the low-rank start (fp32, host)
};

}  // namespace relora::train
