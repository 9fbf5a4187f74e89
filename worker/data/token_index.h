// The index of a sharded token corpus written by `relora tokenize`, read directly by jobs
// (`data.train: [corpus/index.json]`, or the directory holding it).
//
// A corpus directory holds shard-00000.tok, shard-00001.tok, ... (token files, token_file.h:
// each a header with its count, document count and crc32, then uint32 ids; documents are whole
// within a shard, each followed by EOS) and index.json, UTF-8 JSON:
//   {"format": "relora-token-index", "version": 1,
//    "complete": true,               // false while `relora tokenize` is still writing shards
//    "vocab_size": 32000, "eos_id": 2,
//    "tokenizer": {"model": "/abs/path/tokenizer.model", "fingerprint": "<hex>"},
//    "run_key": "<hex>",             // digest of inputs (paths, sizes, mtimes), tokenizer, shard size
//    "shard_tokens": 33554432,       // a shard is closed at the first document end past this
//    "documents": 1234, "tokens": 567890,
//    "shards": [{"file": "shard-00000.tok", "documents": 1000, "tokens": 456789,
//                "crc32": 305419896,
//                "next": {"input": 0, "document": 1000}}, ...],  // where the next shard starts
//    "inputs": ["/abs/path/c4-00000.json.gz", ...]}
// The index is rewritten atomically after every shard, so it is also the resume point of an
// interrupted `relora tokenize`. File names are relative to the index's directory, so a corpus
// directory can be moved or copied whole.
//
// Verification: `relora tokenize` checks each finished shard's crc32 when it resumes; a job
// opening the index checks every shard's header and size against the index (no full read: the
// corpus may be terabytes) and each id against the vocabulary as it is read (token_stream.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "worker/data/token_stream.h"

namespace relora::data {

constexpr const char* kTokenIndexFormat = "relora-token-index";
constexpr const char* kTokenIndexName = "index.json";

struct ShardEntry {
  std::string file;  // relative to the index's directory
  uint64_t documents = 0;
  uint64_t tokens = 0;
  uint32_t crc32 = 0;
  uint64_t next_input = 0;     // index into `inputs` where the following shard starts
  uint64_t next_document = 0;  // documents of that input already in this or earlier shards
};

struct TokenIndex {
  bool complete = false;
  uint32_t vocab_size = 0;
  int32_t eos_id = -1;
  std::string tokenizer_model;
  std::string tokenizer_fingerprint;
  std::string run_key;
  uint64_t shard_tokens = 0;
  std::vector<ShardEntry> shards;
  std::vector<std::string> inputs;

  uint64_t documents() const;
  uint64_t tokens() const;
};

// True if `path` is an index file (by its content, not its name: C4's shards are .json too) or a
// directory holding one named index.json.
bool is_token_index(const std::string& path);
// The index file of `path` (itself, or dir/index.json).
std::string token_index_file(const std::string& path);

// Throws std::runtime_error naming the file if it is not a well-formed index.
TokenIndex read_token_index(const std::string& index_file);
// Atomic: temporary name, fsync, rename.
void write_token_index(const std::string& index_file, const TokenIndex& index);

// Maps every shard of a complete index into `stream`, checking headers and sizes against the
// index (no read of the token data). Throws std::runtime_error naming the index or shard.
void append_token_index(const std::string& index_file, TokenStream& stream);

}  // namespace relora::data
