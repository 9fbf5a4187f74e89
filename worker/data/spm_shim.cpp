// librelora_spm.so: the only code that touches SentencePiece (see spm_api.h for why it is kept
// apart). Loaded with dlopen(RTLD_LOCAL | RTLD_DEEPBIND); exports one symbol, relora_spm_api.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <fstream>
#include <unordered_map>

#include "worker/data/spm_api.h"

namespace {

using sentencepiece::SentencePieceProcessor;

SentencePieceProcessor* as_sp(void* p) { return static_cast<SentencePieceProcessor*>(p); }

bool check(const sentencepiece::util::Status& status, std::string* error) {
  if (status.ok()) return true;
  *error = status.ToString();
  return false;
}

// Feeds the training text line by line. Training from an iterator rather than `--input=FILE`
// keeps the temporary file's path out of the model proto (which records its trainer spec), so
// the same corpus gives byte-identical models, hence equal fingerprints, in every cache directory.
class LineIterator : public sentencepiece::SentenceIterator {
 public:
  explicit LineIterator(const std::string& path) : in_(path, std::ios::binary) { Next(); }
  bool ok() const { return static_cast<bool>(in_) || done_; }
  bool done() const override { return done_; }
  void Next() override { done_ = !std::getline(in_, line_); }
  const std::string& value() const override { return line_; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  std::ifstream in_;
  std::string line_;
  bool done_ = false;
};

const relora::data::SpmApi kApi = {
    /*create=*/[]() -> void* { return new SentencePieceProcessor(); },
    /*destroy=*/[](void* p) { delete as_sp(p); },
    /*load_from_bytes=*/
    [](void* p, const std::string& bytes, std::string* error) {
      return check(as_sp(p)->LoadFromSerializedProto(bytes), error);
    },
    /*encode=*/
    [](void* p, const std::string& text, std::vector<int>* ids, std::string* error) {
      return check(as_sp(p)->Encode(text, ids), error);
    },
    /*decode=*/
    [](void* p, const std::vector<int>& ids, std::string* text, std::string* error) {
      return check(as_sp(p)->Decode(ids, text), error);
    },
    /*eos_id=*/[](void* p) { return as_sp(p)->eos_id(); },
    /*pad_id=*/[](void* p) { return as_sp(p)->pad_id(); },
    /*piece_size=*/[](void* p) { return as_sp(p)->GetPieceSize(); },
    /*train=*/
    [](const std::vector<std::pair<std::string, std::string>>& args, const std::string& text_path, unsigned seed,
       std::string* model_bytes, std::string* error) {
      std::unordered_map<std::string, std::string> flags(args.begin(), args.end());
      LineIterator lines(text_path);
      if (!lines.ok()) {
        *error = "cannot read tokenizer training text " + text_path;
        return false;
      }
      sentencepiece::SetRandomGeneratorSeed(seed);
      return check(sentencepiece::SentencePieceTrainer::Train(flags, &lines, model_bytes), error);
    },
};

}  // namespace

extern "C" __attribute__((visibility("default"))) const relora::data::SpmApi* relora_spm_api() { return &kApi; }
