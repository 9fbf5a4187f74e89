// Small Hugging Face LLaMA directories generated in the tests (model.from_hf): our export, then its
// tensors recast to a dtype, split into index-named shards, or tied, as transformers saves them;
// and the tiny job started from one.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "tests/tiny_job.h"
#include "worker/model/llama.h"
#include "worker/train/data_pipeline.h"
#include "worker/train/export.h"
#include "worker/train/model_state.h"
#include "worker/train/safetensors.h"

namespace relora::testing {

struct HfLayout {
  torch::ScalarType dtype = torch::kFloat;
  int shards = 1;  // > 1: model-0000k-of-0000n.safetensors and model.safetensors.index.json
  bool tied = false;
};

// Makes `model` exactly representable in `layout`: every parameter rounded to its dtype, and with
// tied embeddings the head equal to the embedding.
inline void make_representable(model::Llama& model, const HfLayout& layout) {
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.copy_(p.to(layout.dtype).to(torch::kFloat));
  if (layout.tied) model->lm_head.copy_(model->embed_tokens->weight);
}

inline nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

inline void write_json(const std::string& path, const nlohmann::json& j) { std::ofstream(path) << j.dump(2); }

// Writes `model` to `dir` as a Hugging Face directory in `layout` (tokenizer.model too, if given).
inline void write_hf_checkpoint(model::Llama& model, const std::string& dir, const HfLayout& layout = {},
                                const std::string& tokenizer = "", int64_t seq_len = 16) {
  train::export_hf_model(model, tokenizer, seq_len, dir);
  const std::string single = dir + "/model.safetensors";
  const auto exported = train::read_safetensors(single);
  train::NamedTensors tensors;  // in export order
  for (const auto& [name, t] : model->export_state()) {
    if (layout.tied && name == "lm_head.weight") continue;  // transformers drops the tied copy
    tensors.emplace_back(name, exported.tensors.at(name).to(layout.dtype));
  }
  auto config = read_json(dir + "/config.json");
  config["tie_word_embeddings"] = layout.tied;
  config["torch_dtype"] = layout.dtype == torch::kFloat ? "float32" : layout.dtype == torch::kBFloat16 ? "bfloat16" : "float16";
  write_json(dir + "/config.json", config);
  if (layout.shards <= 1) {
    train::write_safetensors(single, tensors, {{"format", "pt"}});
    return;
  }
  std::filesystem::remove(single);
  nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", nlohmann::json::object()}};
  const size_t per_shard = (tensors.size() + layout.shards - 1) / layout.shards;
  for (int k = 0; k < layout.shards; ++k) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", k + 1, layout.shards);
    const size_t begin = std::min(tensors.size(), k * per_shard), end = std::min(tensors.size(), begin + per_shard);
    train::NamedTensors shard(tensors.begin() + begin, tensors.begin() + end);
    for (const auto& [tensor, t] : shard) index["weight_map"][tensor] = name;
    train::write_safetensors(dir + "/" + name, shard, {{"format", "pt"}});
  }
  write_json(dir + "/model.safetensors.index.json", index);
}

// A pretrained model for the tiny job (tests/tiny_job.h), drawn from `seed`: its shape, its
// tokenizer beside it, BF16 in two shards.
inline void write_tiny_pretrained(const std::string& dir, uint64_t seed) {
  const auto tiny = tiny_job_spec({"{mode: full}", /*steps=*/4, 1, 0, dir + "-unused"});
  const train::DataPipeline data(tiny);  // trains (or finds cached) the tiny job's tokenizer
  model::Llama m(train::model_config(tiny));
  m->init_weights(seed);
  write_hf_checkpoint(m, dir, {torch::kBFloat16, /*shards=*/2, /*tied=*/false}, data.tokenizer_path(),
                      /*seq_len=*/32);
}

// The tiny job with its model replaced by `from_hf`: no shape and no tokenizer named.
inline relora::v1::JobSpec tiny_from_hf_spec(const TinyJob& job, const std::string& from_hf) {
  auto spec = tiny_job_spec(job);
  spec.mutable_model()->Clear();
  spec.mutable_model()->set_from_hf(from_hf);
  spec.mutable_data()->clear_tokenizer_vocab_size();
  return spec;
}

}  // namespace relora::testing
