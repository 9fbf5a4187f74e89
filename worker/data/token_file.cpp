// The token file: a checksummed header plus raw uint32 ids, written atomically and mmapped.
#include "worker/data/token_file.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <utility>

#include "worker/data/documents.h"
#include "worker/data/tokenizer.h"

// Tokens are copied between memory and file as they are; the format is little endian.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "token files assume a little-endian host");

namespace fs = std::filesystem;

namespace relora::data {
namespace {

constexpr char kMagic[8] = {'R', 'L', 'R', 'A', 'T', 'O', 'K', '1'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderBytes = 64;
// Header field offsets, as documented in token_file.h.
constexpr size_t kVersionAt = 8, kVocabAt = 12, kCountAt = 16, kDocumentsAt = 24, kCrcAt = 32;

std::string errno_text() { return std::strerror(errno); }

template <typename T>
T load_field(const unsigned char* header, size_t offset) {
  T value;
  std::memcpy(&value, header + offset, sizeof value);
  return value;
}

uint32_t crc_update(uint32_t crc, const void* bytes, size_t n) {
  return static_cast<uint32_t>(crc32_z(crc, static_cast<const Bytef*>(bytes), n));
}

}  // namespace

TokenWriter::TokenWriter(std::string path)
    : path_(std::move(path)), temp_(path_ + ".tmp." + std::to_string(::getpid())) {
  fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) fail("cannot create");
  const unsigned char zeros[kHeaderBytes] = {};
  write_all(zeros, sizeof zeros);  // placeholder until the count and checksum are known
  crc_ = crc_update(0, nullptr, 0);
}

TokenWriter::~TokenWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(temp_.c_str());
}

void TokenWriter::append(const uint32_t* tokens, size_t n) {
  // zlib treats a null buffer as "return the initial crc", which would silently reset the
  // running checksum (an empty std::vector's data() may be null).
  if (n == 0) return;
  crc_ = crc_update(crc_, tokens, n * sizeof(uint32_t));
  count_ += n;
  constexpr size_t kPendingTokens = 1 << 18;  // 1 MiB
  if (pending_.size() + n > kPendingTokens) flush();
  if (n >= kPendingTokens) {
    write_all(tokens, n * sizeof(uint32_t));
  } else {
    pending_.insert(pending_.end(), tokens, tokens + n);
  }
}

void TokenWriter::flush() {
  if (pending_.empty()) return;
  write_all(pending_.data(), pending_.size() * sizeof(uint32_t));
  pending_.clear();
}

void TokenWriter::commit(uint32_t vocab_size, uint64_t documents) {
  flush();
  unsigned char header[kHeaderBytes] = {};
  std::memcpy(header, kMagic, sizeof kMagic);
  std::memcpy(header + kVersionAt, &kVersion, 4);
  std::memcpy(header + kVocabAt, &vocab_size, 4);
  std::memcpy(header + kCountAt, &count_, 8);
  std::memcpy(header + kDocumentsAt, &documents, 8);
  std::memcpy(header + kCrcAt, &crc_, 4);
  if (::pwrite(fd_, header, sizeof header, 0) != static_cast<ssize_t>(sizeof header)) {
    fail("cannot write header of");
  }
  if (::fsync(fd_) != 0) fail("cannot fsync");
  if (::close(fd_) != 0) {
    fd_ = -1;
    fail("cannot close");
  }
  fd_ = -1;
  if (::rename(temp_.c_str(), path_.c_str()) != 0) fail("cannot rename into place");
  committed_ = true;
  // Make the rename itself durable: fsync the directory that holds the new name.
  const std::string dir = fs::path(path_).parent_path().empty()
                              ? std::string(".")
                              : fs::path(path_).parent_path().string();
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
}

void TokenWriter::write_all(const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t wrote = ::write(fd_, p, n);
    if (wrote < 0 && errno == EINTR) continue;
    if (wrote <= 0) fail("cannot write");
    p += wrote;
    n -= static_cast<size_t>(wrote);
  }
}

void TokenWriter::fail(const std::string& what) const {
  throw std::runtime_error("token file " + path_ + ": " + what + " " + temp_ + ": " +
                           errno_text());
}

void write_token_file(const std::string& path, const std::vector<uint32_t>& tokens,
                      uint32_t vocab_size, uint64_t documents) {
  TokenWriter writer(path);
  writer.append(tokens.data(), tokens.size());
  writer.commit(vocab_size, documents);
}

TokenFile::TokenFile(const std::string& path, bool verify_checksum) : path_(path) {
  auto fail = [&](const std::string& what) -> std::runtime_error {
    return std::runtime_error("token file " + path + ": " + what);
  };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw fail("cannot open: " + errno_text());
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const std::string why = errno_text();
    ::close(fd);
    throw fail("cannot stat: " + why);
  }
  const auto file_bytes = static_cast<uint64_t>(st.st_size);
  if (file_bytes < kHeaderBytes) {
    ::close(fd);
    throw fail("truncated: " + std::to_string(file_bytes) + " bytes, shorter than the " +
               std::to_string(kHeaderBytes) + "-byte header");
  }
  void* map = ::mmap(nullptr, file_bytes, PROT_READ, MAP_SHARED, fd, 0);
  const std::string map_error = errno_text();
  ::close(fd);  // the mapping keeps the file alive
  if (map == MAP_FAILED) throw fail("cannot mmap: " + map_error);
  map_ = map;
  map_bytes_ = file_bytes;
  // From here on the destructor would not run if we threw, so unmap on failure by hand.
  auto reject = [&](const std::string& what) {
    ::munmap(map_, map_bytes_);
    map_ = nullptr;
    return fail(what);
  };

  const auto* header = static_cast<const unsigned char*>(map_);
  if (std::memcmp(header, kMagic, sizeof kMagic) != 0) throw reject("bad magic, not a token file");
  const auto version = load_field<uint32_t>(header, kVersionAt);
  if (version != kVersion) throw reject("unsupported version " + std::to_string(version));
  vocab_size_ = load_field<uint32_t>(header, kVocabAt);
  count_ = load_field<uint64_t>(header, kCountAt);
  documents_ = load_field<uint64_t>(header, kDocumentsAt);
  crc32_ = load_field<uint32_t>(header, kCrcAt);
  const uint64_t payload = file_bytes - kHeaderBytes;
  if (count_ > payload / sizeof(uint32_t) || payload != count_ * sizeof(uint32_t)) {
    throw reject("size mismatch (truncated or corrupt): header says " + std::to_string(count_) +
                 " tokens, file holds " + std::to_string(payload) + " payload bytes");
  }
  tokens_ = reinterpret_cast<const uint32_t*>(header + kHeaderBytes);
  if (verify_checksum) {
    const auto stored = load_field<uint32_t>(header, kCrcAt);
    const uint32_t actual = crc_update(crc_update(0, nullptr, 0), tokens_, payload);
    if (stored != actual) {
      throw reject("checksum mismatch (stored crc32 " + std::to_string(stored) + ", computed " +
                   std::to_string(actual) + "): the file is corrupt");
    }
    // Every id must index the vocabulary the header declares: the data pipeline checks only the
    // header's vocab_size against the model, so an id beyond it would reach the embedding (an
    // index error on CPU, a device-side assert that kills the process on CUDA). Found by
    // tests/fuzz/fuzz_token_file; checked with the checksum, as both read every token.
    for (uint64_t i = 0; i < count_; ++i) {
      if (tokens_[i] >= vocab_size_) {
        throw reject("token " + std::to_string(i) + " has id " + std::to_string(tokens_[i]) +
                     ", outside the file's vocab_size " + std::to_string(vocab_size_));
      }
    }
  }
}

TokenFile::TokenFile(TokenFile&& other) noexcept { *this = std::move(other); }

TokenFile& TokenFile::operator=(TokenFile&& other) noexcept {
  if (this != &other) {
    if (map_ != nullptr) ::munmap(map_, map_bytes_);
    path_ = std::move(other.path_);
    map_ = std::exchange(other.map_, nullptr);
    map_bytes_ = std::exchange(other.map_bytes_, 0);
    tokens_ = std::exchange(other.tokens_, nullptr);
    count_ = std::exchange(other.count_, 0);
    documents_ = std::exchange(other.documents_, 0);
    crc32_ = std::exchange(other.crc32_, 0);
    vocab_size_ = std::exchange(other.vocab_size_, 0);
  }
  return *this;
}

TokenFile::~TokenFile() {
  if (map_ != nullptr) ::munmap(map_, map_bytes_);
}

std::string tokenize_to_cache(const std::vector<std::string>& inputs, const Tokenizer& tokenizer,
                              const std::string& cache_dir) {
  const std::vector<std::string> files = expand_input_paths(inputs);
  if (files.empty()) throw std::runtime_error("no input files to tokenize");
  const std::string key = inputs_digest(files, "tokens-v1|" + tokenizer.fingerprint());
  const std::string path = (fs::path(cache_dir) / ("tokens-" + key + ".tok")).string();
  if (fs::exists(path)) {
    try {
      const TokenFile cached(path, /*verify_checksum=*/false);  // header check only: cheap
      spdlog::info("tokens: reusing cached {} ({} tokens, {} documents)", path, cached.size(),
                   cached.documents());
      return path;
    } catch (const std::exception& e) {
      spdlog::warn("tokens: cached file unusable, re-tokenizing: {}", e.what());
    }
  }
  fs::create_directories(cache_dir);

  const auto vocab = static_cast<uint32_t>(tokenizer.vocab_size());
  const auto eos = static_cast<uint32_t>(tokenizer.eos_id());
  TokenWriter writer(path);  // gathers its appends into large writes itself
  uint64_t documents = 0;
  uint64_t text_bytes = 0;
  std::vector<uint32_t> ids;
  const auto start = std::chrono::steady_clock::now();
  auto last_log = start;
  auto log_progress = [&](bool force) {
    const auto now = std::chrono::steady_clock::now();
    if (!force && now - last_log < std::chrono::seconds(10)) return;
    last_log = now;
    const double seconds = std::chrono::duration<double>(now - start).count();
    spdlog::info("tokens: {} documents, {} tokens, {:.1f} MB of text at {:.1f} MB/s", documents,
                 writer.count(), text_bytes / 1e6, seconds > 0 ? text_bytes / 1e6 / seconds : 0.0);
  };

  for (const auto& file : files) {
    if (fs::path(file).extension() == ".tok") {
      // Already tokenized: append as is, provided it was made with a same-sized vocabulary.
      const TokenFile tokens(file);
      if (tokens.vocab_size() != vocab) {
        throw std::runtime_error("token file " + file + " has vocab size " +
                                 std::to_string(tokens.vocab_size()) + ", the tokenizer has " +
                                 std::to_string(vocab));
      }
      writer.append(tokens.data(), tokens.size());
      documents += tokens.documents();
      continue;
    }
    read_documents(file, [&](std::string_view document) {
      // SentencePiece's Encode takes a string_view; Tokenizer::encode takes a string.
      ids.clear();
      for (int id : tokenizer.encode(std::string(document))) ids.push_back(static_cast<uint32_t>(id));
      ids.push_back(eos);
      writer.append(ids.data(), ids.size());
      ++documents;
      text_bytes += document.size();
      log_progress(false);
    });
  }
  writer.commit(vocab, documents);
  log_progress(true);
  spdlog::info("tokens: wrote {}", path);
  return path;
}

}  // namespace relora::data
