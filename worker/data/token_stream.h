// Many memory-mapped token files read as one stream of tokens, without copying them anywhere.
//
// A job's training data is a list of pieces: a cached token file made from text, a .tok file, or
// the shards of a `relora tokenize` index. Each piece stays a read-only mapping; copy() reads
// only the pages the sampler asks for, so opening a 20 GB corpus costs its headers, and memory
// stays flat whatever the corpus size (the kernel drops clean mapped pages under pressure).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "worker/data/token_file.h"

namespace relora::data {

class TokenStream {
 public:
  // Appends tokens [first, first + count) of `file` (shared: several streams may map one file).
  void append(std::shared_ptr<const TokenFile> file, uint64_t first, uint64_t count);
  void append(std::shared_ptr<const TokenFile> file) { append(file, 0, file->size()); }
  // Appends tokens [first, first + count) of another stream (sharing its files).
  void append(const TokenStream& other, uint64_t first, uint64_t count);
  // Appends a plain array the caller keeps alive (tests, small in-memory data).
  void append(const uint32_t* tokens, uint64_t count, uint32_t vocab_size, std::string origin);

  uint64_t size() const { return total_; }
  uint32_t vocab_size() const;  // the largest of the pieces'
  bool empty() const { return total_ == 0; }

  // Copies tokens [first, first + n) into `out`. The ids are checked against their file's vocab
  // size here, as they are read: token files are opened without reading them whole (a checksum
  // over a terabyte at every job start is not affordable), and an id beyond the vocabulary
  // must not reach the embedding. Throws std::runtime_error naming the file.
  void copy(uint64_t first, uint64_t n, int64_t* out) const;

 private:
  struct Piece {
    std::shared_ptr<const TokenFile> file;  // null for a caller-owned array
    const uint32_t* tokens = nullptr;
    uint64_t count = 0;
    uint64_t start = 0;  // offset of the piece in the stream
    uint32_t vocab_size = 0;
    std::string origin;
  };
  std::vector<Piece> pieces_;
  uint64_t total_ = 0;
};

}  // namespace relora::data
