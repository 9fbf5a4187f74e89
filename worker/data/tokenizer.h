// SentencePiece tokenizer: load a model file, or train one on the training text and cache it.
#pragma once

#include <string>
#include <vector>

#include "worker/data/spm_api.h"

namespace relora::data {

// The kind of SentencePiece model train_or_load_cached() trains (docs/tokenizer.md argues the
// default).
enum class TokenizerModelType {
  // The default, laid out like LLaMA's tokenizer.model so that LLaMA tooling reads it as we
  // trained it: BPE with byte fallback (no character is out of vocabulary), unk 0 "<unk>",
  // bos 1 "<s>", eos 2 "</s>", no pad, no normalization beyond spaces -> U+2581 and a dummy
  // prefix, repeated spaces kept, digits split. Needs vocab_size >= kMinBpeVocabSize.
  kBpe,
  // relora's recipe before BPE became the default, as T5's spiece.model: unigram, pad 0, eos 1,
  // unk 2, no bos, NFKC normalization, rare characters map to unk.
  kUnigram,
};
// 256 byte pieces + 3 special pieces + the characters of any text + some merges.
constexpr int kMinBpeVocabSize = 384;

// "bpe" or "unigram" (data.tokenizer_model_type); "" is the default, bpe. Throws
// std::runtime_error naming the field otherwise.
TokenizerModelType tokenizer_model_type_from_name(const std::string& name);
const char* tokenizer_model_type_name(TokenizerModelType type);

class Tokenizer {
 public:
  // Throws std::runtime_error naming `model_path` if it is missing or not a SentencePiece model.
  static Tokenizer load(const std::string& model_path);

  // Trains a SentencePiece model of `type` with `vocab_size` pieces on the documents of `inputs`
  // (any format read_documents() accepts), unless a model trained on the same inputs (path, size,
  // mtime), type and vocab size is already cached in `cache_dir`. Returns the loaded tokenizer;
  // model_path() is the cached file.
  static Tokenizer train_or_load_cached(const std::vector<std::string>& inputs, int vocab_size,
                                        const std::string& cache_dir,
                                        TokenizerModelType type = TokenizerModelType::kBpe);

  Tokenizer(Tokenizer&& other) noexcept;
  Tokenizer& operator=(Tokenizer&& other) noexcept;
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;
  ~Tokenizer();

  std::vector<int> encode(const std::string& text) const;
  std::string decode(const std::vector<int>& ids) const;
  int eos_id() const;  // -1 where the model has no such piece
  int pad_id() const;
  int vocab_size() const;  // number of pieces
  // What the model file declares: pieces, special ids, model type, byte fallback, normalizer.
  SpmModelInfo describe() const;
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
