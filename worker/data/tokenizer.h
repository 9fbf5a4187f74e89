// SentencePiece tokenizer: load a model file, or train one on the training text and cache it.
#pragma once

#include <string>
#include <vector>

namespace relora::data {

class Tokenizer {
 public:
  // Throws std::runtime_error naming `model_path` if it is missing or not a SentencePiece model.
  static Tokenizer load(const std::string& model_path);

  // Trains a unigram SentencePiece model with `vocab_size` pieces on the documents of `inputs`
  // (any format read_documents() accepts), unless a model trained on the same inputs (path, size,
  // mtime) and vocab size is already cached in `cache_dir`. Special ids follow T5: pad 0, eos 1,
  // unk 2, no bos. Returns the loaded tokenizer; model_path() is the cached file.
  static Tokenizer train_or_load_cached(const std::vector<std::string>& inputs, int vocab_size,
                                        const std::string& cache_dir);

  Tokenizer(Tokenizer&& other) noexcept;
  Tokenizer& operator=(Tokenizer&& other) noexcept;
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;
  ~Tokenizer();

  std::vector<int> encode(const std::string& text) const;
  std::string decode(const std::vector<int>& ids) const;
  int eos_id() const;
  int pad_id() const;
  int vocab_size() const;  // number of pieces
  const std::string& model_path() const { return model_path_; }
  // Hex digest of the model file's bytes: identifies the tokenizer in cache keys.
  const std::string& fingerprint() const { return fingerprint_; }

 private:
  Tokenizer();
  void* processor_ = nullptr;  // a SentencePieceProcessor inside the shim (see spm_api.h)
  std::string model_path_;
  std::string fingerprint_;
};

}  // namespace relora::data
