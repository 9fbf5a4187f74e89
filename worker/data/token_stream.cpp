#include "worker/data/token_stream.h"

#include <algorithm>
#include <stdexcept>

namespace relora::data {

void TokenStream::append(std::shared_ptr<const TokenFile> file, uint64_t first, uint64_t count) {
  if (first + count > file->size()) {
    throw std::out_of_range("TokenStream: range past the end of " + file->path());
  }
  if (count == 0) return;
  Piece piece{file, file->data() + first, count, total_, file->vocab_size(), file->path()};
  pieces_.push_back(std::move(piece));
  total_ += count;
}

void TokenStream::append(const uint32_t* tokens, uint64_t count, uint32_t vocab_size, std::string origin) {
  if (count == 0) return;
  pieces_.push_back(Piece{nullptr, tokens, count, total_, vocab_size, std::move(origin)});
  total_ += count;
}

void TokenStream::append(const TokenStream& other, uint64_t first, uint64_t count) {
  if (first + count > other.total_) throw std::out_of_range("TokenStream: range past the end of the stream");
  for (const Piece& p : other.pieces_) {
    const uint64_t begin = std::max(first, p.start), end = std::min(first + count, p.start + p.count);
    if (begin >= end) continue;
    pieces_.push_back(Piece{p.file, p.tokens + (begin - p.start), end - begin, total_, p.vocab_size, p.origin});
    total_ += end - begin;
  }
}

uint32_t TokenStream::vocab_size() const {
  uint32_t vocab = 0;
  for (const auto& p : pieces_) vocab = std::max(vocab, p.vocab_size);
  return vocab;
}

void TokenStream::copy(uint64_t first, uint64_t n, int64_t* out) const {
  if (first + n > total_) throw std::out_of_range("TokenStream: read past the end of the stream");
  // The last piece starting at or before `first`.
  auto it = std::upper_bound(pieces_.begin(), pieces_.end(), first,
                             [](uint64_t at, const Piece& p) { return at < p.start; });
  --it;
  while (n > 0) {
    const Piece& piece = *it;
    const uint64_t offset = first - piece.start;
    const uint64_t take = std::min(n, piece.count - offset);
    const uint32_t* src = piece.tokens + offset;
    for (uint64_t i = 0; i < take; ++i) {
      if (src[i] >= piece.vocab_size) {
        throw std::runtime_error("token file " + piece.origin + ": token " + std::to_string(offset + i) +
                                 " has id " + std::to_string(src[i]) + ", outside the file's vocab_size " +
                                 std::to_string(piece.vocab_size) + " (the file is corrupt)");
      }
      out[i] = src[i];
    }
    out += take;
    first += take;
    n -= take;
    ++it;
  }
}

}  // namespace relora::data
