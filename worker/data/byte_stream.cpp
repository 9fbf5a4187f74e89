// gzip/plain through zlib's gz* API, Zstandard through libzstd's streaming decompressor.
#include "worker/data/byte_stream.h"

#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace relora::data {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

class GzStream final : public ByteStream {
 public:
  explicit GzStream(const std::string& path) : path_(path) {
    errno = 0;
    file_ = gzopen(path.c_str(), "rb");
    if (file_ == nullptr) {
      throw std::runtime_error("cannot open " + path + ": " + (errno != 0 ? std::strerror(errno) : "gzopen failed"));
    }
    gzbuffer(file_, 1 << 17);
  }
  ~GzStream() override { gzclose(file_); }
  GzStream(const GzStream&) = delete;
  GzStream& operator=(const GzStream&) = delete;

  size_t read(char* out, size_t n) override {
    const int got = gzread(file_, out, static_cast<unsigned>(std::min<size_t>(n, 1u << 30)));
    if (got < 0) {
      int code = 0;
      throw std::runtime_error("cannot read " + path_ + ": " + gzerror(file_, &code));
    }
    return static_cast<size_t>(got);
  }
  uint64_t position() const override {
    const auto at = gzoffset(file_);
    return at < 0 ? 0 : static_cast<uint64_t>(at);
  }

 private:
  std::string path_;
  gzFile file_ = nullptr;
};

// Frames are decoded one after another (zstd -T0 and pzstd write several), so concatenated
// .zst files read as one stream, as `zstd -d` does.
class ZstdStream final : public ByteStream {
 public:
  explicit ZstdStream(const std::string& path) : path_(path), in_(ZSTD_DStreamInSize()) {
    file_ = std::fopen(path.c_str(), "rb");
    if (file_ == nullptr) throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
    stream_ = ZSTD_createDStream();
    if (stream_ == nullptr) {
      std::fclose(file_);
      throw std::runtime_error("cannot read " + path + ": ZSTD_createDStream failed");
    }
  }
  ~ZstdStream() override {
    ZSTD_freeDStream(stream_);
    std::fclose(file_);
  }
  ZstdStream(const ZstdStream&) = delete;
  ZstdStream& operator=(const ZstdStream&) = delete;

  size_t read(char* out, size_t n) override {
    ZSTD_outBuffer output{out, n, 0};
    while (true) {
      if (input_.pos == input_.size && !eof_) {
        const size_t got = std::fread(in_.data(), 1, in_.size(), file_);
        if (got == 0 && std::ferror(file_)) throw std::runtime_error("cannot read " + path_ + ": " + std::strerror(errno));
        eof_ = got == 0;
        read_ += got;
        input_ = ZSTD_inBuffer{in_.data(), got, 0};
      }
      // Called with empty input too: the decoder may still hold output it could not flush.
      const size_t hint = ZSTD_decompressStream(stream_, &output, &input_);
      if (ZSTD_isError(hint)) {
        throw std::runtime_error("cannot read " + path_ + ": Zstandard: " + ZSTD_getErrorName(hint));
      }
      // 0: a frame just ended and everything is flushed (an empty file never opens one).
      if (input_.size > 0 || output.pos > 0) frame_open_ = hint != 0;
      if (output.pos > 0) return output.pos;
      if (eof_ && input_.pos == input_.size) {
        // A frame cut short is an error, not an early end: the tail of the corpus would vanish.
        if (frame_open_) throw std::runtime_error("cannot read " + path_ + ": truncated Zstandard frame");
        return 0;
      }
    }
  }
  uint64_t position() const override { return read_ - (input_.size - input_.pos); }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
  uint64_t read_ = 0;
  ZSTD_DStream* stream_ = nullptr;
  std::vector<char> in_;
  ZSTD_inBuffer input_{nullptr, 0, 0};
  bool frame_open_ = false;
  bool eof_ = false;
};

}  // namespace

std::unique_ptr<ByteStream> open_byte_stream(const std::string& path) {
  if (ends_with(path, ".zst")) return std::make_unique<ZstdStream>(path);
  return std::make_unique<GzStream>(path);
}

}  // namespace relora::data
