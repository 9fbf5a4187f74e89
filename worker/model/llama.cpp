#include "worker/model/llama.h"

#include <cmath>
#include <limits>
#include <map>
#include <stdexcept>

#include <torch/nn/functional/activation.h>
#include <torch/utils.h>
#include <torch/version.h>

#include "worker/model/activation_checkpoint.h"
#include "worker/model/fused_cpu_ops.h"
#include "worker/model/linear_cross_entropy.h"
#include "worker/model/rotary.h"
#include "worker/model/torch_compat.h"

namespace relora::model {
namespace {

// Accumulation dtype for norms and losses: fp32 for bf16/fp16, otherwise the input's own dtype
// (so fp64 gradient checks stay fp64).
torch::ScalarType accumulation_type(const torch::Tensor& x) {
  const auto t = x.scalar_type();
  return (t == torch::kBFloat16 || t == torch::kHalf) ? torch::kFloat : t;
}

// splitmix64 finaliser (Steele et al.): neighbouring inputs give unrelated outputs.
uint64_t splitmix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// Seed of projection `index` (order of relora_linears()) for a model-level seed: every
// projection gets its own stream, and every rank derives the same one from the same seed.
uint64_t projection_seed(uint64_t seed, size_t index) {
  return splitmix64(seed ^ (0x9E3779B97F4A7C15ULL * (static_cast<uint64_t>(index) + 1)));
}

// Fills `param` in place with normal(0, std) drawn in fp32 on the CPU from `gen` (device- and
// dtype-independent values, so every rank and device agrees).
void fill_normal(torch::Tensor& param, double std, at::Generator& gen) {
  auto values = torch::empty(param.sizes(), torch::kFloat).normal_(0.0, std, gen);
  param.copy_(values);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// RMSNorm: y = x / sqrt(mean(x^2) + eps) * weight

RMSNormImpl::RMSNormImpl(int64_t dim, double eps) : dim_(dim), eps_(eps) { reset(); }

void RMSNormImpl::reset() { weight = register_parameter("weight", torch::ones({dim_})); }  // [C]

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  if (fused_cpu_kernels_apply(x) && x.scalar_type() == weight.scalar_type() && x.dim() >= 1 &&
      x.size(-1) == dim_ && x.numel() > 0) {
    return fused_rms_norm(x, weight, eps_);
  }
  auto xf = x.to(accumulation_type(x));                           // [..., C]
  auto inv_rms = torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps_);  // [..., 1]
  // Cast back before the weight, as Hugging Face does.
  return weight * (xf * inv_rms).to(x.scalar_type());
}

// ---------------------------------------------------------------------------------------------
// Attention: causal multi-head self-attention with rotary q, k.

AttentionImpl::AttentionImpl(const LlamaConfig& config) : config_(config) { reset(); }

void AttentionImpl::reset() {
  const int64_t C = config_.hidden_size;
  q_proj = register_module("q_proj", ReloraLinear(C, C));
  k_proj = register_module("k_proj", ReloraLinear(C, C));
  v_proj = register_module("v_proj", ReloraLinear(C, C));
  o_proj = register_module("o_proj", ReloraLinear(C, C));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& cos,
                                     const torch::Tensor& sin) {
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2);
  const int64_t H = config_.num_heads, D = C / H;
  auto heads = [&](const torch::Tensor& t) { return t.view({B, T, H, D}).transpose(1, 2); };
  auto qx = q_proj(x), kx = k_proj(x);  // [B, T, C]
  auto v = heads(v_proj(x));            // [B, H, T, D]
#if TORCH_VERSION_MAJOR < 2
  // The CPU fast path. LibTorch 1.13 has no fused attention: compat::causal_attention's
  // arithmetic with fewer passes over memory. 1/sqrt(D) is folded into q's rotary tables ([T, D]);
  // rotary and the split into heads are one kernel writing [B, H, T, D] directly (no layout copies
  // before the products); the causal mask is added by the score product itself (baddbmm onto an
  // additive mask: no separate masking pass over [B, H, T, T]).
  if (fused_cpu_kernels_apply(qx) && qx.scalar_type() == kx.scalar_type()) {
    const double inv_sqrt_d = 1.0 / std::sqrt(static_cast<double>(D));
    auto q = rotary_into_heads(qx, cos * inv_sqrt_d, sin * inv_sqrt_d, H);  // [B, H, T, D]
    auto k = rotary_into_heads(kx, cos, sin, H);                            // [B, H, T, D]
    const bool reduced = q.scalar_type() == torch::kBFloat16 || q.scalar_type() == torch::kHalf;
    // The lowest finite float rather than -inf where the type holds it: the same zeros after
    // softmax, without exp(-inf) slow paths. bf16/fp16 cannot hold it: -inf there.
    const double masked = reduced ? -std::numeric_limits<double>::infinity()
                                  : static_cast<double>(std::numeric_limits<float>::lowest());
    auto mask = torch::zeros({T, T}, x.options().dtype(q.scalar_type()))
                    .masked_fill_(torch::ones({T, T}, x.options().dtype(torch::kBool)).triu(1), masked);  // [T, T]
    auto scores = torch::baddbmm(mask, q.reshape({B * H, T, D}), k.reshape({B * H, T, D}).transpose(1, 2))
                      .view({B, H, T, T});            // [B, H, T, T]
    if (reduced) scores = scores.to(torch::kFloat);  // softmax in fp32 for bf16/fp16
    auto probs = torch::softmax(scores, /*dim=*/-1);  // [B, H, T, T]
    if (reduced) probs = probs.to(q.scalar_type());
    auto y = torch::matmul(probs, v);  // [B, H, T, D]
    return o_proj(y.transpose(1, 2).contiguous().view({B, T, C}));  // [B, T, C]
  }
#endif
  // The generic path: what GPUs run (fused attention in LibTorch 2.x), and the CPU with its fast
  // paths off (tests/train/generic_path_test.cpp).
  auto q = apply_rotary(heads(qx), cos, sin);  // [B, H, T, D]
  auto k = apply_rotary(heads(kx), cos, sin);  // [B, H, T, D]
  auto y = compat::causal_attention(q, k, v);  // [B, H, T, D]
  return o_proj(y.transpose(1, 2).contiguous().view({B, T, C}));  // [B, T, C]
}

// ---------------------------------------------------------------------------------------------
// SwiGLU MLP: down(silu(gate(x)) * up(x))

MlpImpl::MlpImpl(const LlamaConfig& config) : config_(config) { reset(); }

void MlpImpl::reset() {
  const int64_t C = config_.hidden_size, F = config_.intermediate_size;
  gate_proj = register_module("gate_proj", ReloraLinear(C, F));
  up_proj = register_module("up_proj", ReloraLinear(C, F));
  down_proj = register_module("down_proj", ReloraLinear(F, C));
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x) {
  auto h = torch::silu(gate_proj(x)) * up_proj(x);  // [B, T, F]
  return down_proj(h);                              // [B, T, C]
}

// ---------------------------------------------------------------------------------------------
// Block: pre-norm residual attention + MLP.

BlockImpl::BlockImpl(const LlamaConfig& config) : config_(config) { reset(); }

void BlockImpl::reset() {
  input_layernorm = register_module(
      "input_layernorm", RMSNorm(config_.hidden_size, config_.rms_norm_eps));
  self_attn = register_module("self_attn", Attention(config_));
  post_attention_layernorm = register_module(
      "post_attention_layernorm", RMSNorm(config_.hidden_size, config_.rms_norm_eps));
  mlp = register_module("mlp", Mlp(config_));
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x, const torch::Tensor& cos,
                                 const torch::Tensor& sin) {
  auto h = x + self_attn(input_layernorm(x), cos, sin);  // [B, T, C]
  return h + mlp(post_attention_layernorm(h));           // [B, T, C]
}

// ---------------------------------------------------------------------------------------------
// Llama

LlamaImpl::LlamaImpl(const LlamaConfig& config) : config_(config) {
  const auto& c = config_;
  if (c.vocab_size < 1 || c.hidden_size < 1 || c.num_layers < 1 || c.num_heads < 1 ||
      c.intermediate_size < 1 || c.max_seq_len < 1) {
    throw std::invalid_argument("LlamaConfig: sizes must be >= 1");
  }
  if (c.hidden_size % c.num_heads != 0 || (c.hidden_size / c.num_heads) % 2 != 0) {
    throw std::invalid_argument("LlamaConfig: hidden_size / num_heads must be an even integer");
  }
  reset();
}

void LlamaImpl::reset() {
  const int64_t V = config_.vocab_size, C = config_.hidden_size;
  embed_tokens = register_module("embed_tokens", torch::nn::Embedding(V, C));  // weight [V, C]
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < config_.num_layers; ++i) layers->push_back(Block(config_));
  norm = register_module("norm", RMSNorm(C, config_.rms_norm_eps));
  lm_head = register_parameter("lm_head", torch::empty({V, C}));  // [V, C]
  {
    torch::NoGradGuard no_grad;
    lm_head.normal_(0.0, 0.02);  // replaced by init_weights(seed); avoids uninitialised memory
  }
  // Rotary tables are derived from the config, not learned. They are registered as buffers so
  // that Module::to() moves them with the model (LibTorch has no non-persistent buffers): code
  // that saves state should use parameters (or export_state()), not the buffers "rope_cos" and
  // "rope_sin". Cast to the activations' dtype at use.
  auto tables = rotary_tables(config_.max_seq_len, C / config_.num_heads, config_.rope_theta);
  rope_cos_ = register_buffer("rope_cos", tables.first);   // [S, D]
  rope_sin_ = register_buffer("rope_sin", tables.second);  // [S, D]
}

torch::Tensor LlamaImpl::forward_hidden(const torch::Tensor& input_ids) {
  TORCH_CHECK(input_ids.dim() == 2, "Llama::forward: input_ids must be [B, T]");
  const int64_t T = input_ids.size(1);
  TORCH_CHECK(T >= 1 && T <= config_.max_seq_len, "Llama::forward: sequence length ", T,
              " outside [1, max_seq_len = ", config_.max_seq_len, "]");
  auto x = embed_tokens(input_ids);        // [B, T, C]
  auto cos = rope_cos_.narrow(0, 0, T);    // [T, D]
  auto sin = rope_sin_.narrow(0, 0, T);    // [T, D]
  // Checkpointing needs a graph to hang the recomputation on: x must require grad (it does
  // whenever the embedding trains, in every mode).
  const bool checkpoint = checkpoint_blocks_ && is_training() && torch::GradMode::is_enabled() && x.requires_grad();
  for (size_t i = 0; i < layers->size(); ++i) {
    auto block = layers->ptr<BlockImpl>(i);
    x = checkpoint ? checkpointed_block(block.get(), x, cos, sin, block->self_attn->q_proj->dropout_generator())
                   : block->forward(x, cos, sin);
  }
  return norm(x);                          // [B, T, C]
}

torch::Tensor LlamaImpl::forward(const torch::Tensor& input_ids) {
  return torch::linear(forward_hidden(input_ids), lm_head);  // [B, T, V]
}

namespace {
// Token NLL of predicting ids[:, 1:] from ids[:, :-1]: mean (training) or sum (evaluation).
torch::Tensor causal_lm_nll(LlamaImpl& model, const torch::Tensor& input_ids, bool mean) {
  TORCH_CHECK(input_ids.dim() == 2 && input_ids.size(1) >= 2,
              "Llama loss: input_ids must be [B, T] with T >= 2");
  const int64_t T = input_ids.size(1);
  // The last position predicts nothing, so it is not run at all (causality makes this exact).
  auto h = model.forward_hidden(input_ids.narrow(1, 0, T - 1));  // [B, T-1, C]
  auto h2 = h.reshape({-1, h.size(-1)});                          // [N, C]
  auto targets = input_ids.narrow(1, 1, T - 1).reshape({-1});     // [N]
  const double scale = mean ? 1.0 / static_cast<double>(targets.numel()) : 1.0;
  return linear_cross_entropy(h2, model.lm_head, targets, scale);  // []
}
}  // namespace

torch::Tensor LlamaImpl::loss(const torch::Tensor& input_ids) {
  return causal_lm_nll(*this, input_ids, /*mean=*/true);  // []
}

std::pair<double, int64_t> LlamaImpl::nll_sum(const torch::Tensor& input_ids) {
  torch::NoGradGuard no_grad;
  auto sum = causal_lm_nll(*this, input_ids, /*mean=*/false);  // []
  return {sum.item<double>(), input_ids.size(0) * (input_ids.size(1) - 1)};
}

void LlamaImpl::init_weights(uint64_t seed) {
  torch::NoGradGuard no_grad;
  auto gen = compat::make_cpu_generator(seed);
  // Fixed draw order (embedding, projections in relora_linears() order, head) so the result
  // depends on the seed only. LoRA factors are not touched.
  fill_normal(embed_tokens->weight, 0.02, gen);
  for (auto& [name, linear] : relora_linears()) fill_normal(linear->weight, 0.02, gen);
  fill_normal(lm_head, 0.02, gen);
  for (size_t i = 0; i < layers->size(); ++i) {
    auto block = layers->ptr<BlockImpl>(i);
    block->input_layernorm->weight.fill_(1.0);
    block->post_attention_layernorm->weight.fill_(1.0);
  }
  norm->weight.fill_(1.0);
}

std::vector<std::pair<std::string, ReloraLinear>> LlamaImpl::relora_linears() {
  std::vector<std::pair<std::string, ReloraLinear>> out;
  out.reserve(layers->size() * 7);
  for (size_t i = 0; i < layers->size(); ++i) {
    auto block = layers->ptr<BlockImpl>(i);
    const std::string p = "model.layers." + std::to_string(i) + ".";
    out.emplace_back(p + "self_attn.q_proj", block->self_attn->q_proj);
    out.emplace_back(p + "self_attn.k_proj", block->self_attn->k_proj);
    out.emplace_back(p + "self_attn.v_proj", block->self_attn->v_proj);
    out.emplace_back(p + "self_attn.o_proj", block->self_attn->o_proj);
    out.emplace_back(p + "mlp.gate_proj", block->mlp->gate_proj);
    out.emplace_back(p + "mlp.up_proj", block->mlp->up_proj);
    out.emplace_back(p + "mlp.down_proj", block->mlp->down_proj);
  }
  return out;
}

void LlamaImpl::enable_lora(const LoraOptions& options, uint64_t seed) {
  auto linears = relora_linears();
  // Validate against every shape first, so a bad rank leaves the model untouched.
  for (auto& [name, linear] : linears) {
    if (linear->lora_enabled()) throw std::logic_error("Llama::enable_lora: already enabled");
    const int64_t max_rank = std::min(linear->in_features(), linear->out_features());
    if (options.rank < 1 || options.rank > max_rank) {
      throw std::invalid_argument("Llama::enable_lora: rank " + std::to_string(options.rank) +
                                  " outside [1, " + std::to_string(max_rank) + "] for " + name);
    }
  }
  for (size_t i = 0; i < linears.size(); ++i) {
    linears[i].second->enable_lora(options, projection_seed(seed, i));
    if (frozen_shards_) linears[i].second->shard_weight(frozen_shards_);
  }
}

void LlamaImpl::shard_frozen_weights(std::shared_ptr<FrozenWeightShards> shards) {
  if (frozen_shards_) throw std::logic_error("Llama::shard_frozen_weights: already sharded");
  frozen_shards_ = std::move(shards);
  for (auto& [name, linear] : relora_linears())
    if (linear->lora_enabled()) linear->shard_weight(frozen_shards_);
}

std::map<std::string, ReloraLinear> LlamaImpl::sharded_weights() {
  std::map<std::string, ReloraLinear> sharded;
  for (const auto& item : named_modules(/*name_prefix=*/"", /*include_self=*/false))
    if (auto linear = std::dynamic_pointer_cast<ReloraLinearImpl>(item.value()); linear && linear->weight_sharded())
      sharded.emplace(item.key() + ".weight", ReloraLinear(linear));
  return sharded;
}

std::vector<LlamaImpl::HeldParameter> LlamaImpl::held_parameters() {
  const auto sharded = sharded_weights();
  std::vector<HeldParameter> out;
  for (const auto& item : named_parameters(/*recurse=*/true)) {
    HeldParameter p{item.key(), item.value(), item.value().sizes().vec(), 0, false};
    if (auto it = sharded.find(item.key()); it != sharded.end()) {
      const auto& linear = it->second;
      p.whole = {linear->out_features(), linear->in_features()};
      p.offset = linear->weight_rows().begin * linear->in_features();
      p.sharded = true;
    }
    out.push_back(std::move(p));
  }
  return out;
}

std::vector<std::pair<std::string, torch::Tensor>> LlamaImpl::whole_parameters() {
  auto sharded = sharded_weights();
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& item : named_parameters(/*recurse=*/true)) {
    auto it = sharded.find(item.key());
    out.emplace_back(item.key(), it == sharded.end() ? item.value() : it->second->full_weight());
  }
  return out;
}

bool LlamaImpl::lora_enabled() {
  auto linears = relora_linears();
  return !linears.empty() && linears.front().second->lora_enabled();
}

void LlamaImpl::merge_and_reinit(uint64_t seed) {
  auto linears = relora_linears();
  for (size_t i = 0; i < linears.size(); ++i) {
    linears[i].second->merge_and_reinit(projection_seed(seed, i));
  }
}

std::vector<std::pair<std::string, torch::Tensor>> LlamaImpl::trainable_parameters() {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& item : named_parameters(/*recurse=*/true)) {
    if (item.value().requires_grad()) out.emplace_back(item.key(), item.value());
  }
  return out;
}

int64_t LlamaImpl::count_trainable_parameters() {
  int64_t n = 0;
  for (const auto& [name, p] : trainable_parameters()) n += p.numel();
  return n;
}

int64_t LlamaImpl::count_model_parameters() {
  int64_t n = 0;
  for (const auto& p : held_parameters()) {
    const auto& name = p.name;
    const bool factor = name.size() >= 6 && (name.compare(name.size() - 6, 6, "lora_A") == 0 ||
                                             name.compare(name.size() - 6, 6, "lora_B") == 0);
    if (!factor) n += c10::multiply_integers(p.whole);
  }
  return n;
}

std::vector<std::pair<std::string, torch::Tensor>> LlamaImpl::export_state() {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  visit_export_state([&](const std::string& name, torch::Tensor t) { out.emplace_back(name, std::move(t)); });
  return out;
}

void LlamaImpl::visit_export_state(const std::function<void(const std::string&, torch::Tensor)>& visit) {
  torch::NoGradGuard no_grad;
  // Fresh contiguous fp32 CPU copies: the caller may keep them while training goes on.
  auto cpu = [](const torch::Tensor& t) {
    return t.to(torch::kCPU, torch::kFloat, /*non_blocking=*/false, /*copy=*/true).contiguous();
  };
  visit("model.embed_tokens.weight", cpu(embed_tokens->weight));
  auto linears = relora_linears();
  for (size_t i = 0; i < layers->size(); ++i) {
    auto block = layers->ptr<BlockImpl>(i);
    const std::string p = "model.layers." + std::to_string(i) + ".";
    for (size_t j = 0; j < 7; ++j) {
      auto& [name, linear] = linears[i * 7 + j];
      // merged_weight() is already a fresh fp32 tensor: only move it, no second copy.
      visit(name + ".weight", linear->merged_weight().to(torch::kCPU).contiguous());
    }
    visit(p + "input_layernorm.weight", cpu(block->input_layernorm->weight));
    visit(p + "post_attention_layernorm.weight", cpu(block->post_attention_layernorm->weight));
  }
  visit("model.norm.weight", cpu(norm->weight));
  visit("lm_head.weight", cpu(lm_head));
}

}  // namespace relora::model
