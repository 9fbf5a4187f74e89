// `relora tokenize`: corpus files -> sharded token files plus an index (token_index.h), on all
// cores, resumable after a kill, and deterministic: the same bytes whatever the thread count.
//
// One reader thread reads documents in input order (decompression and JSON parsing are
// sequential per file) and deals them out in numbered chunks; `threads` encoder threads turn
// chunks into token ids; the calling thread writes chunks strictly in chunk order. Shards are
// cut by the writer at the first document end past `shard_tokens`, so shard contents depend only
// on the input order, never on which thread encoded what. Memory is bounded by the chunks in
// flight (a few per thread), not by the corpus.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace relora::data {

struct TokenizeOptions {
  std::vector<std::string> inputs;  // files and directories (expanded, sorted)
  std::string out_dir;
  std::string tokenizer_model;      // a SentencePiece model file
  int threads = 0;                  // encoder threads; 0: all cores
  uint64_t shard_tokens = uint64_t{32} << 20;  // ~128 MB shards
};

struct TokenizeProgress {
  uint64_t documents = 0;          // written, including those of shards kept from an earlier run
  uint64_t tokens = 0;
  uint64_t text_bytes = 0;         // UTF-8 bytes encoded by this run
  uint64_t input_bytes_done = 0;   // of the input files (compressed size), read so far
  uint64_t input_bytes_total = 0;
  uint64_t shards = 0;             // finished shards
  double seconds = 0;              // since this run started
  bool finished = false;
};

struct TokenizeResult {
  std::string index_file;
  uint64_t documents = 0;
  uint64_t tokens = 0;
  uint64_t shards = 0;
  uint64_t shards_reused = 0;  // finished shards of an interrupted run, verified and kept
  uint64_t text_bytes = 0;     // encoded by this run
  double seconds = 0;
};

// Resumes if out_dir holds an index of the same run (same inputs by path, size and mtime, same
// tokenizer, same shard size): its finished shards are verified (crc32, ids below the
// vocabulary) and kept, the rest is redone. Throws std::runtime_error if out_dir holds another
// run's index, or naming the input file and line that cannot be read. `on_progress` is called
// from the calling thread about twice a second and once at the end.
TokenizeResult tokenize_corpus(const TokenizeOptions& options,
                               const std::function<void(const TokenizeProgress&)>& on_progress);

}  // namespace relora::data
