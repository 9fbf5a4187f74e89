// Tensors stored in pieces across a checkpoint's files, so that state each rank holds part of is
// written by its holder and read back by any number of ranks:
//   <base>            a whole tensor (its own shape);
//   <base>@<offset>   a piece: the tensor's flat elements from <offset>, 1-D.
// Optimizer moments (optimizer_state.h) and sharded frozen weights (model_state.h) use it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

namespace relora::train {

struct PieceKey {
  std::string base;
  int64_t offset = 0;
  bool piece = false;  // false: a whole tensor
};

// Splits a safetensors key; throws naming `where` and the key when an offset is malformed.
PieceKey parse_piece_key(const std::string& key, const std::string& where);
std::string piece_key(const std::string& base, int64_t offset);

struct FlatPiece {
  int64_t offset = 0;
  torch::Tensor values;  // 1-D
};

// Copies the part of `pieces` that overlaps flat elements [offset, offset + target.numel()) into
// `target` (1-D). Returns the elements copied (saved pieces never overlap).
int64_t fill_from_pieces(const std::vector<FlatPiece>& pieces, int64_t offset, torch::Tensor& target);

}  // namespace relora::train
