// Loading the weights of a Hugging Face LLaMA directory (model.from_hf) into our model: the
// inverse of export.h, and the reader for checkpoints transformers saved.
//
// Layout: model.safetensors, or shards named by model.safetensors.index.json ({"weight_map":
// {tensor: file}}), read one file at a time. Tensors may be F32, BF16 or F16 (each is converted to
// the parameter's fp32; the three convert exactly). Names are LlamaForCausalLM's, which are our
// export's: the q/k rows need no permutation, because our rotary embedding is transformers'
// rotate-half layout already (rotary.h); the permutation in transformers'
// convert_llama_weights_to_hf.py maps Meta's interleaved layout to that one, and such a directory
// is what we read. rotary_emb.inv_freq buffers that older transformers saved are derived, and
// skipped.
//
// Tied embeddings (tie_word_embeddings, no lm_head.weight): our model's head is a parameter of its
// own, so it starts as a copy of the embedding and trains apart from it; an export then writes
// both (tie_word_embeddings false).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "worker/model/llama.h"

namespace relora::train {

struct HfWeightsInfo {
  std::vector<std::string> files;  // the safetensors files read, in order
  int64_t tensors = 0;
  int64_t parameters = 0;
  bool tied = false;
};

// Copies every weight into `model`, which must be full-rank and unsharded (before enable_lora and
// shard_frozen_weights, where the warm-start checkpoint is loaded too) and shaped as config.json
// says (model_config of the spec apply_hf_config completed). Throws std::runtime_error naming the
// tensor and the file: a missing or unexpected tensor, another shape, an unsupported dtype, a
// truncated file or a header that is not JSON, a shard the index names that is not there.
HfWeightsInfo load_hf_weights(model::Llama& model, const std::string& dir);

}  // namespace relora::train
