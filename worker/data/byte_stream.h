// Reading a corpus file's bytes whatever its compression: plain, gzip (.gz) or Zstandard (.zst).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace relora::data {

class ByteStream {
 public:
  virtual ~ByteStream() = default;
  // Reads up to `n` bytes into `out`; returns 0 only at the end of the data. Throws
  // std::runtime_error naming the file on a read or decompression error.
  virtual size_t read(char* out, size_t n) = 0;
  // Bytes of the file consumed so far (compressed bytes for .gz/.zst): progress and ETA.
  virtual uint64_t position() const = 0;
};

// Chooses the decoder by the file name: ".zst" is Zstandard (libzstd); anything else goes
// through zlib's gzread, which passes uncompressed bytes through and inflates gzip, so a ".gz"
// suffix is not needed for gzip data.
std::unique_ptr<ByteStream> open_byte_stream(const std::string& path);

}  // namespace relora::data
