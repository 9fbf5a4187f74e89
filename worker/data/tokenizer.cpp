// SentencePiece tokenizer: loading, encoding, and training a model once per corpus.
#include "worker/data/tokenizer.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <unordered_map>
#include <utility>

#include "worker/data/documents.h"
#include "worker/data/spm_api.h"

namespace fs = std::filesystem;

namespace relora::data {
namespace {

// Part of the cache key, one per recipe below: bumped whenever that recipe changes, so that old
// cached models are not reused. The unigram recipe is unchanged since "spm-unigram-v1", so its
// cached models (from before BPE became the default) are still found.
constexpr const char* kUnigramRecipeVersion = "spm-unigram-v1";
constexpr const char* kBpeRecipeVersion = "spm-bpe-v1";
// SentencePiece rejects sentences longer than max_sentence_length (4192 bytes by default);
// longer lines are cut rather than dropped so their vocabulary still counts.
constexpr size_t kMaxLineBytes = 4096;
// Enough sentences for a good 32k vocabulary; more only costs trainer memory and time.
constexpr int kMaxTrainingSentences = 2'000'000;
// Fixed so that the same corpus always gives the same model (sentence sampling is random).
constexpr unsigned kTrainerSeed = 20230711;

std::string fnv1a_hex(const std::string& bytes) {
  uint64_t hash = 14695981039346656037ull;
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(hash));
  return hex;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("tokenizer model not found or unreadable: " + path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Cuts at most kMaxLineBytes without splitting a UTF-8 sequence (continuation bytes 10xxxxxx).
std::string_view truncate_utf8(std::string_view line) {
  if (line.size() <= kMaxLineBytes) return line;
  size_t end = kMaxLineBytes;
  while (end > 0 && (static_cast<unsigned char>(line[end]) & 0xC0) == 0x80) --end;
  return line.substr(0, end);
}

// Writes the training text: one non-blank line per line, documents split on their newlines.
// Returns the number of lines written.
size_t write_training_text(const std::vector<std::string>& files, const std::string& out_path) {
  std::ofstream out(out_path, std::ios::binary | std::ios::trunc);
  if (!out) throw std::runtime_error("cannot write tokenizer training text " + out_path);
  size_t lines = 0;
  for (const auto& file : files) {
    if (fs::path(file).extension() == ".tok") {  // already token ids: no text to learn from
      spdlog::info("tokenizer: skipping token file {} for training", file);
      continue;
    }
    read_documents(file, [&](std::string_view document) {
      size_t start = 0;
      while (start <= document.size()) {
        size_t end = document.find('\n', start);
        if (end == std::string_view::npos) end = document.size();
        std::string_view line = document.substr(start, end - start);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (line.find_first_not_of(" \t") != std::string_view::npos) {
          line = truncate_utf8(line);
          out.write(line.data(), static_cast<std::streamsize>(line.size()));
          out.put('\n');
          ++lines;
        }
        start = end + 1;
      }
    });
  }
  out.close();
  if (!out) throw std::runtime_error("cannot write tokenizer training text " + out_path);
  return lines;
}

// Removes a temporary file on every exit path, including exceptions.
struct TempFile {
  std::string path;
  ~TempFile() {
    std::error_code ec;
    fs::remove(path, ec);
  }
};

// Writes `bytes` to `path` atomically: a unique temporary name, then rename.
void write_atomically(const std::string& path, const std::string& bytes) {
  TempFile temp{path + ".tmp." + std::to_string(::getpid())};
  {
    std::ofstream out(temp.path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.close();
    if (!out) throw std::runtime_error("cannot write tokenizer model " + temp.path);
  }
  fs::rename(temp.path, path);
}

// SentencePieceTrainer flags for `type`; the common ones are added by the caller.
std::vector<std::pair<std::string, std::string>> recipe(TokenizerModelType type) {
  if (type == TokenizerModelType::kUnigram) {
    return {
        {"model_type", "unigram"},
        {"pad_id", "0"},
        {"eos_id", "1"},
        {"unk_id", "2"},
        {"bos_id", "-1"},
        // Keeps rare characters (stray Unicode in web text) out of the vocabulary, as T5 did.
        {"character_coverage", "0.9995"},
    };
  }
  // LLaMA's tokenizer.model, whose layout Hugging Face's LlamaTokenizer and llama.cpp's LLaMA
  // conversion assume (docs/tokenizer.md): llama.cpp's SentencePiece tokenizer is BPE's
  // highest-score-merge-first encode, with no normalization other than spaces -> U+2581 and the
  // dummy prefix; so the model must be BPE, normalize with "identity" and keep repeated spaces.
  return {
      {"model_type", "bpe"},
      {"unk_id", "0"},
      {"bos_id", "1"},  // declared, never added: training puts only an EOS after each document
      {"eos_id", "2"},
      {"pad_id", "-1"},
      // Characters outside the vocabulary become their UTF-8 bytes (<0x00>..<0xFF>), never unk.
      {"byte_fallback", "true"},
      // Rare characters are left to the byte pieces rather than spending pieces on them.
      {"character_coverage", "0.9995"},
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"allow_whitespace_only_pieces", "true"},
      {"split_digits", "true"},
  };
}

}  // namespace

TokenizerModelType tokenizer_model_type_from_name(const std::string& name) {
  if (name.empty() || name == "bpe") return TokenizerModelType::kBpe;
  if (name == "unigram") return TokenizerModelType::kUnigram;
  throw std::runtime_error("data.tokenizer_model_type: '" + name + "' is not bpe or unigram");
}

const char* tokenizer_model_type_name(TokenizerModelType type) {
  return type == TokenizerModelType::kUnigram ? "unigram" : "bpe";
}

Tokenizer::Tokenizer() : processor_(spm_api().create()) {}

Tokenizer::Tokenizer(Tokenizer&& other) noexcept
    : processor_(std::exchange(other.processor_, nullptr)),
      model_path_(std::move(other.model_path_)),
      fingerprint_(std::move(other.fingerprint_)) {}

Tokenizer& Tokenizer::operator=(Tokenizer&& other) noexcept {
  if (this != &other) {
    if (processor_) spm_api().destroy(processor_);
    processor_ = std::exchange(other.processor_, nullptr);
    model_path_ = std::move(other.model_path_);
    fingerprint_ = std::move(other.fingerprint_);
  }
  return *this;
}

Tokenizer::~Tokenizer() {
  if (processor_) spm_api().destroy(processor_);
}

Tokenizer Tokenizer::load(const std::string& model_path) {
  if (!fs::is_regular_file(model_path)) {
    throw std::runtime_error("tokenizer model not found: " + model_path);
  }
  const std::string bytes = read_file(model_path);
  Tokenizer tokenizer;
  // Loading from the bytes already read guarantees the fingerprint describes the loaded model.
  std::string error;
  if (!spm_api().load_from_bytes(tokenizer.processor_, bytes, &error)) {
    throw std::runtime_error("not a SentencePiece model: " + model_path + ": " + error);
  }
  tokenizer.model_path_ = model_path;
  tokenizer.fingerprint_ = fnv1a_hex(bytes);
  return tokenizer;
}

Tokenizer Tokenizer::train_or_load_cached(const std::vector<std::string>& inputs, int vocab_size,
                                          const std::string& cache_dir, TokenizerModelType type) {
  if (vocab_size < 8) throw std::runtime_error("tokenizer vocab_size must be >= 8");
  if (type == TokenizerModelType::kBpe && vocab_size < kMinBpeVocabSize) {
    throw std::runtime_error("tokenizer vocab_size " + std::to_string(vocab_size) + " is below " +
                             std::to_string(kMinBpeVocabSize) +
                             ", too small for a BPE model with 256 byte pieces (use unigram)");
  }
  const std::vector<std::string> files = expand_input_paths(inputs);
  if (files.empty()) throw std::runtime_error("no tokenizer training files in the inputs");
  const char* version = type == TokenizerModelType::kUnigram ? kUnigramRecipeVersion : kBpeRecipeVersion;
  const std::string salt = std::string(version) + "|vocab=" + std::to_string(vocab_size);
  const std::string name = "spm-" + std::to_string(vocab_size) + "-" + inputs_digest(files, salt);
  const std::string model_path = (fs::path(cache_dir) / (name + ".model")).string();

  if (fs::exists(model_path)) {
    spdlog::info("tokenizer: reusing cached model {} (trained on {} files)", model_path,
                 files.size());
    return load(model_path);
  }

  fs::create_directories(cache_dir);
  // A name unique to this process: concurrent trainers (e.g. several ranks) never share a
  // temporary file, and the final rename is atomic, so readers see a whole model or none.
  TempFile text{(fs::path(cache_dir) / (name + ".txt.tmp." + std::to_string(::getpid()))).string()};

  const auto start = std::chrono::steady_clock::now();
  const size_t lines = write_training_text(files, text.path);
  if (lines == 0) throw std::runtime_error("tokenizer inputs hold no text: " + inputs.front());
  spdlog::info("tokenizer: training {} SentencePiece, vocab {}, on {} lines from {} files",
               tokenizer_model_type_name(type), vocab_size, lines, files.size());

  std::vector<std::pair<std::string, std::string>> args = recipe(type);
  args.insert(args.end(), {
      {"vocab_size", std::to_string(vocab_size)},
      {"input_sentence_size", std::to_string(kMaxTrainingSentences)},
      {"shuffle_input_sentence", "true"},
      {"max_sentence_length", std::to_string(kMaxLineBytes + 96)},
      {"num_threads", "2"},
      // A small corpus may not support `vocab_size` pieces: train fewer rather than fail,
      // and say so below.
      {"hard_vocab_limit", "false"},
      // Errors only (a failure is returned as a status anyway). INFO lines would flood the job log,
      // and a WARNING crashes the process: SentencePiece logs to std::cerr, which from inside the
      // RTLD_DEEPBIND shim resolves to libstdc++'s own, never constructed copy of the object (the
      // executable's copy-relocated one is the live one). The BPE trainer warns whenever the
      // corpus supports fewer merges than asked; the shortfall is reported below instead.
      {"minloglevel", "2"},
  });
  std::string model_bytes, error;
  if (!spm_api().train(args, text.path, kTrainerSeed, &model_bytes, &error)) {
    throw std::runtime_error("SentencePiece training failed on " + inputs.front() + ": " + error);
  }
  write_atomically(model_path, model_bytes);  // the model file appearing is the commit point

  Tokenizer tokenizer = load(model_path);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  spdlog::info("tokenizer: trained {} pieces in {:.1f} s -> {}", tokenizer.vocab_size(), seconds,
               model_path);
  if (tokenizer.vocab_size() != vocab_size) {
    spdlog::warn("tokenizer: asked for {} pieces, the corpus supported {}", vocab_size,
                 tokenizer.vocab_size());
  }
  return tokenizer;
}

std::vector<int> Tokenizer::encode(const std::string& text) const {
  std::vector<int> ids;
  std::string error;
  if (!spm_api().encode(processor_, text, &ids, &error)) throw std::runtime_error("tokenizer encode failed: " + error);
  return ids;
}

std::string Tokenizer::decode(const std::vector<int>& ids) const {
  std::string text, error;
  if (!spm_api().decode(processor_, ids, &text, &error)) throw std::runtime_error("tokenizer decode failed: " + error);
  return text;
}

int Tokenizer::eos_id() const { return spm_api().eos_id(processor_); }
int Tokenizer::pad_id() const { return spm_api().pad_id(processor_); }
int Tokenizer::vocab_size() const { return spm_api().piece_size(processor_); }

SpmModelInfo Tokenizer::describe() const {
  SpmModelInfo info;
  std::string error;
  if (!spm_api().describe(processor_, &info, &error))
    throw std::runtime_error("cannot read tokenizer model " + model_path_ + ": " + error);
  return info;
}

}  // namespace relora::data
