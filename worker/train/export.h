// Export to a Hugging Face LLaMA directory: model.safetensors (full-rank weights, every pending
// low-rank factor merged first, so a mid-cycle checkpoint loses nothing), config.json for
// transformers' LlamaForCausalLM, and the tokenizer declared completely, so that Hugging Face and
// llama.cpp tokenize exactly as the job trained: the SentencePiece model as tokenizer.model,
// tokenizer_config.json, special_tokens_map.json, and config.json's bos/eos/pad token ids, all
// derived from the model file itself (docs/tokenizer.md).
#pragma once

#include <cstdint>
#include <string>

#include "worker/model/llama.h"

namespace relora::train {

struct ExportInfo {
  std::string dir;
  int64_t parameters = 0;
};

// `tokenizer_model_path`: the SentencePiece model the job trained with, or "" for a job on a
// pre-tokenized file without one (config.json's token ids are then null and no tokenizer files
// are written). Throws std::runtime_error naming the path if it is given but is not a readable
// SentencePiece model. `model_max_length`: the sequence length trained on (data.seq_len).
ExportInfo export_hf_model(model::Llama& model, const std::string& tokenizer_model_path,
                           int64_t model_max_length, const std::string& out_dir);

}  // namespace relora::train
