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
};

// The shim's entry point (extern "C" so dlsym finds it by this name).
using SpmApiEntry = const SpmApi* (*)();
constexpr const char* kSpmApiSymbol = "relora_spm_api";

// Loads the shim on first use. Searched in order: $RELORA_SPM_LIBRARY, the path it was built at,
// next to the executable, and ../lib beside it. Throws std::runtime_error saying where it looked.
const SpmApi& spm_api();

}  // namespace relora::data
