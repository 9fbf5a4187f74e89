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

// Appends every model parameter as "model/<name>".
void append_model_tensors(model::Llama& model, NamedTensors& out);

// Copies "model/<name>" tensors into the model, adding the low-rank branches first when the
// checkpoint holds them (and `allow_low_rank`). Throws naming the checkpoint and the tensor when
// one is missing or of another shape.
// CRC-32 over the bytes of every parameter, in registration order, as 8 hex digits: equal on
// data-parallel ranks exactly when their parameters are bit-identical.
std::string parameter_checksum(model::Llama& model);

void load_model_tensors(model::Llama& model, const Checkpoint& ckpt, const model::LoraOptions& lora,
                        bool allow_low_rank);

}  // namespace relora::train
