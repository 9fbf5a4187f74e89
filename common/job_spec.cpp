// Job spec loading: YAML -> JSON -> protobuf, and defaults (see job_spec.h; validation is in
// job_spec_validate.cpp).
//
// YAML is not fed to protobuf blindly: we walk it alongside the message descriptor so that every
// error can name the dotted field path and the offending value, which protobuf's own JSON parser
// cannot do. The walker converts each YAML scalar to the JSON type its field needs, so that YAML's
// untyped scalars ("steps: 1000" and "steps: '1000'") both work while "rank: abc" is rejected.
#include "common/job_spec.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/util/json_util.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <vector>

#include "common/model_presets.h"

namespace relora {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using nlohmann::json;

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

std::string join_path(const std::string& parent, const std::string& name) {
  return parent.empty() ? name : parent + "." + name;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// How a value that has the wrong shape is shown after "got".
std::string describe(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Map: return "a mapping";
    case YAML::NodeType::Scalar: return "'" + n.Scalar() + "'";
    default: return "nothing";
  }
}

// Integer text -> value, or nullopt if it is not an integer. Accepts "1000", "+5" and, because
// people write step counts that way, exact integers in float notation ("1e4", "2000.0").
template <typename T>
std::optional<T> parse_integer(std::string s) {
  if (!s.empty() && s[0] == '+') s.erase(0, 1);
  T v{};
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec == std::errc() && end == s.data() + s.size()) return v;
  if (ec == std::errc::result_out_of_range) return std::nullopt;
  double d = 0;
  auto [dend, dec] = std::from_chars(s.data(), s.data() + s.size(), d);
  if (dec != std::errc() || dend != s.data() + s.size()) return std::nullopt;
  // Beyond 2^53 a double no longer pins down one integer.
  if (!std::isfinite(d) || d != std::floor(d) || std::fabs(d) > 9007199254740992.0) return std::nullopt;
  if (d < static_cast<double>(std::numeric_limits<T>::min()) ||
      d > static_cast<double>(std::numeric_limits<T>::max())) {
    return std::nullopt;
  }
  return static_cast<T>(d);
}

// Matches [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? by hand. (This was a std::regex:
// libstdc++'s regex executor recurses once per character, so a 20,000-digit number overflowed the
// stack and killed the process that parsed the spec — the CLI, or the coordinator serving
// SubmitJob. Found by tests/fuzz/fuzz_job_spec.)
bool is_decimal(const std::string& s) {
  size_t i = 0;
  const size_t n = s.size();
  auto digits = [&] {
    const size_t first = i;
    while (i < n && s[i] >= '0' && s[i] <= '9') ++i;
    return i - first;
  };
  if (i < n && (s[i] == '+' || s[i] == '-')) ++i;
  const size_t whole = digits();
  if (i < n && s[i] == '.') {
    ++i;
    if (digits() == 0 && whole == 0) return false;
  } else if (whole == 0) {
    return false;
  }
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < n && (s[i] == '+' || s[i] == '-')) ++i;
    if (digits() == 0) return false;
  }
  return i == n;
}

// YAML float text -> JSON (a number, or protobuf's "Infinity"/"NaN" strings for YAML's .inf/.nan).
std::optional<json> parse_double(std::string s) {
  for (const char* inf : {".inf", ".Inf", ".INF"}) {
    if (s == inf || s == std::string("+") + inf) return json("Infinity");
    if (s == std::string("-") + inf) return json("-Infinity");
  }
  if (s == ".nan" || s == ".NaN" || s == ".NAN") return json("NaN");
  // Keeps out what from_chars would otherwise accept ("inf", "nan", hex floats).
  if (!is_decimal(s)) return std::nullopt;
  if (s[0] == '+') s.erase(0, 1);
  double d = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), d);  // locale-independent
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return json(d);
}

// Protobuf string fields hold UTF-8, and the JSON step below throws on anything else (a
// nlohmann::json::type_error escaped the parser before this check; found by fuzz_job_spec).
// Rejects overlong forms, surrogates and code points above U+10FFFF, as strict decoders do.
bool is_valid_utf8(const std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  for (size_t i = 0; i < n;) {
    const unsigned char c = p[i];
    size_t len = 0;
    uint32_t cp = 0;
    if (c < 0x80) { ++i; continue; }
    if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07;
    else return false;
    if (i + len > n) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += len;
  }
  return true;
}

// Walks one YAML document next to the JobSpec descriptor and builds protobuf-JSON.
class YamlToJson {
 public:
  YamlToJson(std::string source, const Descriptor* root) : source_(std::move(source)), root_(root) {}

  json message(const YAML::Node& node, const Descriptor* d, const std::string& path) const {
    json out = json::object();
    if (node.IsNull()) return out;  // "eval:" with nothing under it: all defaults
    if (!node.IsMap()) fail(path + ": expected a mapping of fields, got " + describe(node), node);
    std::set<std::string> seen;
    for (const auto& kv : node) {
      if (!kv.first.IsScalar()) fail("field names under '" + path + "' must be plain words", kv.first);
      const std::string name = kv.first.Scalar();
      const std::string full = join_path(path, name);
      const FieldDescriptor* f = d->FindFieldByName(name);
      if (f == nullptr) fail("unknown field '" + full + "'" + suggestion(d, name), kv.first);
      // yaml-cpp keeps both copies of a repeated key; silently taking one would hide a mistake.
      if (!seen.insert(name).second) fail("duplicate field '" + full + "'", kv.first);
      if (kv.second.IsNull()) continue;  // "rank:" or "rank: ~" leaves the field unset
      if (d->full_name() == "relora.v1.DataSpec" && name == "train" && has_mapping(kv.second)) {
        weighted_train(kv.second, full, out);
        continue;
      }
      out[name] = value(kv.second, f, full);
    }
    return out;
  }

 private:
  static bool has_mapping(const YAML::Node& node) {
    if (!node.IsSequence()) return false;
    for (size_t i = 0; i < node.size(); ++i)
      if (node[i].IsMap()) return true;
    return false;
  }

  // data.train entries with weights, `[{path: a, weight: 0.7}, b]`: the proto keeps the paths in
  // `train` and the weights in `train_weights` (1 where an entry names none), so that specs
  // without weights keep their wire form.
  void weighted_train(const YAML::Node& node, const std::string& path, json& out) const {
    json paths = json::array(), weights = json::array();
    for (size_t i = 0; i < node.size(); ++i) {
      const YAML::Node entry = node[i];
      const std::string at = path + "[" + std::to_string(i) + "]";
      if (entry.IsScalar()) {
        paths.push_back(entry.Scalar());
        weights.push_back(1.0);
        continue;
      }
      if (!entry.IsMap()) fail(at + ": expected a path or {path: ..., weight: ...}, got " + describe(entry), entry);
      std::optional<json> weight = json(1.0);
      bool has_path = false;
      for (const auto& kv : entry) {
        const std::string key = kv.first.IsScalar() ? kv.first.Scalar() : "";
        if (key == "path" && kv.second.IsScalar()) {
          paths.push_back(kv.second.Scalar());
          has_path = true;
        } else if (key == "weight" && kv.second.IsScalar()) {
          weight = parse_double(kv.second.Scalar());
          if (!weight) fail(at + ".weight: expected a number, got '" + kv.second.Scalar() + "'", kv.second);
        } else {
          fail(at + ": unknown or malformed field '" + key + "' (an entry has path and weight)", kv.first);
        }
      }
      if (!has_path) fail(at + ": missing path", entry);
      weights.push_back(*weight);
    }
    out["train"] = paths;
    out["train_weights"] = weights;
  }

  [[noreturn]] void fail(const std::string& what, const YAML::Node& at) const {
    std::string msg = source_ + ": " + what;
    if (at.Mark().line >= 0) msg += " (line " + std::to_string(at.Mark().line + 1) + ")";
    throw JobSpecError(msg);
  }

  // " (did you mean 'x'?)" for a likely typo of a field of `d`, or for a field of another
  // section written at the wrong level ("rank" under training: -> 'relora.rank').
  std::string suggestion(const Descriptor* d, const std::string& name) const {
    const FieldDescriptor* best = nullptr;
    size_t best_dist = std::max<size_t>(1, name.size() / 3) + 1;  // closer than this is a typo
    for (int i = 0; i < d->field_count(); ++i) {
      size_t dist = edit_distance(name, d->field(i)->name());
      if (dist < best_dist) best = d->field(i), best_dist = dist;
    }
    if (best != nullptr) return " (did you mean '" + best->name() + "'?)";
    for (int i = 0; i < root_->field_count(); ++i) {
      const Descriptor* section = root_->field(i)->message_type();
      if (section != nullptr && section != d && section->FindFieldByName(name) != nullptr) {
        return " (did you mean '" + root_->field(i)->name() + "." + name + "'?)";
      }
    }
    return "";
  }

  json value(const YAML::Node& node, const FieldDescriptor* f, const std::string& path) const {
    if (!f->is_repeated()) return element(node, f, path);
    // Map fields would need a mapping here; the job spec has none.
    json arr = json::array();
    if (node.IsSequence()) {
      for (size_t i = 0; i < node.size(); ++i) {
        arr.push_back(element(node[i], f, path + "[" + std::to_string(i) + "]"));
      }
    } else if (node.IsScalar() && f->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) {
      arr.push_back(element(node, f, path));  // "train: corpus.txt" means a one-element list
    } else {
      fail(path + ": expected a list, got " + describe(node), node);
    }
    return arr;
  }

  json element(const YAML::Node& node, const FieldDescriptor* f, const std::string& path) const {
    using CT = FieldDescriptor::CppType;
    if (f->cpp_type() == CT::CPPTYPE_MESSAGE) return message(node, f->message_type(), path);
    const char* expected = "a string";
    switch (f->cpp_type()) {
      case CT::CPPTYPE_INT32: case CT::CPPTYPE_INT64: expected = "an integer"; break;
      case CT::CPPTYPE_UINT32: case CT::CPPTYPE_UINT64: expected = "a non-negative integer"; break;
      case CT::CPPTYPE_DOUBLE: case CT::CPPTYPE_FLOAT: expected = "a number"; break;
      case CT::CPPTYPE_BOOL: expected = "true or false"; break;
      default: break;
    }
    if (!node.IsScalar()) fail(path + ": expected " + std::string(expected) + ", got " + describe(node), node);
    const std::string& s = node.Scalar();
    std::optional<json> out;
    switch (f->cpp_type()) {
      case CT::CPPTYPE_INT32: if (auto v = parse_integer<int32_t>(s)) out = *v; break;
      case CT::CPPTYPE_INT64: if (auto v = parse_integer<int64_t>(s)) out = *v; break;
      case CT::CPPTYPE_UINT32: if (auto v = parse_integer<uint32_t>(s)) out = *v; break;
      case CT::CPPTYPE_UINT64: if (auto v = parse_integer<uint64_t>(s)) out = *v; break;
      case CT::CPPTYPE_DOUBLE: case CT::CPPTYPE_FLOAT: out = parse_double(s); break;
      case CT::CPPTYPE_BOOL: {
        bool b = false;
        if (YAML::convert<bool>::decode(node, b)) out = b;
        break;
      }
      default:  // strings and enum names (protobuf resolves the latter)
        if (!is_valid_utf8(s)) fail(path + ": expected UTF-8 text, got bytes that are not valid UTF-8", node);
        out = s;
        break;
    }
    if (!out) {
      // An integer that does not fit the field (e.g. 3e9 for an int32) also lands here.
      const bool integer = f->cpp_type() == CT::CPPTYPE_INT32 || f->cpp_type() == CT::CPPTYPE_INT64 ||
                           f->cpp_type() == CT::CPPTYPE_UINT32 || f->cpp_type() == CT::CPPTYPE_UINT64;
      fail(path + ": expected " + std::string(expected) + ", got '" + s + "'" +
               (integer && parse_integer<int64_t>(s) ? " (out of range)" : ""),
           node);
    }
    return *out;
  }

  std::string source_;
  const Descriptor* root_;
};

[[noreturn]] void fail(const std::string& field, const std::string& what) {
  throw JobSpecError(field + ": " + what);
}

}  // namespace

namespace {

// Records where each document starts; everything else is ignored.
class DocumentStarts : public YAML::EventHandler {
 public:
  std::vector<YAML::Mark> starts;
  void OnDocumentStart(const YAML::Mark& mark) override { starts.push_back(mark); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

// yaml-cpp 0.7 (Debian 12) does not consume a token it cannot place, such as a ',' outside a
// flow collection: it reports an empty document and starts the next one at the same token,
// forever, so YAML::LoadAll(",") allocates until the process dies (found by
// tests/fuzz/fuzz_job_spec). This pass walks the documents first and stops at a document that
// starts where the previous one did, reporting a syntax error there.
void check_yaml_terminates(const std::string& yaml_text, const std::string& source) {
  std::istringstream in(yaml_text);
  YAML::Parser parser(in);
  DocumentStarts docs;
  while (parser.HandleNextDocument(docs)) {
    const auto& s = docs.starts;
    if (s.size() >= 2 && s[s.size() - 1].pos == s[s.size() - 2].pos) {
      const YAML::Mark& at = s.back();
      std::string what = "unexpected input";
      if (at.pos >= 0 && static_cast<size_t>(at.pos) < yaml_text.size()) {
        const unsigned char c = static_cast<unsigned char>(yaml_text[static_cast<size_t>(at.pos)]);
        if (c >= 0x20 && c < 0x7f) what = std::string("unexpected '") + static_cast<char>(c) + "'";
      }
      throw JobSpecError(source + ":" + std::to_string(at.line + 1) + ":" + std::to_string(at.column + 1) +
                         ": YAML syntax error: " + what);
    }
  }
}

}  // namespace

relora::v1::JobSpec parse_job_spec_yaml(const std::string& yaml_text, const std::string& source) {
  std::vector<YAML::Node> docs;
  try {
    check_yaml_terminates(yaml_text, source);
    docs = YAML::LoadAll(yaml_text);
  } catch (const YAML::ParserException& e) {
    throw JobSpecError(source + ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1) +
                       ": YAML syntax error: " + e.msg);
  } catch (const YAML::Exception& e) {
    throw JobSpecError(source + ": YAML error: " + e.what());
  }
  if (docs.empty() || (docs.size() == 1 && docs[0].IsNull())) throw JobSpecError(source + ": the job spec is empty");
  if (docs.size() > 1) throw JobSpecError(source + ": expected one YAML document, found " + std::to_string(docs.size()));
  if (!docs[0].IsMap()) {
    throw JobSpecError(source + ": a job spec must be a YAML mapping (name:, model:, data:, ...), got " +
                       describe(docs[0]));
  }
  const Descriptor* root = relora::v1::JobSpec::descriptor();
  const json j = YamlToJson(source, root).message(docs[0], root, "");
  std::string j_text;
  try {
    j_text = j.dump();
  } catch (const json::exception& e) {  // the walker checks UTF-8, so only a bug gets here
    throw JobSpecError(source + ": " + e.what());
  }

  relora::v1::JobSpec spec;
  google::protobuf::util::JsonParseOptions opts;
  opts.ignore_unknown_fields = false;
  const auto status = google::protobuf::util::JsonStringToMessage(j_text, &spec, opts);
  // The walker already checked names and types, so this only fires on a bug in the walker.
  if (!status.ok()) throw JobSpecError(source + ": " + status.ToString());
  return spec;
}

void resolve_job_spec(relora::v1::JobSpec& spec) {
  auto& m = *spec.mutable_model();
  if (auto p = find_model_preset(m.preset())) {
    std::string canonical = m.preset();
    std::transform(canonical.begin(), canonical.end(), canonical.begin(), ::tolower);
    m.set_preset(canonical);
    // Explicit fields win over the preset, so only unset ones are copied.
    if (!m.has_hidden_size()) m.set_hidden_size(p->hidden_size);
    if (!m.has_num_layers()) m.set_num_layers(p->num_layers);
    if (!m.has_num_heads()) m.set_num_heads(p->num_heads);
    if (!m.has_intermediate_size()) m.set_intermediate_size(p->intermediate_size);
    if (!m.has_vocab_size()) m.set_vocab_size(p->vocab_size);
  }
  // A Hugging Face model's config.json gives these (worker/train/hf_config.h): a default here
  // would then disagree with it.
  const bool from_hf = !m.from_hf().empty();
  if (!from_hf && !m.has_rms_norm_eps()) m.set_rms_norm_eps(1e-6);
  if (!from_hf && !m.has_rope_theta()) m.set_rope_theta(10000.0);

  auto& t = *spec.mutable_training();
  auto& r = *spec.mutable_relora();
  if (r.mode().empty()) r.set_mode("relora");
  const bool low_rank = train_mode(spec) != TrainMode::kFull;  // an unknown mode fails validation
  const bool relora = train_mode(spec) == TrainMode::kRelora;
  // Step-derived defaults wait for a valid `steps` (validation reports a missing one), so that
  // resolving again after the caller fills it in still gives the right values.
  const bool have_steps = t.has_steps() && t.steps() >= 1;
  const int64_t steps = t.steps();
  const int64_t tenth = std::max<int64_t>(1, steps / 10);

  auto& c = *spec.mutable_checkpoint();
  if (c.dir().empty()) c.set_dir("runs/" + spec.name());
  if (have_steps && !c.has_every_steps()) c.set_every_steps(tenth);
  if (!c.has_keep()) c.set_keep(3);

  auto& d = *spec.mutable_data();
  if (!d.has_seq_len()) d.set_seq_len(256);
  if (!d.has_validation_fraction()) d.set_validation_fraction(d.validation().empty() ? 0.05 : 0.0);
  if (d.tokenizer_model().empty() && !from_hf && !d.has_tokenizer_vocab_size() && m.has_vocab_size()) {
    d.set_tokenizer_vocab_size(m.vocab_size());
  }
  if (d.cache_dir().empty()) d.set_cache_dir(c.dir() + "/cache");

  if (!t.has_micro_batch_size()) t.set_micro_batch_size(8);
  if (!t.has_grad_accum_steps()) t.set_grad_accum_steps(1);
  if (!t.has_lr()) t.set_lr(1e-3);
  if (!t.has_min_lr_ratio()) t.set_min_lr_ratio(0.1);
  if (!t.has_weight_decay()) t.set_weight_decay(0.0);
  if (!t.has_grad_clip()) t.set_grad_clip(1.0);
  if (t.dtype().empty()) t.set_dtype("fp32");
  if (!t.has_seed()) t.set_seed(42);
  if (!t.has_adam_beta1()) t.set_adam_beta1(0.9);
  if (!t.has_adam_beta2()) t.set_adam_beta2(0.999);
  if (!t.has_adam_eps()) t.set_adam_eps(1e-8);
  if (!t.has_log_every_steps()) t.set_log_every_steps(0);
  if (!t.has_activation_checkpointing()) t.set_activation_checkpointing(false);
  if (have_steps && !t.has_warmup_steps()) {
    // Capped at steps - 1 (warmup must end before training does) and, for ReLoRA, at the cycle
    // length (the jagged schedule needs the first warmup inside the first cycle).
    int64_t w = std::min<int64_t>({500, tenth, steps - 1});
    if (relora && r.has_cycle_steps() && r.cycle_steps() >= 1) w = std::min(w, r.cycle_steps());
    t.set_warmup_steps(w);
  }

  // Mode full gets no adapter or cycle defaults: validation rejects those fields there.
  if (!r.has_warm_start_steps()) r.set_warm_start_steps(0);
  if (r.optimizer_reset().empty()) r.set_optimizer_reset(relora ? "magnitude" : "none");
  if (low_rank) {
    if (!r.has_rank() && m.has_hidden_size()) {
      r.set_rank(std::max(1, std::min(128, m.hidden_size() / 4)));
    }
    if (!r.has_alpha()) r.set_alpha(32.0);
    if (!r.has_dropout()) r.set_dropout(0.1);
    if (!r.has_lr()) r.set_lr(t.lr());
    if (!r.has_prune_ratio()) {
      const std::string& reset = r.optimizer_reset();
      if (reset == "magnitude") r.set_prune_ratio(0.99);
      else if (reset == "random") r.set_prune_ratio(0.999);
      else if (reset == "zero") r.set_prune_ratio(1.0);
      else if (reset == "none") r.set_prune_ratio(0.0);
    }
  }
  if (relora && r.has_cycle_steps() && !r.has_restart_warmup_steps()) {
    r.set_restart_warmup_steps(std::max<int64_t>(1, std::min<int64_t>(100, r.cycle_steps() / 10)));
  }

  auto& e = *spec.mutable_eval();
  if (have_steps && !e.has_every_steps()) e.set_every_steps(tenth);
  if (!e.has_max_tokens()) e.set_max_tokens(200000);

  auto& cl = *spec.mutable_cluster();
  if (!cl.has_workers()) cl.set_workers(1);
  if (cl.backend().empty()) cl.set_backend("gloo");
  if (!cl.has_min_workers()) cl.set_min_workers(cl.workers());  // not elastic unless asked
  if (!cl.has_max_restarts()) cl.set_max_restarts(3);
}

relora::v1::JobSpec load_job_spec_file(const std::string& path) {
  // stdio rather than ifstream: it reports why a read failed (errno), including EISDIR.
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) throw JobSpecError(path + ": cannot read job spec: " + std::strerror(errno));
  std::string text;
  char buf[8192];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
  const int err = std::ferror(f) ? errno : 0;
  std::fclose(f);
  if (err != 0) throw JobSpecError(path + ": cannot read job spec: " + std::strerror(err));

  relora::v1::JobSpec spec = parse_job_spec_yaml(text, path);
  resolve_job_spec(spec);
  try {
    validate_job_spec(spec);
  } catch (const JobSpecError& e) {
    throw JobSpecError(path + ": " + e.what());  // say which file, like parse errors do
  }
  return spec;
}

std::string job_spec_to_json(const relora::v1::JobSpec& spec) {
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  opts.always_print_primitive_fields = true;
  std::string out;
  const auto status = google::protobuf::util::MessageToJsonString(spec, &out, opts);
  if (!status.ok()) throw JobSpecError("job spec to JSON: " + status.ToString());
  return out;
}

relora::v1::JobSpec job_spec_from_json(const std::string& json_text) {
  relora::v1::JobSpec spec;
  google::protobuf::util::JsonParseOptions opts;
  opts.ignore_unknown_fields = false;
  const auto status = google::protobuf::util::JsonStringToMessage(json_text, &spec, opts);
  if (!status.ok()) throw JobSpecError("job spec JSON: " + status.ToString());
  return spec;
}

TrainMode train_mode(const relora::v1::JobSpec& spec) {
  const std::string& mode = spec.relora().mode();
  if (mode == "lora") return TrainMode::kLora;
  if (mode == "relora") return TrainMode::kRelora;
  return TrainMode::kFull;
}

int64_t low_rank_phase_steps(const relora::v1::JobSpec& spec) {
  if (train_mode(spec) == TrainMode::kFull) return 0;
  return spec.training().steps() - spec.relora().warm_start_steps();
}

}  // namespace relora
