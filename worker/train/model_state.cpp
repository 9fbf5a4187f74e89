#include "worker/train/model_state.h"

#include <cstdio>
#include <stdexcept>

#include <zlib.h>

#include <torch/torch.h>

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

void append_model_tensors(model::Llama& model, NamedTensors& out) {
  for (const auto& item : model->named_parameters()) out.emplace_back("model/" + item.key(), item.value());
}

std::string parameter_checksum(model::Llama& model) {
  uLong crc = crc32(0L, Z_NULL, 0);
  for (const auto& p : model->parameters()) {
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
  for (auto& item : model->named_parameters()) {
    auto it = ckpt.state.tensors.find("model/" + item.key());
    if (it == ckpt.state.tensors.end() || !it->second.sizes().equals(item.value().sizes()))
      throw std::runtime_error(ckpt.path + ": no tensor '" + item.key() + "' of shape " +
                               c10::str(item.value().sizes()) + " (a checkpoint of a different model?)");
    item.value().copy_(it->second);
  }
}

}  // namespace relora::train
