// The SentencePiece calls relora makes, behind a table of plain function pointers.
//
// Why not link libsentencepiece directly: Debian's libsentencepiece carries its own copy of
// protobuf-lite 3.14 and exports its symbols, while LibTorch (and our job spec) load the system
// libprotobuf 3.21. In one global symbol scope one copy's calls land in the other and the
// process crashes at start-up or fails protobuf's version check. So SentencePiece lives in a
// small shim module (spm_shim.cpp -> librelora_spm.so) that is dlopen()ed with RTLD_LOCAL |
// RTLD_DEEPBIND: its protobuf stays private to it, and ours stays ours.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace relora::data {

// What a model file declares about itself: its pieces and the trainer and normalizer settings that
// decide how another tool (Hugging Face, llama.cpp) must tokenize to give the same ids. Read from
// the model's serialized ModelProto inside the shim (field numbers of sentencepiece_model.proto).
struct SpmModelInfo {
  int model_type = 1;                    // TrainerSpec.model_type: 1 unigram, 2 bpe, 3 word, 4 char
  bool byte_fallback = false;            // TrainerSpec.byte_fallback: unknown characters as <0xXX>
  std::string normalizer_name;           // NormalizerSpec.name: "nmt_nfkc", "identity", ...
  bool add_dummy_prefix = true;          // NormalizerSpec: U+2581 (the piece space) goes before the text
  bool remove_extra_whitespaces = true;  // NormalizerSpec: leading, trailing, repeated spaces go
  bool escape_whitespaces = true;        // NormalizerSpec: spaces become U+2581
  int unk_id = -1, bos_id = -1, eos_id = -1, pad_id = -1;  // -1: the model has no such piece
  std::vector<std::string> pieces;       // by id
  std::vector<float> scores;             // by id
  // By id, ModelProto.SentencePiece.Type: 1 normal, 2 unknown, 3 control, 4 user-defined,
  // 5 unused, 6 byte.
  std::vector<int> types;
};

struct SpmApi {
  // Each call returns true on success; on failure it fills *error.
  void* (*create)();
  void (*destroy)(void* processor);
  bool (*load_from_bytes)(void* processor, const std::string& bytes, std::string* error);
  bool (*encode)(void* processor, const std::string& text, std::vector<int>* ids, std::string* error);
  bool (*decode)(void* processor, const std::vector<int>& ids, std::string* text, std::string* error);
  int (*eos_id)(void* processor);
  int (*pad_id)(void* processor);
  int (*piece_size)(void* processor);
  // Trains on the lines of `text_path` with SentencePieceTrainer flags `args`, seeded by `seed`.
  bool (*train)(const std::vector<std::pair<std::string, std::string>>& args, const std::string& text_path,
                unsigned seed, std::string* model_bytes, std::string* error);
  // Fills *info from the loaded model.
  bool (*describe)(void* processor, SpmModelInfo* info, std::string* error);
};

// The shim's entry point (extern "C" so dlsym finds it by this name).
using SpmApiEntry = const SpmApi* (*)();
constexpr const char* kSpmApiSymbol = "relora_spm_api";

// Loads the shim on first use. Searched in order: $RELORA_SPM_LIBRARY, the path it was built at,
// next to the executable, and ../lib beside it. Throws std::runtime_error saying where it looked.
const SpmApi& spm_api();

}  // namespace relora::data
