#include "worker/train/hf_weights.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <stdexcept>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "worker/train/hf_config.h"
#include "worker/train/safetensors.h"

namespace fs = std::filesystem;

namespace relora::train {
namespace {

// The model's parameters under their LlamaForCausalLM names (the names export.cpp writes): the
// tensors themselves, to copy into.
std::map<std::string, torch::Tensor> hf_parameters(model::Llama& model) {
  std::map<std::string, torch::Tensor> out;
  out["model.embed_tokens.weight"] = model->embed_tokens->weight;
  for (auto& [name, linear] : model->relora_linears()) out[name + ".weight"] = linear->weight;
  for (size_t i = 0; i < model->layers->size(); ++i) {
    auto block = model->layers->ptr<model::BlockImpl>(i);
    const std::string p = "model.layers." + std::to_string(i) + ".";
    out[p + "input_layernorm.weight"] = block->input_layernorm->weight;
    out[p + "post_attention_layernorm.weight"] = block->post_attention_layernorm->weight;
  }
  out["model.norm.weight"] = model->norm->weight;
  out["lm_head.weight"] = model->lm_head;
  return out;
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// model.safetensors.index.json's weight_map: tensor name -> shard file name (in `dir`).
std::map<std::string, std::string> read_weight_map(const std::string& index_path, const std::string& dir) {
  std::ifstream in(index_path, std::ios::binary);
  if (!in) throw std::runtime_error(index_path + ": cannot read");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    throw std::runtime_error(index_path + ": not JSON (" + std::string(e.what()) + ")");
  }
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    throw std::runtime_error(index_path + ": no \"weight_map\" object");
  std::map<std::string, std::string> map;
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    if (!it->is_string()) throw std::runtime_error(index_path + ": weight_map['" + it.key() + "'] is not a file name");
    const std::string file = it->get<std::string>();
    // Shards are files of the directory: a path could reach outside the job's data roots.
    if (file.empty() || file.find('/') != std::string::npos || file == "." || file == "..")
      throw std::runtime_error(index_path + ": weight_map['" + it.key() + "'] = '" + file + "' is not a file name");
    if (!fs::is_regular_file(fs::path(dir) / file))
      throw std::runtime_error(index_path + ": names shard " + file + " for tensor '" + it.key() + "', but " +
                               (fs::path(dir) / file).string() + " does not exist");
    map.emplace(it.key(), file);
  }
  if (map.empty()) throw std::runtime_error(index_path + ": weight_map is empty");
  return map;
}

bool float_dtype(torch::ScalarType t) { return t == torch::kFloat || t == torch::kBFloat16 || t == torch::kHalf; }

}  // namespace

HfWeightsInfo load_hf_weights(model::Llama& model, const std::string& dir) {
  if (model->lora_enabled() || model->frozen_weights_sharded())
    throw std::logic_error("load_hf_weights: the model must be full-rank and unsharded");
  const HfConfig config = read_hf_config(dir);
  HfWeightsInfo info;
  info.tied = config.tie_word_embeddings;

  const std::string index_path = (fs::path(dir) / "model.safetensors.index.json").string();
  const std::string single = (fs::path(dir) / "model.safetensors").string();
  std::map<std::string, std::string> weight_map;  // empty for a single file
  if (fs::exists(index_path)) {
    weight_map = read_weight_map(index_path, dir);
    std::set<std::string> shards;
    for (const auto& [name, file] : weight_map) shards.insert(file);
    for (const auto& file : shards) info.files.push_back((fs::path(dir) / file).string());
  } else if (fs::is_regular_file(single)) {
    info.files.push_back(single);
  } else {
    throw std::runtime_error(dir + ": neither model.safetensors nor model.safetensors.index.json (model.from_hf reads "
                                   "safetensors checkpoints only)");
  }

  torch::NoGradGuard no_grad;
  auto params = hf_parameters(model);
  std::map<std::string, std::string> found_in;  // tensor -> file
  for (const auto& path : info.files) {
    const SafetensorsFile file = read_safetensors(path);  // one shard in memory at a time
    for (const auto& [name, tensor] : file.tensors) {
      if (ends_with(name, ".rotary_emb.inv_freq")) continue;  // derived from rope_theta
      const auto it = params.find(name);
      if (it == params.end())
        throw std::runtime_error(path + ": unexpected tensor '" + name + "' (not a weight of LlamaForCausalLM with " +
                                 config.path + ")");
      if (const auto seen = found_in.find(name); seen != found_in.end())
        throw std::runtime_error(path + ": tensor '" + name + "' is also in " + seen->second);
      if (!float_dtype(tensor.scalar_type()))
        throw std::runtime_error(path + ": tensor '" + name + "' has dtype " + c10::toString(tensor.scalar_type()) +
                                 "; F32, BF16 or F16 expected");
      if (!tensor.sizes().equals(it->second.sizes()))
        throw std::runtime_error(path + ": tensor '" + name + "' has shape " + c10::str(tensor.sizes()) + ", " +
                                 config.path + " makes it " + c10::str(it->second.sizes()));
      it->second.copy_(tensor);
      found_in.emplace(name, path);
      info.tensors += 1;
      info.parameters += tensor.numel();
    }
    for (const auto& [name, shard] : weight_map) {
      if ((fs::path(dir) / shard).string() == path && file.tensors.count(name) == 0)
        throw std::runtime_error(index_path + ": names " + shard + " for tensor '" + name + "', which " + path +
                                 " does not hold");
    }
  }

  const auto& embed = params.at("model.embed_tokens.weight");
  for (const auto& [name, param] : params) {
    if (found_in.count(name)) continue;
    if (name == "lm_head.weight" && config.tie_word_embeddings) {
      param.copy_(embed);
      continue;
    }
    std::string files;
    for (const auto& f : info.files) files += (files.empty() ? "" : ", ") + f;
    throw std::runtime_error(dir + ": missing tensor '" + name + "' of shape " + c10::str(param.sizes()) + " (in none of " +
                             files + ")");
  }
  if (config.tie_word_embeddings && found_in.count("lm_head.weight") && !torch::equal(params.at("lm_head.weight"), embed))
    throw std::runtime_error(found_in.at("lm_head.weight") + ": tensor 'lm_head.weight' differs from " +
                             "'model.embed_tokens.weight', though " + config.path + " says tie_word_embeddings: true");
  return info;
}

}  // namespace relora::train
