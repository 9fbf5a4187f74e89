// A linear layer with an optional low-rank (LoRA/ReLoRA) branch.
//
//   y = x W^T + s * (dropout(x) A^T) B^T,   s = alpha / r
//
// Shapes: W [out, in] (`weight`), A [r, in] (`lora_A`), B [out, r] (`lora_B`), x [..., in].
// Without the branch (full-rank training) W is trainable and A, B do not exist. enable_lora()
// freezes W and creates A (kaiming-uniform, a = sqrt(5), the nn.Linear default) and B = 0, so the
// layer's function is unchanged (it may also store the frozen W in bf16, LoraOptions::frozen_dtype).
// merge_and_reinit() folds s*B*A into W in fp32 and draws a fresh A from a generator seeded by
// the caller, so every data-parallel rank draws the same A.
// With frozen-weight sharding (shard_weight) the layer keeps only some rows of the frozen W and
// gathers the whole W through a FrozenWeightShards for each product, forward and backward.
// The layer knows nothing of ranks, optimizers or schedules.
#pragma once

#include <memory>
#include <optional>

#include <ATen/core/Generator.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include "worker/model/frozen_weight_shards.h"

namespace relora::model {

struct LoraOptions {
  int64_t rank = 128;
  double alpha = 32.0;
  double dropout = 0.0;
  // The dtype the frozen W is stored in once the branch exists (unset: W keeps its own). bf16
  // halves the largest tensors of a low-rank run; A, B stay in W's former dtype (the trainer's
  // fp32), and merges round W' = W + s·B·A back stochastically (bf16_rounding.h).
  std::optional<torch::ScalarType> frozen_dtype;
};

class ReloraLinearImpl : public torch::nn::Cloneable<ReloraLinearImpl> {
 public:
  ReloraLinearImpl(int64_t in_features, int64_t out_features);
  void reset() override;

  torch::Tensor forward(const torch::Tensor& x);

  // Adds the low-rank branch (W frozen; A drawn from `seed`, B = 0). Throws std::invalid_argument
  // if rank exceeds min(in, out) or is < 1.
  void enable_lora(const LoraOptions& options, uint64_t seed);
  bool lora_enabled() const { return lora_A.defined(); }

  // W += s * B A (fp32), then A redrawn from `seed`, B = 0. No-op without the branch. With a
  // sharded W, only the kept rows (each holder merges its own; A and B are the same everywhere).
  // A bf16 W is merged in fp32 and rounded back stochastically with bits drawn from `seed` and
  // each element's index in the whole W, so every holder and every rerun rounds alike.
  void merge_and_reinit(uint64_t seed);
  // s * B A as a dense [out, in] fp32 tensor (zeros without the branch).
  torch::Tensor lora_delta() const;
  // Rows [rows.begin, rows.end) of it.
  torch::Tensor lora_delta(RowRange rows) const;
  // W + s * B A: what an exported full-rank model holds. Collective when W is sharded.
  torch::Tensor merged_weight();

  // FSDP-style frozen-weight sharding: keep only shards->rows_kept(out) of the frozen W. From then
  // on every product with W gathers the whole W just before it (forward) and again in the backward
  // (dx = dy W), holding it no longer than the product. Throws std::logic_error without the branch
  // (W still trains) or when already sharded.
  void shard_weight(std::shared_ptr<FrozenWeightShards> shards);
  bool weight_sharded() const { return shards_ != nullptr; }
  // The rows of the whole W that `weight` holds ([0, out) when not sharded).
  RowRange weight_rows() const;
  // The whole W [out, in]: `weight` itself, or gathered from its holders (collective).
  torch::Tensor full_weight();

  // The generator that the branch's dropout masks are drawn from (on the layer's device). Without
  // one, dropout draws from LibTorch's global generator; the trainer gives every layer of a rank
  // its own rank's generator, so that ranks running as threads of one process do not share a
  // stream and a checkpoint can save and restore each rank's exactly.
  void set_dropout_generator(std::optional<at::Generator> gen) { dropout_gen_ = std::move(gen); }
  const std::optional<at::Generator>& dropout_generator() const { return dropout_gen_; }

  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }
  double scale() const { return scale_; }

  torch::Tensor weight;  // [out, in]; with a sharded W, rows weight_rows() of it
  torch::Tensor lora_A;  // [r, in]   (undefined without the branch)
  torch::Tensor lora_B;  // [out, r]  (undefined without the branch)

 private:
  void draw_lora_A(uint64_t seed);
  torch::Tensor apply_dropout(const torch::Tensor& x) const;
  int64_t in_features_;
  int64_t out_features_;
  double scale_ = 0.0;
  double dropout_ = 0.0;
  std::optional<at::Generator> dropout_gen_;
  std::shared_ptr<FrozenWeightShards> shards_;  // set once W is sharded
  int64_t row_begin_ = 0;                       // first row of W that `weight` holds
};
TORCH_MODULE(ReloraLinear);

}  // namespace relora::model
