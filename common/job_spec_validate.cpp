// Job spec validation: ranges and contradictions, each error naming the dotted field path
// (see job_spec.h). Expects a resolved spec (every field set).
#include <algorithm>
#include <cmath>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "common/job_spec.h"
#include "common/model_presets.h"

namespace relora {
namespace {

// ---------------------------------------------------------------------------------------------
// Validation helpers
// ---------------------------------------------------------------------------------------------

[[noreturn]] void fail(const std::string& field, const std::string& what) {
  throw JobSpecError(field + ": " + what);
}

std::string num(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
  return out;
}

void require_one_of(const std::string& field, const std::string& value,
                    const std::vector<std::string>& allowed) {
  if (std::find(allowed.begin(), allowed.end(), value) == allowed.end()) {
    fail(field, "'" + value + "' is not one of " + join(allowed));
  }
}

// All range checks are written as "!(in range)" so that NaN fails them too.
void require_range(const std::string& field, double v, double lo, double hi, bool hi_open,
                   const std::string& range_text) {
  const bool ok = std::isfinite(v) && v >= lo && (hi_open ? v < hi : v <= hi);
  if (!ok) fail(field, num(v) + " must be in " + range_text);
}

void require_positive(const std::string& field, double v) {
  if (!(std::isfinite(v) && v > 0)) fail(field, num(v) + " must be a positive number");
}

// Bounds on what one spec may carry: the coordinator stores every spec and sends it to every rank.
constexpr size_t kMaxPathLength = 4096;  // PATH_MAX on Linux
constexpr int kMaxDataFiles = 10000;

void require_path_length(const std::string& field, const std::string& path) {
  if (path.size() > kMaxPathLength)
    fail(field, "a path of " + std::to_string(path.size()) + " characters (at most " + std::to_string(kMaxPathLength) +
                    ")");
}

void validate_model(const relora::v1::ModelSpec& m) {
  if (!m.preset().empty() && !find_model_preset(m.preset())) {
    fail("model.preset", "unknown preset '" + m.preset() + "' (valid: " + join(model_preset_names()) + ")");
  }
  const struct { const char* name; bool has; int32_t value; } dims[] = {
      {"hidden_size", m.has_hidden_size(), m.hidden_size()},
      {"num_layers", m.has_num_layers(), m.num_layers()},
      {"num_heads", m.has_num_heads(), m.num_heads()},
      {"intermediate_size", m.has_intermediate_size(), m.intermediate_size()},
      {"vocab_size", m.has_vocab_size(), m.vocab_size()},
  };
  // With model.from_hf the worker fills unset fields from config.json and validates again
  // (worker/train/hf_config.h): here only the fields the job sets are checked.
  const bool from_hf = !m.from_hf().empty();
  require_path_length("model.from_hf", m.from_hf());
  for (const auto& d : dims) {
    const std::string field = std::string("model.") + d.name;
    if (!d.has && from_hf) continue;
    if (!d.has) fail(field, "required when model.preset is not set (presets: " + join(model_preset_names()) + ")");
    if (d.value <= 0) fail(field, std::to_string(d.value) + " must be positive");
  }
  if (!m.has_hidden_size() || !m.has_num_heads()) return;  // only with from_hf
  if (m.hidden_size() % m.num_heads() != 0) {
    fail("model.hidden_size", std::to_string(m.hidden_size()) + " is not divisible by model.num_heads " +
                                  std::to_string(m.num_heads()));
  }
  // Rotary embeddings rotate pairs of channels, so each head needs an even width.
  if ((m.hidden_size() / m.num_heads()) % 2 != 0) {
    fail("model.num_heads", "head dimension " + std::to_string(m.hidden_size() / m.num_heads()) +
                                " (hidden_size / num_heads) must be even for rotary embeddings");
  }
  if (m.has_rms_norm_eps()) require_positive("model.rms_norm_eps", m.rms_norm_eps());
  if (m.has_rope_theta()) require_positive("model.rope_theta", m.rope_theta());
}

void validate_data(const relora::v1::DataSpec& d, const relora::v1::ModelSpec& m) {
  if (d.train_size() == 0) fail("data.train", "at least one training file or directory is required");
  if (d.train_size() > kMaxDataFiles || d.validation_size() > kMaxDataFiles)
    fail(d.train_size() > kMaxDataFiles ? "data.train" : "data.validation",
         "more than " + std::to_string(kMaxDataFiles) + " entries (name a directory instead)");
  for (int i = 0; i < d.train_size(); ++i) {
    if (d.train(i).empty()) fail("data.train[" + std::to_string(i) + "]", "empty path");
    require_path_length("data.train[" + std::to_string(i) + "]", d.train(i));
  }
  if (d.train_weights_size() > 0 && d.train_weights_size() != d.train_size())
    fail("data.train_weights", std::to_string(d.train_weights_size()) + " weights for " +
                                   std::to_string(d.train_size()) + " data.train entries (one each, or none)");
  for (int i = 0; i < d.train_weights_size(); ++i) {
    const double w = d.train_weights(i);
    if (!(w > 0) || !std::isfinite(w))
      fail("data.train[" + std::to_string(i) + "].weight", std::to_string(w) + " must be a positive number");
  }
  for (int i = 0; i < d.validation_size(); ++i)
    require_path_length("data.validation[" + std::to_string(i) + "]", d.validation(i));
  require_path_length("data.tokenizer_model", d.tokenizer_model());
  require_path_length("data.cache_dir", d.cache_dir());
  if (d.seq_len() < 2) fail("data.seq_len", std::to_string(d.seq_len()) + " must be at least 2");
  require_range("data.validation_fraction", d.validation_fraction(), 0, 0.5, false, "[0, 0.5]");
  const std::string& type = d.tokenizer_model_type();
  if (!type.empty() && type != "bpe" && type != "unigram")
    fail("data.tokenizer_model_type", "'" + type + "' is not bpe or unigram");
  if (!type.empty() && !d.tokenizer_model().empty())
    fail("data.tokenizer_model_type", "applies to a tokenizer relora trains; data.tokenizer_model brings its own");
  // A pretrained model's ids mean its own tokenizer's pieces: relora never trains one for it.
  if (!type.empty() && !m.from_hf().empty())
    fail("data.tokenizer_model_type", "applies to a tokenizer relora trains; model.from_hf brings its own");
  if (d.tokenizer_model().empty() && m.from_hf().empty()) {  // the tokenizer is trained by us: its size must fit the model
    const int32_t v = d.tokenizer_vocab_size();
    if (v < 16) fail("data.tokenizer_vocab_size", std::to_string(v) + " must be at least 16");
    // Matches kMinBpeVocabSize (worker/data/tokenizer.h): 256 byte pieces + 3 specials + the
    // text's characters and some merges.
    if (type != "unigram" && v < 384)
      fail("data.tokenizer_vocab_size", std::to_string(v) +
                                            " must be at least 384 for a BPE tokenizer (256 of its pieces are bytes); "
                                            "set data.tokenizer_model_type: unigram for a smaller vocabulary");
    if (v > m.vocab_size()) {
      fail("data.tokenizer_vocab_size", std::to_string(v) + " is larger than model.vocab_size " +
                                            std::to_string(m.vocab_size()) +
                                            " (the model's vocabulary must be at least the tokenizer's)");
    }
  }
}

void validate_training(const relora::v1::TrainingSpec& t) {
  if (!t.has_steps()) fail("training.steps", "required (the total number of optimizer steps)");
  if (t.steps() < 1) fail("training.steps", std::to_string(t.steps()) + " must be at least 1");
  if (t.micro_batch_size() < 1) fail("training.micro_batch_size", std::to_string(t.micro_batch_size()) + " must be at least 1");
  if (t.grad_accum_steps() < 1) fail("training.grad_accum_steps", std::to_string(t.grad_accum_steps()) + " must be at least 1");
  require_positive("training.lr", t.lr());
  if (t.warmup_steps() < 0 || t.warmup_steps() >= t.steps()) {
    fail("training.warmup_steps", std::to_string(t.warmup_steps()) + " must be in [0, training.steps " +
                                      std::to_string(t.steps()) + ")");
  }
  require_range("training.min_lr_ratio", t.min_lr_ratio(), 0, 1, false, "[0, 1]");
  require_range("training.weight_decay", t.weight_decay(), 0, INFINITY, false, "[0, inf)");
  require_range("training.grad_clip", t.grad_clip(), 0, INFINITY, false, "[0, inf) (0 turns clipping off)");
  require_one_of("training.dtype", t.dtype(), {"fp32", "bf16"});
  require_range("training.adam_beta1", t.adam_beta1(), 0, 1, true, "[0, 1)");
  require_range("training.adam_beta2", t.adam_beta2(), 0, 1, true, "[0, 1)");
  require_positive("training.adam_eps", t.adam_eps());
  if (t.log_every_steps() < 0) fail("training.log_every_steps", std::to_string(t.log_every_steps()) + " must be >= 0");
}

// The reference implementation makes it easy to ask for ReLoRA and silently get something else;
// here every setting that the chosen mode would ignore is an error.
void validate_mode_conflicts(const relora::v1::ReloraSpec& r) {
  const bool reset_set = !r.optimizer_reset().empty() && r.optimizer_reset() != "none";
  const struct { const char* field; bool set; bool merge_only; } settings[] = {
      {"rank", r.has_rank(), false},
      {"alpha", r.has_alpha(), false},
      {"dropout", r.has_dropout(), false},
      {"lr", r.has_lr(), false},
      {"warm_start_steps", r.warm_start_steps() != 0, false},
      {"warm_start_checkpoint", !r.warm_start_checkpoint().empty(), false},
      {"cycle_steps", r.has_cycle_steps(), true},
      {"restart_warmup_steps", r.has_restart_warmup_steps(), true},
      {"optimizer_reset", reset_set, true},
      {"prune_ratio", r.has_prune_ratio(), true},
  };
  for (const auto& s : settings) {
    if (!s.set) continue;
    const std::string field = std::string("relora.") + s.field;
    if (r.mode() == "full") {
      const char* why = s.merge_only ? "full-rank training never merges" : "full-rank training has no low-rank adapters";
      throw JobSpecError(field + " is set but relora.mode is 'full' (" + why +
                         "); set relora.mode: relora or remove it");
    }
    // In mode lora only the merge/restart settings are meaningless (prune_ratio is harmless at 0).
    if (r.mode() == "lora" && s.merge_only && std::string(s.field) != "prune_ratio") {
      throw JobSpecError(field + " is set but relora.mode is 'lora' (LoRA trains one adapter and never "
                                 "merges, restarts or resets the optimizer); set relora.mode: relora or remove it");
    }
  }
}

void validate_relora(const relora::v1::JobSpec& spec) {
  const auto& r = spec.relora();
  const auto& t = spec.training();
  require_one_of("relora.mode", r.mode(), {"full", "lora", "relora"});
  validate_mode_conflicts(r);
  if (r.mode() == "full") return;

  // Unknown until the worker reads model.from_hf's config.json (it validates again then).
  const bool shape_known = spec.model().has_hidden_size() && spec.model().has_intermediate_size();
  const int32_t smallest = std::min(spec.model().hidden_size(), spec.model().intermediate_size());
  if (shape_known && r.rank() < 1) fail("relora.rank", std::to_string(r.rank()) + " must be at least 1");
  if (shape_known && r.rank() > smallest) {
    fail("relora.rank", std::to_string(r.rank()) + " is larger than the smallest layer dimension " +
                            std::to_string(smallest) + " (min of model.hidden_size and model.intermediate_size)");
  }
  require_positive("relora.alpha", r.alpha());
  require_range("relora.dropout", r.dropout(), 0, 1, true, "[0, 1)");
  require_positive("relora.lr", r.lr());
  if (r.warm_start_steps() < 0 || r.warm_start_steps() >= t.steps()) {
    fail("relora.warm_start_steps", std::to_string(r.warm_start_steps()) + " must be in [0, training.steps " +
                                        std::to_string(t.steps()) + ") so that a low-rank phase remains");
  }
  if (r.warm_start_steps() > 0 && !r.warm_start_checkpoint().empty()) {
    fail("relora.warm_start_steps", "set together with relora.warm_start_checkpoint; warm-start either "
                                    "inside this job or from a checkpoint, not both");
  }
  if (r.mode() != "relora") return;

  if (!r.has_cycle_steps()) fail("relora.cycle_steps", "required in mode relora (steps between merges)");
  const int64_t cycle = r.cycle_steps();
  if (cycle < 1) fail("relora.cycle_steps", std::to_string(cycle) + " must be at least 1");
  const int64_t phase = t.steps() - r.warm_start_steps();
  if (phase % cycle != 0) {
    fail("relora.cycle_steps", std::to_string(cycle) + " does not divide the low-rank phase (" +
                                   std::to_string(t.steps()) + " - " + std::to_string(r.warm_start_steps()) +
                                   " = " + std::to_string(phase) + " steps)");
  }
  // The jagged schedule's first warmup must end within the first cycle.
  if (t.warmup_steps() > cycle) {
    fail("training.warmup_steps", std::to_string(t.warmup_steps()) + " is longer than relora.cycle_steps " +
                                      std::to_string(cycle));
  }
  // 0 is allowed on purpose: no re-warm after merges (ablation of the jagged schedule).
  if (r.restart_warmup_steps() < 0 || r.restart_warmup_steps() >= cycle) {
    fail("relora.restart_warmup_steps", std::to_string(r.restart_warmup_steps()) + " must be in [0, relora.cycle_steps " +
                                            std::to_string(cycle) + ") (0: no re-warm after merges)");
  }
  require_one_of("relora.optimizer_reset", r.optimizer_reset(), {"magnitude", "random", "zero", "none"});
  require_range("relora.prune_ratio", r.prune_ratio(), 0, 1, false, "[0, 1]");
}

// 1-128 characters of [A-Za-z0-9._-]: the name becomes a directory (runs/<name>) and a log key.
void validate_name(const std::string& name) {
  if (name.empty()) fail("name", "required (1-128 characters of A-Z a-z 0-9 . _ -)");
  static const std::regex kName(R"([A-Za-z0-9._-]{1,128})");
  if (!std::regex_match(name, kName) || name == "." || name == "..") {
    fail("name", "'" + name + "' must be 1-128 characters of A-Z a-z 0-9 . _ - (and not '.' or '..')");
  }
}

}  // namespace

void validate_job_spec(const relora::v1::JobSpec& spec) {
  validate_name(spec.name());
  validate_model(spec.model());
  validate_data(spec.data(), spec.model());
  validate_training(spec.training());
  validate_relora(spec);

  const auto& e = spec.eval();
  if (e.every_steps() < 0) fail("eval.every_steps", std::to_string(e.every_steps()) + " must be >= 0 (0: off)");
  if (e.max_tokens() < 1) fail("eval.max_tokens", std::to_string(e.max_tokens()) + " must be at least 1");
  const auto& c = spec.checkpoint();
  if (c.dir().empty()) fail("checkpoint.dir", "required");
  require_path_length("checkpoint.dir", c.dir());
  require_path_length("relora.warm_start_checkpoint", spec.relora().warm_start_checkpoint());
  if (!spec.model().from_hf().empty() && !spec.relora().warm_start_checkpoint().empty())
    fail("relora.warm_start_checkpoint", "set together with model.from_hf; a job starts from one set of weights");
  if (c.every_steps() < 0) fail("checkpoint.every_steps", std::to_string(c.every_steps()) + " must be >= 0 (0: only at the end)");
  if (c.keep() < 1) fail("checkpoint.keep", std::to_string(c.keep()) + " must be at least 1");
  const auto& cl = spec.cluster();
  if (cl.workers() < 1) fail("cluster.workers", std::to_string(cl.workers()) + " must be at least 1");
  require_one_of("cluster.backend", cl.backend(), {"gloo", "nccl"});
  if (cl.min_workers() < 1 || cl.min_workers() > cl.workers())
    fail("cluster.min_workers", std::to_string(cl.min_workers()) + " must be in 1..cluster.workers (" +
                                    std::to_string(cl.workers()) + ")");
  if (cl.max_restarts() < 0 || cl.max_restarts() > 1000)
    fail("cluster.max_restarts", std::to_string(cl.max_restarts()) + " must be in 0..1000");
  if (cl.shard_frozen_weights() && spec.relora().mode() == "full")
    fail("cluster.shard_frozen_weights", "needs relora.mode lora or relora: mode full trains every weight, none is frozen");
}

}  // namespace relora
