// Export to a Hugging Face LLaMA directory: model.safetensors (full-rank weights, every pending
// low-rank factor merged first, so a mid-cycle checkpoint loses nothing), config.json for
// transformers' LlamaForCausalLM, and the SentencePiece model as tokenizer.model.
#pragma once

#include <string>

#include "worker/model/llama.h"

namespace relora::train {

struct ExportInfo {
  std::string dir;
  int64_t parameters = 0;
};

ExportInfo export_hf_model(model::Llama& model, const std::string& tokenizer_model_path, int eos_id,
                           int pad_id, const std::string& out_dir);

}  // namespace relora::train
