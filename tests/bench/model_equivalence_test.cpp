// The performance work in worker/model and worker/train (chunked head + cross-entropy, in-place
// low-rank branch, folded attention scale, fused AdamW with clipping folded in) must not change
// the arithmetic. Checked here against plain, independent formulations in fp64, with the CPU fast
// paths on and off (off: the generic code that GPUs run, worker/model/fused_cpu_ops.h).
#include <cmath>
#include <cstdlib>
#include <limits>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "worker/model/fused_cpu_ops.h"
#include "worker/model/llama.h"
#include "worker/model/rotary.h"
#include "worker/train/adamw.h"
#include "worker/train/runtime.h"

namespace relora {
namespace {

using model::Llama;
using model::LlamaConfig;

LlamaConfig tiny_config() {
  LlamaConfig c;
  c.vocab_size = 97;
  c.hidden_size = 32;
  c.num_layers = 2;
  c.num_heads = 4;
  c.intermediate_size = 48;
  c.max_seq_len = 16;
  return c;
}

torch::Tensor rms(const torch::Tensor& x, const torch::Tensor& w, double eps) {
  return x * torch::rsqrt(x.pow(2).mean(-1, true) + eps) * w;
}

torch::Tensor project(const model::ReloraLinear& l, const torch::Tensor& x) {
  auto y = x.matmul(l->weight.t());
  if (l->lora_enabled()) y = y + l->scale() * x.matmul(l->lora_A.t()).matmul(l->lora_B.t());
  return y;
}

torch::Tensor rotate(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  auto rot = torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * cos + rot * sin;
}

// The model's function written out with plain tensor ops (no fused or in-place code).
torch::Tensor reference_loss(Llama& m, const torch::Tensor& ids) {
  const auto& c = m->config();
  const int64_t B = ids.size(0), T = ids.size(1) - 1, C = c.hidden_size, H = c.num_heads, D = C / H;
  auto input = ids.narrow(1, 0, T);
  auto x = m->embed_tokens->weight.index_select(0, input.reshape({-1})).view({B, T, C});
  auto tables = model::rotary_tables(c.max_seq_len, D, c.rope_theta);
  auto cos = tables.first.narrow(0, 0, T).to(x.scalar_type());
  auto sin = tables.second.narrow(0, 0, T).to(x.scalar_type());
  auto mask = torch::ones({T, T}, torch::kBool).triu(1);
  for (size_t i = 0; i < m->layers->size(); ++i) {
    auto blk = m->layers->ptr<model::BlockImpl>(i);
    auto h = rms(x, blk->input_layernorm->weight, c.rms_norm_eps);
    auto heads = [&](const torch::Tensor& t) { return t.view({B, T, H, D}).transpose(1, 2); };
    auto q = rotate(heads(project(blk->self_attn->q_proj, h)), cos, sin);
    auto k = rotate(heads(project(blk->self_attn->k_proj, h)), cos, sin);
    auto v = heads(project(blk->self_attn->v_proj, h));
    auto s = q.matmul(k.transpose(-2, -1)) / std::sqrt(double(D));
    s = s.masked_fill(mask, -std::numeric_limits<double>::infinity());
    auto y = torch::softmax(s, -1).matmul(v).transpose(1, 2).reshape({B, T, C});
    x = x + project(blk->self_attn->o_proj, y);
    auto g = rms(x, blk->post_attention_layernorm->weight, c.rms_norm_eps);
    auto mlp = blk->mlp;
    x = x + project(mlp->down_proj, torch::silu(project(mlp->gate_proj, g)) * project(mlp->up_proj, g));
  }
  auto logits = rms(x, m->norm->weight, c.rms_norm_eps).matmul(m->lm_head.t());
  return torch::nn::functional::cross_entropy(logits.reshape({-1, c.vocab_size}),
                                              ids.narrow(1, 1, T).reshape({-1}));
}

void expect_same_loss_and_grads_once(Llama& m, const torch::Tensor& ids) {
  auto params = m->trainable_parameters();
  for (auto& [name, p] : params) p.mutable_grad() = torch::Tensor();
  auto ours = m->loss(ids);
  ours.backward();
  std::vector<torch::Tensor> our_grads;
  for (auto& [name, p] : params) our_grads.push_back(p.grad().clone());
  for (auto& [name, p] : params) p.mutable_grad() = torch::Tensor();
  auto ref = reference_loss(m, ids);
  ref.backward();
  EXPECT_NEAR(ours.item<double>(), ref.item<double>(), 1e-12);
  auto [sum, count] = m->nll_sum(ids);
  EXPECT_NEAR(sum / count, ref.item<double>(), 1e-12);
  for (size_t i = 0; i < params.size(); ++i) {
    const auto& g = params[i].second.grad();
    ASSERT_TRUE(g.defined()) << params[i].first;
    EXPECT_TRUE(torch::allclose(our_grads[i], g, 1e-9, 1e-12))
        << params[i].first << ": max diff " << (our_grads[i] - g).abs().max().item<double>();
  }
}

void expect_same_loss_and_grads(Llama& m, const torch::Tensor& ids) {
  for (bool fast : {true, false}) {
    SCOPED_TRACE(fast ? "CPU fast paths" : "generic path (what GPUs run)");
    model::CpuFastPathsGuard paths(fast);
    expect_same_loss_and_grads_once(m, ids);
  }
}

TEST(BenchModelEquivalence, FullRankLossAndGradientsMatchPlainFormulation) {
  torch::manual_seed(0);
  Llama m(tiny_config());
  m->init_weights(3);
  m->to(torch::kDouble);
  auto ids = torch::randint(0, 97, {3, 12}, torch::kInt64);
  expect_same_loss_and_grads(m, ids);
}

TEST(BenchModelEquivalence, LowRankLossAndGradientsMatchPlainFormulation) {
  torch::manual_seed(1);
  Llama m(tiny_config());
  m->init_weights(4);
  m->enable_lora(model::LoraOptions{8, 16.0, 0.0}, 5);
  {
    torch::NoGradGuard no_grad;  // B = 0 after enable: give the branch something to contribute
    for (auto& [name, l] : m->relora_linears()) l->lora_B.normal_(0.0, 0.05);
  }
  m->to(torch::kDouble);
  auto ids = torch::randint(0, 97, {2, 16}, torch::kInt64);
  expect_same_loss_and_grads(m, ids);
}

TEST(BenchModelEquivalence, HeadAndLossInSeveralRowBlocks) {
  // 1000-element blocks of the [rows, V] logits: 10 rows per block, 60 rows in 6 blocks.
  setenv("RELORA_LOSS_BLOCK_ELEMENTS", "1000", 1);
  torch::manual_seed(2);
  Llama m(tiny_config());
  m->init_weights(6);
  m->to(torch::kDouble);
  auto ids = torch::randint(0, 97, {4, 16}, torch::kInt64);
  expect_same_loss_and_grads(m, ids);
  unsetenv("RELORA_LOSS_BLOCK_ELEMENTS");
}

TEST(BenchModelEquivalence, LossExactWhenTargetProbabilitiesUnderflow) {
  // Huge logits: p[target] below the smallest normal float for many tokens (NLL in the hundreds).
  torch::manual_seed(8);
  Llama m(tiny_config());
  m->init_weights(9);
  m->to(torch::kDouble);
  {
    torch::NoGradGuard no_grad;
    m->lm_head.mul_(3000.0);
  }
  auto ids = torch::randint(0, 97, {2, 16}, torch::kInt64);
  EXPECT_GT(m->loss(ids).item<double>(), 100.0);
  expect_same_loss_and_grads(m, ids);
}

TEST(BenchModelEquivalence, Bf16AutocastLossCloseToFp32) {
  torch::manual_seed(3);
  Llama m(tiny_config());
  m->init_weights(7);
  auto ids = torch::randint(0, 97, {2, 16}, torch::kInt64);
  const double fp32 = m->loss(ids).item<double>();
  torch::Tensor loss;
  {
    train::Bf16Autocast autocast(true, torch::kCPU);
    loss = m->loss(ids);
    loss.backward();
  }
  EXPECT_NEAR(loss.item<double>(), fp32, 2e-2);
  EXPECT_EQ(m->lm_head.grad().scalar_type(), torch::kFloat);
  EXPECT_GT(m->lm_head.grad().abs().sum().item<double>(), 0.0);
}

void check_clip_and_step() {
  torch::manual_seed(4);
  auto a = torch::randn({16, 8}, torch::kDouble).requires_grad_(true);
  auto b = a.detach().clone().requires_grad_(true);
  train::AdamW fused(train::AdamWOptions{0.9, 0.999, 1e-8, 0.1});
  train::AdamW plain(train::AdamWOptions{0.9, 0.999, 1e-8, 0.1});
  fused.add_parameter("w", a, false);
  plain.add_parameter("w", b, false);
  for (int step = 0; step < 4; ++step) {
    auto g = torch::randn({16, 8}, torch::kDouble) * (step + 1);
    a.mutable_grad() = g.clone();
    b.mutable_grad() = g.clone();
    const double n1 = fused.clip_and_step(1e-2, 1.0);
    const double n2 = torch::nn::utils::clip_grad_norm_(std::vector<torch::Tensor>{b}, 1.0);
    plain.step(1e-2);
    EXPECT_NEAR(n1, n2, 1e-9 * n2);
    fused.zero_grad();
    EXPECT_FALSE(a.grad().defined());
  }
  EXPECT_TRUE(torch::allclose(a, b, 1e-12, 1e-12)) << (a - b).abs().max();
}

TEST(BenchAdamW, ClipAndStepEqualsClipGradNormThenStep) {
  for (bool fast : {true, false}) {
    SCOPED_TRACE(fast ? "fused update" : "tensor-op update (what GPUs run)");
    model::CpuFastPathsGuard paths(fast);
    check_clip_and_step();
  }
}

}  // namespace
}  // namespace relora
