// librelora_spm.so: the only code that touches SentencePiece (see spm_api.h for why it is kept
// apart). Loaded with dlopen(RTLD_LOCAL | RTLD_DEEPBIND); exports one symbol, relora_spm_api.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <string_view>
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

// A minimal reader of the protobuf wire format: Debian ships no sentencepiece_model.pb.h, and the
// fields describe() needs are few (numbers from sentencepiece_model.proto).
class WireReader {
 public:
  explicit WireReader(std::string_view bytes) : bytes_(bytes) {}
  bool done() const { return pos_ >= bytes_.size(); }
  // The next field's number and wire type; false at a malformed key.
  bool key(uint32_t* field, uint32_t* wire_type) {
    uint64_t k = 0;
    if (!varint(&k)) return false;
    *field = static_cast<uint32_t>(k >> 3);
    *wire_type = static_cast<uint32_t>(k & 7);
    return true;
  }
  bool varint(uint64_t* value) {
    *value = 0;
    for (int shift = 0; shift < 64 && pos_ < bytes_.size(); shift += 7) {
      const auto byte = static_cast<unsigned char>(bytes_[pos_++]);
      *value |= static_cast<uint64_t>(byte & 0x7F) << shift;
      if ((byte & 0x80) == 0) return true;
    }
    return false;
  }
  bool length_delimited(std::string_view* out) {
    uint64_t n = 0;
    if (!varint(&n) || n > bytes_.size() - pos_) return false;
    *out = bytes_.substr(pos_, n);
    pos_ += n;
    return true;
  }
  bool fixed32(uint32_t* value) {
    if (bytes_.size() - pos_ < 4) return false;
    std::memcpy(value, bytes_.data() + pos_, 4);  // little-endian, as on every target we build for
    pos_ += 4;
    return true;
  }
  bool skip(uint32_t wire_type) {
    uint64_t ignored = 0;
    uint32_t ignored32 = 0;
    std::string_view ignored_bytes;
    switch (wire_type) {
      case 0: return varint(&ignored);
      case 1: return bytes_.size() - pos_ >= 8 ? (pos_ += 8, true) : false;
      case 2: return length_delimited(&ignored_bytes);
      case 5: return fixed32(&ignored32);
      default: return false;  // groups (3, 4) do not occur in a ModelProto
    }
  }

 private:
  std::string_view bytes_;
  size_t pos_ = 0;
};

// Reads ModelProto { repeated SentencePiece pieces = 1; TrainerSpec trainer_spec = 2;
// NormalizerSpec normalizer_spec = 3; }: each piece's string (1), score (2) and type (3); the
// trainer's model_type (3) and byte_fallback (35); the normalizer's name (1), add_dummy_prefix (3),
// remove_extra_whitespaces (4) and escape_whitespaces (5). Absent fields keep the proto defaults.
bool parse_model_proto(std::string_view bytes, relora::data::SpmModelInfo* info, std::string* error) {
  auto fail = [&](const char* what) {
    *error = std::string("malformed SentencePiece model proto: ") + what;
    return false;
  };
  WireReader model(bytes);
  while (!model.done()) {
    uint32_t field = 0, type = 0;
    if (!model.key(&field, &type)) return fail("key");
    if (type != 2 || field < 1 || field > 3) {
      if (!model.skip(type)) return fail("field");
      continue;
    }
    std::string_view sub;
    if (!model.length_delimited(&sub)) return fail("length");
    WireReader r(sub);
    std::string piece;
    float score = 0;
    int piece_type = 1;  // NORMAL
    while (!r.done()) {
      uint32_t f = 0, t = 0;
      if (!r.key(&f, &t)) return fail("nested key");
      uint64_t v = 0;
      std::string_view text;
      uint32_t bits = 0;
      bool ok = true;
      if (field == 1 && f == 1 && t == 2) {
        ok = r.length_delimited(&text);
        piece.assign(text);
      } else if (field == 1 && f == 2 && t == 5) {
        ok = r.fixed32(&bits);
        std::memcpy(&score, &bits, 4);
      } else if (field == 1 && f == 3 && t == 0) {
        ok = r.varint(&v);
        piece_type = static_cast<int>(v);
      } else if (field == 2 && f == 3 && t == 0) {
        ok = r.varint(&v);
        info->model_type = static_cast<int>(v);
      } else if (field == 2 && f == 35 && t == 0) {
        ok = r.varint(&v);
        info->byte_fallback = v != 0;
      } else if (field == 3 && f == 1 && t == 2) {
        ok = r.length_delimited(&text);
        info->normalizer_name.assign(text);
      } else if (field == 3 && f >= 3 && f <= 5 && t == 0) {
        ok = r.varint(&v);
        (f == 3 ? info->add_dummy_prefix : f == 4 ? info->remove_extra_whitespaces : info->escape_whitespaces) = v != 0;
      } else {
        ok = r.skip(t);
      }
      if (!ok) return fail("nested field");
    }
    if (field == 1) {
      info->pieces.push_back(std::move(piece));
      info->scores.push_back(score);
      info->types.push_back(piece_type);
    }
  }
  return true;
}

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
    /*describe=*/
    [](void* p, relora::data::SpmModelInfo* info, std::string* error) {
      const SentencePieceProcessor& sp = *as_sp(p);
      *info = relora::data::SpmModelInfo{};
      if (!parse_model_proto(sp.serialized_model_proto(), info, error)) return false;
      if (static_cast<int>(info->pieces.size()) != sp.GetPieceSize()) {
        *error = "SentencePiece model proto lists " + std::to_string(info->pieces.size()) + " pieces, the model " +
                 std::to_string(sp.GetPieceSize());
        return false;
      }
      // The ids as the processor resolves them (a special piece's id, or -1 where there is none).
      info->unk_id = sp.unk_id();
      info->bos_id = sp.bos_id();
      info->eos_id = sp.eos_id();
      info->pad_id = sp.pad_id();
      return true;
    },
};

}  // namespace

extern "C" __attribute__((visibility("default"))) const relora::data::SpmApi* relora_spm_api() { return &kApi; }
