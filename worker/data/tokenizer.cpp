// SentencePiece tokenizer: loading, encoding, and training a unigram model once per corpus.
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

// Bumped whenever the training recipe below changes, so old cached models are not reused.
constexpr const char* kRecipeVersion = "spm-unigram-v1";
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

}  // namespace

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
                                          const std::string& cache_dir) {
  if (vocab_size < 8) throw std::runtime_error("tokenizer vocab_size must be >= 8");
  const std::vector<std::string> files = expand_input_paths(inputs);
  if (files.empty()) throw std::runtime_error("no tokenizer training files in the inputs");
  const std::string salt = std::string(kRecipeVersion) + "|vocab=" + std::to_string(vocab_size);
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
  spdlog::info("tokenizer: training unigram SentencePiece, vocab {}, on {} lines from {} files",
               vocab_size, lines, files.size());

  const std::vector<std::pair<std::string, std::string>> args = {
      {"model_type", "unigram"},
      {"vocab_size", std::to_string(vocab_size)},
      {"pad_id", "0"},
      {"eos_id", "1"},
      {"unk_id", "2"},
      {"bos_id", "-1"},
      // Keeps rare characters (stray Unicode in web text) out of the vocabulary, as T5 did.
      {"character_coverage", "0.9995"},
      {"input_sentence_size", std::to_string(kMaxTrainingSentences)},
      {"shuffle_input_sentence", "true"},
      {"max_sentence_length", std::to_string(kMaxLineBytes + 96)},
      {"num_threads", "2"},
      // A small corpus may not support `vocab_size` pieces: train fewer rather than fail,
      // and say so below.
      {"hard_vocab_limit", "false"},
      {"minloglevel", "1"},  // the trainer's per-iteration INFO lines would flood the job log
  };
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

}  // namespace relora::data
