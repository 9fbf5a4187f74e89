#include "worker/train/hf_config.h"

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "common/job_spec.h"

namespace relora::train {
namespace {

using Json = nlohmann::json;

[[noreturn]] void fail(const std::string& path, const std::string& what) { throw JobSpecError(path + ": " + what); }

std::string str(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

// A positive integer that fits the spec's int32 fields; `fallback` < 0: required.
int64_t integer(const Json& j, const char* key, const std::string& path, int64_t fallback = -1) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (fallback >= 0) return fallback;
    fail(path, std::string(key) + ": missing (LlamaForCausalLM needs it)");
  }
  if (!it->is_number_integer()) fail(path, std::string(key) + ": expected an integer, got " + it->dump());
  const int64_t v = it->get<int64_t>();
  if (v <= 0 || v > std::numeric_limits<int32_t>::max())
    fail(path, std::string(key) + ": " + std::to_string(v) + " must be a positive 32-bit integer");
  return v;
}

// A positive number; `fallback` <= 0: required.
double number(const Json& j, const char* key, const std::string& path, double fallback = 0) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (fallback > 0) return fallback;
    fail(path, std::string(key) + ": missing (LlamaForCausalLM needs it)");
  }
  if (!it->is_number()) fail(path, std::string(key) + ": expected a number, got " + it->dump());
  const double v = it->get<double>();
  if (!(v > 0)) fail(path, std::string(key) + ": " + it->dump() + " must be positive");
  return v;
}

bool flag(const Json& j, const char* key, const std::string& path) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return false;
  if (!it->is_boolean()) fail(path, std::string(key) + ": expected true or false, got " + it->dump());
  return it->get<bool>();
}

// What transformers' LlamaForCausalLM can be configured to do that our model does not.
void require_plain_llama(const Json& j, const HfConfig& c, const std::string& path) {
  if (j.contains("model_type") && j["model_type"] != "llama")
    fail(path, "model_type: " + j["model_type"].dump() + ", only \"llama\" is read");
  if (j.contains("architectures")) {
    const auto& a = j["architectures"];
    if (!a.is_array() || std::find(a.begin(), a.end(), Json("LlamaForCausalLM")) == a.end())
      fail(path, "architectures: " + a.dump() + " does not name LlamaForCausalLM");
  }
  if (j.contains("hidden_act") && j["hidden_act"] != "silu")
    fail(path, "hidden_act: " + j["hidden_act"].dump() + ", our MLP is SwiGLU (silu)");
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null())
    fail(path, "rope_scaling: " + j["rope_scaling"].dump() + " is not supported (plain rotary embeddings only)");
  if (flag(j, "attention_bias", path)) fail(path, "attention_bias: true is not supported (our projections have no bias)");
  if (flag(j, "mlp_bias", path)) fail(path, "mlp_bias: true is not supported (our projections have no bias)");
  const int64_t heads = c.shape.num_heads;
  if (c.num_key_value_heads != heads)
    fail(path, "num_key_value_heads: " + std::to_string(c.num_key_value_heads) + " differs from num_attention_heads " +
                   std::to_string(heads) + " (grouped-query attention is not supported)");
  if (c.shape.hidden_size % heads != 0 || (c.shape.hidden_size / heads) % 2 != 0)
    fail(path, "hidden_size " + std::to_string(c.shape.hidden_size) + " / num_attention_heads " + std::to_string(heads) +
                   " is not an even head dimension");
  if (j.contains("head_dim") && !j["head_dim"].is_null() && integer(j, "head_dim", path) != c.shape.hidden_size / heads)
    fail(path, "head_dim: " + j["head_dim"].dump() + " is not hidden_size / num_attention_heads (" +
                   std::to_string(c.shape.hidden_size / heads) + ")");
}

}  // namespace

HfConfig read_hf_config(const std::string& dir) {
  HfConfig c;
  c.path = (std::filesystem::path(dir) / "config.json").string();
  std::ifstream in(c.path, std::ios::binary);
  if (!in) fail(c.path, "cannot read (model.from_hf names a Hugging Face model directory)");
  Json j;
  try {
    j = Json::parse(in);
  } catch (const std::exception& e) {
    fail(c.path, std::string("not JSON (") + e.what() + ")");
  }
  if (!j.is_object()) fail(c.path, "not a JSON object");
  c.shape.hidden_size = integer(j, "hidden_size", c.path);
  c.shape.intermediate_size = integer(j, "intermediate_size", c.path);
  c.shape.num_layers = integer(j, "num_hidden_layers", c.path);
  c.shape.num_heads = integer(j, "num_attention_heads", c.path);
  c.shape.vocab_size = integer(j, "vocab_size", c.path);
  c.shape.rms_norm_eps = number(j, "rms_norm_eps", c.path);
  c.shape.rope_theta = number(j, "rope_theta", c.path, /*fallback=*/10000.0);
  c.shape.max_seq_len = integer(j, "max_position_embeddings", c.path, /*fallback=*/2048);
  c.num_key_value_heads = integer(j, "num_key_value_heads", c.path, /*fallback=*/c.shape.num_heads);
  c.tie_word_embeddings = flag(j, "tie_word_embeddings", c.path);
  require_plain_llama(j, c, c.path);
  return c;
}

relora::v1::JobSpec apply_hf_config(relora::v1::JobSpec spec) {
  auto& m = *spec.mutable_model();
  if (m.from_hf().empty()) return spec;
  const HfConfig hf = read_hf_config(m.from_hf());
  const std::string preset = m.preset().empty() ? "" : " (model.preset " + m.preset() + ")";
  const auto differ = [&](const char* field, const std::string& ours, const char* key, const std::string& theirs) {
    throw JobSpecError("model." + std::string(field) + ": " + ours + preset + " disagrees with " + key + " " + theirs +
                       " in " + hf.path + "; model.from_hf takes the shape from config.json: leave the field (and " +
                       "model.preset) unset");
  };
  const struct {
    const char* field;
    const char* key;
    bool has;
    int32_t ours;
    int64_t theirs;
    void (relora::v1::ModelSpec::*set)(int32_t);
  } dims[] = {
      {"hidden_size", "hidden_size", m.has_hidden_size(), m.hidden_size(), hf.shape.hidden_size,
       &relora::v1::ModelSpec::set_hidden_size},
      {"num_layers", "num_hidden_layers", m.has_num_layers(), m.num_layers(), hf.shape.num_layers,
       &relora::v1::ModelSpec::set_num_layers},
      {"num_heads", "num_attention_heads", m.has_num_heads(), m.num_heads(), hf.shape.num_heads,
       &relora::v1::ModelSpec::set_num_heads},
      {"intermediate_size", "intermediate_size", m.has_intermediate_size(), m.intermediate_size(),
       hf.shape.intermediate_size, &relora::v1::ModelSpec::set_intermediate_size},
      {"vocab_size", "vocab_size", m.has_vocab_size(), m.vocab_size(), hf.shape.vocab_size,
       &relora::v1::ModelSpec::set_vocab_size},
  };
  for (const auto& d : dims) {
    if (d.has && d.ours != d.theirs) differ(d.field, std::to_string(d.ours), d.key, std::to_string(d.theirs));
    (m.*d.set)(static_cast<int32_t>(d.theirs));
  }
  if (m.has_rms_norm_eps() && m.rms_norm_eps() != hf.shape.rms_norm_eps)
    differ("rms_norm_eps", str(m.rms_norm_eps()), "rms_norm_eps", str(hf.shape.rms_norm_eps));
  if (m.has_rope_theta() && m.rope_theta() != hf.shape.rope_theta)
    differ("rope_theta", str(m.rope_theta()), "rope_theta", str(hf.shape.rope_theta));
  m.set_rms_norm_eps(hf.shape.rms_norm_eps);
  m.set_rope_theta(hf.shape.rope_theta);

  // The model's ids mean its own tokenizer's pieces. Without a tokenizer.model beside it (and
  // without data.tokenizer_model) only a pre-tokenized .tok file can be trained on: DataPipeline
  // refuses to train a new tokenizer for a from_hf model.
  auto& d = *spec.mutable_data();
  const std::string tokenizer = (std::filesystem::path(m.from_hf()) / "tokenizer.model").string();
  if (d.tokenizer_model().empty() && std::filesystem::is_regular_file(tokenizer)) d.set_tokenizer_model(tokenizer);

  // Rotary tables are computed for data.seq_len (no weights depend on it): longer sequences than
  // the model was trained on run, but the model has not learnt those positions.
  if (d.has_seq_len() && d.seq_len() > hf.shape.max_seq_len)
    spdlog::warn("data.seq_len {} is longer than max_position_embeddings {} in {}", d.seq_len(), hf.shape.max_seq_len,
                 hf.path);
  resolve_job_spec(spec);
  try {
    validate_job_spec(spec);
  } catch (const JobSpecError& e) {
    throw JobSpecError(std::string(e.what()) + " (with the model shape of " + hf.path + ")");
  }
  return spec;
}

}  // namespace relora::train
