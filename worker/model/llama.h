// LLaMA-style decoder (the paper's architecture), single-device and rank-agnostic.
//
// Dimension legend: B batch, T sequence, C hidden (channels), H heads, D head dim (C / H),
// F intermediate (SwiGLU), V vocab, L layers.
//
// Pre-norm blocks: x += attn(rmsnorm(x)); x += mlp(rmsnorm(x)). Attention uses rotary position
// embeddings in the rotate-half layout (as Hugging Face's LlamaForCausalLM, so exports load
// there unchanged), causal masking, no biases. MLP is SwiGLU: down(silu(gate(x)) * up(x)).
// Final RMSNorm, untied lm_head. The seven projections of every block are ReloraLinear.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include "worker/model/relora_linear.h"

namespace relora::model {

struct LlamaConfig {
  int64_t vocab_size = 32100;
  int64_t hidden_size = 512;
  int64_t num_layers = 8;
  int64_t num_heads = 8;
  int64_t intermediate_size = 1376;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  int64_t max_seq_len = 2048;  // rotary table size
};

class RMSNormImpl : public torch::nn::Cloneable<RMSNormImpl> {
 public:
  RMSNormImpl(int64_t dim, double eps);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x);  // normalises in fp32, returns x's dtype
  torch::Tensor weight;                           // [C]
 private:
  int64_t dim_;
  double eps_;
};
TORCH_MODULE(RMSNorm);

class AttentionImpl : public torch::nn::Cloneable<AttentionImpl> {
 public:
  explicit AttentionImpl(const LlamaConfig& config);
  void reset() override;
  // x [B, T, C], cos/sin [T, D] -> [B, T, C]
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);
  ReloraLinear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};

 private:
  LlamaConfig config_;
};
TORCH_MODULE(Attention);

class MlpImpl : public torch::nn::Cloneable<MlpImpl> {
 public:
  explicit MlpImpl(const LlamaConfig& config);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x);  // [B, T, C] -> [B, T, C]
  ReloraLinear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};

 private:
  LlamaConfig config_;
};
TORCH_MODULE(Mlp);

class BlockImpl : public torch::nn::Cloneable<BlockImpl> {
 public:
  explicit BlockImpl(const LlamaConfig& config);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  Attention self_attn{nullptr};
  Mlp mlp{nullptr};

 private:
  LlamaConfig config_;
};
TORCH_MODULE(Block);

class LlamaImpl : public torch::nn::Cloneable<LlamaImpl> {
 public:
  explicit LlamaImpl(const LlamaConfig& config);
  void reset() override;

  // input_ids [B, T] int64 -> logits [B, T, V]
  torch::Tensor forward(const torch::Tensor& input_ids);
  // input_ids [B, T] int64 -> final hidden states [B, T, C] (after the last RMSNorm): the input of
  // lm_head. loss() and nll_sum() feed it to linear_cross_entropy, which never holds the whole
  // [B, T, V] logits.
  torch::Tensor forward_hidden(const torch::Tensor& input_ids);
  // Causal LM loss: mean NLL of predicting input_ids[:, 1:] from input_ids[:, :-1] ([] scalar).
  torch::Tensor loss(const torch::Tensor& input_ids);
  // Sum of token NLLs and the number of predicted tokens (for token-weighted evaluation).
  std::pair<double, int64_t> nll_sum(const torch::Tensor& input_ids);

  // Initialises all weights from `seed` (normal(0, 0.02) for linears and embeddings, norms 1),
  // independent of the global generator, so ranks agree without a broadcast.
  void init_weights(uint64_t seed);

  // The seven projections of every block, in a fixed order (layer-major: q, k, v, o, gate, up,
  // down), with their Hugging Face names ("model.layers.3.self_attn.q_proj").
  std::vector<std::pair<std::string, ReloraLinear>> relora_linears();

  // Low-rank mode: every projection gets a branch (A seeded from seed + index), W frozen (and
  // sharded, after shard_frozen_weights).
  void enable_lora(const LoraOptions& options, uint64_t seed);
  bool lora_enabled();
  // Merges every branch into W and re-draws A from (seed, index); B = 0.
  void merge_and_reinit(uint64_t seed);

  // FSDP-style frozen-weight sharding: every frozen W keeps only `shards`' rows, now and whenever
  // enable_lora freezes W later. A trainable W (full-rank mode, the warm start) stays whole. From
  // then on forward, backward and merged_weight() are collective (frozen_weight_shards.h).
  void shard_frozen_weights(std::shared_ptr<FrozenWeightShards> shards);
  bool frozen_weights_sharded() const { return frozen_shards_ != nullptr; }

  // A parameter as this process holds it: flat elements [offset, offset + tensor.numel()) of a
  // tensor shaped `whole` (a sharded W's rows; every other parameter whole, offset 0).
  struct HeldParameter {
    std::string name;  // module path, as named_parameters()
    torch::Tensor tensor;
    std::vector<int64_t> whole;
    int64_t offset = 0;
    bool sharded = false;
  };
  std::vector<HeldParameter> held_parameters();
  // named_parameters() with every sharded W gathered whole (collective when sharded).
  std::vector<std::pair<std::string, torch::Tensor>> whole_parameters();

  // Parameters that receive gradients now, with their module paths, in registration order.
  std::vector<std::pair<std::string, torch::Tensor>> trainable_parameters();
  int64_t count_trainable_parameters();
  // Total parameters of the model as exported (W only; A and B not counted).
  int64_t count_model_parameters();

  // Full-rank weights under Hugging Face LlamaForCausalLM names, LoRA branches merged in.
  std::vector<std::pair<std::string, torch::Tensor>> export_state();
  // The same tensors one at a time, each a fresh fp32 host copy (collective with sharded weights:
  // every holder visits, whether it keeps the tensors or not).
  void visit_export_state(const std::function<void(const std::string& name, torch::Tensor tensor)>& visit);

  // Activation checkpointing (activation_checkpoint.h): in training, with grad, every block's
  // forward keeps only its input and is recomputed in the backward. Same results, less memory.
  void set_activation_checkpointing(bool on) { checkpoint_blocks_ = on; }
  bool activation_checkpointing() const { return checkpoint_blocks_; }

  const LlamaConfig& config() const { return config_; }

  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};
  torch::Tensor lm_head;  // [V, C]

 private:
  LlamaConfig config_;
  torch::Tensor rope_cos_;  // [max_seq_len, D] buffer
  torch::Tensor rope_sin_;  // [max_seq_len, D] buffer
  // The projections whose W is sharded, by the weight's parameter name.
  std::map<std::string, ReloraLinear> sharded_weights();
  std::shared_ptr<FrozenWeightShards> frozen_shards_;
  bool checkpoint_blocks_ = false;
};
TORCH_MODULE(Llama);

}  // namespace relora::model
