// A linear layer with an optional low-rank (LoRA/ReLoRA) branch.
//
//   y = x W^T + s * (dropout(x) A^T) B^T,   s = alpha / r
//
// Shapes: W [out, in] (`weight`), A [r, in] (`lora_A`), B [out, r] (`lora_B`), x [..., in].
// Without the branch (full-rank training) W is trainable and A, B do not exist. enable_lora()
// freezes W and creates A (kaiming-uniform, a = sqrt(5), the nn.Linear default) and B = 0, so the
// layer's function is unchanged. merge_and_reinit() folds s*B*A into W in fp32 and draws a fresh
// A from a generator seeded by the caller, so every data-parallel rank draws the same A.
// The layer knows nothing of ranks, optimizers or schedules.
#pragma once

#include <optional>

#include <ATen/core/Generator.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

namespace relora::model {

struct LoraOptions {
  int64_t rank = 128;
  double alpha = 32.0;
  double dropout = 0.0;
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

  // W += s * B A (fp32), then A redrawn from `seed`, B = 0. No-op without the branch.
  void merge_and_reinit(uint64_t seed);
  // s * B A as a dense [out, in] fp32 tensor (zeros without the branch).
  torch::Tensor lora_delta() const;
  // W + s * B A: what an exported full-rank model holds.
  torch::Tensor merged_weight() const;

  // The generator that the branch's dropout masks are drawn from (on the layer's device). Without
  // one, dropout draws from LibTorch's global generator; the trainer gives every layer of a rank
  // its own rank's generator, so that ranks running as threads of one process do not share a
  // stream and a checkpoint can save and restore each rank's exactly.
  void set_dropout_generator(std::optional<at::Generator> gen) { dropout_gen_ = std::move(gen); }

  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }
  double scale() const { return scale_; }

  torch::Tensor weight;  // [out, in]
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
};
TORCH_MODULE(ReloraLinear);

}  // namespace relora::model
