#include "worker/train/export.h"

#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "worker/data/tokenizer.h"
#include "worker/train/safetensors.h"

namespace fs = std::filesystem;

namespace relora::train {
namespace {

using Json = nlohmann::ordered_json;

// A special piece's string, or null where the model has none (id -1).
Json piece_or_null(const data::SpmModelInfo& info, int id) {
  if (id < 0) return nullptr;
  return info.pieces.at(static_cast<size_t>(id));
}

Json id_or_null(int id) { return id < 0 ? Json(nullptr) : Json(id); }

// Writes under a temporary name and renames, so a crash never leaves a truncated file behind.
void write_json(const std::string& path, const Json& json) {
  {
    std::ofstream out(path + ".tmp", std::ios::binary | std::ios::trunc);
    out << json.dump(2) << "\n";
    out.close();
    if (!out) throw std::runtime_error("cannot write " + path + ".tmp");
  }
  fs::rename(path + ".tmp", path);
}

// tokenizer_config.json for transformers' LlamaTokenizer, from the model file's own declarations.
//
// What our training does, and so what a loader must do to match it: every document is one plain
// SentencePiece Encode() of its text, followed by one EOS (worker/data/token_file.cpp,
// tokenize_to_cache); no BOS is ever added. A prompt therefore gets neither: add_bos_token and
// add_eos_token are false (LlamaTokenizer's own defaults, true and false, would prepend a BOS
// the model never saw, or one the vocabulary does not even have, as in T5's).
//
// legacy: true. LlamaTokenizer's legacy path tokenizes a text by calling sp_model.encode(text) on
// the tokenizer.model exactly as shipped, which is what training did. legacy=false instead
// reloads the model with add_dummy_prefix switched off, prepends U+2581 itself and encodes
// "<unk>" + text, dropping the unk's pieces: equal on ordinary text for LLaMA-like models, but it
// differs wherever the model's normalizer removes or folds whitespace (T5's
// remove_extra_whitespaces and NFKC) and it depends on how the unk string itself segments.
//
// split_special_tokens: true. Training never turned the strings "<s>", "</s>", "<unk>" inside a
// document into control ids: SentencePiece encodes them as ordinary characters. By default
// Hugging Face first splits the text on special-token strings; true makes it hand the whole text
// to SentencePiece, as we did.
//
// add_prefix_space mirrors the model's add_dummy_prefix (it is what llama.cpp's converter reads to
// set tokenizer.ggml.add_space_prefix, and what the fast tokenizer's converter uses).
Json tokenizer_config(const data::SpmModelInfo& info, int64_t model_max_length) {
  return Json{
      {"tokenizer_class", "LlamaTokenizer"},
      {"add_bos_token", false},
      {"add_eos_token", false},
      {"legacy", true},
      {"split_special_tokens", true},
      {"add_prefix_space", info.add_dummy_prefix},
      {"bos_token", piece_or_null(info, info.bos_id)},
      {"eos_token", piece_or_null(info, info.eos_id)},
      {"unk_token", piece_or_null(info, info.unk_id)},
      {"pad_token", piece_or_null(info, info.pad_id)},
      {"model_max_length", model_max_length},
      {"clean_up_tokenization_spaces", false},
      {"spaces_between_special_tokens", false},
      {"sp_model_kwargs", Json::object()},
  };
}

// special_tokens_map.json: the special tokens the model has, by their piece strings.
Json special_tokens_map(const data::SpmModelInfo& info) {
  Json map = Json::object();
  const std::pair<const char*, int> tokens[] = {
      {"bos_token", info.bos_id}, {"eos_token", info.eos_id}, {"unk_token", info.unk_id}, {"pad_token", info.pad_id}};
  for (const auto& [name, id] : tokens)
    if (id >= 0) map[name] = info.pieces.at(static_cast<size_t>(id));
  return map;
}

}  // namespace

ExportInfo export_hf_model(model::Llama& model, const std::string& tokenizer_model_path, int64_t model_max_length,
                           const std::string& out_dir) {
  // The tokenizer first: a path that is not a model fails the export before anything is written.
  std::unique_ptr<data::Tokenizer> tokenizer;
  data::SpmModelInfo info;
  if (!tokenizer_model_path.empty()) {
    tokenizer = std::make_unique<data::Tokenizer>(data::Tokenizer::load(tokenizer_model_path));
    info = tokenizer->describe();
  }

  fs::create_directories(out_dir);
  const auto& c = model->config();
  NamedTensors tensors = model->export_state();
  ExportInfo info_out;
  info_out.dir = out_dir;
  for (const auto& [name, t] : tensors) info_out.parameters += t.numel();

  const std::string weights = out_dir + "/model.safetensors";
  write_safetensors(weights + ".tmp", tensors, {{"format", "pt"}});
  fs::rename(weights + ".tmp", weights);

  // Without a tokenizer (a job on a pre-tokenized file) the ids are unknown: null, rather than
  // LlamaConfig's defaults (bos 1, eos 2), which would be a guess.
  const int none = -1;
  Json config = {
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
      // Written even where null: LlamaConfig would otherwise assume LLaMA's bos 1 / eos 2, and
      // llama.cpp's converter reads these three for the GGUF's special token ids.
      {"bos_token_id", id_or_null(tokenizer ? info.bos_id : none)},
      {"eos_token_id", id_or_null(tokenizer ? info.eos_id : none)},
      {"pad_token_id", id_or_null(tokenizer ? info.pad_id : none)},
      {"torch_dtype", "float32"},
  };
  write_json(out_dir + "/config.json", config);

  if (tokenizer) {
    fs::copy_file(tokenizer_model_path, out_dir + "/tokenizer.model.tmp", fs::copy_options::overwrite_existing);
    fs::rename(out_dir + "/tokenizer.model.tmp", out_dir + "/tokenizer.model");
    write_json(out_dir + "/tokenizer_config.json", tokenizer_config(info, model_max_length));
    write_json(out_dir + "/special_tokens_map.json", special_tokens_map(info));
  } else {
    // Re-exporting into a directory: no stale declaration of some other tokenizer may remain.
    for (const char* name : {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"})
      fs::remove(out_dir + "/" + name);
  }
  return info_out;
}

}  // namespace relora::train
