#include "worker/train/export.h"

#include <filesystem>
#include <fstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "worker/train/safetensors.h"

namespace fs = std::filesystem;

namespace relora::train {

ExportInfo export_hf_model(model::Llama& model, const std::string& tokenizer_model_path, int eos_id,
                           int pad_id, const std::string& out_dir) {
  fs::create_directories(out_dir);
  const auto& c = model->config();
  NamedTensors tensors = model->export_state();
  ExportInfo info;
  info.dir = out_dir;
  for (const auto& [name, t] : tensors) info.parameters += t.numel();

  // Write under a temporary name and rename, so a crash never leaves a truncated model behind.
  const std::string weights = out_dir + "/model.safetensors";
  write_safetensors(weights + ".tmp", tensors, {{"format", "pt"}});
  fs::rename(weights + ".tmp", weights);

  nlohmann::ordered_json config = {
      {"architectures", {"LlamaForCausalLM"}},
      {"model_type", "llama"},
      {"hidden_size", c.hidden_size},
      {"intermediate_size", c.intermediate_size},
      {"num_hidden_layers", c.num_layers},
      {"num_attention_heads", c.num_heads},
      {"num_key_value_heads", c.num_heads},
      {"vocab_size", c.vocab_size},
      {"max_position_embeddings", c.max_seq_len},
      {"rms_norm_eps", c.rms_norm_eps},
      {"rope_theta", c.rope_theta},
      {"hidden_act", "silu"},
      {"attention_bias", false},
      {"tie_word_embeddings", false},
      {"eos_token_id", eos_id},
      {"pad_token_id", pad_id},
      {"torch_dtype", "float32"},
  };
  std::ofstream(out_dir + "/config.json") << config.dump(2) << "\n";
  if (!tokenizer_model_path.empty() && fs::exists(tokenizer_model_path))
    fs::copy_file(tokenizer_model_path, out_dir + "/tokenizer.model", fs::copy_options::overwrite_existing);
  return info;
}

}  // namespace relora::train
