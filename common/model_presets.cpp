// Model size presets (see model_presets.h). The paper sizes come from the ReLoRA paper's table
// (LLaMA-style, T5 vocabulary of 32100), 3b and 7b the shapes of OpenLLaMA 3B and LLaMA-7B with
// the same vocabulary; nano and micro are small enough to train on a CPU in
// tests and demos, with a vocabulary that a SentencePiece model trained on a small corpus can fill.
#include "common/model_presets.h"

#include <algorithm>
#include <cctype>

namespace relora {
namespace {

struct Preset {
  const char* name;
  ModelShape shape;  // hidden, layers, heads, intermediate, vocab
};

// Order matters: model_preset_names() lists them smallest first, which reads well in errors.
const Preset kPresets[] = {
    {"nano", {128, 4, 4, 352, 4096}},
    {"micro", {256, 6, 4, 688, 8192}},
    {"60m", {512, 8, 8, 1376, 32100}},
    {"130m", {768, 12, 12, 2048, 32100}},
    {"250m", {768, 24, 16, 2560, 32100}},
    {"350m", {1024, 24, 16, 2736, 32100}},
    {"1b3", {2048, 24, 32, 5461, 32100}},
    // OpenLLaMA 3B's shape (openlm-research/open_llama_3b, config.json: hidden 3200, 26 layers,
    // 32 heads, intermediate 8640), with the paper's vocabulary like the sizes above.
    {"3b", {3200, 26, 32, 8640, 32100}},
    // LLaMA-7B's shape (Touvron et al. 2023, table 2: dimension 4096, 32 heads, 32 layers; SwiGLU
    // intermediate 11008 as released), with the paper's vocabulary.
    {"7b", {4096, 32, 32, 11008, 32100}},
};

}  // namespace

std::optional<ModelShape> find_model_preset(const std::string& name) {
  // Case-insensitive so that "60M" or "1B3" (as the paper writes them) work; the canonical
  // spelling stored in a resolved spec is lower-case.
  std::string lower = name;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  for (const Preset& p : kPresets) {
    if (lower == p.name) return p.shape;
  }
  return std::nullopt;
}

std::vector<std::string> model_preset_names() {
  std::vector<std::string> names;
  for (const Preset& p : kPresets) names.emplace_back(p.name);
  return names;
}

}  // namespace relora
