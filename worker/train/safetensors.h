// Reading and writing the safetensors format (the Hugging Face tensor file): an 8-byte
// little-endian header length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__":
// {string: string}}, then the raw little-endian tensor bytes. Used for exports (which
// transformers loads) and for our checkpoints (readable from Python without our code).
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

namespace relora::train {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

// Writes tensors (moved to CPU, made contiguous) in the given order. Does not fsync or rename:
// callers that need a commit protocol wrap it (see checkpoint.h).
void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata = {});

struct SafetensorsFile {
  std::map<std::string, torch::Tensor> tensors;  // CPU tensors owning their memory
  std::map<std::string, std::string> metadata;
};

// Throws std::runtime_error naming `path` and the problem (truncated, bad header JSON, offsets
// outside the file, unsupported dtype, shape/size mismatch).
SafetensorsFile read_safetensors(const std::string& path);

}  // namespace relora::train
