#include "worker/train/model_state.h"

#include <cstdio>
#include <map>
#include <stdexcept>

#include <zlib.h>

#include <torch/torch.h>

#include "worker/train/tensor_pieces.h"

namespace relora::train {

std::vector<TrainableParameter> trainable_parameters(model::Llama& model) {
  std::vector<TrainableParameter> params;
  for (auto& [name, param] : model->trainable_parameters()) {
    const bool low_rank = name.find("lora_A") != std::string::npos || name.find("lora_B") != std::string::npos;
    params.push_back({name, param, low_rank});
  }
  return params;
}

model::LlamaConfig model_config(const relora::v1::JobSpec& spec) {
  const auto& m = spec.model();
  model::LlamaConfig c;
  c.vocab_size = m.vocab_size();
  c.hidden_size = m.hidden_size();
  c.num_layers = m.num_layers();
  c.num_heads = m.num_heads();
  c.intermediate_size = m.intermediate_size();
  c.rms_norm_eps = m.rms_norm_eps();
  c.rope_theta = m.rope_theta();
  c.max_seq_len = spec.data().seq_len();
  return c;
}

constexpr const char* kModelPrefix = "model/";

void append_model_tensors(model::Llama& model, NamedTensors& common, NamedTensors& own) {
  for (const auto& p : model->held_parameters()) {
    if (p.sharded)
      own.emplace_back(piece_key(kModelPrefix + p.name, p.offset), p.tensor.reshape({-1}));
    else
      common.emplace_back(kModelPrefix + p.name, p.tensor);
  }
}

std::string parameter_checksum(model::Llama& model) {
  uLong crc = crc32(0L, Z_NULL, 0);
  for (const auto& [name, p] : model->whole_parameters()) {
    auto t = p.detach().to(torch::kCPU).contiguous();
    crc = crc32_z(crc, static_cast<const Bytef*>(t.data_ptr()), static_cast<z_size_t>(t.numel() * t.element_size()));
  }
  char hex[9];
  std::snprintf(hex, sizeof(hex), "%08lx", static_cast<unsigned long>(crc));
  return hex;
}

void load_model_tensors(model::Llama& model, const Checkpoint& ckpt, const model::LoraOptions& lora,
                        bool allow_low_rank) {
  if (ckpt.meta.value("low_rank", false)) {
    if (!allow_low_rank)
      throw std::runtime_error(ckpt.path + ": holds low-rank factors, but a full-rank checkpoint is needed here");
    if (!model->lora_enabled()) model->enable_lora(lora, /*seed=*/0);  // values are overwritten below
  }
  torch::NoGradGuard no_grad;
  const auto missing = [&](const model::LlamaImpl::HeldParameter& p) {
    return std::runtime_error(ckpt.path + ": no tensor '" + p.name + "' of shape " + c10::str(p.whole) +
                              " (a checkpoint of a different model?)");
  };
  std::vector<model::LlamaImpl::HeldParameter> in_pieces;
  for (auto& p : model->held_parameters()) {
    auto it = ckpt.state.tensors.find(kModelPrefix + p.name);
    if (it == ckpt.state.tensors.end()) {
      in_pieces.push_back(p);
      continue;
    }
    if (!it->second.sizes().equals(p.whole)) throw missing(p);
    if (p.sharded)
      p.tensor.view({-1}).copy_(it->second.reshape({-1}).slice(0, p.offset, p.offset + p.tensor.numel()));
    else
      p.tensor.copy_(it->second);
  }
  if (in_pieces.empty()) return;
  // Frozen weights some run sharded: each of its ranks wrote its rows into its own shard file.
  std::vector<int64_t> filled(in_pieces.size(), 0);
  const auto fill_from = [&](const SafetensorsFile& file, const std::string& where) {
    std::map<std::string, std::vector<FlatPiece>> pieces;  // by parameter name
    for (const auto& [key, tensor] : file.tensors) {
      if (key.rfind(kModelPrefix, 0) != 0) continue;
      const PieceKey parsed = parse_piece_key(key, where);
      if (parsed.piece) pieces[parsed.base.substr(6)].push_back({parsed.offset, tensor.reshape({-1})});
    }
    for (size_t i = 0; i < in_pieces.size(); ++i) {
      const auto it = pieces.find(in_pieces[i].name);
      if (it == pieces.end()) continue;
      auto flat = in_pieces[i].tensor.view({-1});
      filled[i] += fill_from_pieces(it->second, in_pieces[i].offset, flat);
    }
  };
  const auto complete = [&] {
    for (size_t i = 0; i < in_pieces.size(); ++i)
      if (filled[i] != in_pieces[i].tensor.numel()) return false;
    return true;
  };
  fill_from(ckpt.state, ckpt.path);
  for (const auto& path : ckpt.shard_files) {
    if (complete()) break;  // the other ranks' files are not needed
    fill_from(read_safetensors(path), path);
  }
  for (size_t i = 0; i < in_pieces.size(); ++i) {
    const auto& p = in_pieces[i];
    if (filled[i] == 0) throw missing(p);
    if (filled[i] != p.tensor.numel())
      throw std::runtime_error(ckpt.path + ": tensor '" + p.name + "' is incomplete (elements " +
                               std::to_string(p.offset) + ".." + std::to_string(p.offset + p.tensor.numel()) + ": " +
                               std::to_string(filled[i]) + " found; a shard file missing?)");
  }
}

}  // namespace relora::train
