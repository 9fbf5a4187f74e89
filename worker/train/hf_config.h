// Starting a job from a Hugging Face LLaMA directory (model.from_hf): its config.json read into our
// model shape, and the job spec completed from it.
//
// The shape is only known where the directory is: on the worker (the coordinator never reads
// workers' files, see coordinator/cluster_state.cpp). So the spec a job is submitted with may leave
// the model fields unset (validate_job_spec allows that with from_hf), and every worker completes
// it here before it builds anything, then resolves and validates it again.
#pragma once

#include <cstdint>
#include <string>

#include "relora/v1/job.pb.h"
#include "worker/model/llama.h"

namespace relora::train {

struct HfConfig {
  std::string path;            // <dir>/config.json, for messages
  model::LlamaConfig shape;    // max_seq_len is max_position_embeddings
  int64_t num_key_value_heads = 0;
  bool tie_word_embeddings = false;
};

// Reads and checks <dir>/config.json (a LlamaForCausalLM). hidden_size, intermediate_size,
// num_hidden_layers, num_attention_heads, vocab_size and rms_norm_eps are required; rope_theta,
// max_position_embeddings, num_key_value_heads and tie_word_embeddings take transformers'
// LlamaConfig defaults (10000, 2048, num_attention_heads, false). What our model cannot run is
// an error naming the field: grouped-query attention (num_key_value_heads != num_attention_heads),
// rope_scaling, attention or MLP biases, an activation other than silu, another head_dim.
// Throws JobSpecError naming the file.
HfConfig read_hf_config(const std::string& dir);

// For a spec with model.from_hf: fills every unset model field from config.json and checks the set
// ones (a preset's included) against it, naming both values where they differ; names
// <dir>/tokenizer.model as data.tokenizer_model when the job names none and the file exists; then
// resolves and validates the spec again. A spec without from_hf is returned unchanged.
// Idempotent. Throws JobSpecError.
relora::v1::JobSpec apply_hf_config(relora::v1::JobSpec spec);

}  // namespace relora::train
