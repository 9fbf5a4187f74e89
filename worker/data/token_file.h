// The pre-tokenized token file: written once, memory-mapped, reused across runs and ranks.
//
// Layout (little endian): 64-byte header, then `count` uint32 token ids.
//   magic "RLRATOK1" | u32 version (1) | u32 vocab_size | u64 count | u64 documents |
//   u32 crc32 of the token bytes | padding to 64 bytes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace relora::data {

// Streams tokens into a temporary file next to `path` (path + ".tmp." + pid), then commits:
// header, fsync, rename, fsync of the directory. Destroyed uncommitted, it removes the temporary
// file; a killed process leaves it behind (`relora tokenize` sweeps such leftovers). Streaming
// keeps memory flat however large the file. Throws naming the path on I/O errors.
class TokenWriter {
 public:
  explicit TokenWriter(std::string path);
  ~TokenWriter();
  TokenWriter(const TokenWriter&) = delete;
  TokenWriter& operator=(const TokenWriter&) = delete;

  void append(const uint32_t* tokens, size_t n);
  void commit(uint32_t vocab_size, uint64_t documents);
  uint64_t count() const { return count_; }
  uint32_t crc32() const { return crc_; }  // of the tokens appended so far

 private:
  void write_all(const void* data, size_t n);
  void flush();
  [[noreturn]] void fail(const std::string& what) const;

  std::string path_;
  std::string temp_;
  int fd_ = -1;
  // Appends are gathered here and written in large pieces: callers append one document at a
  // time, and a system call per document cost more than the checksum.
  std::vector<uint32_t> pending_;
  uint32_t crc_ = 0;
  uint64_t count_ = 0;
  bool committed_ = false;
};

// Writes atomically: temporary name, fsync, rename. Throws naming the path on I/O errors.
void write_token_file(const std::string& path, const std::vector<uint32_t>& tokens,
                      uint32_t vocab_size, uint64_t documents);

class TokenFile {
 public:
  // Maps the file read-only. Throws std::runtime_error naming the path if the magic, version,
  // size or (when verify_checksum) the checksum is wrong or a token id is not below vocab_size.
  explicit TokenFile(const std::string& path, bool verify_checksum = true);
  TokenFile(TokenFile&&) noexcept;
  TokenFile& operator=(TokenFile&&) noexcept;
  TokenFile(const TokenFile&) = delete;
  TokenFile& operator=(const TokenFile&) = delete;
  ~TokenFile();

  const uint32_t* data() const { return tokens_; }
  uint64_t size() const { return count_; }
  uint32_t vocab_size() const { return vocab_size_; }
  uint64_t documents() const { return documents_; }
  uint32_t stored_crc32() const { return crc32_; }  // the header's; checked only with verify_checksum
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  const uint32_t* tokens_ = nullptr;
  uint64_t count_ = 0;
  uint64_t documents_ = 0;
  uint32_t vocab_size_ = 0;
  uint32_t crc32_ = 0;
};

// Tokenizes `inputs` (EOS after every document) into a token file under `cache_dir`, named by a
// hash of the tokenizer fingerprint and the inputs' paths, sizes and mtimes; reuses it if present.
// Inputs ending in .tok are token files already and are concatenated as they are.
// Logs progress (documents, tokens, MB/s) for long inputs. Returns the token file's path.
class Tokenizer;
std::string tokenize_to_cache(const std::vector<std::string>& inputs, const Tokenizer& tokenizer,
                              const std::string& cache_dir);

}  // namespace relora::data
