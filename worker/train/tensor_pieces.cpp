#include "worker/train/tensor_pieces.h"

#include <algorithm>
#include <stdexcept>

#include <torch/torch.h>

namespace relora::train {

PieceKey parse_piece_key(const std::string& key, const std::string& where) {
  const size_t at = key.rfind('@');
  if (at == std::string::npos) return {key, 0, false};
  int64_t offset = 0;
  try {
    size_t used = 0;
    offset = std::stoll(key.substr(at + 1), &used);
    if (used != key.size() - at - 1 || offset < 0) throw std::invalid_argument("trailing characters");
  } catch (const std::exception&) {
    throw std::runtime_error(where + ": tensor '" + key + "' has a malformed piece offset");
  }
  return {key.substr(0, at), offset, true};
}

std::string piece_key(const std::string& base, int64_t offset) { return base + "@" + std::to_string(offset); }

int64_t fill_from_pieces(const std::vector<FlatPiece>& pieces, int64_t offset, torch::Tensor& target) {
  torch::NoGradGuard no_grad;
  int64_t filled = 0;
  const int64_t end = offset + target.numel();
  for (const auto& p : pieces) {
    const int64_t lo = std::max(offset, p.offset), hi = std::min(end, p.offset + p.values.numel());
    if (lo >= hi) continue;
    target.slice(0, lo - offset, hi - offset).copy_(p.values.slice(0, lo - p.offset, hi - p.offset));
    filled += hi - lo;
  }
  return filled;
}

}  // namespace relora::train
