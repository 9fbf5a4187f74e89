// Where a frozen W lives when no single process keeps all of it (FSDP-style frozen-weight
// sharding): each holder keeps a contiguous block of W's rows, and the whole W exists only
// briefly, when a product needs it. The model asks for the whole W through this interface and so
// never learns who the other holders are; worker/distributed implements it over a process group.
#pragma once

#include <cstdint>

#include <torch/types.h>

namespace relora::model {

struct RowRange {
  int64_t begin = 0;
  int64_t end = 0;  // exclusive
  int64_t size() const { return end - begin; }
};

class FrozenWeightShards {
 public:
  virtual ~FrozenWeightShards() = default;
  // The rows of a [rows, cols] weight that this holder keeps.
  virtual RowRange rows_kept(int64_t rows) const = 0;
  // The whole [rows, cols] weight from every holder's rows; `local` is this holder's block
  // (rows_kept(rows) of it). Collective: every holder calls it for the same weights in the same
  // order.
  virtual torch::Tensor gather(const torch::Tensor& local, int64_t rows) = 0;
};

}  // namespace relora::model
