// Model size presets: the paper's LLaMA sizes and two small CPU sizes. Torch-free so that the
// spec validator (and the coordinator) can check ranks against layer sizes.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace relora {

struct ModelShape {
  int hidden_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int intermediate_size = 0;
  int vocab_size = 0;
};

// nullopt for an unknown name.
std::optional<ModelShape> find_model_preset(const std::string& name);
std::vector<std::string> model_preset_names();

}  // namespace relora
