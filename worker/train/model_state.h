// The model's part of a checkpoint: building the model a spec describes, and moving its
// parameters (frozen W and any un-merged low-rank factors) to and from checkpoint tensors.
#pragma once

#include <string>
#include <vector>

#include "relora/v1/job.pb.h"
#include "worker/model/llama.h"
#include "worker/train/checkpoint.h"
#include "worker/train/optimizer.h"
#include "worker/train/safetensors.h"

namespace relora::train {

model::LlamaConfig model_config(const relora::v1::JobSpec& spec);

// The model's trainable parameters in its order, LoRA factors marked low-rank: what the optimizer
// registers.
std::vector<TrainableParameter> trainable_parameters(model::Llama& model);

// Appends every model parameter: a whole one as "model/<name>" to `common` (the state file), this
// process's rows of a sharded frozen W as the piece "model/<name>@<offset>" (tensor_pieces.h) to
// `own` (its shard file).
void append_model_tensors(model::Llama& model, NamedTensors& common, NamedTensors& own);

// CRC-32 over the bytes of every parameter (sharded weights gathered whole: collective), in
// registration order, as 8 hex digits: equal on data-parallel ranks exactly when their parameters
// are bit-identical.
std::string parameter_checksum(model::Llama& model);

// Copies the checkpoint's model tensors into the model, adding the low-rank branches first when
// the checkpoint holds them (and `allow_low_rank`). Each parameter takes the part this process
// holds, from a whole tensor or from the pieces any number of ranks wrote (read one shard file at a
// time), so a checkpoint resumes whether or not either run shards its frozen weights, on any world
// size. Throws naming the checkpoint and the tensor when one is missing or of another shape.
void load_model_tensors(model::Llama& model, const Checkpoint& ckpt, const model::LoraOptions& lora,
                        bool allow_low_rank);

}  // namespace relora::train
