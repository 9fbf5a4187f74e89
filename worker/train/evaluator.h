// Held-out evaluation: the mean next-token loss over (up to eval.max_tokens of) the validation
// blocks. Ranks take interleaved batches of the blocks and their sums are added across ranks, so
// every rank gets the same figure whatever the world size.
#pragma once

#include <cstdint>

#include <torch/types.h>

#include "worker/data/batches.h"
#include "worker/model/llama.h"
#include "worker/train/data_parallel.h"

namespace relora::train {

struct EvalReport {
  int64_t step = 0;
  double loss = 0;
  double perplexity = 0;
  int64_t tokens = 0;
};

struct EvalSettings {
  int64_t max_tokens = 0;   // eval.max_tokens (at least one block is evaluated)
  int64_t micro_batch = 1;  // blocks per forward
  int rank = 0;
  int world = 1;
  torch::Device device = torch::kCPU;
  bool bf16 = false;  // under bf16 autocast, as training
  // Every rank runs the same number of forwards (a rank without blocks left repeats its first
  // batch and discards it): needed when forwards are collective (frozen-weight sharding).
  bool equal_forwards = false;
};

class Evaluator {
 public:
  // `validation` must outlive the evaluator; `parallel` may be null (one rank).
  Evaluator(const data::BlockRange& validation, EvalSettings settings, DataParallel* parallel)
      : validation_(validation), settings_(settings), parallel_(parallel) {}

  // Collective with several ranks. Leaves the model in training mode.
  EvalReport run(model::Llama& model, int64_t step) const;

 private:
  const data::BlockRange& validation_;
  EvalSettings settings_;
  DataParallel* parallel_;
};

}  // namespace relora::train
