// Fuzz target: the .tok reader (TokenFile), with and without checksum verification.
// Each input is tried twice: as it is, and with the header's CRC-32 patched to match the payload,
// so that mutations get past the checksum and exercise what the reader accepts.
// Properties: bad files raise std::runtime_error naming the file; an accepted file's size is
// exactly header + 4 * size(); with verification every token id is below the file's vocab_size.
#include <zlib.h>

#include <cstring>
#include <vector>

#include "tests/fuzz/fuzz_util.h"
#include "worker/data/token_file.h"

using relora::fuzz::contract_broken;

namespace {

constexpr size_t kHeader = 64, kCrcAt = 32;

void try_open(const relora::fuzz::MemFile& file, size_t size, bool verify) {
  try {
    relora::data::TokenFile tokens(file.path(), verify);
    if (kHeader + tokens.size() * 4 != size) contract_broken("accepted a file whose size does not match");
    uint64_t sum = 0;  // touch every token: the mapping must cover them
    for (uint64_t i = 0; i < tokens.size(); ++i) {
      sum += tokens.data()[i];
      if (verify && tokens.data()[i] >= tokens.vocab_size()) contract_broken("accepted a token id >= vocab_size");
    }
    if (sum == 0xdeadbeefdeadbeefull) std::abort();  // keeps the loop
    relora::data::TokenFile moved(std::move(tokens));
    (void)moved;
  } catch (const std::runtime_error& e) {
    relora::fuzz::expect_names(e, file.path());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static relora::fuzz::MemFile file("tokens.tok");
  file.rewrite(data, size);
  try_open(file, size, /*verify=*/true);
  try_open(file, size, /*verify=*/false);
  if (size >= kHeader) {
    std::vector<uint8_t> fixed(data, data + size);
    const uint32_t crc = static_cast<uint32_t>(crc32_z(crc32(0L, Z_NULL, 0), fixed.data() + kHeader, size - kHeader));
    std::memcpy(fixed.data() + kCrcAt, &crc, 4);
    file.rewrite(fixed.data(), fixed.size());
    try_open(file, size, /*verify=*/true);
  }
  return 0;
}
